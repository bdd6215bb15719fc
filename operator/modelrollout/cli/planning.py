"""The offline commands behind ``modelrollout plan``, ``analyze`` and ``simulate``.

This module turns command-line values into calls of :mod:`modelrollout.stats` and
:mod:`modelrollout.stats.montecarlo`, and their results into the JSON documents that the CLI prints.
The keys of those documents are a contract (other tools parse them): add keys, never rename them.
It is pure: no I/O, so it is tested without a subprocess.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from modelrollout.errors import InvalidInputError
from modelrollout.stats import bayes, means, proportions, segments, sequential
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


@dataclasses.dataclass(frozen=True)
class TimeOptions:
    """``simulate`` on a clock: the options in seconds (None: not given)."""

    samples_per_hour: float | None = None
    interval: float = 3600.0
    max_duration: float = 14 * 86400.0
    min_duration: float = 0.0
    lift_decay_to: float | None = None
    lift_half_life: float | None = None
    novelty: bool = False
    novelty_window: float = 86400.0
    novelty_alpha: float = 0.05

    @property
    def on_a_clock(self) -> bool:
        return (
            self.samples_per_hour is not None
            or self.lift_decay_to is not None
            or self.lift_half_life is not None
            or self.min_duration > 0
            or self.novelty
        )


def simulate_from_args(
    *,
    metric: str,
    baseline: float,
    lift: float,
    mde: float,
    mde_type: str,
    method: str,
    look_every: int | None,
    max_n_per_variant: int | None,
    runs: int,
    seed: int,
    alpha: float,
    power: float,
    time: TimeOptions | None = None,
) -> dict[str, Any]:
    """Monte Carlo of whole experiments; ``lift`` is read with ``mde_type`` (relative or absolute).

    With ``time`` options (``--samples-per-hour`` and the options that need it: a decaying lift,
    ``--min-duration``, ``--novelty``) the experiments run on a clock instead, decided as the
    operator does: :func:`_simulate_over_time`.
    """
    from modelrollout.stats import montecarlo as simulation

    if metric != "proportion":
        raise InvalidInputError(f"simulate supports --metric proportion only, got {metric!r}")
    if time is not None and time.on_a_clock:
        return _simulate_over_time(baseline, lift, mde, mde_type, method, runs, seed, alpha, power, time)
    if look_every is None or max_n_per_variant is None:
        raise InvalidInputError(
            "give --look-every and --max-n-per-variant (or --samples-per-hour to simulate on a clock)"
        )
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


def _simulate_over_time(
    baseline: float,
    lift: float,
    mde: float,
    mde_type: str,
    method: str,
    runs: int,
    seed: int,
    alpha: float,
    power: float,
    time: TimeOptions,
) -> dict[str, Any]:
    """``simulate`` on a clock: a lift that may decay, minDuration and the novelty check."""
    from modelrollout.stats import montecarlo as simulation

    if method != "sequential":
        raise InvalidInputError(
            f"on a clock, simulate decides as the operator does: --method sequential, got {method}"
        )
    if time.samples_per_hour is None:
        raise InvalidInputError(
            "--lift-decay-to, --lift-half-life, --min-duration and --novelty simulate on a clock: "
            "give --samples-per-hour (per variant)"
        )
    if (time.lift_decay_to is None) != (time.lift_half_life is None):
        raise InvalidInputError("--lift-decay-to and --lift-half-life go together")
    if time.min_duration > time.max_duration:
        raise InvalidInputError("--min-duration must not be longer than --max-duration")
    hour = 3600.0
    streams = simulation.simulate_time_streams(
        baseline,
        lift,
        decay_to=time.lift_decay_to,
        half_life_hours=time.lift_half_life / hour if time.lift_half_life is not None else None,
        lift_type=mde_type,
        samples_per_hour=time.samples_per_hour,
        look_hours=time.interval / hour,
        max_hours=time.max_duration / hour,
        runs=runs,
        seed=seed,
    )
    summary = simulation.decide_over_time(
        streams,
        alpha=alpha,
        power=power,
        mde=mde,
        mde_type=mde_type,
        min_duration_hours=time.min_duration / hour,
        novelty=time.novelty,
        novelty_window_hours=time.novelty_window / hour,
        novelty_alpha=time.novelty_alpha,
    )
    out = summary.to_dict()
    out.update(
        {
            "mode": "time",
            "method": method,
            "baseline": baseline,
            "lift": lift,
            "lift_decay_to": time.lift_decay_to,
            "lift_half_life_hours": time.lift_half_life / hour if time.lift_half_life is not None else None,
            "final_lift": float(streams.lifts[-1]),
            "samples_per_hour": time.samples_per_hour,
            "interval_hours": time.interval / hour,
            "novelty_alpha": time.novelty_alpha if time.novelty else None,
            "mde": mde,
            "mde_type": mde_type,
            "alpha": alpha,
            "seed": seed,
        }
    )
    return out


# --- analyze --segments ---------------------------------------------------------------------------

#: The shape of ``modelrollout analyze --segments FILE`` (documented in docs/segments.md).
SEGMENTS_FILE_SHAPE = (
    '{"protected": [{"name": "eu", "champion": {"successes": 410, "trials": 9000}, '
    '"challenger": {"successes": 38, "trials": 1000}, "margin": 0.0, "relative": false}, ...], '
    '"exploratory": [...same shape, optional...], "weights": {"champion": 90, "challenger": 10} (optional)}'
)


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{where} must be a number, got {value!r}")
    return float(value)


def _arm(where: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, dict):
        raise InvalidInputError(f'{where} must be an object {{"successes": s, "trials": n}}, got {value!r}')
    missing = [k for k in ("successes", "trials") if k not in value]
    if missing:
        raise InvalidInputError(f"{where} needs {' and '.join(missing)}")
    return _number(f"{where}.successes", value["successes"]), _number(f"{where}.trials", value["trials"])


def _segment(where: str, item: Any) -> segments.SegmentCounts:
    if not isinstance(item, dict):
        raise InvalidInputError(f"{where} must be an object with name, champion and challenger")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"{where}.name must be a non-empty string, got {name!r}")
    cs, cn = _arm(f"{where}.champion", item.get("champion"))
    ts, tn = _arm(f"{where}.challenger", item.get("challenger"))
    relative = item.get("relative", False)
    if not isinstance(relative, bool):
        raise InvalidInputError(f"{where}.relative must be true or false, got {relative!r}")
    return segments.SegmentCounts(
        name, cs, cn, ts, tn, margin=_number(f"{where}.margin", item.get("margin", 0.0)), relative=relative
    )


def _segment_list(doc: dict[str, Any], key: str, *, required: bool) -> list[segments.SegmentCounts]:
    items = doc.get(key)
    if items is None and not required:
        return []
    if not isinstance(items, list) or (required and not items):
        raise InvalidInputError(
            f"{key} must be a non-empty list of segments; the file's shape: {SEGMENTS_FILE_SHAPE}"
        )
    return [_segment(f"{key}[{i}]", item) for i, item in enumerate(items)]


def _weights(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"champion", "challenger"}:
        raise InvalidInputError(f'weights must be {{"champion": w, "challenger": w}}, got {value!r}')
    champion, challenger = _number("weights.champion", value["champion"]), _number(
        "weights.challenger", value["challenger"]
    )
    if champion <= 0 or challenger <= 0:
        raise InvalidInputError(f"weights must both be positive, got {value!r}")
    total = champion + challenger
    return champion / total, challenger / total


def _tuned(family: list[segments.SegmentCounts], planned_n: float | None) -> list[segments.SegmentCounts]:
    """Without ``--planned-n`` each segment's mixture is tuned to its own counts so far (as
    ``analyze --test sequential`` does): a one-off look, not a monitored experiment."""
    if planned_n is not None:
        return family
    return [
        dataclasses.replace(s, planned_n_per_variant=max(s.champion_trials, s.challenger_trials, 1.0))
        for s in family
    ]


def _family_document(result: segments.SegmentFamilyResult) -> dict[str, Any]:
    out = result.to_dict()
    for s in out["segments"]:
        s.pop("tau2", None)
        s.pop("fast_tau2", None)
    return out


def segments_from_document(
    doc: Any, *, alpha: float, direction: str, correction: str, planned_n: float | None
) -> dict[str, Any]:
    """Per-segment harm tests of a segments document; see ``modelrollout analyze -h`` and
    docs/segments.md. ``direction`` is the metric's good direction (``increase``: a success rate,
    harm is a lower challenger; ``decrease``: an error rate, harm is a higher one)."""
    if not isinstance(doc, dict):
        raise InvalidInputError(
            f"the segments file must hold a JSON object; its shape: {SEGMENTS_FILE_SHAPE}"
        )
    unknown = sorted(set(doc) - {"protected", "exploratory", "weights"})
    if unknown:
        raise InvalidInputError(
            f"unknown keys in the segments file: {', '.join(unknown)}; its shape: {SEGMENTS_FILE_SHAPE}"
        )
    protected = _tuned(_segment_list(doc, "protected", required=True), planned_n)
    exploratory = _tuned(_segment_list(doc, "exploratory", required=False), planned_n)
    weights = _weights(doc.get("weights"))
    higher_is_worse = direction == "decrease"
    if correction not in segments.CORRECTIONS:
        raise InvalidInputError(
            f"--correction must be one of {', '.join(segments.CORRECTIONS)}, got {correction!r}"
        )
    family = segments.segment_harm(
        protected,
        higher_is_worse=higher_is_worse,
        alpha=alpha,
        correction=correction,
        planned_n_per_variant=planned_n,
    )
    out = _family_document(family)
    out["direction"] = direction
    out["srm"] = segments.segment_srm(protected, weights).to_dict() if weights is not None else None
    out["exploratory"] = (
        _family_document(segments.exploratory_segments(
            exploratory,
            higher_is_worse=higher_is_worse,
            alpha=alpha,
            # the folded "other" carries no tuning of its own: the largest arm's count so far
            planned_n_per_variant=planned_n
            or max(max(s.champion_trials, s.challenger_trials, 1.0) for s in exploratory),
        ))
        if exploratory
        else None
    )
    mismatch = bool(out["srm"] and out["srm"]["any_mismatch"])
    out["decision"] = (
        "harmed" if family.any_harmed else "sample ratio mismatch" if mismatch else "no harm found"
    )
    return out
