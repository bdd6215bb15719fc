"""The offline commands behind ``modelrollout plan``, ``analyze`` and ``simulate``.

This module turns command-line values into calls of :mod:`modelrollout.stats` and
:mod:`modelrollout.stats.montecarlo`, and their results into the JSON documents that the CLI prints.
The keys of those documents are a contract (other tools parse them): add keys, never rename them.
It is pure: no I/O, so it is tested without a subprocess.
"""

from __future__ import annotations

import math
from typing import Any

from modelrollout.errors import InvalidInputError
from modelrollout.stats import bayes, means, proportions, sequential
from modelrollout.stats import power as sample_size
from modelrollout.stats.results import ComparisonResult, Verdict, meets_practical_threshold

_PROPORTION_TESTS = ("z", "chi2", "chi2-yates", "sequential", "bayesian")
_MEAN_TESTS = ("welch", "sequential", "bayesian")


def _required(name: str, value: float | None) -> float:
    if value is None:
        raise InvalidInputError(f"{name} is required")
    return value


def plan_from_args(
    *,
    metric: str,
    baseline: float | None,
    baseline_mean: float | None,
    baseline_sd: float | None,
    mde: float,
    mde_type: str,
    alpha: float,
    power: float,
    challengers: int,
    allocation: float | None,
    daily_traffic: float | None,
) -> dict[str, Any]:
    """Planned sample size per variant; ``allocation`` is the share of traffic per challenger."""
    if challengers < 1:
        raise InvalidInputError(f"--challengers must be >= 1, got {challengers}")
    if allocation is not None and not 0.0 < allocation * challengers < 1.0:
        raise InvalidInputError(
            f"--allocation must leave the champion some traffic: 0 < {challengers} x allocation < 1, "
            f"got {allocation}"
        )
    common: dict[str, Any] = {
        "relative": mde_type == "relative",
        "alpha": alpha,
        "power": power,
        "treatment_fraction": allocation,
        "n_treatments": challengers,
        "daily_traffic": daily_traffic,
    }
    if metric == "proportion":
        result = sample_size.sample_size_proportions(_required("--baseline", baseline), mde, **common)
    else:
        result = sample_size.sample_size_means(
            _required("--baseline-mean", baseline_mean),
            _required("--baseline-sd", baseline_sd),
            mde,
            **common,
        )
    out = result.to_dict()
    out["metric"] = metric
    if daily_traffic is None:
        out.pop("expected_days", None)
    return out


def _parse_proportion(label: str, text: str) -> tuple[float, float]:
    parts = text.split("/")
    if len(parts) != 2:
        raise InvalidInputError(f"--{label} must be successes/trials (e.g. 180/1800), got {text!r}")
    try:
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise InvalidInputError(f"--{label} must be successes/trials with numbers, got {text!r}") from None


def _parse_mean(label: str, text: str) -> tuple[float, float, float]:
    parts = text.split(",")
    if len(parts) != 3:
        raise InvalidInputError(f"--{label} must be n,mean,sd (e.g. 500,12.3,4.5), got {text!r}")
    try:
        n, mean, sd = (float(p) for p in parts)
    except ValueError:
        raise InvalidInputError(f"--{label} must be n,mean,sd with numbers, got {text!r}") from None
    return n, mean, sd


def _with_practical(
    decision: Verdict, low: float, high: float, threshold: float | None, direction: str
) -> Verdict:
    """Promotion also needs the lift's interval beyond the practical threshold, when one is given."""
    if decision is not Verdict.ROLLOUT_CHALLENGER:
        return decision
    gain_low = low if direction == "increase" else -high
    return decision if meets_practical_threshold(gain_low, threshold) else Verdict.INCONCLUSIVE


def _comparison_document(
    result: ComparisonResult, direction: str, practical_threshold: float | None
) -> dict[str, Any]:
    out = result.to_dict()
    out.pop("extra", None)
    decision = _with_practical(
        result.decision(direction),
        result.relative_lift_ci.low,
        result.relative_lift_ci.high,
        practical_threshold,
        direction,
    )
    out["decision"] = decision.value
    out["direction"] = direction
    return out


def analyze_from_args(
    *,
    metric: str,
    control: str,
    treatment: str,
    test: str | None,
    alpha: float,
    direction: str,
    planned_n: float | None,
    practical_threshold: float | None,
) -> dict[str, Any]:
    """Compare a challenger with the champion from aggregates; see ``modelrollout analyze -h``."""
    if metric == "proportion":
        chosen = test or "z"
        if chosen not in _PROPORTION_TESTS:
            raise InvalidInputError(
                f"--test {chosen} does not apply to proportions; use one of {', '.join(_PROPORTION_TESTS)}"
            )
        cs, cn = _parse_proportion("control", control)
        ts, tn = _parse_proportion("treatment", treatment)
        if chosen == "bayesian":
            return _bayes_document(
                bayes.beta_binomial(
                    cs, cn, ts, tn, direction=_direction(direction), credible_level=1 - alpha
                ),
                practical_threshold,
            )
        if chosen == "z":
            result = proportions.ztest_proportions(cs, cn, ts, tn, alpha=alpha)
        elif chosen in ("chi2", "chi2-yates"):
            result = proportions.chi2_proportions(
                cs, cn, ts, tn, correction=chosen == "chi2-yates", alpha=alpha
            )
        else:
            result = sequential.sequential_test_proportions(
                cs, cn, ts, tn, alpha=alpha, planned_n_per_variant=planned_n or max(cn, tn)
            )
        return _comparison_document(result, direction, practical_threshold)

    chosen = test or "welch"
    if chosen not in _MEAN_TESTS:
        raise InvalidInputError(
            f"--test {chosen} does not apply to means; use one of {', '.join(_MEAN_TESTS)}"
        )
    n_c, m_c, s_c = _parse_mean("control", control)
    n_t, m_t, s_t = _parse_mean("treatment", treatment)
    if chosen == "bayesian":
        return _bayes_document(
            bayes.normal_means(
                n_c, m_c, s_c, n_t, m_t, s_t, direction=_direction(direction), credible_level=1 - alpha
            ),
            practical_threshold,
        )
    if chosen == "welch":
        result = means.welch_ttest(n_c, m_c, s_c, n_t, m_t, s_t, alpha=alpha)
    else:
        result = sequential.sequential_test_means(
            n_c, m_c, s_c, n_t, m_t, s_t, alpha=alpha, planned_n_per_variant=planned_n or max(n_c, n_t)
        )
    return _comparison_document(result, direction, practical_threshold)


def _direction(direction: str) -> Any:
    if direction not in ("increase", "decrease"):
        raise InvalidInputError(f"direction must be increase or decrease, got {direction!r}")
    return direction


def _bayes_document(result: bayes.BayesResult, practical_threshold: float | None) -> dict[str, Any]:
    out = result.to_dict()
    decision = _with_practical(
        result.decision(),
        result.relative_lift_ci.low,
        result.relative_lift_ci.high,
        practical_threshold,
        result.direction,
    )
    out["decision"] = decision.value
    # A Bayesian analysis has no p-value; "significant" means the decision threshold was met.
    out["significant"] = decision is not Verdict.INCONCLUSIVE
    return out


def simulate_from_args(
    *,
    metric: str,
    baseline: float,
    lift: float,
    mde: float,
    mde_type: str,
    method: str,
    look_every: int,
    max_n_per_variant: int,
    runs: int,
    seed: int,
    alpha: float,
    power: float,
) -> dict[str, Any]:
    """Monte Carlo of whole experiments; ``lift`` is read with ``mde_type`` (relative or absolute)."""
    from modelrollout.stats import montecarlo as simulation

    if metric != "proportion":
        raise InvalidInputError(f"simulate supports --metric proportion only, got {metric!r}")
    summaries = simulation.simulate(
        baseline,
        lift,
        lift_type=mde_type,
        methods=[method],
        alpha=alpha,
        power=power,
        mde=mde,
        mde_type=mde_type,
        look_every=look_every,
        max_n_per_variant=max_n_per_variant,
        runs=runs,
        seed=seed,
    )
    out: dict[str, Any] = summaries[method].to_dict()
    out.update({"baseline": baseline, "lift": lift, "mde": mde, "mde_type": mde_type, "seed": seed})
    for key, value in list(out.items()):
        if isinstance(value, float) and math.isnan(value):
            out[key] = None
    return out
