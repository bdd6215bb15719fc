-- Argo CD health check for modelrollout.io/ModelExperiment.
--
-- The source of truth is charts/modelrollout/files/argocd-health.lua; examples/argocd/argocd-cm.yaml
-- carries a copy that tests/unit/test_argocd_health.py keeps byte-identical.
--
-- Argo CD runs a custom health check in gopher-lua (Lua 5.1) with only the base, table and a safe
-- os library loaded, so this script has no string or math library: it builds text with `..` and
-- tostring. It gets the resource as `obj` and returns {status, message}, where status is Healthy,
-- Progressing, Degraded, Suspended, Missing or Unknown
-- (https://argo-cd.readthedocs.io/en/stable/operator-manual/health/).
--
-- The mapping, first match wins:
--   no status.phase yet (before the operator's first tick)        Progressing
--   status.observedGeneration ~= metadata.generation               Progressing (the status is about an older spec)
--   InvalidSpec=True (traffic does not move until it is fixed)     Degraded
--   Promoted                                                       Healthy
--   RolledBack, Failed (like an aborted Argo Rollout)              Degraded
--   Paused (spec.paused, onInconclusive pause, onDataOutage pause) Suspended
--   Pending, Shadowing, Progressing                                Progressing (a MetricsUnavailable or
--                                                                  SampleRatioMismatch hold is named in the message)
--   any other phase (an operator newer than this script)           Unknown

local function isTable(value)
  return type(value) == "table"
end

-- A string, number or boolean as text; anything else (nil, a table) as "".
local function text(value)
  local kind = type(value)
  if kind == "string" then
    return value
  end
  if kind == "number" or kind == "boolean" then
    return tostring(value)
  end
  return ""
end

-- "prefix: detail", or the prefix alone when there is no detail.
local function withDetail(prefix, detail)
  if detail == nil or detail == "" then
    return prefix
  end
  return prefix .. ": " .. detail
end

-- The conditions by type. The CRD keeps them unique by type (a list-map keyed on type).
local function conditionsByType(status)
  local byType = {}
  if isTable(status.conditions) then
    for _, condition in ipairs(status.conditions) do
      if isTable(condition) and type(condition.type) == "string" then
        byType[condition.type] = condition
      end
    end
  end
  return byType
end

local function isTrue(condition)
  return isTable(condition) and condition.status == "True"
end

local function messageOf(condition)
  if not isTable(condition) then
    return ""
  end
  return text(condition.message)
end

-- "v6 75 %, v7 25 %": the champion and the challengers in spec order, then any other variant by name
-- (pairs() has no order, and the message must not change between two identical reads).
local function weightsText(spec, weights)
  if not isTable(weights) then
    return ""
  end
  local names, listed = {}, {}
  local function list(name)
    if type(name) == "string" and weights[name] ~= nil and not listed[name] then
      listed[name] = true
      names[#names + 1] = name
    end
  end
  if isTable(spec) then
    if isTable(spec.champion) then
      list(spec.champion.name)
    end
    if isTable(spec.challengers) then
      for _, challenger in ipairs(spec.challengers) do
        if isTable(challenger) then
          list(challenger.name)
        end
      end
    end
  end
  local others = {}
  for name, _ in pairs(weights) do
    if type(name) == "string" and not listed[name] then
      others[#others + 1] = name
    end
  end
  table.sort(others)
  for _, name in ipairs(others) do
    list(name)
  end
  local parts = {}
  for _, name in ipairs(names) do
    parts[#parts + 1] = name .. " " .. text(weights[name]) .. " %"
  end
  return table.concat(parts, ", ")
end

-- " at step 1 (v6 75 %, v7 25 %)": where a running or paused experiment stands.
local function positionText(status, spec)
  local position = ""
  if type(status.currentStep) == "number" then
    position = " at step " .. tostring(status.currentStep)
  end
  local weights = weightsText(spec, status.weights)
  if weights ~= "" then
    position = position .. " (" .. weights .. ")"
  end
  return position
end

-- The message of the last transition into `phase` (status.history is oldest first): for a pause it
-- says why and what ends it, where the per-tick message only says since when.
local function lastTransitionMessage(status, phase)
  if not isTable(status.history) then
    return ""
  end
  for i = #status.history, 1, -1 do
    local entry = status.history[i]
    if isTable(entry) and entry.toPhase == phase then
      return text(entry.message)
    end
  end
  return ""
end

local hs = {}
local status = obj.status
local spec = obj.spec
local metadata = obj.metadata

if not isTable(status) or type(status.phase) ~= "string" then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick up the experiment"
  return hs
end

local generation = nil
if isTable(metadata) then
  generation = metadata.generation
end
local observed = status.observedGeneration
-- Without observedGeneration the check cannot be made (as kstatus does); the operator always sets it.
if type(generation) == "number" and type(observed) == "number" and observed ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
    .. " (the status is about generation " .. tostring(observed) .. ")"
  return hs
end

local phase = status.phase
local conditions = conditionsByType(status)

-- Invalid input holds everything in any phase, and only a human can fix it.
local invalidSpec = conditions["InvalidSpec"]
if isTrue(invalidSpec) then
  hs.status = "Degraded"
  hs.message = withDetail(phase .. positionText(status, spec) .. ": invalid spec", messageOf(invalidSpec))
  return hs
end

if phase == "Promoted" or phase == "RolledBack" or phase == "Failed" then
  -- Succeeded carries the reason and message of the transition that finished the experiment.
  local outcome = conditions["Succeeded"]
  if not isTable(outcome) then
    outcome = conditions["Ready"]
  end
  local prefix = phase
  local reason = ""
  if isTable(outcome) then
    reason = text(outcome.reason)
  end
  if reason ~= "" and reason ~= phase then
    prefix = prefix .. " (" .. reason .. ")"
  end
  if phase == "Promoted" then
    hs.status = "Healthy"
  else
    hs.status = "Degraded"
  end
  hs.message = withDetail(prefix, messageOf(outcome))
  return hs
end

if phase == "Paused" then
  local why = ""
  if isTable(status.pause) then
    why = text(status.pause.reason)
  end
  if why == "" and isTable(conditions["Progressing"]) then
    why = text(conditions["Progressing"].reason)
  end
  local prefix = "Paused"
  if why ~= "" then
    prefix = prefix .. " (" .. why .. ")"
  end
  local detail = lastTransitionMessage(status, "Paused")
  if detail == "" then
    detail = messageOf(conditions["Ready"])
  end
  if detail == "" then
    detail = messageOf(conditions["Progressing"])
  end
  hs.status = "Suspended"
  hs.message = withDetail(prefix .. positionText(status, spec), detail)
  return hs
end

if phase == "Pending" or phase == "Shadowing" or phase == "Progressing" then
  -- A hold keeps the experiment where it is without failing it: still Progressing, saying why.
  local metricsUnavailable = conditions["MetricsUnavailable"]
  local sampleRatioMismatch = conditions["SampleRatioMismatch"]
  local detail
  if isTrue(metricsUnavailable) then
    detail = withDetail("held (MetricsUnavailable)", messageOf(metricsUnavailable))
  elseif isTrue(sampleRatioMismatch) then
    detail = withDetail("held (SampleRatioMismatch)", messageOf(sampleRatioMismatch))
  else
    detail = messageOf(conditions["Progressing"])
    if detail == "" then
      detail = messageOf(conditions["Ready"])
    end
  end
  hs.status = "Progressing"
  hs.message = withDetail(phase .. positionText(status, spec), detail)
  return hs
end

hs.status = "Unknown"
hs.message = "Unknown phase " .. phase .. " (this health check knows Pending, Shadowing, Progressing, "
  .. "Paused, Promoted, RolledBack and Failed)"
return hs
