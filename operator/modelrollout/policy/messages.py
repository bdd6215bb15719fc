"""The English sentences of :func:`modelrollout.policy.decide`'s holds and transitions.

They are kept apart from the rules so each rule reads as a condition and an outcome. Every sentence
ends with a full stop and names what a person needs to act on: the variants, the numbers, and what
the experiment waits for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta

from modelrollout.api.observations import SpecProblem
from modelrollout.policy.context import fmt, joined, span


def spec_errors(errors: Iterable[SpecProblem]) -> str:
    """``path: message; path: message``."""
    return "; ".join(f"{e.path}: {e.message}" for e in errors)


def invalid_spec(text: str) -> str:
    return f"The spec is invalid, traffic does not move: {text}."


def variants_changed(why: str, champion: str) -> str:
    return (
        f"The variants changed while the experiment ran ({why}); traffic is back at the champion "
        f"{champion}. Annotate modelrollout.io/retry to start over."
    )


def goes_on(live_after: Sequence[str], champion: str) -> str:
    """Who keeps the traffic after a drop: ``b goes on``, or ``all traffic back to the champion a``."""
    if live_after:
        return f"{joined(live_after)} go{'es' if len(live_after) == 1 else ''} on"
    return f"all traffic back to the champion {champion}"


def metrics_unknown(unknown: str, errors: int, since: str) -> str:
    return f"Unknown: {unknown} ({errors} tick(s) in a row, since {since})."


def outage(errors: int, lasted: timedelta, unknown: str) -> str:
    return f"Metrics unusable for {errors} tick(s) over {span(lasted)} ({unknown})"


def outage_paused(text: str) -> str:
    return f"{text}: paused (onDataOutage pause) until they return."


def outage_rolled_back(text: str, champion: str) -> str:
    return f"{text}: rolled back to the champion {champion} (onDataOutage rollback)."


def guardrail_breached(
    summaries: Iterable[str], dropped: Iterable[str], live_after: Sequence[str], champion: str
) -> str:
    return (
        f"Guardrail breached: {'; '.join(summaries)}; {joined(sorted(dropped))} dropped, "
        f"{goes_on(live_after, champion)}."
    )


def segment_harmed(
    summaries: Iterable[str], dropped: Iterable[str], live_after: Sequence[str], champion: str
) -> str:
    return (
        f"Protected segment harmed: {'; '.join(summaries)}; {joined(sorted(dropped))} dropped, "
        f"{goes_on(live_after, champion)}."
    )


def holding_segment_harm(summaries: Iterable[str]) -> str:
    return (
        f"Holding: protected segment harmed: {'; '.join(summaries)} (onSegmentHarm hold): the traffic "
        "stays as it is until a person aborts or promotes."
    )


def holding_segment_srm(summaries: Iterable[str]) -> str:
    return (
        f"Holding: the split of a protected segment differs from the rest of the traffic: "
        f"{'; '.join(summaries)}. Check the assignment for that segment (a client that drops the "
        "bucket header, a route that matches it apart)."
    )


def holding_unknown(unknown: str) -> str:
    return f"Holding: {unknown} (unknown is neither a pass nor a failure)."


def no_verdict(max_duration: str) -> str:
    return f"no verdict after maxDuration {max_duration}"


def inconclusive_paused(why: str, *, fixed_look: bool = False) -> str:
    if fixed_look:
        return f"Inconclusive ({why}): paused (onInconclusive pause) until a human promotes or aborts."
    return (
        f"Inconclusive ({why}): paused (onInconclusive pause) until a human promotes, aborts or "
        "raises maxDuration."
    )


def promoted_non_inferior(why: str, winner: str, low: float | None, margin: float | None) -> str:
    return (
        f"Inconclusive ({why}), but {winner} is non-inferior: gain lower bound {fmt(low)} > "
        f"-{fmt(margin)}; promoted (onInconclusive promoteIfNonInferior)."
    )


def inconclusive_kept(why: str, note: str, champion: str, policy: str) -> str:
    return (
        f"Inconclusive ({why}{note}): the champion {champion} keeps all the traffic "
        f"(onInconclusive {policy})."
    )


def paused(reason: str, since: str) -> str:
    return f"Paused ({reason}) since {since}; weights frozen."


def shadow_failed(summaries: Iterable[str], dropped: Iterable[str], live_after: Sequence[str]) -> str:
    return f"Shadow failed: {'; '.join(summaries)}; {joined(sorted(dropped))} dropped" + (
        f", {joined(live_after)} go on." if live_after else ", the champion keeps the traffic."
    )


def shadowing(elapsed: timedelta, duration: str) -> str:
    return f"Shadowing for {span(elapsed)} of {duration}."


def shadow_no_traffic(unseen: Iterable[str]) -> str:
    return f"Shadow duration reached, but no mirrored traffic seen yet for {joined(unseen)}."


def shadow_undecided(summaries: Iterable[str]) -> str:
    return "Divergence not yet surely within the bound: " + "; ".join(summaries) + "."


def guardrail_warning(summaries: Iterable[str], *, stepping: bool = False) -> str:
    lead = (
        "Guardrail estimate beyond its margin, not stepping up: "
        if stepping
        else ("Guardrail estimate beyond its margin: ")
    )
    return lead + "; ".join(summaries) + "."


def shadow_passed(elapsed: timedelta, summary: str, first_step: int, live: Iterable[str]) -> str:
    return (
        f"Shadow passed after {span(elapsed)} ({summary}): step 0, {first_step} % of the traffic "
        f"to {joined(live)}."
    )


def holding_plan(text: str) -> str:
    return f"Holding: {text}."


def holding_srm(summary: str) -> str:
    return f"Holding: {summary}; the comparison cannot be trusted."


def significantly_worse(losers: Mapping[str, str], live_after: Sequence[str], champion: str) -> str:
    return (
        f"Significantly worse: {'; '.join(f'{c} ({t})' for c, t in losers.items())}; dropped, "
        f"{goes_on(live_after, champion)}."
    )


def promoted(winner: str, verb: str, verdict: str, when: str, others: Sequence[str]) -> str:
    return f"Promoted {winner}: {verb} ({verdict}){when}" + (
        f"; {joined(others)} dropped." if others else "."
    )


def winner_waiting(
    winner: str, wait: str, elapsed: timedelta, min_step: str, step_n: float, min_samples: int
) -> str:
    return (
        f"{winner} has its verdict; promotion waits for {wait} at the last step ({span(elapsed)} of "
        f"{min_step}" + (f", {fmt(step_n, 6)} of {min_samples} samples)." if min_samples else ").")
    )


def promotion_blocked(blocked: Iterable[str], warnings: Iterable[str]) -> str:
    return (
        f"{joined(blocked)} would be promoted, but a guardrail estimate is beyond its margin: "
        + "; ".join(warnings)
        + "."
    )


def waiting_for_verdict(percent: int, verdicts: Iterable[str]) -> str:
    return f"At the last step ({percent} %), waiting for a verdict: " + "; ".join(verdicts) + "."


def waiting_for_min_step(step: int, elapsed: timedelta, min_step: str) -> str:
    return f"Step {step} has run {span(elapsed)} of {min_step}."


def waiting_for_min_samples(step: int, step_n: float, min_samples: int) -> str:
    return f"Step {step} has {fmt(step_n, 6)} of {min_samples} samples per variant."


def waiting_for_plan(run_n: float) -> str:
    return f"Waiting for the champion's value to plan the sample size ({round(run_n):,} samples so far)."


def waiting_for_samples(step: int, run_n: float, target: int | None) -> str:
    return (
        f"Step {step} waits for its share of the planned n: {fmt(run_n, 6)} of {target} samples per variant."
    )


def advanced(step: int, percent: int, live: Iterable[str], elapsed: timedelta, why: str) -> str:
    return (
        f"Step {step} -> {step + 1}: {percent} % of the traffic to {joined(live)} after {span(elapsed)} "
        f"({why})."
    )


def min_duration_waiting(
    winner: str, verdict: str, elapsed: timedelta, min_duration: str, left: timedelta
) -> str:
    return (
        f"{winner} would be promoted ({verdict}), but analysis.minDuration {min_duration} has not "
        f"passed: {span(elapsed)} of live traffic so far, {span(left)} to go."
    )


def min_duration_unmet(elapsed: timedelta, min_duration: str) -> str:
    return (
        f"maxDuration reached after only {span(elapsed)} of live traffic, short of analysis.minDuration "
        f"{min_duration}"
    )


def novelty_holding(summaries: Iterable[str]) -> str:
    return (
        "Novelty effect, not promoting: " + "; ".join(summaries) + ". The early lift does not last; "
        "the experiment holds until maxDuration (onInconclusive) unless a person promotes or aborts."
    )


def novelty_at_deadline(summaries: Iterable[str]) -> str:
    return "the lift decays (novelty effect): " + "; ".join(summaries)
