"""Given/When/Then support for the policy tests: a spec builder, a seeded simulated world that turns
the route weights into cumulative counters, and a fake clock that ticks ``decide``.

``Experiment(spec, World(...)).tick()`` advances the clock by the spec's interval, lets the world
serve that interval's requests with the routes of the last decision, builds the Observations
(the counters' increments since each metric's checkpoint, as the provider reads them: one series
per variant, sampled at every tick) and calls ``decide``. Faults are injected per tick:
``outage=`` (metrics that read Unknown), ``annotations=``, ``spec_errors=``, or by changing the
world (``world.truth[...]``, ``world.loss[...]``). ``Experiment``'s Then steps (``then_routes``,
``then_every_step_seen``, ``then_condition``, ...) raise AssertionError with :meth:`Experiment.describe`.
The helpers' own tests are in ``tests/unit/test_policy_world.py``.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from modelrollout.api.observations import (
    DIVERGENCE,
    CounterReading,
    Increment,
    Observations,
    SpecProblem,
    Unknown,
    VariantCounts,
)
from modelrollout.api.spec import ModelExperimentSpec
from modelrollout.api.status import ConditionType, ModelExperimentStatus
from modelrollout.policy import Decision, decide
from modelrollout.policy.counts import FIELDS

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

BASE_SPEC: dict[str, Any] = {
    "champion": {"name": "v1", "service": "model-v1"},
    "challengers": [{"name": "v2", "service": "model-v2"}],
    "traffic": {"provider": "istio", "istio": {"virtualService": "model", "routes": ["default"]}},
    "rollout": {"steps": [10, 25, 50, 100], "minStepDuration": "2m", "interval": "30s"},
    "metrics": {
        "prometheus": {"address": "http://prometheus:9090"},
        "primary": {
            "name": "conversion",
            "type": "proportion",
            "successes": 'c{m="{{variant}}"}',
            "trials": 'r{m="{{variant}}"}',
            "minimumDetectableEffect": 0.1,
        },
        "guardrails": [{"name": "errors", "preset": "istio-error-rate", "maxRelativeIncrease": 0.5}],
    },
    "analysis": {"maxDuration": "1d", "maxConsecutiveErrors": 5, "maxDataOutage": "10m"},
}


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of dicts (lists and scalars of ``over`` replace)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def make_spec(**over: Any) -> ModelExperimentSpec:
    """The base spec with ``over`` merged in (camelCase keys, as in YAML)."""
    return ModelExperimentSpec.model_validate(merge(BASE_SPEC, over))


def spec_with_primary(primary: Mapping[str, Any], **over: Any) -> ModelExperimentSpec:
    """The base spec with its primary metric replaced by ``primary``."""
    raw = merge(BASE_SPEC, over)
    raw["metrics"]["primary"] = dict(primary)
    return ModelExperimentSpec.model_validate(raw)


def challengers(*names: str) -> list[dict[str, str]]:
    return [{"name": n, "service": f"model-{n}"} for n in names]


#: The counters at one time: (time, metric -> variant -> field -> total, challenger -> [compared, differing]).
Snapshot = tuple[datetime, dict[str, dict[str, dict[str, float]]], dict[str, list[float]]]


@dataclass
class World:
    """Simulated traffic: ``rps`` requests per second split by the routes, outcomes drawn with a
    fixed seed. ``truth[metric][variant]`` is the true rate (proportions), ``(mean, sd)`` (means)
    or ``(rate, visits)`` (ratios: per-unit Poisson visits, Binomial successes); missing entries
    fall back to ``default[metric]``. ``loss[variant]`` drops that share of the variant's
    primary-metric trials (a sample ratio mismatch). ``divergence[challenger]`` is the share of
    mirrored predictions that differ."""

    spec: ModelExperimentSpec
    seed: int = 0
    rps: float = 100.0
    truth: dict[str, dict[str, Any]] = field(default_factory=dict)
    default: dict[str, Any] = field(default_factory=lambda: {"conversion": 0.2, "errors": 0.01})
    loss: dict[str, float] = field(default_factory=dict)
    divergence: dict[str, float] = field(default_factory=dict)
    spacing: float = 30.0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.reset()

    def reset(self) -> None:
        self.totals: dict[str, dict[str, dict[str, float]]] = {}
        self.shadow: dict[str, list[float]] = {}
        self.history: list[Snapshot] = []
        self.anchors: dict[tuple[str, str], dict[datetime, datetime]] = {}

    def _truth(self, metric: str, variant: str) -> Any:
        return self.truth.get(metric, {}).get(variant, self.default.get(metric))

    def _add(self, metric: str, variant: str, values: Mapping[str, float]) -> None:
        bucket = self.totals.setdefault(metric, {}).setdefault(variant, {})
        for key, value in values.items():
            bucket[key] = bucket.get(key, 0.0) + float(value)

    def serve(self, weights: Mapping[str, int], mirrors: Mapping[str, int], seconds: float) -> None:
        """Serve ``seconds`` of traffic routed by ``weights`` (and mirrored by ``mirrors``)."""
        total = self.rps * seconds
        served = {v: int(self.rng.binomial(int(total), w / 100.0)) if w else 0 for v, w in weights.items()}
        champion = self.spec.champion.name
        for c, percent in mirrors.items():
            served[c] = served.get(c, 0) + int(self.rng.binomial(served.get(champion, 0), percent / 100.0))
            n = int(self.rng.binomial(served.get(champion, 0), percent / 100.0))
            d = int(self.rng.binomial(n, self.divergence.get(c, 0.0)))
            got = self.shadow.setdefault(c, [0.0, 0.0])
            got[0] += n
            got[1] += d
        names = [self.spec.metrics.primary, *self.spec.metrics.secondary, *self.spec.metrics.guardrails]
        for metric in names:
            mtype = metric.metric_type.value
            for variant, n in served.items():
                if metric.name == self.spec.metrics.primary.name and variant in self.loss:
                    n = int(self.rng.binomial(n, 1.0 - self.loss[variant]))
                truth = self._truth(metric.name, variant)
                if mtype == "proportion":
                    rate = float(truth) if truth is not None else 0.1
                    self._add(metric.name, variant, {"successes": self.rng.binomial(n, rate), "trials": n})
                elif mtype == "mean":
                    mean, sd = truth
                    x = self.rng.normal(mean, sd, size=n)
                    self._add(
                        metric.name, variant, {"count": n, "sum": x.sum(), "sum_of_squares": (x * x).sum()}
                    )
                else:
                    rate, visits = truth
                    xs = self.rng.poisson(visits, size=n) + 1
                    ys = self.rng.binomial(xs, rate)
                    self._add(
                        metric.name,
                        variant,
                        {
                            "units": n,
                            "numerator": ys.sum(),
                            "denominator": xs.sum(),
                            "numerator_squares": (ys * ys).sum(),
                            "denominator_squares": (xs * xs).sum(),
                            "cross_products": (xs * ys).sum(),
                        },
                    )

    def _snapshot(self, at: datetime) -> None:
        """Remember the counters as they are at ``at`` (the samples a scrape at ``at`` would take)."""
        self.history.append((at, copy.deepcopy(self.totals), {c: list(v) for c, v in self.shadow.items()}))

    def _totals_at(self, at: datetime) -> Snapshot:
        """The latest snapshot at or before ``at`` (zeros, dated long before, when there is none)."""
        found: Snapshot = (T0 - timedelta(days=1), {}, {})
        for snap in self.history:
            if snap[0] <= at:
                found = snap
        return found

    def _counters(self, name: str, variant: str, snap: Snapshot) -> dict[str, float]:
        if name == DIVERGENCE:
            compared, differing = snap[2].get(variant, [0.0, 0.0])
            return {"successes": differing, "trials": compared}
        got: dict[str, float] = snap[1].get(name, {}).get(variant, {})
        return got

    def observations(
        self,
        at: datetime,
        status: ModelExperimentStatus | None = None,
        *,
        outage: Iterable[str] = (),
        stale: Mapping[str, Iterable[str]] | None = None,
        annotations: Mapping[str, str] | None = None,
        spec_errors: tuple[SpecProblem, ...] = (),
        generation: int = 1,
    ) -> Observations:
        """What the provider would read at ``at``, for a policy whose memory is ``status``: each
        metric's increments per variant (one series each) since its anchor, the counters as they
        were at the checkpoint (anchors are kept by checkpoint, as the provider's memo does).

        ``outage`` metrics (or ``"shadow"`` for the divergence) read Unknown; ``stale`` (metric ->
        variants) gives those variants no new sample this tick, as for a target Prometheus has not
        scraped again: what they count arrives with a later reading."""
        status = status or ModelExperimentStatus()
        self._snapshot(at)
        dead = set(outage)
        stale = {k: set(v) for k, v in (stale or {}).items()}
        metrics: dict[str, Any] = {}
        names: list[tuple[str, str, tuple[str, ...]]] = [
            (m.name, m.metric_type.value, self.spec.variant_names())
            for m in (self.spec.metrics.primary, *self.spec.metrics.secondary, *self.spec.metrics.guardrails)
        ]
        if self.spec.shadow.divergence is not None:
            names.append((DIVERGENCE, "proportion", tuple(c.name for c in self.spec.challengers)))
        for name, mtype, variants in names:
            if name in dead or (name == DIVERGENCE and "shadow" in dead):
                metrics[name] = Unknown("prometheus: connection refused")
                continue
            since = status.checkpoints.get(name)
            origin = since or status.counted_since or status.started_at or at
            per: dict[str, VariantCounts] = {}
            for variant in variants:
                key = (name, variant)
                remembered = self.anchors.get(key, {}).get(since) if since is not None else None
                base = self._totals_at(remembered if remembered is not None else origin)
                now_snap = base if variant in stale.get(name, set()) else self.history[-1]
                new, old = self._counters(name, variant, now_snap), self._counters(name, variant, base)
                fields = {
                    f: (
                        Increment(
                            base[0].timestamp(), now_snap[0].timestamp(), new.get(f, 0.0) - old.get(f, 0.0)
                        ),
                    )
                    for f in FIELDS[mtype]
                } if now_snap[0] > base[0] else dict.fromkeys(FIELDS[mtype], ())
                self.anchors.setdefault(key, {})[_ms(at)] = now_snap[0]
                per[variant] = VariantCounts(
                    fields=fields, lag=(at - now_snap[0]).total_seconds(), spacing=self.spacing
                )
            metrics[name] = CounterReading(since=since, until=_ms(at), variants=per)
        return Observations(
            at=at,
            metrics=metrics,
            spec_errors=spec_errors,
            annotations=dict(annotations or {}),
            generation=generation,
        )


def _ms(at: datetime) -> datetime:
    """``at`` to the millisecond, as the provider's checkpoints are."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


class Experiment:
    """A fake clock driving ``decide`` tick by tick against a :class:`World`."""

    def __init__(
        self,
        spec: ModelExperimentSpec,
        world: World | None = None,
        *,
        interval: float = 30.0,
        check_idempotent: bool = True,
        check_roundtrip: bool = False,
    ) -> None:
        self.spec = spec
        self.world = world or World(spec)
        self.world.spec = spec
        self.interval = interval
        self.now = T0
        self.status = ModelExperimentStatus()
        self.decisions: list[Decision] = []
        self.check_idempotent = check_idempotent
        self.check_roundtrip = check_roundtrip
        self.observed: list[Observations] = []
        self.annotations: dict[str, str] = {}
        self.propagation = 0

    @property
    def last(self) -> Decision:
        return self.decisions[-1]

    def set_spec(self, **over: Any) -> None:
        self.spec = ModelExperimentSpec.model_validate(
            merge(self.spec.model_dump(by_alias=True, exclude_none=True), over)
        )
        self.world.spec = self.spec

    def tick(self, seconds: float | None = None, **faults: Any) -> Decision:
        """When ``seconds`` pass (default: the interval), then decide."""
        dt = self.interval if seconds is None else seconds
        if self.decisions:
            # The routes reach the traffic ``propagation`` ticks late (a mesh pushing them slowly).
            routes = self.decisions[max(0, len(self.decisions) - 1 - self.propagation)].routes
            self.world.serve(routes.weights, routes.mirrors, dt)
        self.now += timedelta(seconds=dt)
        annotations = {**self.annotations, **faults.pop("annotations", {})}
        obs = self.world.observations(self.now, self.status, annotations=annotations, **faults)
        given = self.status.model_copy(deep=True)
        decision = decide(self.spec, self.status, obs, self.now)
        assert self.status == given, "decide changed the status it was given"
        if self.check_idempotent:
            again = decide(self.spec, decision.status, obs, self.now)
            assert again.status == decision.status, "decide is not idempotent"
            assert again.routes == decision.routes
            assert again.events == (), "a replayed tick emits Events again"
        if self.check_roundtrip:
            # The status as the apiserver hands it back decides the same.
            echoed = decide(self.spec, roundtrip(self.status), obs, self.now)
            assert echoed.status == decision.status, "the JSON round trip changes the decision"
            assert (echoed.rule, echoed.routes) == (decision.rule, decision.routes)
        self.observed.append(obs)
        self.status = decision.status
        self.decisions.append(decision)
        return decision

    def ticks(self, n: int, **faults: Any) -> list[Decision]:
        return [self.tick(**faults) for _ in range(n)]

    def until(self, done: Callable[[Decision], bool], limit: int = 2000, **faults: Any) -> Decision:
        """Tick until ``done`` holds (fails after ``limit`` ticks)."""
        for _ in range(limit):
            d = self.tick(**faults)
            if done(d):
                return d
        raise AssertionError(f"not reached in {limit} ticks; last: {self.last.rule} {self.last.message}")

    def challenger_shares(self) -> list[int]:
        """The challengers' total weight after each tick."""
        return [
            sum(w for v, w in d.routes.weights.items() if v != self.spec.champion.name)
            for d in self.decisions
        ]

    # ---- Then: each raises AssertionError with describe() -------------------------------------
    def describe(self) -> str:
        """The run so far, for failures: the last decision, its conditions, the history, the shares."""
        if not self.decisions:
            return "no tick yet"
        d = self.last
        conditions = {f"{c.type}": f"{c.status}/{c.reason}" for c in d.status.conditions}
        history = [f"{h.to_phase}@{h.to_step}:{h.reason}" for h in d.status.history]
        events = [f"{e.type}/{e.reason}" for x in self.decisions for e in x.events]
        return (
            f"after {len(self.decisions)} ticks: phase={d.phase} step={d.step} rule={d.rule} "
            f"reason={d.reason} "
            f"routes={d.routes.describe()} conditions={conditions} history={history[-8:]} "
            f"events={events[-8:]} shares={self.challenger_shares()} message={d.message!r}"
        )

    def then_routes(self, weights: Mapping[str, int], mirrors: Mapping[str, int] | None = None) -> None:
        """The last decision routes by ``weights`` (and ``mirrors``, when given)."""
        routes = self.last.routes
        found = dict(routes.weights)
        assert found == dict(weights), f"routes {found} != {dict(weights)}; {self.describe()}"
        if mirrors is not None:
            assert dict(routes.mirrors) == dict(mirrors), f"mirrors {dict(routes.mirrors)}; {self.describe()}"

    def then_every_step_seen(self) -> list[int]:
        """The challengers' share took each step of the spec, in order, never back, and nothing else
        (a run that climbed all the way); returns the shares."""
        shares = self.challenger_shares()
        steps = list(self.spec.rollout.steps)
        assert set(shares) == set(steps), f"shares {sorted(set(shares))} != steps {steps}; {self.describe()}"
        assert shares == sorted(shares), f"the share went back a step; {self.describe()}"
        return shares

    def then_condition(self, type_: ConditionType | str, status: str, reason: str | None = None) -> None:
        """The last status has condition ``type_`` at ``status`` (and ``reason``, when given)."""
        c = self.last.status.condition(ConditionType(type_))
        assert c is not None, f"no condition {type_}; {self.describe()}"
        assert c.status == status, f"condition {type_} is {c.status}/{c.reason}; {self.describe()}"
        if reason is not None:
            assert c.reason == reason, f"condition {type_} is {c.status}/{c.reason}; {self.describe()}"

    def then_last_history_reason(self, reason: str) -> None:
        history = self.last.status.history
        assert history, f"no history; {self.describe()}"
        assert history[-1].reason == reason, f"last history reason {history[-1].reason}; {self.describe()}"

    def then_event(self, reason: str) -> None:
        """Some tick so far emitted an Event with ``reason``."""
        reasons = [e.reason for d in self.decisions for e in d.events]
        assert reason in reasons, f"no {reason} Event in {reasons}; {self.describe()}"

    def then_no_step_repeated(self) -> None:
        """Each step was advanced to once, the steps advanced to are 1..n, and the history never went
        back a step."""
        history = self.last.status.history
        advanced = Counter(
            -1 if h.to_step is None else h.to_step for h in history if h.reason == "StepAdvanced"
        )
        assert all(n == 1 for n in advanced.values()), f"a step advanced twice: {advanced}; {self.describe()}"
        assert sorted(advanced) == list(range(1, len(advanced) + 1)), f"a step was skipped; {self.describe()}"
        to_steps = [h.to_step for h in history if h.to_step is not None]
        assert to_steps == sorted(to_steps), f"the history went back a step; {self.describe()}"


def finished(d: Decision) -> bool:
    return d.phase.terminal


def roundtrip(status: ModelExperimentStatus) -> ModelExperimentStatus:
    """The status after a trip through JSON and the apiserver (which drops nulls)."""
    dumped = json.loads(json.dumps(status.model_dump(by_alias=True, mode="json", exclude_none=True)))
    return ModelExperimentStatus.model_validate(dumped)
