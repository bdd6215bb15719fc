"""``decide(spec, status, observations, now) -> Decision``: one tick of the state machine. Pure.

The rules, in the order they are applied (the first that fires wins the pass):

0. **Abort** (``modelrollout.io/abort``): a human's abort wins over everything, even an invalid
   spec or an outage.
1. **InvalidSpec**: errors found by the operator (``observations.specErrors``) or by the policy
   (a rollout without a step below 100; a relative guardrail margin of 1 or more on a
   higher-is-better metric) hold everything: InvalidSpec=True naming the field paths, no traffic
   moves, the phase stays (Pending stays Pending). When the errors are gone, the experiment goes
   on.
2. **Variants changed**: a running experiment whose champion changed, or whose live challengers
   left the spec or got company, cannot continue from its memory: phase Failed, traffic to the
   spec's champion; annotate retry to start over.
3. **Promote** and **retry** annotations (see :mod:`~modelrollout.policy.controls`).
4. **Finished** phases (Promoted, RolledBack, Failed) stay as they are.
5. **spec.paused**: Paused, weights frozen; unpausing resumes the phase it came from.
6. **Pending**: start, into Shadowing (shadow.enabled) or Progressing at step 0.
7. The analysis (:mod:`~modelrollout.policy.analysis`), then for Shadowing and Progressing:

   a. **Data outage limit**: a needed metric unknown for ``maxConsecutiveErrors`` ticks or for
      ``maxDataOutage`` applies ``onDataOutage`` (rollback, or pause until the metrics return).
   b. **Guardrail breach** (on the known guardrails, even in a partial outage): the challenger is
      dropped in this tick; the last one rolls back.
   c. **Shadow failure**: a challenger whose divergence is surely above the bound is dropped.
   d. **MetricsUnavailable**: a needed metric unknown holds (no step, no promotion).
   e. **Plan impossible** (an MDE that cannot be planned at the champion's value): InvalidSpec hold.
   f. **SampleRatioMismatch**: holds (no step, no drop, no promotion).
   g. **Worse**: a challenger significantly worse on the primary metric, or on a decisive
      secondary metric, is dropped; the last one rolls back.
   h. **Promotion**: the best challenger among those significantly better (nonInferiority: shown
      non-inferior) is promoted once it has run ``minStepDuration`` (and ``minSamplesPerStep``)
      at the last step below 100, with no guardrail warning. A significant win before that
      speeds the steps up (they no longer wait for their share of the planned n) but does not
      skip them. At ``maxDuration`` such a winner is promoted at once.
   i. **maxDuration** without a verdict, or the one look of ``fixed`` inconclusive for every live
      challenger, applies ``onInconclusive``: keepChampion rolls back; promoteIfNonInferior
      promotes the best challenger shown non-inferior within ``nonInferiorityMargin`` (else rolls
      back); pause pauses until ``maxDuration`` is raised or a human acts. A hold (outage, SRM)
      does not outlive ``maxDuration``: it applies ``onInconclusive`` too, where
      promoteIfNonInferior can only keep the champion (a held comparison shows nothing).
   j. **Step clock**: below the last step, advance when the step has lasted ``minStepDuration``,
      has ``minSamplesPerStep`` samples per live variant (summed over the step's strata), the run
      has its share of the planned n (every live variant has ``ceil(plannedN * (k + 1) / (S - 1))``
      samples since step 0, ``S`` steps; or a challenger is already significantly better), and no
      guardrail warns.
   k. Otherwise **hold**, saying what the step waits for.

   A paused experiment is analysed too (its record and statistics stay current), but only
   resumes: from an outage pause when the metrics are usable again, from an inconclusive pause
   when ``maxDuration`` has been raised past now.

Within one tick the rules run to a fixed point: after a transition they run again on the new
status (at most :data:`MAX_PASSES` passes), so the status returned is one on which the same tick
changes nothing more. With the replay guard (``status.lastTickAt``: counters grow once per new
``now``) this makes ``decide`` idempotent: applied to its own result with the same observations
and ``now``, it returns the same status and routes and no transition. The routes are always
re-derived from the status.

The Decision's rule is the tick's first transition (a retry that restarts, say), or the one that
finished the experiment when a later pass finished it (a loser dropped, then the winner promoted:
PrimaryBetter); without a transition, the hold of the last pass. Every transition has its own
history entry and Event; a hold has an Event when it begins and when it ends, not on every tick.

Choices where the design is silent (details in each module's docstring):

* Pending starts whatever the metrics say (nothing is measured before the start); the tick of the
  start observes a window of zero length and only holds.
* Counters that grow per tick (``consecutiveErrors``, threshold failures) grow once per new
  ``now``, also while paused; a spec pause takes no action on them, and unpausing after a long
  outage can therefore apply ``onDataOutage`` at once. When the outage limit and a known
  guardrail breach come in the same tick, the outage rule (which stops everything) wins.
* A challenger dropped during a step leaves its share to the others at once (a new stratum
  begins; the step's clock keeps running). Editing ``rollout.steps`` mid-run takes effect at the
  next step change.
* A guardrail warning (a point estimate beyond its margin, or a threshold currently exceeded) is
  the "harm signal": no step up, no shadow pass, no promotion of that challenger while it lasts.
* Sample sizes are planned once the champion has 1000 samples in the steps
  (:mod:`~modelrollout.policy.plans`); before that the steps wait (unless a challenger is already
  significantly better) and the sequential test has not started.
* Failed is reserved for a memory that no longer fits the spec (variants changed mid-run).
"""

from __future__ import annotations

from datetime import datetime

from modelrollout.api.spec import Goal, Method, ModelExperimentSpec, OnDataOutage, OnInconclusive
from modelrollout.api.status import ModelExperimentStatus, PauseReason, Phase, VariantDecision
from modelrollout.observations import Observations
from modelrollout.policy import analysis, checks, conditions, controls, counts, primary, steps, transitions
from modelrollout.policy.analysis import Assessment
from modelrollout.policy.context import Outcome, Tick, clean_numbers, fmt, joined, span
from modelrollout.policy.decision import Decision, Rule

#: Passes of the rules within one tick (a transition is followed by another pass).
MAX_PASSES = 8


def _hold(rule: Rule, reason: str, message: str, numbers: dict[str, float | None] | None = None) -> Outcome:
    return Outcome(rule, reason, message, clean_numbers(numbers or {}))


class _Pass:
    """One pass of the rules over the status, remembering the holds for the conditions."""

    def __init__(self, ctx: Tick, status: ModelExperimentStatus) -> None:
        self.ctx = ctx
        self.s = status
        self.flags = conditions.Flags()

    # --- entry ------------------------------------------------------------------------------------
    def run(self) -> Outcome:
        ctx, s = self.ctx, self.s
        found = controls.abort(ctx, s)
        if found is not None:
            return found
        errors = [*ctx.obs.spec_errors, *checks.spec_errors(ctx.spec)]
        if errors:
            text = "; ".join(f"{e.path}: {e.message}" for e in errors)
            self.flags.invalid_spec = text
            return _hold(
                Rule.INVALID_SPEC,
                "InvalidSpec",
                f"The spec is invalid, traffic does not move: {text}.",
                {"errors": len(errors)},
            )
        why = checks.variants_changed(ctx.spec, s)
        if why is not None:
            return transitions.fail(
                ctx,
                s,
                "VariantsChanged",
                f"The variants changed while the experiment ran ({why}); traffic is back at the champion "
                f"{ctx.champion}. Annotate modelrollout.io/retry to start over.",
            )
        for control in (controls.promote, controls.retry):
            found = control(ctx, s)
            if found is not None:
                return found
        if s.phase.terminal:
            reason, message = conditions.finish(s)
            return _hold(
                Rule.FINISHED, reason or s.phase.value, message or f"The experiment is {s.phase.value}."
            )
        found = controls.spec_pause(ctx, s)
        if found is not None:
            return found
        if s.phase is Phase.PENDING:
            return transitions.start(ctx, s)
        a = analysis.assess(ctx, s)
        self.flags.analysed = a.started
        if a.started:
            analysis.write_record(ctx, s, a)
        if a.unknown:
            self.flags.metrics_unavailable = (
                f"Unknown: {a.unknown_text()} ({s.consecutive_errors} tick(s) in a row, since "
                f"{s.data_outage_since.isoformat() if s.data_outage_since else 'now'})."
            )
        if a.srm is not None:
            self.flags.srm_checked = True
            if a.srm.mismatch:
                self.flags.srm = a.srm.summary
        if a.plan_problems:
            self.flags.invalid_spec = "; ".join(f"{e.path}: {e.message}" for e in a.plan_problems)
        if s.phase is Phase.PAUSED:
            return self._paused(a)
        if not a.started:
            return _hold(Rule.HOLD, "JustStarted", "The step has just begun; nothing observed yet.")
        if s.phase is Phase.SHADOWING:
            return self._shadowing(a)
        return self._progressing(a)

    # --- shared rules -----------------------------------------------------------------------------
    def _deadline(self) -> bool:
        s = self.s
        return s.started_at is not None and self.ctx.now >= s.started_at + self.ctx.max_duration

    def _outage_limit(self) -> bool:
        s, ctx = self.s, self.ctx
        analysis_spec = ctx.spec.analysis
        if s.consecutive_errors >= analysis_spec.max_consecutive_errors:
            return True
        return s.data_outage_since is not None and ctx.now - s.data_outage_since >= ctx.max_data_outage

    def _outage_numbers(self) -> dict[str, float | None]:
        s, ctx = self.s, self.ctx
        since = (ctx.now - s.data_outage_since).total_seconds() if s.data_outage_since else 0.0
        return {
            "consecutiveErrors": s.consecutive_errors,
            "maxConsecutiveErrors": ctx.spec.analysis.max_consecutive_errors,
            "outageSeconds": since,
            "maxDataOutageSeconds": ctx.max_data_outage.total_seconds(),
        }

    def _on_data_outage(self, a: Assessment) -> Outcome:
        ctx, s = self.ctx, self.s
        text = (
            f"Metrics unusable for {s.consecutive_errors} tick(s) over "
            f"{span(ctx.now - (s.data_outage_since or ctx.now))} ({a.unknown_text()})"
        )
        if ctx.spec.analysis.on_data_outage is OnDataOutage.PAUSE:
            return transitions.pause(
                ctx,
                s,
                PauseReason.DATA_OUTAGE,
                Rule.DATA_OUTAGE_PAUSE,
                f"{text}: paused (onDataOutage pause) until they return.",
                self._outage_numbers(),
            )
        return transitions.rollback(
            ctx,
            s,
            Rule.DATA_OUTAGE_ROLLBACK,
            "DataOutageRollback",
            f"{text}: rolled back to the champion {ctx.champion} (onDataOutage rollback).",
            self._outage_numbers(),
        )

    def _breach(self, a: Assessment) -> Outcome | None:
        breaches = a.breaches()
        if not breaches:
            return None
        losers = {c: "; ".join(ch.summary for ch in checks_) for c, checks_ in breaches.items()}
        numbers: dict[str, float | None] = {}
        for c, checks_ in breaches.items():
            for ch in checks_:
                for key, value in ch.numbers.items():
                    numbers[f"{c}.{ch.name}.{key}"] = value
        live_after = [c for c in self.ctx.live(self.s) if c not in losers]
        tail = (
            f"{joined(live_after)} go{'es' if len(live_after) == 1 else ''} on"
            if live_after
            else f"all traffic back to the champion {self.ctx.champion}"
        )
        message = (
            f"Guardrail breached: {'; '.join(losers.values())}; {joined(sorted(losers))} dropped, {tail}."
        )
        return transitions.drop(
            self.ctx, self.s, a.readings, losers, Rule.GUARDRAIL_BREACH, "GuardrailBreach", message, numbers
        )

    def _unavailable(self, a: Assessment) -> Outcome:
        if self._deadline():
            return self._inconclusive(a, trusted=False)
        return _hold(
            Rule.METRICS_UNAVAILABLE,
            "MetricsUnavailable",
            f"Holding: {a.unknown_text()} (unknown is neither a pass nor a failure).",
            self._outage_numbers(),
        )

    def _inconclusive(self, a: Assessment, *, trusted: bool, why: str = "") -> Outcome:
        ctx, s = self.ctx, self.s
        policy = ctx.spec.analysis.on_inconclusive
        why = why or f"no verdict after maxDuration {ctx.spec.analysis.max_duration}"
        numbers: dict[str, float | None] = {
            "elapsedSeconds": (ctx.now - s.started_at).total_seconds() if s.started_at else None,
            "maxDurationSeconds": ctx.max_duration.total_seconds(),
        }
        if policy is OnInconclusive.PAUSE:
            return transitions.pause(
                ctx,
                s,
                PauseReason.INCONCLUSIVE,
                Rule.INCONCLUSIVE,
                f"Inconclusive ({why}): paused (onInconclusive pause) until a human promotes, aborts or "
                "raises maxDuration.",
                numbers,
            )
        if policy is OnInconclusive.PROMOTE_IF_NON_INFERIOR and trusted:
            candidates = []
            for c in ctx.live(s):
                o = a.primary_of(c)
                if (
                    o is not None
                    and primary.non_inferior(ctx, o)
                    and not a.warnings(c)
                    and not a.decisive_worse(c)
                ):
                    candidates.append((o.sign * (o.difference or 0.0), c, o))
            if candidates:
                _, winner, o = max(candidates)
                gain_ci = o.gain_ci()
                low = gain_ci[0] if gain_ci is not None else None
                numbers.update({"gainLowerBound": low, "margin": ctx.spec.analysis.non_inferiority_margin})
                return transitions.promote(
                    ctx,
                    s,
                    winner,
                    Rule.INCONCLUSIVE,
                    "PromotedNonInferior",
                    f"Inconclusive ({why}), but {winner} is non-inferior: gain lower bound {fmt(low)} > "
                    f"-{fmt(ctx.spec.analysis.non_inferiority_margin)}; promoted (onInconclusive "
                    "promoteIfNonInferior).",
                    numbers,
                )
        note = ""
        if policy is OnInconclusive.PROMOTE_IF_NON_INFERIOR:
            note = (
                "; no challenger is shown non-inferior"
                if trusted
                else "; a held comparison shows no non-inferiority"
            )
        return transitions.rollback(
            ctx,
            s,
            Rule.INCONCLUSIVE,
            "Inconclusive",
            f"Inconclusive ({why}{note}): the champion {ctx.champion} keeps all the traffic "
            f"(onInconclusive {policy.value}).",
            numbers,
        )

    # --- phases -------------------------------------------------------------------------------------
    def _paused(self, a: Assessment) -> Outcome:
        ctx, s = self.ctx, self.s
        record = s.pause
        reason = record.reason if record is not None else PauseReason.SPEC
        if not ctx.spec.paused and reason is PauseReason.DATA_OUTAGE and a.started and not a.unknown:
            return transitions.resume(ctx, s, "The metrics are usable again: resumed after the outage pause.")
        if not ctx.spec.paused and reason is PauseReason.INCONCLUSIVE and not self._deadline():
            return transitions.resume(ctx, s, "maxDuration was raised: resumed after the inconclusive pause.")
        since = record.since.isoformat() if record is not None else "unknown"
        return _hold(Rule.PAUSED, reason.value, f"Paused ({reason.value}) since {since}; weights frozen.")

    def _shadowing(self, a: Assessment) -> Outcome:
        ctx, s = self.ctx, self.s
        if a.unknown and self._outage_limit():
            return self._on_data_outage(a)
        found = self._breach(a)
        if found is not None:
            return found
        failed = {d.challenger: d for d in a.divergence if d.failed}
        if failed:
            numbers: dict[str, float | None] = {}
            for d in failed.values():
                numbers.update(d.numbers)
            live_after = [c for c in ctx.live(s) if c not in failed]
            message = (
                f"Shadow failed: {'; '.join(d.summary for d in failed.values())}; "
                f"{joined(sorted(failed))} dropped"
                + (f", {joined(live_after)} go on." if live_after else ", the champion keeps the traffic.")
            )
            return transitions.drop(
                ctx,
                s,
                a.readings,
                {c: d.summary for c, d in failed.items()},
                Rule.SHADOW_FAILED,
                "ShadowFailed",
                message,
                numbers,
            )
        if a.unknown:
            return self._unavailable(a)
        if self._deadline():
            return self._inconclusive(
                a, trusted=False, why="the shadow phase did not pass before maxDuration"
            )
        started = s.shadow_started_at or s.started_at or ctx.now
        elapsed = ctx.now - started
        numbers = {
            "elapsedSeconds": elapsed.total_seconds(),
            "durationSeconds": ctx.shadow_duration.total_seconds(),
        }
        for d in a.divergence:
            numbers.update(d.numbers)
        if elapsed < ctx.shadow_duration:
            return _hold(
                Rule.HOLD,
                "Shadowing",
                f"Shadowing for {span(elapsed)} of {ctx.spec.shadow.duration}.",
                numbers,
            )
        live = ctx.live(s)
        measured = {d.challenger: d for d in a.divergence}
        unseen = []
        for c in live:
            guarded = all(g.seen for g in a.guardrails if g.challenger == c)
            compared = c in measured and measured[c].compared > 0
            if not guarded or (ctx.spec.shadow.divergence is not None and not compared):
                unseen.append(c)
        if unseen:
            return _hold(
                Rule.HOLD,
                "ShadowNoTraffic",
                f"Shadow duration reached, but no mirrored traffic seen yet for {joined(unseen)}.",
                numbers,
            )
        undecided = [c for c in live if c in measured and not measured[c].within]
        if undecided:
            return _hold(
                Rule.HOLD,
                "ShadowUndecided",
                "Divergence not yet surely within the bound: "
                + "; ".join(measured[c].summary for c in undecided)
                + ".",
                numbers,
            )
        if a.warnings():
            return _hold(
                Rule.HOLD,
                "GuardrailWarning",
                "Guardrail estimate beyond its margin: " + "; ".join(w.summary for w in a.warnings()) + ".",
                numbers,
            )
        summary = "; ".join(d.summary for d in a.divergence) or "guardrails within bounds"
        return transitions.shadow_passed(
            ctx,
            s,
            a.readings,
            f"Shadow passed after {span(elapsed)} ({summary}): step 0, {ctx.steps[0]} % of the traffic "
            f"to {joined(live)}.",
            numbers,
        )

    def _progressing(self, a: Assessment) -> Outcome:
        ctx, s = self.ctx, self.s
        spec = ctx.spec
        if a.unknown and self._outage_limit():
            return self._on_data_outage(a)
        found = self._breach(a)
        if found is not None:
            return found
        if a.unknown:
            return self._unavailable(a)
        if a.plan_problems:
            text = "; ".join(f"{e.path}: {e.message}" for e in a.plan_problems)
            return _hold(Rule.INVALID_SPEC, "InvalidSpec", f"Holding: {text}.")
        if a.srm is not None and a.srm.mismatch:
            if self._deadline():
                return self._inconclusive(a, trusted=False)
            return _hold(
                Rule.SAMPLE_RATIO_MISMATCH,
                "SampleRatioMismatch",
                f"Holding: {a.srm.summary}; the comparison cannot be trusted.",
                a.srm.numbers,
            )
        live = ctx.live(s)
        # g. worse: drop
        losers: dict[str, str] = {}
        numbers: dict[str, float | None] = {}
        rule = Rule.PRIMARY_WORSE
        for c in live:
            o = a.primary_of(c)
            if o is not None and o.verdict is VariantDecision.WORSE:
                losers[c] = analysis.verdict_text(ctx, o, self._planned_n())
                numbers.update(self._outcome_numbers(o))
        if not losers:
            for c in live:
                worse = a.decisive_worse(c)
                if worse:
                    rule = Rule.DECISIVE_METRIC_WORSE
                    losers[c] = "; ".join(
                        f"decisive {o.metric.name}: " + analysis.verdict_text(ctx, o, self._planned_n())
                        for o in worse
                    )
                    for o in worse:
                        numbers.update(self._outcome_numbers(o))
        if losers:
            live_after = [c for c in live if c not in losers]
            message = (
                f"Significantly worse: {'; '.join(f'{c} ({t})' for c, t in losers.items())}; dropped"
                + (
                    f", {joined(live_after)} go{'es' if len(live_after) == 1 else ''} on."
                    if live_after
                    else f", all traffic back to the champion {ctx.champion}."
                )
            )
            return transitions.drop(ctx, s, a.readings, losers, rule, rule.value, message, numbers)
        # h. promotion
        step = s.current_step or 0
        elapsed = ctx.now - (s.step_started_at or ctx.now)
        waited = elapsed >= ctx.min_step_duration
        ptype = spec.metrics.primary.metric_type
        step_n = min(
            counts.step_samples(s, spec.metrics.primary.name, v, ptype, step) for v in (ctx.champion, *live)
        )
        step_n_ok = step_n >= spec.rollout.min_samples_per_step
        winners: list[tuple[float, str, primary.MetricOutcome]] = []
        blocked: list[str] = []
        for c in live:
            o = a.primary_of(c)
            good = (
                (VariantDecision.BETTER, VariantDecision.NON_INFERIOR)
                if spec.analysis.goal is Goal.NON_INFERIORITY
                else (VariantDecision.BETTER,)
            )
            if o is not None and o.verdict in good:
                if a.warnings(c):
                    blocked.append(c)
                else:
                    winners.append((o.sign * (o.difference or 0.0), c, o))
        at_last = step >= ctx.last_step
        deadline = self._deadline()
        if winners and ((at_last and waited and step_n_ok) or deadline):
            _, winner, o = max(winners)
            others = [c for c in live if c != winner]
            verb = "non-inferior" if o.verdict is VariantDecision.NON_INFERIOR else "significantly better"
            message = (
                f"Promoted {winner}: {verb} ({analysis.verdict_text(ctx, o, self._planned_n())})"
                + (f" after {span(elapsed)} at step {step}" if not deadline or at_last else " at maxDuration")
                + (f"; {joined(others)} dropped." if others else ".")
            )
            return transitions.promote(
                ctx,
                s,
                winner,
                Rule.PRIMARY_BETTER,
                "NonInferior" if o.verdict is VariantDecision.NON_INFERIOR else "PrimaryBetter",
                message,
                self._outcome_numbers(o),
            )
        # i. maxDuration, or fixed and done
        if deadline:
            return self._inconclusive(a, trusted=True)
        if spec.analysis.method is Method.FIXED:
            outs = [a.primary_of(c) for c in live]
            if outs and all(o is not None and o.verdict is VariantDecision.INCONCLUSIVE for o in outs):
                return self._inconclusive(
                    a, trusted=True, why="the fixed-horizon test at the planned n is not significant"
                )
        # j. step clock
        plan = self._planned_n()
        run_n = min(counts.run_samples(s, spec.metrics.primary.name, v, ptype) for v in (ctx.champion, *live))
        target = steps.step_target(plan, step, len(ctx.steps)) if plan is not None else None
        numbers = {
            "step": step,
            "elapsedSeconds": elapsed.total_seconds(),
            "minStepSeconds": ctx.min_step_duration.total_seconds(),
            "samples": run_n,
            "targetSamples": target,
            "plannedN": plan,
            "stepSamples": step_n,
            "minSamplesPerStep": spec.rollout.min_samples_per_step,
        }
        if at_last:
            if winners:
                wait = "minStepDuration" if not waited else "minSamplesPerStep"
                return _hold(
                    Rule.HOLD,
                    f"WinnerWaitingFor{wait[0].upper()}{wait[1:]}",
                    f"{max(winners)[1]} has its verdict; promotion waits for {wait} at the last "
                    f"step ({span(elapsed)} of {spec.rollout.min_step_duration}"
                    + (
                        f", {fmt(step_n, 6)} of {spec.rollout.min_samples_per_step} samples)."
                        if spec.rollout.min_samples_per_step
                        else ")."
                    ),
                    numbers,
                )
            if blocked:
                return _hold(
                    Rule.HOLD,
                    "GuardrailWarning",
                    f"{joined(blocked)} would be promoted, but a guardrail estimate is beyond its margin: "
                    + "; ".join(w.summary for w in a.warnings())
                    + ".",
                    numbers,
                )
            return _hold(
                Rule.HOLD,
                "WaitingForVerdict",
                f"At the last step ({ctx.steps[step]} %), waiting for a verdict: "
                + "; ".join(analysis.verdict_text(ctx, a.primary_of(c), plan) for c in live)
                + ".",
                numbers,
            )
        if not waited:
            return _hold(
                Rule.HOLD,
                "WaitingForMinStepDuration",
                f"Step {step} has run {span(elapsed)} of {spec.rollout.min_step_duration}.",
                numbers,
            )
        if not step_n_ok:
            return _hold(
                Rule.HOLD,
                "WaitingForMinSamplesPerStep",
                f"Step {step} has {fmt(step_n, 6)} of {spec.rollout.min_samples_per_step} samples "
                "per variant.",
                numbers,
            )
        if a.warnings():
            return _hold(
                Rule.HOLD,
                "GuardrailWarning",
                "Guardrail estimate beyond its margin, not stepping up: "
                + "; ".join(w.summary for w in a.warnings())
                + ".",
                numbers,
            )
        if not winners:
            if target is None:
                return _hold(
                    Rule.HOLD,
                    "WaitingForPlan",
                    "Waiting for the champion's value to plan the sample size "
                    f"({round(run_n):,} samples so far).",
                    numbers,
                )
            if run_n < target:
                return _hold(
                    Rule.HOLD,
                    "WaitingForSamples",
                    f"Step {step} waits for its share of the planned n: {fmt(run_n, 6)} of {target} samples "
                    "per variant.",
                    numbers,
                )
        nxt = ctx.steps[step + 1]
        why = (
            "a challenger is already significantly better"
            if winners
            else f"{fmt(run_n, 6)} of {target} samples"
        )
        return transitions.advance(
            ctx,
            s,
            a.readings,
            f"Step {step} -> {step + 1}: {nxt} % of the traffic to {joined(live)} after {span(elapsed)} "
            f"({why}).",
            numbers,
        )

    # --- helpers --------------------------------------------------------------------------------------
    def _planned_n(self) -> int | None:
        plan = self.s.plans.get(self.ctx.spec.metrics.primary.name)
        return plan.n if plan is not None else None

    def _outcome_numbers(self, o: primary.MetricOutcome) -> dict[str, float | None]:
        gain_ci = o.gain_ci()
        prefix = f"{o.challenger}.{o.metric.name}"
        return {
            f"{prefix}.estimate": o.challenger_value,
            f"{prefix}.championEstimate": o.champion_value,
            f"{prefix}.difference": o.difference,
            f"{prefix}.relativeLift": o.relative_lift(),
            f"{prefix}.gainLow": gain_ci[0] if gain_ci else None,
            f"{prefix}.gainHigh": gain_ci[1] if gain_ci else None,
            f"{prefix}.pValue": o.p_adjusted if o.p_adjusted is not None else o.p_value,
            f"{prefix}.eValue": o.e_value,
            f"{prefix}.probability": o.probability,
            f"{prefix}.n": o.n_challenger,
            f"{prefix}.championN": o.n_champion,
            "plannedN": self._planned_n(),
        }


def decide(
    spec: ModelExperimentSpec,
    status: ModelExperimentStatus,
    observations: Observations,
    now: datetime,
) -> Decision:
    """Decide one tick. Pure: no I/O, no clock of its own; ``status`` is not modified.

    Parameters
    ----------
    spec
        The experiment's spec.
    status
        The status as last written (the loop's memory).
    observations
        What this tick observed (cumulative counts since the experiment started).
    now
        The tick's time (timezone-aware).

    Returns
    -------
    Decision
        The new status, the routes derived from it, the rule that fired with its numbers, and
        the Events to emit.
    """
    s = status.model_copy(deep=True)
    new_tick = s.last_tick_at is None or now > s.last_tick_at
    if new_tick:
        s.last_tick_at = now
    if observations.generation is not None:
        s.observed_generation = observations.generation
    ctx = Tick(spec=spec, obs=observations, now=now, new_tick=new_tick)
    first: Outcome | None = None
    last: Outcome | None = None
    flags = conditions.Flags()
    analysed: conditions.Flags | None = None
    for _ in range(MAX_PASSES):
        one = _Pass(ctx, s)
        last = one.run()
        flags = one.flags
        if flags.analysed:
            analysed = flags
        if not last.transition:
            break
        if first is None or s.phase.terminal:
            first = last
    if not flags.analysed and analysed is not None:
        # The tick's last pass did not look at the metrics (it finished, say): the conditions
        # about the metrics report what the last pass that did look found.
        flags.analysed = True
        flags.metrics_unavailable = analysed.metrics_unavailable
        flags.srm, flags.srm_checked = analysed.srm, analysed.srm_checked
    assert last is not None
    conditions.refresh(ctx, s, flags, last)
    chosen = first or last
    return Decision(
        status=s,
        routes=steps.routes_for(spec, s),
        rule=chosen.rule,
        reason=chosen.reason,
        message=chosen.message,
        numbers=dict(chosen.numbers),
        events=tuple(ctx.events),
    )
