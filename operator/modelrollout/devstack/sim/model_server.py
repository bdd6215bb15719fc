"""A simulated model server: one process per variant, ``/predict`` over HTTP on loopback.

Each request names a user (header ``x-user-id``, or query ``user_id``). The server waits a
latency drawn from a lognormal distribution given by its median and 99th percentile, fails with
HTTP 500 at the configured error rate, and otherwise answers::

    {"variant": "v7", "user_id": "user-000123", "prediction": {"item": 412, "score": 0.73},
     "shadow": false, "outcome": {"click": true, "revenue": 1.42}}

**Predictions** are deterministic per user: ``item`` is a hash of (``prediction_seed``, user),
so variants with the same ``prediction_seed`` agree, except that a variant with
``disagreement = d`` replaces the item with a different one for a share ``d`` of the users (which
users is a hash of seed, variant and user, so it is the same on every request). The divergence
that a shadow comparison measures is therefore ``d`` (against a variant with ``d = 0``).

**Segments**: every user belongs to one segment, its platform, a hash of the user id
(:func:`~modelrollout.devstack.sim.common.segment_of`: ``desktop`` about 60 % of the users,
``mobile`` 30 %, ``tablet`` 10 %), the same in every process and on every request.

**Outcomes** are what the user then does with a live (not shadow) prediction: a click with
probability ``click_rate`` (or ``segment_click_rates[segment]`` for a user of a segment named
there, e.g. ``{"mobile": 0.1}``), and revenue drawn from a lognormal distribution with mean
``revenue_mean`` and standard deviation ``revenue_sd`` (never negative, so its running sums only
grow and Prometheus's ``increase()`` applies). A request is shadow (mirrored) when its ``Host``
ends in ``-shadow``, as Envoy marks mirrored requests, or when it carries
``x-modelrollout-shadow: true``; shadow requests count no impression and no outcome.

**Metrics** on ``GET /metrics`` (its own registry), with ``model`` the variant name and
``segment`` the user's segment::

    impressions_total{model, segment}    live predictions served (the trials of click-through)
    clicks_total{model, segment}         clicks (the successes)
    revenue_sum{model, segment}, revenue_count{model, segment},
    revenue_sum_squares{model, segment}  sufficient statistics of the mean metric (summary + gauge)
    predictions_total{model, shadow}     every successful prediction, live or shadow
    prediction_score_bucket{model, shadow, le}  histogram of scores (for drift checks)
    model_requests_total{model, code, shadow}   every /predict answer by HTTP status

These series exist at zero from the start (the live ones for every segment), so ``increase()``
sees the first events. A selector by ``model`` alone (``clicks_total{model="v7"}``) matches the
three segments' series, which the operator sums.

**Control**: ``GET /healthz``; ``GET /admin/config``; ``POST /admin/config`` with a JSON object
of fields to change (``{"error_rate": 0.2}``, ``{"segment_click_rates": {"mobile": 0.1}}``,
which replaces the whole map) applies them to the next request -- the e2e tests
start a guardrail breach at a known time this way.

Run: ``python -m modelrollout.devstack.sim.model_server --variant v7 --port 0 --ready-file ready.json
--error-rate 0.01 --latency-median-ms 5 --latency-p99-ms 25 --click-rate 0.12
--segment-click-rate mobile=0.08`` (``--segment-click-rate`` repeats, one segment each).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from modelrollout.devstack.sim.common import (
    LOOPBACK,
    SEGMENTS,
    json_response,
    run_service,
    segment_of,
    start_site,
    unit_hash,
    wait_for_shutdown_signal,
    write_ready_file,
)

Z99 = 2.3263478740408408
"""The 99th percentile of the standard normal distribution."""

USER_HEADER = "x-user-id"
SHADOW_HEADER = "x-modelrollout-shadow"
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
MAX_LATENCY_MS = 30_000.0


@dataclass(frozen=True)
class ModelConfig:
    """What a simulated model does; every field but ``variant`` may change at run time."""

    variant: str
    error_rate: float = 0.0
    latency_median_ms: float = 5.0
    latency_p99_ms: float = 20.0
    click_rate: float = 0.1
    segment_click_rates: dict[str, float] = field(default_factory=dict, hash=False)
    revenue_mean: float = 1.0
    revenue_sd: float = 0.5
    prediction_seed: str = "model"
    disagreement: float = 0.0
    items: int = 1000
    seed: int | None = None

    def __post_init__(self) -> None:
        problems = validate(self)
        if problems:
            raise ValueError("; ".join(problems))

    def updated(self, changes: Mapping[str, Any]) -> ModelConfig:
        """A copy with ``changes`` applied (unknown or wrongly typed fields raise ValueError)."""
        known = {f.name: f for f in dataclasses.fields(self)}
        values: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown field {key!r}; known: {', '.join(sorted(known))}")
            if key == "variant" and value != self.variant:
                raise ValueError("variant cannot change at run time")
            values[key] = _coerce(key, value)
        return dataclasses.replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def click_rate_of(self, segment: str | None) -> float:
        """The click rate of a user of ``segment`` (``segment_click_rates``, else ``click_rate``)."""
        if segment is None:
            return self.click_rate
        return self.segment_click_rates.get(segment, self.click_rate)


_FLOATS = {"error_rate", "latency_median_ms", "latency_p99_ms", "click_rate", "revenue_mean",
           "revenue_sd", "disagreement"}


def _coerce(key: str, value: Any) -> Any:
    if key == "segment_click_rates":
        if not isinstance(value, Mapping):
            raise ValueError(f"segment_click_rates must be an object of segment: rate, not {value!r}")
        rates: dict[str, float] = {}
        for segment, rate in value.items():
            if isinstance(rate, bool) or not isinstance(rate, int | float):
                raise ValueError(f"segment_click_rates[{segment!r}] must be a number, not {rate!r}")
            rates[str(segment)] = float(rate)
        return rates
    if key in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key} must be a number, not {value!r}")
        return float(value)
    if key == "items":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"items must be an integer, not {value!r}")
        return value
    if key == "seed":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"seed must be an integer or null, not {value!r}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, not {value!r}")
    return value


def validate(config: ModelConfig) -> list[str]:
    """The problems of ``config`` (empty when it is valid)."""
    problems = []
    if not config.variant:
        problems.append("variant must not be empty")
    for name in ("error_rate", "click_rate", "disagreement"):
        value = getattr(config, name)
        if not 0.0 <= value <= 1.0:
            problems.append(f"{name} must be in [0, 1], not {value}")
    for segment, rate in config.segment_click_rates.items():
        if segment not in SEGMENTS:
            problems.append(f"segment_click_rates: unknown segment {segment!r}; known: {', '.join(SEGMENTS)}")
        elif not 0.0 <= rate <= 1.0:
            problems.append(f"segment_click_rates[{segment!r}] must be in [0, 1], not {rate}")
    if not 0.0 <= config.latency_median_ms <= MAX_LATENCY_MS:
        problems.append(f"latency_median_ms must be in [0, {MAX_LATENCY_MS:.0f}]")
    if config.latency_p99_ms < config.latency_median_ms or config.latency_p99_ms > MAX_LATENCY_MS:
        problems.append(f"latency_p99_ms must be in [latency_median_ms, {MAX_LATENCY_MS:.0f}]")
    if config.revenue_mean <= 0.0 or config.revenue_sd < 0.0:
        problems.append("revenue_mean must be > 0 and revenue_sd >= 0")
    if config.items < 2:
        problems.append("items must be at least 2")
    return problems


# ---- the pure pieces --------------------------------------------------------------------------
def latency_ms(config: ModelConfig, rng: random.Random) -> float:
    """One latency draw: lognormal with the configured median and 99th percentile (in ms)."""
    median = config.latency_median_ms
    if median <= 0.0:
        return 0.0
    if config.latency_p99_ms <= median:
        return median
    sigma = math.log(config.latency_p99_ms / median) / Z99
    return min(median * math.exp(sigma * rng.gauss(0.0, 1.0)), MAX_LATENCY_MS)


def lognormal_parameters(mean: float, sd: float) -> tuple[float, float]:
    """(mu, sigma) of the lognormal distribution with this mean and standard deviation."""
    sigma2 = math.log1p((sd / mean) ** 2)
    return math.log(mean) - sigma2 / 2.0, math.sqrt(sigma2)


@dataclass(frozen=True)
class Prediction:
    """A model's answer for one user."""

    item: int
    score: float
    disagrees: bool

    def to_json(self) -> dict[str, Any]:
        return {"item": self.item, "score": self.score}


def predict(user_id: str, config: ModelConfig) -> Prediction:
    """The deterministic prediction of ``config``'s model for ``user_id``."""
    seed = config.prediction_seed
    item = int(unit_hash(seed, "item", user_id) * config.items)
    disagrees = unit_hash(seed, config.variant, "flip", user_id) < config.disagreement
    if disagrees:
        shift = 1 + int(unit_hash(seed, config.variant, "alt", user_id) * (config.items - 1))
        item = (item + shift) % config.items
    score = round(unit_hash(seed, "score", user_id, str(item)), 6)
    return Prediction(item, score, disagrees)


@dataclass(frozen=True)
class Outcome:
    """What the user did after a live prediction."""

    click: bool
    revenue: float


def sample_outcome(config: ModelConfig, rng: random.Random, segment: str | None = None) -> Outcome:
    """A click (Bernoulli of the click rate of ``segment``'s users, see
    :meth:`ModelConfig.click_rate_of`) and a revenue (lognormal with the configured mean, sd)."""
    click = rng.random() < config.click_rate_of(segment)
    if config.revenue_sd <= 0.0:
        revenue = config.revenue_mean
    else:
        mu, sigma = lognormal_parameters(config.revenue_mean, config.revenue_sd)
        revenue = rng.lognormvariate(mu, sigma)
    return Outcome(click, revenue)


def is_shadow_request(host: str | None, shadow_header: str | None) -> bool:
    """Whether a request is a mirror: ``Host`` ends in ``-shadow`` (Envoy) or the header says so."""
    if shadow_header is not None and shadow_header.strip().lower() in ("1", "true", "yes"):
        return True
    if not host:
        return False
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name.endswith("-shadow")


# ---- the server -------------------------------------------------------------------------------
class ModelMetrics:
    """The Prometheus series of one model server, in a registry of its own."""

    def __init__(self, variant: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        by_segment = ["model", "segment"]
        self.impressions = Counter("impressions", "Live predictions shown to users.", by_segment,
                                   registry=registry)
        self.clicks = Counter("clicks", "Clicks on live predictions.", by_segment, registry=registry)
        self.revenue = Summary("revenue", "Revenue per live prediction (sum and count).", by_segment,
                               registry=registry)
        self.revenue_squares = Gauge("revenue_sum_squares", "Sum of squared revenue per live prediction.",
                                     by_segment, registry=registry)
        self.predictions = Counter("predictions", "Successful predictions, live or shadow.",
                                   ["model", "shadow"], registry=registry)
        self.scores = Histogram("prediction_score", "Scores of successful predictions.",
                                ["model", "shadow"], buckets=SCORE_BUCKETS, registry=registry)
        self.requests = Counter("model_requests", "Answers of /predict by HTTP status.",
                                ["model", "code", "shadow"], registry=registry)
        self.variant = variant
        for segment in SEGMENTS:
            for family in (self.impressions, self.clicks, self.revenue, self.revenue_squares):
                family.labels(variant, segment)
        for shadow in ("false", "true"):
            self.predictions.labels(variant, shadow)
            self.scores.labels(variant, shadow)
            for code in ("200", "500"):
                self.requests.labels(variant, code, shadow)

    def count_outcome(self, segment: str, outcome: Outcome) -> None:
        """Count one live prediction shown to a user of ``segment`` and what the user did."""
        key = (self.variant, segment)
        self.impressions.labels(*key).inc()
        if outcome.click:
            self.clicks.labels(*key).inc()
        self.revenue.labels(*key).observe(outcome.revenue)
        self.revenue_squares.labels(*key).inc(outcome.revenue * outcome.revenue)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class ModelServer:
    """The state of one simulated model: its configuration, random source and metrics."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.metrics = ModelMetrics(config.variant)
        self.served = 0

    def reconfigure(self, changes: Mapping[str, Any]) -> ModelConfig:
        """Apply ``changes`` (validated) from the next request on."""
        new = self.config.updated(changes)
        if new.seed != self.config.seed:
            self.rng = random.Random(new.seed)
        self.config = new
        return new

    async def handle_predict(self, request: web.Request) -> web.Response:
        user_id = request.headers.get(USER_HEADER) or request.query.get("user_id")
        config = self.config
        shadow = is_shadow_request(request.headers.get("Host"), request.headers.get(SHADOW_HEADER))
        shadow_label = "true" if shadow else "false"
        if not user_id:
            self.metrics.requests.labels(config.variant, "400", shadow_label).inc()
            return json_response({"error": f"missing user id (header {USER_HEADER} or query user_id)",
                                  "variant": config.variant}, status=400)
        if request.can_read_body:
            await request.read()
        delay = latency_ms(config, self.rng)
        if delay > 0.0:
            await asyncio.sleep(delay / 1000.0)
        if config.error_rate > 0.0 and self.rng.random() < config.error_rate:
            self.metrics.requests.labels(config.variant, "500", shadow_label).inc()
            return json_response({"error": "simulated model failure", "variant": config.variant}, status=500)
        prediction = predict(user_id, config)
        metrics = self.metrics
        metrics.predictions.labels(config.variant, shadow_label).inc()
        metrics.scores.labels(config.variant, shadow_label).observe(prediction.score)
        metrics.requests.labels(config.variant, "200", shadow_label).inc()
        body: dict[str, Any] = {"variant": config.variant, "user_id": user_id,
                                "prediction": prediction.to_json(), "shadow": shadow}
        if not shadow:
            segment = segment_of(user_id)
            outcome = sample_outcome(config, self.rng, segment)
            metrics.count_outcome(segment, outcome)
            body["outcome"] = {"click": outcome.click, "revenue": round(outcome.revenue, 6)}
        self.served += 1
        return json_response(body)

    async def handle_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle_health(self, _request: web.Request) -> web.Response:
        return json_response({"status": "ok", "variant": self.config.variant, "served": self.served})

    async def handle_get_config(self, _request: web.Request) -> web.Response:
        return json_response(self.config.to_dict())

    async def handle_set_config(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object")
            new = self.reconfigure(changes)
        except (ValueError, json.JSONDecodeError) as exc:
            return json_response({"error": str(exc)}, status=400)
        print(f"model {new.variant}: configuration changed: {json.dumps(changes)}", flush=True)
        return json_response(new.to_dict())

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("GET", "/predict", self.handle_predict)
        app.router.add_route("POST", "/predict", self.handle_predict)
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/healthz", self.handle_health)
        app.router.add_get("/admin/config", self.handle_get_config)
        app.router.add_post("/admin/config", self.handle_set_config)
        return app


# ---- command line -----------------------------------------------------------------------------
def _segment_rate(text: str) -> tuple[str, float]:
    """``mobile=0.1`` -> ("mobile", 0.1) (the type of ``--segment-click-rate``)."""
    segment, sep, rate = text.partition("=")
    try:
        if not sep or not segment.strip():
            raise ValueError
        return segment.strip(), float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SEGMENT=RATE (mobile=0.1), not {text!r}") from None


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(ModelConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "variant":
            parser.add_argument(flag, required=True, help="the variant name (the `model` label)")
        elif f.name == "segment_click_rates":
            parser.add_argument("--segment-click-rate", dest=f.name, type=_segment_rate, action="append",
                                default=None, metavar="SEGMENT=RATE",
                                help=f"the click rate of one segment's users ({', '.join(SEGMENTS)}; "
                                "repeat for several; default: click-rate for all)")
        elif f.name in _FLOATS:
            parser.add_argument(flag, type=float, default=None, help=f"default {f.default}")
        elif f.name in ("items", "seed"):
            parser.add_argument(flag, type=int, default=None, help=f"default {f.default}")
        else:
            parser.add_argument(flag, default=None, help=f"default {f.default!r}")


def config_from_args(args: argparse.Namespace) -> ModelConfig:
    """The configuration from ``--config-json`` overlaid with the individual flags (each
    ``--segment-click-rate`` sets one segment of the map from ``--config-json``)."""
    values: dict[str, Any] = json.loads(args.config_json) if args.config_json else {}
    for f in dataclasses.fields(ModelConfig):
        value = getattr(args, f.name)
        if value is None:
            continue
        if f.name == "segment_click_rates":
            value = {**dict(values.get(f.name) or {}), **dict(value)}
        values[f.name] = value
    return ModelConfig(variant=values.pop("variant")).updated(values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modelrollout.devstack.sim.model_server",
                                     description="A simulated model server on loopback.")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--ready-file", type=Path, help="write {port, pid} here once serving")
    parser.add_argument("--config-json", help="a JSON object of ModelConfig fields (flags override it)")
    _add_config_arguments(parser)
    return parser


async def serve(config: ModelConfig, port: int = 0, ready_file: Path | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    server = ModelServer(config)
    runner, bound = await start_site(server.app(), port)
    print(f"model {config.variant}: serving on http://{LOOPBACK}:{bound}", flush=True)
    if ready_file is not None:
        write_ready_file(ready_file, {"port": bound, "pid": os.getpid(), "variant": config.variant})
    try:
        await wait_for_shutdown_signal()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValueError, json.JSONDecodeError) as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return 2
    run_service(lambda: serve(config, args.port, args.ready_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
