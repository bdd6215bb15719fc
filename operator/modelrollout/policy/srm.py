"""Sample ratio mismatch: is the observed split of the primary metric's samples the configured one?

:func:`modelrollout.stats.srm.srm_sequential_stratified` (Lindon & Malek 2022) over the strata,
each against the weights it ran with, carrying the running maximum of the log e-process in
``status.srmMaxLogEValue``. Only the variants still in the race are compared (the champion and
the live challengers), with each stratum's weights renormalised over them; a stratum in which one
of them had weight 0 is skipped, and so is one whose counts are not known for all of them.

The always-valid p-value never goes back up, so a mismatch, once found, holds the experiment
until a human acts (abort, promote, retry) or ``maxDuration`` applies ``onInconclusive``: the
comparison of that run can no longer be trusted. Guardrails keep being checked meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelrollout.api.status import ModelExperimentStatus, SRMResult
from modelrollout.errors import InvalidInputError
from modelrollout.policy import counts
from modelrollout.policy.context import Tick, finite, fmt, pct
from modelrollout.stats import srm as stats_srm


@dataclass
class SRMCheck:
    """The SRM test at this tick."""

    result: SRMResult
    mismatch: bool
    summary: str
    numbers: dict[str, float | None] = field(default_factory=dict)


def _shares(names: tuple[str, ...], shares: tuple[float, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, share in zip(names, shares, strict=True):
        value = finite(share)
        if value is not None:
            out[name] = min(1.0, max(0.0, value))
    return out


def evaluate(ctx: Tick, status: ModelExperimentStatus) -> SRMCheck | None:
    """The SRM test over the run's strata, or None when no stratum can be used yet."""
    primary = ctx.spec.metrics.primary
    mtype = primary.metric_type
    names = (ctx.champion, *ctx.live(status))
    observed: list[list[float]] = []
    expected: list[list[float]] = []
    for stratum in status.strata:
        weights = [stratum.weights.get(v, 0) for v in names]
        totals = [stratum.totals.get(v, {}).get(primary.name) for v in names]
        if any(w <= 0 for w in weights) or any(t is None for t in totals):
            continue
        total_weight = float(sum(weights))
        expected.append([w / total_weight for w in weights])
        observed.append([counts.samples(t, mtype) for t in totals])
    if not observed:
        return None
    try:
        res = stats_srm.srm_sequential_stratified(
            observed,
            expected,
            previous_max_log_e_value=status.srm_max_log_e_value,
            threshold=ctx.spec.analysis.srm_threshold,
        )
    except InvalidInputError:
        return None
    status.srm_max_log_e_value = max(status.srm_max_log_e_value, res.max_log_e_value)
    obs_shares = _shares(names, res.observed_shares)
    exp_shares = _shares(names, res.expected_shares)
    result = SRMResult(
        p_value=finite(res.p_value),
        observed_shares=obs_shares,
        expected_shares=exp_shares,
        mismatch=res.mismatch,
    )
    split = ", ".join(f"{n} {pct(obs_shares.get(n))} (expected {pct(exp_shares.get(n))})" for n in names)
    summary = (
        f"sample ratio mismatch: observed {split}; always-valid p {fmt(res.p_value)} < "
        f"{fmt(ctx.spec.analysis.srm_threshold)}"
        if res.mismatch
        else f"split as configured (always-valid p {fmt(res.p_value)})"
    )
    numbers: dict[str, float | None] = {"pValue": res.p_value, "threshold": ctx.spec.analysis.srm_threshold}
    for n in names:
        numbers[f"{n}.observedShare"] = obs_shares.get(n)
        numbers[f"{n}.expectedShare"] = exp_shares.get(n)
    return SRMCheck(result, res.mismatch, summary, numbers)
