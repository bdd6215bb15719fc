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
      at the last step below 100, with no guardrail warning and no novelty effect (a challenger
      whose lift decays, :mod:`~modelrollout.policy.novelty`). A significant win before that
      speeds the steps up (they no longer wait for their share of the planned n) but does not
      skip them. At ``maxDuration`` such a winner is promoted at once. A promotion also waits
      for ``analysis.minDuration`` of live traffic (counted from the start of the first step):
      the hold ``MinDurationNotReached`` says how long is left. It delays nothing else: rules
      a-g (rollbacks, guardrails, holds) apply as before. At ``maxDuration`` short of
      ``minDuration`` (a shadow phase used the difference), ``onInconclusive`` applies, without
      promoting.
   i. **maxDuration** without a verdict, or the one look of ``fixed`` inconclusive for every live
      challenger, applies ``onInconclusive``: keepChampion rolls back; promoteIfNonInferior
      promotes the best challenger shown non-inferior within ``nonInferiorityMargin`` (else rolls
      back); pause pauses until ``maxDuration`` is raised or a human acts (after the one look of
      ``fixed``, only a human's promote or abort: another look would void its error rate). A hold
      (outage, SRM) does not outlive ``maxDuration``: it applies ``onInconclusive`` too, where
      promoteIfNonInferior can only keep the champion (a held comparison shows nothing).
   i2. **NoveltyEffect**: at the last step, a challenger that would be promoted but whose lift
      decays holds the promotion, with the early and recent lifts and the decay's p-value; at
      ``maxDuration`` it is not promoted (``onInconclusive`` applies, without promoting it).
   j. **Step clock**: below the last step, advance when the step has lasted ``minStepDuration``,
      has ``minSamplesPerStep`` samples per live variant (summed over the step's strata), the run
      has its share of the planned n (every live variant has ``ceil(plannedN * (k + 1) / (S - 1))``
      samples since step 0, ``S`` steps; or a challenger is already significantly better), and no
      guardrail warns.
   k. Otherwise **hold**, saying what the step waits for.

   A paused experiment is analysed too (its record and statistics stay current), but only
   resumes: from an outage pause when the metrics are usable again, from an inconclusive pause
   at ``maxDuration`` when ``maxDuration`` has been raised past now.

The code follows this list: each rule is a short function that returns an :class:`Outcome` or
None, and the tables ``_ENTRY_RULES`` (0-6), ``_SHADOW_GATES`` and ``_PROGRESS_GATES`` (7a-7f) and
``_STEP_RULES`` (7g-7k) hold them in this order; the first that fires wins. A step's rules read one
frozen :class:`StepView` (its time, samples, winners and plan) computed once per pass, and the
sentences come from :mod:`~modelrollout.policy.messages`.

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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from modelrollout.api.observations import Observations
from modelrollout.api.spec import (
    Goal,
    Method,
    ModelExperimentSpec,
    OnDataOutage,
    OnInconclusive,
    OnSegmentHarm,
)
from modelrollout.api.status import ModelExperimentStatus, PauseReason, Phase, VariantDecision
from modelrollout.policy import (
    analysis,
    checks,
    conditions,
    controls,
    counts,
    messages,
    primary,
    steps,
    transitions,
)
from modelrollout.policy.analysis import Assessment
from modelrollout.policy.context import Outcome, Tick, clean_numbers, fmt, span
from modelrollout.policy.decision import Decision, Rule
from modelrollout.policy.shadow import DivergenceCheck

#: Passes of the rules within one tick (a transition is followed by another pass).
MAX_PASSES = 8

Numbers = dict[str, float | None]


def _hold(rule: Rule, reason: str, message: str, numbers: Numbers | None = None) -> Outcome:
    return Outcome(rule, reason, message, clean_numbers(numbers or {}))


def _wait(reason: str, message: str, numbers: Numbers) -> Outcome:
    return _hold(Rule.HOLD, reason, message, numbers)


class _Pass:
    """One pass of the rules over the status, remembering the holds for the conditions."""

    def __init__(self, ctx: Tick, status: ModelExperimentStatus) -> None:
        self.ctx = ctx
        self.s = status
        self.flags = conditions.Flags()

    def run(self) -> Outcome:
        found = _first(_ENTRY_RULES, self)
        if found is not None:
            return found
        a = self.assess()
        if self.s.phase is Phase.PAUSED:
            return _paused(self, a)
        if not a.started:
            return _hold(Rule.HOLD, "JustStarted", "The step has just begun; nothing observed yet.")
        if self.s.phase is Phase.SHADOWING:
            found = _first(_SHADOW_GATES, self, a)
            return found if found is not None else _shadow_clock(self, a, ShadowView.of(self, a))
        found = _first(_PROGRESS_GATES, self, a)
        if found is not None:
            return found
        view = StepView.of(self, a)
        found = _first(_STEP_RULES, self, a, view)
        return found if found is not None else _advance(self, a, view)

    def assess(self) -> Assessment:
        """Analyse the tick and note the holds it found for the conditions."""
        ctx, s = self.ctx, self.s
        a = analysis.assess(ctx, s)
        self.flags.analysed = a.started
        if a.started:
            analysis.write_record(ctx, s, a)
        if a.unknown:
            since = s.data_outage_since.isoformat() if s.data_outage_since else "now"
            self.flags.metrics_unavailable = messages.metrics_unknown(
                a.unknown_text(), s.consecutive_errors, since
            )
        if a.srm is not None:
            self.flags.srm_checked = True
            if a.srm.mismatch:
                self.flags.srm = a.srm.summary
        if a.plan_problems:
            self.flags.invalid_spec = messages.spec_errors(a.plan_problems)
        return a

    # --- what several rules ask -------------------------------------------------------------------
    def deadline(self) -> bool:
        s = self.s
        return s.started_at is not None and self.ctx.now >= s.started_at + self.ctx.max_duration

    def outage_limit(self) -> bool:
        s, ctx = self.s, self.ctx
        if s.consecutive_errors >= ctx.spec.analysis.max_consecutive_errors:
            return True
        return s.data_outage_since is not None and ctx.now - s.data_outage_since >= ctx.max_data_outage

    def outage_numbers(self) -> Numbers:
        s, ctx = self.s, self.ctx
        since = (ctx.now - s.data_outage_since).total_seconds() if s.data_outage_since else 0.0
        return {
            "consecutiveErrors": s.consecutive_errors,
            "maxConsecutiveErrors": ctx.spec.analysis.max_consecutive_errors,
            "outageSeconds": since,
            "maxDataOutageSeconds": ctx.max_data_outage.total_seconds(),
        }

    def planned_n(self) -> int | None:
        plan = self.s.plans.get(self.ctx.spec.metrics.primary.name)
        return plan.n if plan is not None else None

    def verdict(self, o: primary.MetricOutcome | None) -> str:
        return analysis.verdict_text(self.ctx, o, self.planned_n())

    def outcome_numbers(self, o: primary.MetricOutcome) -> Numbers:
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
            "plannedN": self.planned_n(),
        }


def _first(rules: Sequence[Callable[..., Outcome | None]], *args: object) -> Outcome | None:
    """The outcome of the first rule that fires, in the table's order."""
    for rule in rules:
        found = rule(*args)
        if found is not None:
            return found
    return None


# --- 0-6: before the analysis ---------------------------------------------------------------------
def _abort(p: _Pass) -> Outcome | None:
    return controls.abort(p.ctx, p.s)


def _invalid_spec(p: _Pass) -> Outcome | None:
    errors = [*p.ctx.obs.spec_errors, *checks.spec_errors(p.ctx.spec)]
    if not errors:
        return None
    text = messages.spec_errors(errors)
    p.flags.invalid_spec = text
    return _hold(Rule.INVALID_SPEC, "InvalidSpec", messages.invalid_spec(text), {"errors": len(errors)})


def _variants_changed(p: _Pass) -> Outcome | None:
    why = checks.variants_changed(p.ctx.spec, p.s)
    if why is None:
        return None
    return transitions.fail(p.ctx, p.s, "VariantsChanged", messages.variants_changed(why, p.ctx.champion))


def _promote_annotation(p: _Pass) -> Outcome | None:
    return controls.promote(p.ctx, p.s)


def _retry_annotation(p: _Pass) -> Outcome | None:
    return controls.retry(p.ctx, p.s)


def _finished(p: _Pass) -> Outcome | None:
    s = p.s
    if not s.phase.terminal:
        return None
    reason, message = conditions.finish(s)
    return _hold(Rule.FINISHED, reason or s.phase.value, message or f"The experiment is {s.phase.value}.")


def _spec_pause(p: _Pass) -> Outcome | None:
    return controls.spec_pause(p.ctx, p.s)


def _pending(p: _Pass) -> Outcome | None:
    return transitions.start(p.ctx, p.s) if p.s.phase is Phase.PENDING else None


_ENTRY_RULES: tuple[Callable[[_Pass], Outcome | None], ...] = (
    _abort,
    _invalid_spec,
    _variants_changed,
    _promote_annotation,
    _retry_annotation,
    _finished,
    _spec_pause,
    _pending,
)


def _paused(p: _Pass, a: Assessment) -> Outcome:
    ctx, s = p.ctx, p.s
    record = s.pause
    reason = record.reason if record is not None else PauseReason.SPEC
    if not ctx.spec.paused and reason is PauseReason.DATA_OUTAGE and a.started and not a.unknown:
        return transitions.resume(ctx, s, "The metrics are usable again: resumed after the outage pause.")
    raised = reason is PauseReason.INCONCLUSIVE and record is not None and not record.fixed_look
    if not ctx.spec.paused and raised and not p.deadline():
        return transitions.resume(ctx, s, "maxDuration was raised: resumed after the inconclusive pause.")
    since = record.since.isoformat() if record is not None else "unknown"
    return _hold(Rule.PAUSED, reason.value, messages.paused(reason.value, since))


# --- 7a-7f: the gates of Shadowing and Progressing ------------------------------------------------
def _outage_limit(p: _Pass, a: Assessment) -> Outcome | None:
    """a. A needed metric unknown for too long applies onDataOutage."""
    if not (a.unknown and p.outage_limit()):
        return None
    ctx, s = p.ctx, p.s
    text = messages.outage(s.consecutive_errors, ctx.now - (s.data_outage_since or ctx.now), a.unknown_text())
    if ctx.spec.analysis.on_data_outage is OnDataOutage.PAUSE:
        return transitions.pause(
            ctx,
            s,
            PauseReason.DATA_OUTAGE,
            Rule.DATA_OUTAGE_PAUSE,
            messages.outage_paused(text),
            p.outage_numbers(),
        )
    return transitions.rollback(
        ctx,
        s,
        Rule.DATA_OUTAGE_ROLLBACK,
        "DataOutageRollback",
        messages.outage_rolled_back(text, ctx.champion),
        p.outage_numbers(),
    )


def _breach(p: _Pass, a: Assessment) -> Outcome | None:
    """b. A breached guardrail drops its challenger in this tick."""
    breaches = a.breaches()
    if not breaches:
        return None
    losers = {c: "; ".join(ch.summary for ch in found) for c, found in breaches.items()}
    numbers: Numbers = {
        f"{c}.{ch.name}.{key}": value
        for c, found in breaches.items()
        for ch in found
        for key, value in ch.numbers.items()
    }
    live_after = [c for c in p.ctx.live(p.s) if c not in losers]
    message = messages.guardrail_breached(losers.values(), losers, live_after, p.ctx.champion)
    return transitions.drop(
        p.ctx, p.s, a.readings, losers, Rule.GUARDRAIL_BREACH, "GuardrailBreach", message, numbers
    )


def _segment_harm(p: _Pass, a: Assessment) -> Outcome | None:
    """b2. A protected segment found harmed drops its challenger (onSegmentHarm rollback) or holds
    the rollout where it is (hold) until a person decides; a hold does not outlive maxDuration."""
    harmed = a.harmed()
    segments = p.ctx.spec.metrics.segments
    if not harmed or segments is None:
        return None
    losers = {c: "; ".join(check.summary for check in found) for c, found in harmed.items()}
    numbers: Numbers = {}
    for found in harmed.values():
        for check in found:
            numbers.update(check.numbers)
    if segments.on_segment_harm is OnSegmentHarm.HOLD:
        if p.deadline():
            return _inconclusive(p, a, trusted=False, why="a protected segment is harmed")
        message = messages.holding_segment_harm(losers.values())
        return _hold(Rule.SEGMENT_HARM, "SegmentHarm", message, numbers)
    live_after = [c for c in p.ctx.live(p.s) if c not in losers]
    message = messages.segment_harmed(losers.values(), losers, live_after, p.ctx.champion)
    return transitions.drop(
        p.ctx, p.s, a.readings, losers, Rule.SEGMENT_HARM, "SegmentHarm", message, numbers
    )


def _shadow_failed(p: _Pass, a: Assessment) -> Outcome | None:
    """c. A challenger whose divergence is surely above the bound is dropped."""
    failed = {d.challenger: d for d in a.divergence if d.failed}
    if not failed:
        return None
    numbers: Numbers = {}
    for d in failed.values():
        numbers.update(d.numbers)
    live_after = [c for c in p.ctx.live(p.s) if c not in failed]
    message = messages.shadow_failed((d.summary for d in failed.values()), failed, live_after)
    losers = {c: d.summary for c, d in failed.items()}
    return transitions.drop(
        p.ctx, p.s, a.readings, losers, Rule.SHADOW_FAILED, "ShadowFailed", message, numbers
    )


def _unavailable(p: _Pass, a: Assessment) -> Outcome | None:
    """d. A needed metric unknown holds; a hold does not outlive maxDuration."""
    if not a.unknown:
        return None
    if p.deadline():
        return _inconclusive(p, a, trusted=False)
    return _hold(
        Rule.METRICS_UNAVAILABLE,
        "MetricsUnavailable",
        messages.holding_unknown(a.unknown_text()),
        p.outage_numbers(),
    )


def _shadow_deadline(p: _Pass, a: Assessment) -> Outcome | None:
    if not p.deadline():
        return None
    return _inconclusive(p, a, trusted=False, why="the shadow phase did not pass before maxDuration")


def _plan_impossible(p: _Pass, a: Assessment) -> Outcome | None:
    """e. An MDE that cannot be planned at the champion's value holds as InvalidSpec."""
    if not a.plan_problems:
        return None
    return _hold(
        Rule.INVALID_SPEC, "InvalidSpec", messages.holding_plan(messages.spec_errors(a.plan_problems))
    )


def _sample_ratio_mismatch(p: _Pass, a: Assessment) -> Outcome | None:
    """f. A sample ratio mismatch holds: the comparison cannot be trusted."""
    if a.srm is None or not a.srm.mismatch:
        return None
    if p.deadline():
        return _inconclusive(p, a, trusted=False)
    return _hold(
        Rule.SAMPLE_RATIO_MISMATCH, "SampleRatioMismatch", messages.holding_srm(a.srm.summary), a.srm.numbers
    )


def _segment_sample_ratio(p: _Pass, a: Assessment) -> Outcome | None:
    """f2. A protected segment whose split differs from the rest's holds: an assignment bug there."""
    found = [s for s in a.segment_srm if s.mismatch]
    if not found:
        return None
    if p.deadline():
        return _inconclusive(p, a, trusted=False)
    numbers: Numbers = {f"{s.challenger}.{s.value}.srmPValue": s.p_value for s in found}
    message = messages.holding_segment_srm(s.summary for s in found)
    return _hold(Rule.SAMPLE_RATIO_MISMATCH, "SegmentSampleRatioMismatch", message, numbers)


_Gate = Callable[[_Pass, Assessment], Outcome | None]
_SHADOW_GATES: tuple[_Gate, ...] = (_outage_limit, _breach, _shadow_failed, _unavailable, _shadow_deadline)
_PROGRESS_GATES: tuple[_Gate, ...] = (
    _outage_limit,
    _breach,
    _segment_harm,
    _unavailable,
    _plan_impossible,
    _sample_ratio_mismatch,
    _segment_sample_ratio,
)


# --- the shadow phase's clock ---------------------------------------------------------------------
@dataclass(frozen=True)
class ShadowView:
    """What the shadow phase's last rules look at, computed once."""

    live: tuple[str, ...]
    elapsed: timedelta
    numbers: Numbers
    measured: dict[str, DivergenceCheck]

    @classmethod
    def of(cls, p: _Pass, a: Assessment) -> ShadowView:
        ctx, s = p.ctx, p.s
        elapsed = ctx.now - (s.shadow_started_at or s.started_at or ctx.now)
        numbers: Numbers = {
            "elapsedSeconds": elapsed.total_seconds(),
            "durationSeconds": ctx.shadow_duration.total_seconds(),
        }
        for d in a.divergence:
            numbers.update(d.numbers)
        return cls(ctx.live(s), elapsed, numbers, {d.challenger: d for d in a.divergence})


def _shadow_clock(p: _Pass, a: Assessment, v: ShadowView) -> Outcome:
    """The shadow phase passes once it has lasted, every challenger was seen, the divergence is
    surely within its bound and no guardrail warns."""
    ctx = p.ctx
    if v.elapsed < ctx.shadow_duration:
        return _wait("Shadowing", messages.shadowing(v.elapsed, ctx.spec.shadow.duration), v.numbers)
    unseen = [c for c in v.live if not _shadow_seen(p, a, v, c)]
    if unseen:
        return _wait("ShadowNoTraffic", messages.shadow_no_traffic(unseen), v.numbers)
    undecided = [v.measured[c].summary for c in v.live if c in v.measured and not v.measured[c].within]
    if undecided:
        return _wait("ShadowUndecided", messages.shadow_undecided(undecided), v.numbers)
    if a.warnings():
        return _wait(
            "GuardrailWarning", messages.guardrail_warning(w.summary for w in a.warnings()), v.numbers
        )
    summary = "; ".join(d.summary for d in a.divergence) or "guardrails within bounds"
    return transitions.shadow_passed(
        ctx, p.s, a.readings, messages.shadow_passed(v.elapsed, summary, ctx.steps[0], v.live), v.numbers
    )


def _shadow_seen(p: _Pass, a: Assessment, v: ShadowView, challenger: str) -> bool:
    """Every guardrail saw the challenger's mirrored traffic, and the divergence compared some."""
    guarded = all(g.seen for g in a.guardrails if g.challenger == challenger)
    compared = challenger in v.measured and v.measured[challenger].compared > 0
    return guarded and (p.ctx.spec.shadow.divergence is None or compared)


# --- 7g-7k: the step --------------------------------------------------------------------------------
Winner = tuple[float, str, primary.MetricOutcome]


@dataclass(frozen=True)
class StepView:
    """What the rules of a Progressing step look at, computed once per pass."""

    live: tuple[str, ...]
    step: int
    elapsed: timedelta
    waited: bool  # the step has lasted minStepDuration
    step_n: float  # the fewest samples of a live variant in this step
    step_n_ok: bool  # ... and that is minSamplesPerStep
    winners: tuple[Winner, ...]  # significantly better (or non-inferior), no guardrail warning
    blocked: tuple[str, ...]  # would win, but a guardrail warns
    novel: tuple[str, ...]  # would win, but its lift decays (novelty effect)
    live_elapsed: timedelta  # since the first step began (the clock of minDuration)
    min_duration: timedelta  # analysis.minDuration (0 when unset)
    at_last: bool  # at the last step below 100
    deadline: bool  # maxDuration reached
    plan: int | None  # the planned n per variant
    run_n: float  # the fewest samples of a live variant since step 0
    target: int | None  # the samples this step waits for (its share of the plan)

    @classmethod
    def of(cls, p: _Pass, a: Assessment) -> StepView:
        ctx, s = p.ctx, p.s
        live = ctx.live(s)
        step = s.current_step or 0
        elapsed = ctx.now - (s.step_started_at or ctx.now)
        name, kind = ctx.spec.metrics.primary.name, ctx.spec.metrics.primary.metric_type
        variants = (ctx.champion, *live)
        step_n = min(counts.step_samples(s, name, v, kind, step) for v in variants)
        winners, blocked, novel = _winners(p, a, live)
        plan = p.planned_n()
        first = s.strata[0].started_at if s.strata else ctx.now
        return cls(
            live=live,
            step=step,
            elapsed=elapsed,
            waited=elapsed >= ctx.min_step_duration,
            step_n=step_n,
            step_n_ok=step_n >= ctx.spec.rollout.min_samples_per_step,
            winners=winners,
            blocked=blocked,
            novel=novel,
            live_elapsed=ctx.now - first,
            min_duration=ctx.min_duration,
            at_last=step >= ctx.last_step,
            deadline=p.deadline(),
            plan=plan,
            run_n=min(counts.run_samples(s, name, v, kind) for v in variants),
            target=steps.step_target(plan, step, len(ctx.steps)) if plan is not None else None,
        )

    @property
    def min_duration_passed(self) -> bool:
        return self.live_elapsed >= self.min_duration

    def numbers(self, p: _Pass) -> Numbers:
        return {
            "step": self.step,
            "elapsedSeconds": self.elapsed.total_seconds(),
            "minStepSeconds": p.ctx.min_step_duration.total_seconds(),
            "samples": self.run_n,
            "targetSamples": self.target,
            "plannedN": self.plan,
            "stepSamples": self.step_n,
            "minSamplesPerStep": p.ctx.spec.rollout.min_samples_per_step,
        }


def _winners(
    p: _Pass, a: Assessment, live: Sequence[str]
) -> tuple[tuple[Winner, ...], tuple[str, ...], tuple[str, ...]]:
    good: tuple[VariantDecision, ...] = (VariantDecision.BETTER,)
    if p.ctx.spec.analysis.goal is Goal.NON_INFERIORITY:
        good = (VariantDecision.BETTER, VariantDecision.NON_INFERIOR)
    winners: list[Winner] = []
    blocked: list[str] = []
    novel: list[str] = []
    for c in live:
        o = a.primary_of(c)
        if o is None or o.verdict not in good:
            continue
        if a.warnings(c):
            blocked.append(c)
        elif a.decaying(c) is not None:
            novel.append(c)
        else:
            winners.append((o.sign * (o.difference or 0.0), c, o))
    return tuple(winners), tuple(blocked), tuple(novel)


def _worse(p: _Pass, a: Assessment, v: StepView) -> Outcome | None:
    """g. Significantly worse on the primary metric (else on a decisive secondary): dropped."""
    losers: dict[str, str] = {}
    numbers: Numbers = {}
    rule = Rule.PRIMARY_WORSE
    for c in v.live:
        o = a.primary_of(c)
        if o is not None and o.verdict is VariantDecision.WORSE:
            losers[c] = p.verdict(o)
            numbers.update(p.outcome_numbers(o))
    if not losers:
        rule = Rule.DECISIVE_METRIC_WORSE
        for c in v.live:
            worse = a.decisive_worse(c)
            if worse:
                losers[c] = "; ".join(f"decisive {o.metric.name}: " + p.verdict(o) for o in worse)
                for o in worse:
                    numbers.update(p.outcome_numbers(o))
    if not losers:
        return None
    live_after = [c for c in v.live if c not in losers]
    message = messages.significantly_worse(losers, live_after, p.ctx.champion)
    return transitions.drop(p.ctx, p.s, a.readings, losers, rule, rule.value, message, numbers)


def _promotion(p: _Pass, a: Assessment, v: StepView) -> Outcome | None:
    """h. The best winner is promoted at the last step once it has waited, or at maxDuration."""
    if not v.winners or not ((v.at_last and v.waited and v.step_n_ok) or v.deadline):
        return None
    _, winner, o = max(v.winners)
    if not v.min_duration_passed:
        return _min_duration(p, a, v, winner, o)
    non_inferior = o.verdict is VariantDecision.NON_INFERIOR
    when = (
        f" after {span(v.elapsed)} at step {v.step}" if not v.deadline or v.at_last else (" at maxDuration")
    )
    message = messages.promoted(
        winner,
        "non-inferior" if non_inferior else "significantly better",
        p.verdict(o),
        when,
        [c for c in v.live if c != winner],
    )
    reason = "NonInferior" if non_inferior else "PrimaryBetter"
    return transitions.promote(p.ctx, p.s, winner, Rule.PRIMARY_BETTER, reason, message, p.outcome_numbers(o))


def _min_duration(p: _Pass, a: Assessment, v: StepView, winner: str, o: primary.MetricOutcome) -> Outcome:
    """h. A promotion waits for analysis.minDuration of live traffic; at maxDuration short of it,
    onInconclusive applies without promoting."""
    min_duration = p.ctx.spec.analysis.min_duration or "0s"
    if v.deadline:
        why = messages.min_duration_unmet(v.live_elapsed, min_duration)
        return _inconclusive(p, a, trusted=False, why=why)
    left = v.min_duration - v.live_elapsed
    numbers = {
        **v.numbers(p),
        **p.outcome_numbers(o),
        "liveSeconds": v.live_elapsed.total_seconds(),
        "minDurationSeconds": v.min_duration.total_seconds(),
        "remainingSeconds": left.total_seconds(),
    }
    message = messages.min_duration_waiting(winner, p.verdict(o), v.live_elapsed, min_duration, left)
    return _wait("MinDurationNotReached", message, numbers)


def _novelty_numbers(a: Assessment, novel: Sequence[str]) -> Numbers:
    numbers: Numbers = {}
    for c in novel:
        check = a.decaying(c)
        if check is not None:
            numbers.update(check.numbers)
    return numbers


def _max_duration(p: _Pass, a: Assessment, v: StepView) -> Outcome | None:
    """i. maxDuration without a verdict applies onInconclusive."""
    if not v.deadline:
        return None
    if v.novel:
        why = messages.novelty_at_deadline(c.summary for c in map(a.decaying, v.novel) if c is not None)
        return _inconclusive(p, a, trusted=True, why=why)
    return _inconclusive(p, a, trusted=True)


def _novelty_effect(p: _Pass, a: Assessment, v: StepView) -> Outcome:
    """i2. At the last step, a winner whose lift decays holds the promotion."""
    checks = [c for c in map(a.decaying, v.novel) if c is not None]
    message = messages.novelty_holding(c.summary for c in checks)
    return _wait("NoveltyEffect", message, {**v.numbers(p), **_novelty_numbers(a, v.novel)})


def _fixed_done(p: _Pass, a: Assessment, v: StepView) -> Outcome | None:
    """i. The one look of ``fixed``, inconclusive for every live challenger, applies onInconclusive."""
    if p.ctx.spec.analysis.method is not Method.FIXED:
        return None
    outs = [a.primary_of(c) for c in v.live]
    if not outs or not all(o is not None and o.verdict is VariantDecision.INCONCLUSIVE for o in outs):
        return None
    why = "the fixed-horizon test at the planned n is not significant"
    return _inconclusive(p, a, trusted=True, why=why, fixed_look=True)


def _last_step(p: _Pass, a: Assessment, v: StepView) -> Outcome | None:
    """j. At the last step below 100 the experiment waits: for the winner's time, or a verdict."""
    if not v.at_last:
        return None
    rollout = p.ctx.spec.rollout
    if v.winners:
        wait = "minStepDuration" if not v.waited else "minSamplesPerStep"
        message = messages.winner_waiting(
            max(v.winners)[1],
            wait,
            v.elapsed,
            rollout.min_step_duration,
            v.step_n,
            rollout.min_samples_per_step,
        )
        return _wait(f"WinnerWaitingFor{wait[0].upper()}{wait[1:]}", message, v.numbers(p))
    if v.blocked:
        message = messages.promotion_blocked(v.blocked, (w.summary for w in a.warnings()))
        return _wait("GuardrailWarning", message, v.numbers(p))
    if v.novel:
        return _novelty_effect(p, a, v)
    verdicts = (analysis.verdict_text(p.ctx, a.primary_of(c), v.plan) for c in v.live)
    return _wait(
        "WaitingForVerdict", messages.waiting_for_verdict(p.ctx.steps[v.step], verdicts), v.numbers(p)
    )


def _min_step_duration(p: _Pass, a: Assessment, v: StepView) -> Outcome | None:
    if v.waited:
        return None
    message = messages.waiting_for_min_step(v.step, v.elapsed, p.ctx.spec.rollout.min_step_duration)
    return _wait("WaitingForMinStepDuration", message, v.numbers(p))


def _min_samples(p: _Pass, a: Assessment, v: StepView) -> Outcome | None:
    if v.step_n_ok:
        return None
    message = messages.waiting_for_min_samples(v.step, v.step_n, p.ctx.spec.rollout.min_samples_per_step)
    return _wait("WaitingForMinSamplesPerStep", message, v.numbers(p))


def _guardrail_warning(p: _Pass, a: Assessment, v: StepView) -> Outcome | None:
    if not a.warnings():
        return None
    message = messages.guardrail_warning((w.summary for w in a.warnings()), stepping=True)
    return _wait("GuardrailWarning", message, v.numbers(p))


def _planned_share(p: _Pass, a: Assessment, v: StepView) -> Outcome | None:
    """The step waits for its share of the planned n, unless a challenger already wins."""
    if v.winners:
        return None
    if v.target is None:
        return _wait("WaitingForPlan", messages.waiting_for_plan(v.run_n), v.numbers(p))
    if v.run_n < v.target:
        return _wait(
            "WaitingForSamples", messages.waiting_for_samples(v.step, v.run_n, v.target), v.numbers(p)
        )
    return None


_STEP_RULES: tuple[Callable[[_Pass, Assessment, StepView], Outcome | None], ...] = (
    _worse,
    _promotion,
    _max_duration,
    _fixed_done,
    _last_step,
    _min_step_duration,
    _min_samples,
    _guardrail_warning,
    _planned_share,
)


def _advance(p: _Pass, a: Assessment, v: StepView) -> Outcome:
    """j. Below the last step, with every wait over: the next step."""
    why = (
        "a challenger is already significantly better"
        if v.winners
        else (f"{fmt(v.run_n, 6)} of {v.target} samples")
    )
    message = messages.advanced(v.step, p.ctx.steps[v.step + 1], v.live, v.elapsed, why)
    return transitions.advance(p.ctx, p.s, a.readings, message, v.numbers(p))


# --- i. onInconclusive -------------------------------------------------------------------------------
def _inconclusive(
    p: _Pass, a: Assessment, *, trusted: bool, why: str = "", fixed_look: bool = False
) -> Outcome:
    ctx, s = p.ctx, p.s
    policy = ctx.spec.analysis.on_inconclusive
    why = why or messages.no_verdict(ctx.spec.analysis.max_duration)
    numbers: Numbers = {
        "elapsedSeconds": (ctx.now - s.started_at).total_seconds() if s.started_at else None,
        "maxDurationSeconds": ctx.max_duration.total_seconds(),
    }
    if policy is OnInconclusive.PAUSE:
        message = messages.inconclusive_paused(why, fixed_look=fixed_look)
        return transitions.pause(
            ctx, s, PauseReason.INCONCLUSIVE, Rule.INCONCLUSIVE, message, numbers, fixed_look=fixed_look
        )
    if policy is OnInconclusive.PROMOTE_IF_NON_INFERIOR and trusted:
        found = _promote_non_inferior(p, a, why, numbers)
        if found is not None:
            return found
    note = ""
    if policy is OnInconclusive.PROMOTE_IF_NON_INFERIOR:
        note = (
            "; no challenger is shown non-inferior"
            if trusted
            else "; a held comparison shows no non-inferiority"
        )
    message = messages.inconclusive_kept(why, note, ctx.champion, policy.value)
    return transitions.rollback(ctx, s, Rule.INCONCLUSIVE, "Inconclusive", message, numbers)


def _promote_non_inferior(p: _Pass, a: Assessment, why: str, numbers: Numbers) -> Outcome | None:
    """onInconclusive promoteIfNonInferior: the best challenger shown non-inferior, if any."""
    ctx = p.ctx
    candidates = []
    for c in ctx.live(p.s):
        o = a.primary_of(c)
        if o is None or not primary.non_inferior(ctx, o) or a.warnings(c) or a.decisive_worse(c):
            continue
        if a.decaying(c) is None:
            candidates.append((o.sign * (o.difference or 0.0), c, o))
    if not candidates:
        return None
    _, winner, o = max(candidates)
    s = p.s
    live_elapsed = ctx.now - (s.strata[0].started_at if s.strata else ctx.now)
    if live_elapsed < ctx.min_duration:
        if p.deadline():
            return None  # short of minDuration at maxDuration: nothing is promoted
        left = ctx.min_duration - live_elapsed
        message = messages.min_duration_waiting(
            winner, "non-inferior", live_elapsed, ctx.spec.analysis.min_duration or "0s", left
        )
        numbers.update(
            {"liveSeconds": live_elapsed.total_seconds(), "remainingSeconds": left.total_seconds()}
        )
        return _wait("MinDurationNotReached", message, numbers)
    gain_ci = o.gain_ci()
    low = gain_ci[0] if gain_ci is not None else None
    margin = ctx.spec.analysis.non_inferiority_margin
    numbers.update({"gainLowerBound": low, "margin": margin})
    message = messages.promoted_non_inferior(why, winner, low, margin)
    return transitions.promote(ctx, p.s, winner, Rule.INCONCLUSIVE, "PromotedNonInferior", message, numbers)


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
