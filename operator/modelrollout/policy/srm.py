"""Sample ratio mismatch: is the observed split of the primary metric's samples the configured one?

The test
--------
Each stratum of the current epoch contributes the Dirichlet-multinomial Bayes factor of Lindon &
Malek (2022) of its exact counts against the weights it ran with (only the champion and the live
challengers, renormalised; a stratum in which one of them had weight 0, that has not started
counting, or whose counts are not known for all of them is left out). The factors multiply into
one e-process over the epoch (optional continuation: Grünwald, de Heide & Koolen 2024), whose
running maximum gives the always-valid p-value; below ``analysis.srmThreshold`` (0.001 by default)
is a mismatch.

Each variant's expected share is its weight times the **seconds its counts cover**
(:func:`modelrollout.policy.counts.coverage`): series are counted from their first sample after a
stratum began counting to their last sample so far, and targets are scraped at different offsets,
a late one not at all for a while (its traffic arrives, exactly, with its next sample). Under
steady traffic the counts over those spans are Poisson with means proportional to weight times
covered seconds, so the multinomial null with those shares is exact, and a late scrape target or
shifted scrape offsets are not a mismatch.

What remains is bounded and allowed for. Every factor is the least favourable one over the counts
the measurement may have changed (:mod:`modelrollout.stats.robust_srm`): up or down by a drift of
the traffic's rate (up to :data:`DRIFT_PER_SECOND`) over the half scrape interval by which the
windows of variants sampled from different targets are shifted (none when the variants share
their targets, :func:`modelrollout.policy.counts.aligned`), and down by what was lost
(:func:`modelrollout.policy.counts.stratum_losses`: a target's traffic over an increment across a
counter reset, whose count only holds what came after the restart; a target seen but not yet
reported, whose share is not known; the traffic's rate bounded from the variants that are fully
reported, under the null hypothesis). Under the null hypothesis this e-process is never larger
than the one of the ideal counts, so the false alarm rate stays below the threshold at any
stopping time; a true mismatch (a share of a variant's requests lost, say) grows linearly with
the counts while the slack stays a fraction of a scrape interval of traffic, and resets are rare,
so it is found.

An alarm is checked, never latched on one transient
---------------------------------------------------
What the allowance does not cover (a transient nobody foresaw) could still cross the threshold
once. So an alarm does not hold for good at once:

1. The experiment **holds** (no step, no promotion; guardrails go on), an Event says so, and the
   test **restarts**: a new epoch, and a new stratum of the same step (``status.srm``), which
   settles again until its counts show the step's split over the one before it.
2. The fresh counts then decide. If they find the mismatch again (the fresh e-process crosses the
   threshold), it is **confirmed**: the hold stays until a human acts (abort, promote, retry) or
   ``maxDuration`` applies ``onInconclusive``, as a true mismatch must. If they **contradict** the
   split that was seen (the same test rejects that split, at the same threshold, on the fresh
   counts), the alarm is cleared with an Event and the experiment goes on. Until either, it holds.
3. After :data:`MAX_CLEARED` cleared alarms in one run, a further alarm is confirmed at once.

The false confirmation probability is at most the threshold (the fresh epoch is a new test on new
data); a transient cannot hold an experiment longer than the fresh counts take to contradict it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from modelrollout.api.status import ModelExperimentStatus, SRMAlarm, SRMResult, Stratum
from modelrollout.errors import InvalidInputError
from modelrollout.policy import counts
from modelrollout.policy.context import Tick, finite, fmt, pct
from modelrollout.policy.decision import EventType
from modelrollout.stats import robust_srm

#: Cleared alarms after which a further alarm is confirmed at once.
MAX_CLEARED: Final = 3
#: Standard deviations in the upper bound of a count.
_SIGMAS: Final = 3.0
#: The largest relative change of the traffic's rate per second the test allows for (20 % an hour):
#: variants sampled from different targets are counted over windows shifted by up to a scrape
#: interval, so a rate drifting by ``g`` a second makes their mean rates differ by up to ``g * Δ / 2``.
DRIFT_PER_SECOND: Final = 0.20 / 3600.0


@dataclass
class SRMCheck:
    """The SRM test at this tick."""

    result: SRMResult
    mismatch: bool
    summary: str
    numbers: dict[str, float | None] = field(default_factory=dict)


@dataclass
class _Stratum:
    observed: list[float]
    expected: list[float]
    slack: list[float]
    lost: list[float]


def _upper(mean: float) -> float:
    """A Poisson-style upper bound of a count with expectation ``mean``."""
    return mean + _SIGMAS * math.sqrt(max(mean, 0.0)) + _SIGMAS


def _stratum_terms(stratum: Stratum, names: tuple[str, ...], now: datetime) -> _Stratum | None:
    weights = [stratum.weights.get(v, 0) for v in names]
    if stratum.counted_from is None or any(w <= 0 for w in weights):
        return None
    covered = [counts.coverage(stratum.sampling.get(v, {})) for v in names]
    if any(seconds <= 0 for _, seconds in covered):
        return None
    observed = [x for x, _ in covered]
    raw = [w * seconds for w, (_, seconds) in zip(weights, covered, strict=True)]
    expected = [r / sum(raw) for r in raw]
    # A drifting traffic rate skews variants sampled from different targets (their windows are
    # shifted by up to a scrape interval) by a share of their counts; none when they share targets.
    drift = 0.0 if counts.aligned(stratum, names) else DRIFT_PER_SECOND * stratum.spacing / 2.0
    slack = [drift * _upper(x) for x in observed]
    losses = counts.stratum_losses(stratum, names, now)
    if losses is None:
        return None  # what the counts missed cannot be bounded yet: the stratum tells nothing
    return _Stratum(observed, expected, slack, [losses[v] for v in names])


def _log_e(t: _Stratum, expected: list[float]) -> float:
    """The least favourable log Bayes factor of one stratum: its counts may be off by the rate's
    drift at the edges either way, and short by what resets and unreported targets lost."""
    deficit = [s + lost for s, lost in zip(t.slack, t.lost, strict=True)]
    return robust_srm.robust_log_bayes_factor(t.observed, expected, deficit, excess=t.slack)


def _epoch_evidence(status: ModelExperimentStatus, names: tuple[str, ...], now: datetime) -> tuple[
    float, list[_Stratum]
] | None:
    terms = [
        t
        for s in status.strata
        if s.srm_epoch == status.srm.epoch and (t := _stratum_terms(s, names, now)) is not None
    ]
    if not terms:
        return None
    try:
        log_e = sum(_log_e(t, t.expected) for t in terms)
    except InvalidInputError:
        return None
    return log_e, terms


def _shares(terms: list[_Stratum]) -> tuple[list[float], list[float]]:
    """Observed and expected shares pooled over strata (expected weighted by each stratum's count)."""
    width = len(terms[0].observed)
    observed = [sum(t.observed[i] for t in terms) for i in range(width)]
    expected = [sum(sum(t.observed) * t.expected[i] for t in terms) for i in range(width)]
    total = sum(observed)
    if total <= 0:
        return [math.nan] * width, list(terms[-1].expected)
    return [o / total for o in observed], [e / total for e in expected]


def _contradicted(alarm: SRMAlarm, terms: list[_Stratum], names: tuple[str, ...], threshold: float) -> bool:
    """Whether the fresh counts reject the split the alarm saw, in favour of the configured one.

    The alarm's split, as a distortion of the weights (each variant's observed over expected
    share), taken half-way (the square root of each ratio: the share seen when the evidence first
    crossed the threshold tends to overshoot the truth), is a simple hypothesis ``q``; the
    configured split is ``p``. A true mismatch of at least a quarter of the one seen is closer to
    ``q`` than to ``p`` and is not contradicted; the fresh epoch's own test finds it again.

    The likelihood ratio ``prod (p_i / q_i)^(y_i)`` of the fresh counts is an e-value against
    ``q`` (its expectation under ``q`` is 1): when it reaches ``1 / threshold`` the data
    contradict the alarm at that level. It is taken at its least favourable over the counts the
    measurement allows (the slack and the losses of each stratum), which for a ratio linear in
    the counts is a corner of the box.
    """
    ratios = []
    for v in names:
        seen, wanted = alarm.observed_shares.get(v), alarm.expected_shares.get(v)
        if seen is None or wanted is None or wanted <= 0 or seen <= 0:
            return False
        ratios.append(math.sqrt(seen / wanted))
    log_e = 0.0
    for t in terms:
        distorted = [e * r for e, r in zip(t.expected, ratios, strict=True)]
        total = sum(distorted)
        for x, p, q, slack, lost in zip(t.observed, t.expected, distorted, t.slack, t.lost, strict=True):
            c = math.log(p) - math.log(q / total)
            y = max(0.0, x - slack) if c > 0 else x + slack + lost
            log_e += c * y
    return log_e >= -math.log(threshold)


def _restart(ctx: Tick, status: ModelExperimentStatus) -> None:
    """A new epoch, and a new stratum of the same step and weights. It settles again against the
    weights before the step (the alarm may be the step's traffic still moving: then the fresh counts
    wait for it), and counts at once if the step's weights were never a change."""
    status.srm.epoch += 1
    status.srm.max_log_e_value = 0.0
    step = status.current_step or 0
    running = status.strata[-1] if status.strata else None
    previous = status.weights
    if running is not None and running.previous_weights:
        previous = running.previous_weights
    counts.open_stratum(status, step, status.weights, ctx.now, previous=previous, srm_epoch=status.srm.epoch)


def _split_text(names: tuple[str, ...], observed: dict[str, float], expected: dict[str, float]) -> str:
    return ", ".join(f"{n} {pct(observed.get(n))} (expected {pct(expected.get(n))})" for n in names)


def _alarm(
    ctx: Tick, status: ModelExperimentStatus, p: float, observed: dict[str, float], expected: dict[str, float]
) -> SRMAlarm:
    alarm = SRMAlarm(
        at=ctx.now,
        step=status.current_step or 0,
        p_value=min(1.0, max(0.0, p)),
        observed_shares=observed,
        expected_shares=expected,
    )
    if status.srm.cleared >= MAX_CLEARED:
        alarm.confirmed = True
    else:
        _restart(ctx, status)
    return alarm


def _advance(
    ctx: Tick,
    status: ModelExperimentStatus,
    names: tuple[str, ...],
    p: float,
    terms: list[_Stratum],
    shares: tuple[dict[str, float], dict[str, float]],
) -> None:
    """Move the alarm state on with this tick's evidence (see the module docstring)."""
    threshold = ctx.spec.analysis.srm_threshold
    alarm = status.srm.alarm
    observed, expected = shares
    split = _split_text(names, observed, expected)
    if alarm is None:
        if p < threshold:
            # (the condition's Event says so, with the summary: holding, and counting again)
            status.srm.alarm = _alarm(ctx, status, p, observed, expected)
        return
    if alarm.confirmed:
        return
    if p < threshold:
        alarm.confirmed = True
        ctx.emit(
            EventType.WARNING,
            "SampleRatioMismatchConfirmed",
            f"The sample ratio mismatch found at {alarm.at.isoformat()} persists in the counts since: "
            f"observed {split}; always-valid p {fmt(p)}. Holding until a person acts (abort, promote or "
            "retry).",
        )
    elif _contradicted(alarm, terms, names, threshold):
        status.srm.alarm = None
        status.srm.cleared += 1
        ctx.emit(
            EventType.NORMAL,
            "SampleRatioMismatchCleared",
            f"The counts since {alarm.at.isoformat()} contradict the split seen then "
            f"({_split_text(names, alarm.observed_shares, alarm.expected_shares)}): now {split}. "
            "The experiment goes on.",
        )


def evaluate(ctx: Tick, status: ModelExperimentStatus) -> SRMCheck | None:
    """The SRM test of the current epoch, and the alarm's state; None when nothing can be tested."""
    names = (ctx.champion, *ctx.live(status))
    found = _epoch_evidence(status, names, ctx.now)
    epoch = status.srm.epoch
    p = 1.0
    observed: dict[str, float] = {}
    expected: dict[str, float] = {}
    if found is not None:
        log_e, terms = found
        status.srm.max_log_e_value = max(status.srm.max_log_e_value, log_e)
        p = math.exp(-status.srm.max_log_e_value)
        obs_list, exp_list = _shares(terms)
        observed, expected = _clean(names, obs_list), _clean(names, exp_list)
        _advance(ctx, status, names, p, terms, (observed, expected))
    alarm = status.srm.alarm
    if alarm is not None and (found is None or status.srm.epoch != epoch):
        # No fresh counts yet: what is known is what the alarm saw.
        p, observed, expected = alarm.p_value, dict(alarm.observed_shares), dict(alarm.expected_shares)
    elif found is None:
        return None
    return _check(ctx, names, p, observed, expected, alarm)


def _check(
    ctx: Tick,
    names: tuple[str, ...],
    p: float,
    observed: dict[str, float],
    expected: dict[str, float],
    alarm: SRMAlarm | None,
) -> SRMCheck:
    threshold = ctx.spec.analysis.srm_threshold
    split = _split_text(names, observed, expected)
    if alarm is None:
        summary = f"split as configured (always-valid p {fmt(p)})"
    elif alarm.confirmed:
        summary = (
            f"sample ratio mismatch confirmed: observed {split}; always-valid p {fmt(p)} < {fmt(threshold)}"
        )
    else:
        summary = (
            f"sample ratio mismatch found at {alarm.at.isoformat()} (always-valid p {fmt(alarm.p_value)} < "
            f"{fmt(threshold)}: {_split_text(names, alarm.observed_shares, alarm.expected_shares)}); "
            f"counting again since to check it: {split}"
        )
    result = SRMResult(
        p_value=finite(min(1.0, p)),
        observed_shares=observed,
        expected_shares=expected,
        mismatch=alarm is not None,
    )
    numbers: dict[str, float | None] = {"pValue": p, "threshold": threshold}
    for n in names:
        numbers[f"{n}.observedShare"] = observed.get(n)
        numbers[f"{n}.expectedShare"] = expected.get(n)
    return SRMCheck(result, alarm is not None, summary, numbers)


def _clean(names: tuple[str, ...], shares: list[float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for n, s in zip(names, shares, strict=True):
        value = finite(s)
        if value is not None:
            out[n] = min(1.0, max(0.0, value))
    return out
