"""The shadow gate: the share of mirrored predictions that differ from the champion's.

With ``shadow.divergence`` set, each live challenger's counts of compared and differing
predictions since the shadow phase began (exact counts, read as the proportion
``shadow:divergence``: :mod:`modelrollout.policy.counts`) give
:func:`modelrollout.stats.drift.disagreement_share` with its
Wilson interval at level ``1 - analysis.alpha``:

* **fail** at any tick when even the lower bound is above ``maxDivergence`` (the challenger is
  dropped; the experiment rolls back when none is left);
* **pass** once ``shadow.duration`` has elapsed and the upper bound is at most ``maxDivergence``
  (the point estimate alone would pass a challenger on a handful of comparisons). A challenger
  whose interval still straddles the bound keeps the experiment in shadow until it is decided,
  or ``maxDuration`` applies ``onInconclusive``.

Without ``shadow.divergence`` only the guardrails are judged. Either way, every live challenger
must have been seen (mirrored samples of each guardrail, and comparisons when divergence is
measured) before the shadow passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelrollout.api.observations import Unknown
from modelrollout.errors import InvalidInputError
from modelrollout.policy import counts
from modelrollout.policy.context import Tick, fmt, pct
from modelrollout.stats import drift


@dataclass
class DivergenceCheck:
    """The divergence of one challenger at this tick."""

    challenger: str
    share: float | None = None
    low: float | None = None
    high: float | None = None
    compared: float = 0.0
    failed: bool = False
    within: bool = False
    unknown: str | None = None
    summary: str = ""
    numbers: dict[str, float | None] = field(default_factory=dict)


def evaluate(ctx: Tick, live: tuple[str, ...], reading: counts.Reading | None) -> list[DivergenceCheck]:
    """The divergence of every live challenger (empty when divergence is not measured)."""
    if ctx.spec.shadow.divergence is None:
        return []
    limit = ctx.spec.shadow.max_divergence
    out: list[DivergenceCheck] = []
    for name in live:
        if not isinstance(reading, counts.Known) or name not in reading.values:
            reason = reading.reason if isinstance(reading, Unknown) else "no shadow reading"
            out.append(DivergenceCheck(name, unknown=reason, summary=f"{name} divergence unknown: {reason}"))
            continue
        found = reading.values[name]
        compared, differing = float(found.trials or 0.0), float(found.successes or 0.0)
        if compared <= 0:
            out.append(DivergenceCheck(name, summary=f"{name}: no mirrored prediction compared yet"))
            continue
        try:
            res = drift.disagreement_share(differing, compared, alpha=ctx.alpha)
        except InvalidInputError as exc:
            out.append(DivergenceCheck(name, unknown=f"inconsistent shadow counters ({exc})"))
            continue
        failed = res.exceeds(limit)
        within = res.within(limit)
        out.append(
            DivergenceCheck(
                name,
                share=res.share,
                low=res.ci.low,
                high=res.ci.high,
                compared=res.compared,
                failed=failed,
                within=within,
                summary=(
                    f"{name} differs from the champion on {pct(res.share)} of {fmt(res.compared, 6)} "
                    f"predictions (Wilson [{pct(res.ci.low)}, {pct(res.ci.high)}], max {pct(limit)})"
                ),
                numbers={
                    f"{name}.divergence": res.share,
                    f"{name}.divergenceLow": res.ci.low,
                    f"{name}.divergenceHigh": res.ci.high,
                    f"{name}.compared": res.compared,
                    "maxDivergence": limit,
                },
            )
        )
    return out
