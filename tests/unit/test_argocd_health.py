"""The Argo CD health check (``charts/modelrollout/files/argocd-health.lua``), run as Argo CD runs it.

Argo CD runs a custom health check in gopher-lua, a Lua 5.1, with only the base, table and a safe
``os`` library loaded (argo-cd ``util/lua/lua.go``; https://argo-cd.readthedocs.io/en/stable/
operator-manual/health/). These tests run the real file in lupa's PUC Lua 5.1 runtime with the
other libraries taken away, so a script that calls ``string.format`` fails here as it would there.

The objects come from the real decision procedure wherever it can write them: ``decide()`` driven
tick by tick by the seeded world of ``support.policy_world``, the status serialised as the operator
writes it (camelCase, no nulls) and handed to Lua as Argo CD hands it (JSON objects as tables,
arrays as 1-based tables). What ``decide()`` never writes (no status yet, a stale generation,
missing or malformed fields, a phase from a newer operator) is a plain dict.

Also here: the copy inline in ``examples/argocd/argocd-cm.yaml`` is byte-identical to the file,
and the conditions the policy writes give the Flux (kstatus) results the README promises.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lupa.lua51
import pytest
import yaml

from modelrollout.api.observations import SpecProblem
from modelrollout.api.status import ConditionType, Phase
from modelrollout.policy import Rule
from support.policy_world import Experiment, World, challengers, finished, make_spec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
HEALTH_LUA = ROOT / "charts" / "modelrollout" / "files" / "argocd-health.lua"
ARGOCD_CM = ROOT / "examples" / "argocd" / "argocd-cm.yaml"
#: The argocd-cm key Argo CD reads a health check of group modelrollout.io, kind ModelExperiment from.
HEALTH_KEY = "resource.customizations.health.modelrollout.io_ModelExperiment"
#: The statuses Argo CD accepts from a health script; anything else it reports as Unknown.
ARGO_STATUSES = frozenset({"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"})
ABORT, RETRY = "modelrollout.io/abort", "modelrollout.io/retry"

# Argo CD loads only the base, table and a safe os library (package too, which gives nothing here).
# Taking the string library's metatable away as well stops ("x"):format(...) style calls.
_ARGOCD_SANDBOX = """
string, math, io, os, debug, coroutine = nil, nil, nil, nil, nil, nil
getmetatable("").__index = nil
"""


# --- running the script -------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    """What the script returned: Argo CD's health status and message."""

    status: str
    message: str


def _lua_value(runtime: Any, value: Any) -> Any:
    """``value`` as gopher-lua's decodeValue gives it: objects and arrays as tables (arrays from 1)."""
    if isinstance(value, Mapping):
        table = runtime.table()
        for key, item in value.items():
            if item is not None:  # a JSON null is nil, that is: no such key
                table[key] = _lua_value(runtime, item)
        return table
    if isinstance(value, list | tuple):
        table = runtime.table()
        for index, item in enumerate(value, start=1):
            table[index] = _lua_value(runtime, item)
        return table
    return value


def _sandboxed_runtime() -> Any:
    runtime = lupa.lua51.LuaRuntime()
    runtime.execute(_ARGOCD_SANDBOX)
    return runtime


def argocd_health(obj: Mapping[str, Any]) -> Health:
    """Run the health script on ``obj`` and check the result as Argo CD would take it."""
    runtime = _sandboxed_runtime()
    runtime.globals().obj = _lua_value(runtime, json.loads(json.dumps(obj)))
    returned = runtime.execute(HEALTH_LUA.read_text(encoding="utf-8"))
    assert lupa.lua51.lua_type(returned) == "table", f"the script returned {returned!r}, not a table"
    result = dict(returned.items())
    assert set(result) == {"status", "message"}, result
    assert result["status"] in ARGO_STATUSES, result
    assert isinstance(result["message"], str), result
    return Health(result["status"], result["message"])


def experiment_object(exp: Experiment, *, generation: int = 1) -> dict[str, Any]:
    """The ModelExperiment as the apiserver serves it to Argo CD, with the status ``exp`` decided last."""
    return {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelExperiment",
        "metadata": {"name": "ranker-v7", "namespace": "shop", "generation": generation},
        "spec": exp.spec.model_dump(by_alias=True, mode="json", exclude_none=True),
        "status": exp.status.model_dump(by_alias=True, mode="json", exclude_none=True),
    }


def plain_object(status: Mapping[str, Any] | None, *, generation: int = 1) -> dict[str, Any]:
    """A hand-written object (for what ``decide()`` never writes), champion v1 and challenger v2."""
    obj: dict[str, Any] = {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelExperiment",
        "metadata": {"name": "ranker-v7", "namespace": "shop", "generation": generation},
        "spec": {"champion": {"name": "v1", "service": "model-v1"}, "challengers": challengers("v2")},
    }
    if status is not None:
        obj["status"] = dict(status)
    return obj


def condition_message(exp: Experiment, type_: ConditionType) -> str:
    found = exp.status.condition(type_)
    assert found is not None, type_
    return found.message


# --- experiments driven by decide() (each built once; tests read them and do not tick them) ------


def better(rps: float = 200.0, lift: float = 0.3, seed: int = 3, **over: Any) -> Experiment:
    spec = make_spec(**over)
    return Experiment(spec, World(spec, seed=seed, rps=rps, truth={"conversion": {"v2": 0.2 * (1 + lift)}}))


@functools.cache
def started() -> Experiment:
    exp = Experiment(make_spec())
    exp.tick()
    return exp


@functools.cache
def shadowing() -> Experiment:
    spec = make_spec(shadow={"enabled": True, "duration": "5m", "mirrorPercent": 100})
    exp = Experiment(spec, World(spec, seed=9, rps=100))
    exp.ticks(2)  # the first tick starts the shadow phase, the second looks at it
    return exp


@functools.cache
def promoted() -> Experiment:
    exp = better()
    exp.until(finished)
    return exp


@functools.cache
def guardrail_rollback() -> Experiment:
    exp = better(lift=0.0)
    exp.until(lambda d: d.step == 2)
    exp.world.truth["errors"] = {"v2": 0.2}
    exp.until(finished, limit=4)
    return exp


@functools.cache
def aborted() -> Experiment:
    exp = better()
    exp.ticks(2)
    exp.tick(annotations={ABORT: "now"})
    return exp


@functools.cache
def variants_changed() -> Experiment:
    exp = better(lift=0.0)
    exp.ticks(2)
    exp.set_spec(challengers=challengers("v9"))
    exp.tick()
    return exp


@functools.cache
def invalid_while_pending() -> Experiment:
    exp = Experiment(make_spec())
    exp.tick(spec_errors=(SpecProblem("spec.challengers[0].service", "Service model-v2 not found"),))
    return exp


@functools.cache
def invalid_while_running() -> Experiment:
    exp = better()
    exp.ticks(2)
    exp.tick(spec_errors=(SpecProblem("spec.metrics.primary.trials", "the PromQL does not parse"),))
    return exp


@functools.cache
def spec_paused() -> Experiment:
    exp = better()
    exp.tick()
    exp.set_spec(paused=True)
    exp.ticks(3, generation=2)  # editing the spec made generation 2; the later ticks only hold
    return exp


@functools.cache
def inconclusive_pause() -> Experiment:
    exp = better(rps=50.0, lift=0.0, seed=1, analysis={"maxDuration": "10m", "onInconclusive": "pause"})
    exp.until(lambda d: d.phase is Phase.PAUSED)
    return exp


@functools.cache
def outage_pause() -> Experiment:
    exp = better(lift=0.0, analysis={"maxConsecutiveErrors": 2, "onDataOutage": "pause"})
    exp.ticks(3)
    exp.ticks(2, outage=["errors"])
    return exp


@functools.cache
def srm_hold() -> Experiment:
    exp = better(lift=0.5)
    exp.world.loss["v2"] = 0.3  # a third of the challenger's trials go missing
    exp.until(lambda d: d.rule is Rule.SAMPLE_RATIO_MISMATCH, limit=20)
    return exp


@functools.cache
def metrics_hold() -> Experiment:
    exp = better(lift=0.0)
    exp.ticks(3)
    exp.ticks(2, outage=["conversion", "errors"])  # below maxConsecutiveErrors (5): a hold
    return exp


#: scenario -> (how to reach it, the phase decide() left it in, Argo CD's status, kstatus's status)
SCENARIOS: dict[str, tuple[Callable[[], Experiment], Phase, str, str]] = {
    "started": (started, Phase.PROGRESSING, "Progressing", "Current"),
    "shadowing": (shadowing, Phase.SHADOWING, "Progressing", "Current"),
    "promoted": (promoted, Phase.PROMOTED, "Healthy", "Current"),
    "guardrail rollback": (guardrail_rollback, Phase.ROLLED_BACK, "Degraded", "Failed"),
    "manual abort": (aborted, Phase.ROLLED_BACK, "Degraded", "Failed"),
    "variants changed": (variants_changed, Phase.FAILED, "Degraded", "Failed"),
    "invalid spec while pending": (invalid_while_pending, Phase.PENDING, "Degraded", "Failed"),
    "invalid spec while running": (invalid_while_running, Phase.PROGRESSING, "Degraded", "Failed"),
    "spec.paused": (spec_paused, Phase.PAUSED, "Suspended", "Current"),
    "onInconclusive pause": (inconclusive_pause, Phase.PAUSED, "Suspended", "Current"),
    "onDataOutage pause": (outage_pause, Phase.PAUSED, "Suspended", "InProgress"),
    "sample ratio mismatch hold": (srm_hold, Phase.PROGRESSING, "Progressing", "InProgress"),
    "metrics unavailable hold": (metrics_hold, Phase.PROGRESSING, "Progressing", "InProgress"),
}


def scenario_object(name: str) -> dict[str, Any]:
    build, _, _, _ = SCENARIOS[name]
    exp = build()
    return experiment_object(exp, generation=exp.observed[-1].generation or 1)


# --- Argo CD: the mapping, on statuses the policy wrote ---------------------------------------------


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_each_phase_the_policy_writes_maps_to_its_argocd_health(name: str) -> None:
    build, phase, argo_status, _ = SCENARIOS[name]
    assert build().status.phase is phase  # the scenario reached the state it is named after
    assert argocd_health(scenario_object(name)).status == argo_status


def test_a_started_experiment_is_progressing_with_its_step_and_weights() -> None:
    health = argocd_health(scenario_object("started"))
    progressing = condition_message(started(), ConditionType.PROGRESSING)
    assert progressing == "The step has just begun; nothing observed yet."
    assert health.message == f"Progressing at step 0 (v1 90 %, v2 10 %): {progressing}"


def test_a_shadowing_experiment_is_progressing_with_the_champion_serving() -> None:
    health = argocd_health(scenario_object("shadowing"))
    assert health.message == (
        f"Shadowing (v1 100 %, v2 0 %): {condition_message(shadowing(), ConditionType.PROGRESSING)}"
    )
    assert health.message.endswith("Shadowing for 30s of 5m.")


def test_promoted_is_healthy_with_the_reason_and_numbers_of_the_promotion() -> None:
    health = argocd_health(scenario_object("promoted"))
    succeeded = condition_message(promoted(), ConditionType.SUCCEEDED)
    assert health.message == f"Promoted (PrimaryBetter): {succeeded}"
    assert "significantly better" in health.message


@pytest.mark.parametrize(
    ("name", "prefix", "says"),
    [
        ("guardrail rollback", "RolledBack (GuardrailBreach): ", "Guardrail breached"),
        ("manual abort", "RolledBack (ManualAbort): ", "Aborted by modelrollout.io/abort"),
        ("variants changed", "Failed (VariantsChanged): ", "Annotate modelrollout.io/retry"),
    ],
)
def test_a_rollback_or_failure_is_degraded_and_says_why(name: str, prefix: str, says: str) -> None:
    health = argocd_health(scenario_object(name))
    assert health.status == "Degraded"
    assert health.message.startswith(prefix)
    assert says in health.message


@pytest.mark.parametrize(
    ("name", "prefix", "path"),
    [
        ("invalid spec while pending", "Pending: invalid spec: ", "spec.challengers[0].service"),
        (
            "invalid spec while running",
            "Progressing at step 0 (v1 90 %, v2 10 %): invalid spec: ",
            "spec.metrics.primary.trials",
        ),
    ],
)
def test_an_invalid_spec_is_degraded_naming_the_field(name: str, prefix: str, path: str) -> None:
    health = argocd_health(scenario_object(name))
    assert health.status == "Degraded"
    assert health.message.startswith(prefix)
    assert path in health.message


def test_an_invalid_spec_fixed_is_progressing_again() -> None:
    exp = Experiment(make_spec())
    exp.tick(spec_errors=(SpecProblem("spec.challengers[0].service", "Service model-v2 not found"),))
    assert argocd_health(experiment_object(exp)).status == "Degraded"
    exp.tick()
    assert argocd_health(experiment_object(exp)).status == "Progressing"


@pytest.mark.parametrize(
    ("name", "prefix", "says"),
    [
        ("spec.paused", "Paused (SpecPaused) at step 0 (v1 90 %, v2 10 %): ", "Paused by spec.paused"),
        ("onInconclusive pause", "Paused (Inconclusive) at step ", "onInconclusive pause"),
        ("onDataOutage pause", "Paused (DataOutage) at step ", "onDataOutage pause"),
    ],
)
def test_a_pause_is_suspended_with_why_and_what_ends_it(name: str, prefix: str, says: str) -> None:
    health = argocd_health(scenario_object(name))
    assert health.status == "Suspended"
    assert health.message.startswith(prefix)
    assert says in health.message


def test_a_pause_keeps_its_message_while_the_ticks_hold() -> None:
    # The per-tick message only says "since T"; the health message keeps the transition's, which
    # says why the experiment paused and what ends the pause.
    exp = better()
    exp.tick()
    exp.set_spec(paused=True)
    exp.tick(generation=2)
    first = argocd_health(experiment_object(exp, generation=2))
    exp.ticks(3, generation=2)
    assert exp.last.reason == "SpecPaused"  # holding, not transitioning
    assert argocd_health(experiment_object(exp, generation=2)) == first


def test_pausing_is_progressing_until_the_operator_observes_it_then_suspended_then_progressing() -> None:
    exp = better()
    exp.tick()
    exp.set_spec(paused=True)  # the apiserver bumps metadata.generation to 2
    waiting = argocd_health(experiment_object(exp, generation=2))
    assert waiting == Health(
        "Progressing", "Waiting for the operator to observe generation 2 (the status is about generation 1)"
    )
    exp.tick(generation=2)
    assert argocd_health(experiment_object(exp, generation=2)).status == "Suspended"
    exp.set_spec(paused=False)
    exp.tick(generation=3)
    assert exp.status.phase is Phase.PROGRESSING
    assert argocd_health(experiment_object(exp, generation=3)).status == "Progressing"


def test_a_sample_ratio_mismatch_hold_is_progressing_and_says_why() -> None:
    health = argocd_health(scenario_object("sample ratio mismatch hold"))
    srm = condition_message(srm_hold(), ConditionType.SAMPLE_RATIO_MISMATCH)
    assert health.status == "Progressing"
    assert health.message.startswith("Progressing at step ")
    assert health.message.endswith(f": held (SampleRatioMismatch): {srm}")


def test_a_metrics_outage_hold_is_progressing_and_says_why() -> None:
    exp = metrics_hold()
    assert exp.last.rule is Rule.METRICS_UNAVAILABLE
    health = argocd_health(scenario_object("metrics unavailable hold"))
    unavailable = condition_message(exp, ConditionType.METRICS_UNAVAILABLE)
    assert health.status == "Progressing"
    assert health.message.endswith(f": held (MetricsUnavailable): {unavailable}")
    assert "connection refused" in health.message


def test_a_retry_after_a_failure_is_progressing_again() -> None:
    exp = better(lift=0.0)
    exp.ticks(2)
    exp.set_spec(challengers=challengers("v9"))
    exp.tick()
    assert argocd_health(experiment_object(exp)).status == "Degraded"
    exp.tick(annotations={RETRY: "1"})
    health = argocd_health(experiment_object(exp))
    assert health.status == "Progressing"
    assert health.message.startswith("Progressing at step 0 (v1 90 %, v9 10 %): ")


# --- Argo CD: what decide() never writes --------------------------------------------------------------

#: The Argo CD status of every phase; a phase added to the API fails here until the script knows it.
PHASE_HEALTH = {
    Phase.PENDING: "Progressing",
    Phase.SHADOWING: "Progressing",
    Phase.PROGRESSING: "Progressing",
    Phase.PAUSED: "Suspended",
    Phase.PROMOTED: "Healthy",
    Phase.ROLLED_BACK: "Degraded",
    Phase.FAILED: "Degraded",
}


def test_the_script_knows_every_phase_of_the_api() -> None:
    assert set(PHASE_HEALTH) == set(Phase)
    for phase, expected in PHASE_HEALTH.items():
        # Only a phase: no conditions, weights, step or history to lean on.
        health = argocd_health(plain_object({"phase": phase.value, "observedGeneration": 1}))
        assert health == Health(expected, phase.value), phase


@pytest.mark.parametrize(
    "status",
    [None, {}, {"kopf": {"progress": {}}}, {"observedGeneration": 1, "conditions": []}],
    ids=["no status", "empty status", "only kopf's bookkeeping", "no phase"],
)
def test_before_the_operators_first_tick_it_is_progressing(status: dict[str, Any] | None) -> None:
    assert argocd_health(plain_object(status)) == Health(
        "Progressing", "Waiting for the operator to pick up the experiment"
    )


def test_a_stale_status_is_progressing_whatever_its_phase() -> None:
    # A Promoted status about generation 2 says nothing about the spec of generation 3.
    stale = plain_object({"phase": "Promoted", "observedGeneration": 2}, generation=3)
    assert argocd_health(stale) == Health(
        "Progressing", "Waiting for the operator to observe generation 3 (the status is about generation 2)"
    )


def test_a_status_about_an_older_generation_written_by_the_policy_is_progressing() -> None:
    obj = experiment_object(promoted(), generation=2)  # the policy observed generation 1
    assert argocd_health(obj) == Health(
        "Progressing", "Waiting for the operator to observe generation 2 (the status is about generation 1)"
    )


def test_without_observed_generation_the_phase_decides() -> None:
    assert argocd_health(plain_object({"phase": "Promoted"}, generation=7)).status == "Healthy"


def test_an_unknown_phase_is_unknown_and_named() -> None:
    health = argocd_health(plain_object({"phase": "Cancelled", "observedGeneration": 1}))
    assert health.status == "Unknown"
    assert health.message.startswith("Unknown phase Cancelled (this health check knows Pending, ")


def test_malformed_fields_do_not_break_the_script() -> None:
    malformed = {
        "phase": "Progressing",
        "observedGeneration": 1,
        "currentStep": "two",
        "weights": ["v1", "v2"],
        "conditions": "Ready",
        "history": {"toPhase": "Paused"},
        "pause": "yes",
    }
    assert argocd_health(plain_object(malformed)) == Health("Progressing", "Progressing")
    for phase in ("Paused", "Promoted"):
        obj = plain_object({**malformed, "phase": phase})
        del obj["metadata"], obj["spec"]
        assert argocd_health(obj) == Health(PHASE_HEALTH[Phase(phase)], phase)
    odd_conditions = [{"type": "Ready"}, "Succeeded", {"status": "True"}, {"type": 3, "status": "True"}]
    obj = plain_object({"phase": "Promoted", "observedGeneration": 1, "conditions": odd_conditions})
    assert argocd_health(obj) == Health("Healthy", "Promoted")


def test_weights_are_listed_champion_then_challengers_then_others_by_name() -> None:
    status = {
        "phase": "Progressing",
        "observedGeneration": 1,
        "currentStep": 1,
        "weights": {"zeta": 0, "v2": 20, "alpha": 5, "v1": 75},
    }
    health = argocd_health(plain_object(status))
    assert health.message == "Progressing at step 1 (v1 75 %, v2 20 %, alpha 5 %, zeta 0 %)"


def test_the_condition_of_a_hold_wins_over_the_tick_message() -> None:
    conditions = [
        {"type": "Progressing", "status": "True", "reason": "WaitingForSamples", "message": "Step 1 waits."},
        {"type": "SampleRatioMismatch", "status": "True", "reason": "SampleRatioMismatch", "message": "srm"},
        {"type": "MetricsUnavailable", "status": "True", "reason": "MetricsUnavailable", "message": "down"},
    ]
    status = {"phase": "Progressing", "observedGeneration": 1, "conditions": conditions}
    # As the Ready condition does, an outage is named before a mismatch.
    assert argocd_health(plain_object(status)).message == "Progressing: held (MetricsUnavailable): down"
    conditions[2]["status"] = "False"
    assert argocd_health(plain_object(status)).message == "Progressing: held (SampleRatioMismatch): srm"
    conditions[1]["status"] = "False"
    assert argocd_health(plain_object(status)).message == "Progressing: Step 1 waits."


# --- the Lua environment ---------------------------------------------------------------------------


def test_the_sandbox_takes_away_what_argocd_does_not_load() -> None:
    runtime = _sandboxed_runtime()
    for forbidden in ('return string.format("%d", 1)', 'return ("x"):upper()', "return math.floor(1.5)"):
        with pytest.raises(lupa.lua51.LuaError):
            runtime.execute(forbidden)
    assert runtime.execute('local t = {"b", "a"}; table.sort(t); return table.concat(t, ",")') == "a,b"


def test_the_script_uses_no_library_argocd_does_not_load_even_on_paths_not_run() -> None:
    code = re.sub(r"--[^\n]*", "", HEALTH_LUA.read_text(encoding="utf-8"))
    assert re.findall(r"\b(?:string|math|io|os|debug|coroutine)\s*[.:]", code) == []
    assert re.findall(r"[\")]\s*:\s*[a-z]+\s*\(", code) == []  # no ("text"):method(...) calls


# --- the copy users paste into argocd-cm ------------------------------------------------------------


def test_the_example_argocd_cm_carries_the_script_byte_for_byte() -> None:
    config_map = yaml.safe_load(ARGOCD_CM.read_text(encoding="utf-8"))
    assert (config_map["apiVersion"], config_map["kind"]) == ("v1", "ConfigMap")
    assert (config_map["metadata"]["name"], config_map["metadata"]["namespace"]) == ("argocd-cm", "argocd")
    assert config_map["metadata"]["labels"]["app.kubernetes.io/part-of"] == "argocd"
    inline = config_map["data"][HEALTH_KEY]
    assert inline == HEALTH_LUA.read_text(encoding="utf-8"), (
        f"{ARGOCD_CM.relative_to(ROOT)} has drifted from {HEALTH_LUA.relative_to(ROOT)}: paste the file "
        f"under {HEALTH_KEY}: | (indented by 4 spaces)"
    )


# --- Flux: kstatus on the conditions the policy writes -----------------------------------------------


def kstatus(obj: Mapping[str, Any]) -> str:
    """kstatus's ``Compute`` for a custom resource it has no type-specific rule for, transcribed from
    sigs.k8s.io/cli-utils ``pkg/kstatus/status`` (status.go, generic.go) and its README ("The Ready
    Condition"): Terminating while deleted; InProgress while ``status.observedGeneration`` (when
    set) differs from ``metadata.generation``; Reconciling=True is InProgress and Stalled=True
    Failed; else Ready=True is Current and Ready=False or Unknown InProgress; without any of these,
    Current."""
    metadata = obj.get("metadata") or {}
    if metadata.get("deletionTimestamp"):
        return "Terminating"
    status = obj.get("status") or {}
    observed = status.get("observedGeneration")
    if metadata.get("generation") is not None and observed is not None and observed != metadata["generation"]:
        return "InProgress"
    conditions = status.get("conditions") or []
    for condition in conditions:
        if condition.get("type") == "Reconciling" and condition.get("status") == "True":
            return "InProgress"
        if condition.get("type") == "Stalled" and condition.get("status") == "True":
            return "Failed"
    for condition in conditions:
        if condition.get("type") == "Ready":
            return "Current" if condition.get("status") == "True" else "InProgress"
    return "Current"


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_kstatus_reads_each_phase_the_policy_writes_as_the_readme_says(name: str) -> None:
    _, _, _, expected = SCENARIOS[name]
    obj = scenario_object(name)
    status = obj["status"]
    # What kstatus needs: the generation observed at the top level of the status, a Ready
    # condition, and Stalled, which turns a dead end into Failed; no Reconciling overrides them.
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    types = [c["type"] for c in status["conditions"]]
    assert "Ready" in types
    assert "Stalled" in types
    assert "Reconciling" not in types
    assert kstatus(obj) == expected
    # Ready is True exactly when kstatus calls the experiment Current, and the two tools agree:
    # Healthy is Current, Degraded is Failed (Stalled=True), and nothing else is Failed.
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"] == "True") == (expected == "Current")
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    health = argocd_health(obj).status
    assert (stalled["status"] == "True") == (health == "Degraded")
    if health == "Healthy":
        assert kstatus(obj) == "Current"
    assert (kstatus(obj) == "Failed") == (health == "Degraded")
    if stalled["status"] == "True":
        assert stalled["reason"], stalled  # the dead end is named
        assert stalled["message"], stalled


def test_kstatus_waits_for_a_spec_the_operator_has_not_observed() -> None:
    assert kstatus(experiment_object(promoted(), generation=2)) == "InProgress"
    assert kstatus(experiment_object(promoted(), generation=1)) == "Current"


def test_kstatus_calls_an_experiment_without_status_current() -> None:
    # A limit of kstatus to know about (the README says it): before the operator's first tick there is
    # neither observedGeneration nor Ready, and kstatus falls back to Current.
    assert kstatus(plain_object(None)) == "Current"
    assert argocd_health(plain_object(None)).status == "Progressing"
