"""Exact counts from the raw samples of counter series: the increments each series counted.

Why raw samples
---------------
``increase(x[w])`` is an estimate: it extrapolates each series from its first and last samples in
the range to the range's edges, so it is not whole, not monotone from one evaluation to the next,
and it moves with where the scrapes fall. The counts that decide an experiment (the sample ratio
test above all, which is sensitive to a few requests in tens of thousands) must be the counts
themselves. A counter's samples are exact: the difference of two consecutive samples of one
series is what that series counted between them, and a sample below the one before is a counter
reset, after which the series counted its new value from zero (the rule Prometheus's own
``increase`` uses). So each tick reads the raw samples of every series that a field's selector
matches (an instant query of the range selector ``SEL[r]``, which returns them with their
timestamps, stale markers left out) and turns them into :class:`~modelrollout.api.observations.Increment`
s: ``(time of the sample before, time of the sample, increase)``. The policy puts each increment
into the stratum whose span holds it whole (:mod:`modelrollout.policy.counts`).

Anchors and the query cost
--------------------------
An increment needs the series' sample before it, its **anchor**. The operator keeps each series'
last counted sample in memory (:class:`AnchorMemo`), so a tick asks only for the samples since the
oldest anchor: a range of about one tick plus one scrape interval, whatever the experiment's age.
A 14-day experiment costs no more per tick than a new one, and the answer grows with the number
of series times the samples of one tick, not with history.

Without anchors in memory (the operator restarted, or its last status write failed), the anchor
of a series is its last sample at or before the metric's checkpoint (``status.checkpoints``, the
time of the last reading counted), found in a range that reaches :data:`LOOKBACK` before it.
A sample that landed in Prometheus after the last reading although its timestamp is before it (a
scrape still in flight) is then taken as the anchor, and its one increment is lost; the memory
avoids that in normal operation.

A series without any sample in that range is looked up once more, with ``last_over_time`` over
:data:`LONG_LOOKBACK` before it: a series that comes back after a long gap (a target that could
not be scraped) continues from its last value, so its whole history is not counted again. A
series with no sample in that time either is **new** (a new pod, the first 5xx of a variant): it
started from zero, and its first value is counted, as an increment that starts one scrape
interval before its first sample. Only when no series of the whole metric has any anchor (the
data before the checkpoint is gone: Prometheus lost its storage) is each series anchored at its
first sample, which may lose one increment but never counts a history twice.

A counter reset loses what the series counted between its last sample and the reset (a pod that
crashed between two scrapes); nothing can recover that, and the number of resets is reported
(:attr:`~modelrollout.api.observations.VariantCounts.resets`) so the sample ratio test can allow for it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from modelrollout.api.observations import (
    ALL_BUCKET,
    OTHER_VALUE,
    CounterReading,
    Increment,
    MetricReading,
    Unknown,
    VariantCounts,
)
from modelrollout.metrics.counters import CounterMetric, CounterQuery, CounterSet

#: How far before the checkpoint a tick without anchors in memory looks for them.
LOOKBACK: Final = timedelta(minutes=5)
#: How far back a series without a sample in :data:`LOOKBACK` is looked for (``last_over_time``).
LONG_LOOKBACK: Final = timedelta(hours=1)
#: The most distinct values of a split label one reading keeps apart (the rest are summed).
SPLIT_VALUES_LIMIT: Final = 256
#: A series' labels, sorted: its identity.
SeriesKey = tuple[tuple[str, str], ...]
#: (metric name, field name, index of the query in the field): one query's place.
PartKey = tuple[str, str, int]
#: A range query: (query, start, end) -> the ``result`` of a matrix answer, or why there is none.
FetchRange = Callable[[CounterQuery, float, float], "list[Any] | Unknown"]
#: ``last_over_time(selector[window])`` at a time: (query, window seconds, time) -> vector result.
FetchLast = Callable[[CounterQuery, float, float], "list[Any] | Unknown"]


@dataclass(frozen=True)
class Anchor:
    """A series' last counted sample (its raw value)."""

    time: float
    value: float


@dataclass(frozen=True)
class Series:
    """The raw samples of one series, oldest first (finite values only)."""

    labels: Mapping[str, str]
    times: tuple[float, ...]
    values: tuple[float, ...]


@dataclass
class AnchorMemo:
    """The anchors of one experiment's series, by the checkpoint they continue from.

    ``entries[part]`` maps a checkpoint (seconds) to the anchors of that query's series after the
    reading that ended there. A few checkpoints are kept, so the anchors of the checkpoint that
    the status holds are found even when the last status write failed.
    """

    entries: dict[PartKey, dict[float, dict[SeriesKey, Anchor]]] = field(default_factory=dict)
    keep: int = 3

    def get(self, part: PartKey, checkpoint: float | None) -> dict[SeriesKey, Anchor] | None:
        if checkpoint is None:
            return None
        return self.entries.get(part, {}).get(checkpoint)

    def put(self, part: PartKey, checkpoint: float, anchors: dict[SeriesKey, Anchor]) -> None:
        found = self.entries.setdefault(part, {})
        found[checkpoint] = anchors
        for old in sorted(found)[: max(0, len(found) - self.keep)]:
            del found[old]


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


def milliseconds(at: datetime) -> int:
    """``at`` in whole milliseconds since the epoch, rounded down (timezone-aware ``at``)."""
    return (at - _EPOCH) // _MS


def seconds(at: datetime) -> float:
    """``at`` in seconds since the epoch, rounded down to the millisecond (Prometheus's resolution).

    The same float as Prometheus's timestamp of a sample taken at that millisecond, so samples and
    checkpoints compare exactly.
    """
    return milliseconds(at) / 1000.0


def at_millisecond(at: datetime) -> datetime:
    """``at`` rounded down to the millisecond, in UTC: the checkpoint a reading at ``at`` leaves."""
    return _EPOCH + milliseconds(at) * _MS


def parse_matrix(result: Any) -> dict[SeriesKey, Series] | str:
    """The series of a range-selector answer (``[{"metric": {...}, "values": [[t, "v"], ...]}]``),
    or why it is not one."""
    if not isinstance(result, list):
        return f"an answer of type {type(result).__name__} instead of a range vector"
    out: dict[SeriesKey, Series] = {}
    for item in result:
        if not isinstance(item, Mapping) or not isinstance(item.get("metric"), Mapping):
            return "an answer that is not a range vector"
        raw = item.get("values")
        if not isinstance(raw, list):
            return "an instant vector instead of a range vector"
        labels = {str(k): str(v) for k, v in item["metric"].items()}
        pairs: list[tuple[float, float]] = []
        for point in raw:
            try:
                t, v = float(point[0]), float(point[1])
            except (TypeError, ValueError, IndexError):
                return f"an unreadable sample {point!r}"
            if math.isfinite(t) and math.isfinite(v):
                pairs.append((t, v))
        if not pairs:
            continue  # no finite sample (a series of NaNs): nothing to count
        pairs.sort()
        key = tuple(sorted(labels.items()))
        out[key] = Series(labels, tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))
    return out


def parse_vector(result: Any) -> dict[SeriesKey, float] | str:
    """The values of an instant-vector answer, by series, or why it is not one."""
    if not isinstance(result, list):
        return f"an answer of type {type(result).__name__} instead of an instant vector"
    out: dict[SeriesKey, float] = {}
    for item in result:
        if not isinstance(item, Mapping) or not isinstance(item.get("metric"), Mapping):
            return "an answer that is not an instant vector"
        try:
            value = float(item["value"][1])
        except (KeyError, TypeError, ValueError, IndexError):
            return "an answer that is not an instant vector"
        labels = {str(k): str(v) for k, v in item["metric"].items()}
        labels.pop("__name__", None)  # last_over_time drops the name
        if math.isfinite(value):
            out[tuple(sorted(labels.items()))] = value
    return out


def split_value(label: str, value: str) -> str:
    """A split label's value as the counts key it: ``le`` as a canonical number (``500``,
    ``500.0`` and ``5e+02`` are one bucket edge; ``+Inf`` stays), other labels as they are."""
    if label != "le":
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    return ALL_BUCKET if number == math.inf else repr(number)


def without_name(key: SeriesKey) -> SeriesKey:
    return tuple(kv for kv in key if kv[0] != "__name__")


@dataclass
class SeriesCount:
    """One series' increments in one reading."""

    increments: list[Increment]
    last: Anchor | None
    resets: int = 0
    spacing: float = 0.0


def target_of(labels: Mapping[str, str]) -> str:
    """A short, stable name of the scrape target of a series with ``labels``: a hash of its ``job``
    and ``instance`` (of every label when it has neither)."""
    if "instance" in labels or "job" in labels:
        text = f"{labels.get('job', '')}/{labels.get('instance', '')}"
    else:
        text = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__")
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def count_series(
    series: Series, anchor: Anchor, sign: float, *, synthetic: bool = False, target: str = ""
) -> SeriesCount:
    """The increments of ``series`` after ``anchor``: the difference of consecutive samples, or the
    sample itself after a reset (a value below the one before). ``synthetic``: the anchor is not a
    real sample (a new series), so its spacing is not the scrape interval."""
    out: list[Increment] = []
    resets = 0
    spacing = 0.0
    prior = anchor
    for t, v in zip(series.times, series.values, strict=True):
        if t <= prior.time:
            continue
        reset = v < prior.value
        delta = v if reset else v - prior.value
        resets += reset
        if not (synthetic and prior is anchor):
            spacing = max(spacing, t - prior.time)
        out.append(Increment(prior.time, t, sign * delta, target, reset))
        prior = Anchor(t, v)
    return SeriesCount(out, prior, resets, spacing)


def anchor_before(series: Series, checkpoint: float) -> Anchor | None:
    """The last sample of ``series`` at or before ``checkpoint``."""
    found: Anchor | None = None
    for t, v in zip(series.times, series.values, strict=True):
        if t > checkpoint:
            break
        found = Anchor(t, v)
    return found


def typical_spacing(all_series: Sequence[Series]) -> float:
    """The largest median spacing of consecutive samples among ``all_series`` (0 when unknown): the
    scrape interval, used to date the first increment of a new series."""
    best = 0.0
    for s in all_series:
        gaps = sorted(b - a for a, b in zip(s.times, s.times[1:], strict=False))
        if gaps:
            best = max(best, gaps[len(gaps) // 2])
    return best


@dataclass
class _Part:
    """One query of a metric during a reading: its series, anchors, and the new anchors."""

    key: PartKey
    query: CounterQuery
    series: dict[SeriesKey, Series] = field(default_factory=dict)
    anchors: dict[SeriesKey, Anchor] = field(default_factory=dict)
    pending: list[SeriesKey] = field(default_factory=list)
    synthetic: set[SeriesKey] = field(default_factory=set)


class MetricCounter:
    """Counts one metric of one reading (see the module docstring); the I/O is given as callables."""

    def __init__(
        self,
        metric: CounterMetric,
        *,
        at: float,
        checkpoint: float,
        memo: AnchorMemo,
        memo_checkpoint: float | None,
        fetch_range: FetchRange,
        fetch_last: FetchLast,
    ) -> None:
        self.metric = metric
        self.at = at
        self.checkpoint = checkpoint
        self.memo = memo
        self.memo_checkpoint = memo_checkpoint
        self.fetch_range = fetch_range
        self.fetch_last = fetch_last
        # A selector read twice in one metric (the latency preset's _count) is fetched once.
        self._fetched: dict[str, tuple[float, list[Any] | Unknown]] = {}
        self._split_seen: set[str] = set()

    def _range_start(self, remembered: dict[SeriesKey, Anchor] | None) -> float:
        floor = self.checkpoint - LOOKBACK.total_seconds()
        if remembered:
            return max(floor, min(a.time for a in remembered.values()) - 0.001)
        return floor

    def _read(self, key: PartKey, query: CounterQuery) -> _Part | Unknown:
        part = _Part(key, query)
        remembered = self.memo.get(key, self.memo_checkpoint)
        start = self._range_start(remembered)
        cached = self._fetched.get(query.selector)
        if cached is not None and cached[0] <= start:
            result = cached[1]
        else:
            result = self.fetch_range(query, start, self.at)
            self._fetched[query.selector] = (start, result)
        if isinstance(result, Unknown):
            return result
        parsed = parse_matrix(result)
        if isinstance(parsed, str):
            return Unknown(f"Prometheus answered {parsed} for {query.path} (selector: {query.described()})")
        part.series = {k: s for k, s in parsed.items() if query.variant_of(s.labels) is not None}
        for k, s in part.series.items():
            found = remembered.get(k) if remembered is not None else None
            found = found or anchor_before(s, self.checkpoint)
            if found is None:
                part.pending.append(k)
            else:
                part.anchors[k] = found
        return part

    def _look_back(self, part: _Part) -> Unknown | None:
        """Anchors of series without a sample in the range, from ``last_over_time`` before it."""
        if not part.pending:
            return None
        before = min(min(part.series[k].times) for k in part.pending) - 0.001
        start = min(before, self._range_start(None))
        answer = self.fetch_last(part.query, LONG_LOOKBACK.total_seconds(), start)
        if isinstance(answer, Unknown):
            return answer
        values = parse_vector(answer)
        if isinstance(values, str):
            return Unknown(f"Prometheus answered {values} for {part.query.path}")
        still: list[SeriesKey] = []
        for k in part.pending:
            value = values.get(without_name(k))
            if value is None:
                still.append(k)
            else:  # a series back from a gap: it continues from its last value, dated at the lookback
                part.anchors[k] = Anchor(start - LONG_LOOKBACK.total_seconds(), value)
                part.synthetic.add(k)  # (a lower bound of its time, not a scrape interval)
        part.pending = still
        return None

    def _resolve_new(self, parts: Sequence[_Part]) -> None:
        """Series with no sample before the checkpoint at all: new (counted from zero), unless the
        metric has no history at all (then anchored at their first sample)."""
        history = any(p.anchors for p in parts)
        spacing = typical_spacing([s for p in parts for s in p.series.values()])
        for p in parts:
            for k in p.pending:
                s = p.series[k]
                if history:
                    # It was created after the last scrape that did not see it: one scrape interval
                    # before its first sample (at the checkpoint when the interval is not known yet).
                    born = s.times[0] - spacing if spacing > 0 else self.checkpoint
                    p.anchors[k] = Anchor(min(max(born, self.checkpoint), s.times[0] - 0.001), 0.0)
                    p.synthetic.add(k)
                else:
                    p.anchors[k] = Anchor(s.times[0], s.values[0])
            p.pending = []

    def count(self) -> tuple[MetricReading, dict[PartKey, dict[SeriesKey, Anchor]]]:
        """The metric's reading and the anchors after it (by query), or Unknown and no anchors."""
        if self.metric.error is not None:
            return Unknown(f"{self.metric.error.path}: {self.metric.error.message}"), {}
        parts: list[_Part] = []
        for f in self.metric.fields:
            for i, query in enumerate(f.parts):
                read = self._read((self.metric.name, f.name, i), query)
                if isinstance(read, Unknown):
                    return read, {}
                failed = self._look_back(read)
                if failed is not None:
                    return failed, {}
                parts.append(read)
        self._resolve_new(parts)
        return self._reading(parts)

    def _reading(
        self, parts: Sequence[_Part]
    ) -> tuple[MetricReading, dict[PartKey, dict[SeriesKey, Anchor]]]:
        by_part = {p.key: p for p in parts}
        variants: dict[str, VariantCounts] = {}
        anchors: dict[PartKey, dict[SeriesKey, Anchor]] = {}
        per_variant: dict[str, dict[str, list[Increment]]] = {v: {} for v in self.metric.variants}
        per_split: dict[str, dict[str, dict[str, list[Increment]]]] = {}
        # per variant: lag, spacing, resets
        stats: dict[str, list[float]] = {v: [0.0, 0.0, 0.0] for v in self.metric.variants}
        for f in self.metric.fields:
            seen = dict.fromkeys(self.metric.variants, False)
            for i, query in enumerate(f.parts):
                part = by_part[(self.metric.name, f.name, i)]
                kept: dict[SeriesKey, Anchor] = {}
                for k, s in part.series.items():
                    variant = query.variant_of(s.labels)
                    if variant not in per_variant:
                        continue
                    counted = count_series(
                        s,
                        part.anchors[k],
                        query.sign,
                        synthetic=k in part.synthetic,
                        target=target_of(s.labels),
                    )
                    split = self._split_value(s.labels)
                    if split is not None:
                        bucket = per_split.setdefault(split, {}).setdefault(variant, {})
                        bucket.setdefault(f.attr, []).extend(counted.increments)
                    if self.metric.split_total is None or split == self.metric.split_total:
                        per_variant[variant].setdefault(f.attr, []).extend(counted.increments)
                    if counted.last is not None:
                        kept[k] = counted.last
                    seen[variant] = True
                    st = stats[variant]
                    st[1] = max(st[1], counted.spacing)
                    st[2] += counted.resets
                    if f is self.metric.sample_field and counted.last is not None:
                        st[0] = max(st[0], self.at - counted.last.time)
                anchors[part.key] = kept
            missing = [v for v, ok in seen.items() if not ok]
            if missing and f.required:
                shown = f.parts[0].described(missing[0])
                why = f"no data for variant {missing[0]} from {f.parts[0].path} (selector: {shown})"
                return Unknown(why), {}
        for v in self.metric.variants:
            fields = {f.attr: tuple(per_variant[v].get(f.attr, ())) for f in self.metric.fields}
            lag, spacing, resets = stats[v]
            variants[v] = VariantCounts(fields=fields, lag=lag, spacing=spacing, resets=int(resets))
        breakdown = {
            value: {
                v: VariantCounts(
                    fields={f.attr: tuple(by_variant.get(v, {}).get(f.attr, ())) for f in self.metric.fields}
                )
                for v in self.metric.variants
            }
            for value, by_variant in per_split.items()
        }
        reading = CounterReading(since=None, until=_EPOCH, variants=variants, breakdown=breakdown)
        return reading, anchors

    def _split_value(self, labels: Mapping[str, str]) -> str | None:
        """The value of the metric's split label in ``labels`` (canonical for ``le``), or None when
        the metric is not split; values beyond :data:`SPLIT_VALUES_LIMIT` are :data:`OTHER_VALUE`."""
        label = self.metric.split
        if label is None:
            return None
        value = split_value(label, labels.get(label, ""))
        if value not in self._split_seen and len(self._split_seen) >= SPLIT_VALUES_LIMIT:
            return OTHER_VALUE
        self._split_seen.add(value)
        return value


def count_set(
    counter_set: CounterSet,
    *,
    at: datetime,
    checkpoints: Mapping[str, datetime | None],
    counted_since: datetime,
    memo: AnchorMemo,
    fetch_range: FetchRange,
    fetch_last: FetchLast,
) -> dict[str, MetricReading]:
    """Every metric of ``counter_set`` counted at ``at``, continuing from its checkpoint (or from
    ``counted_since`` when it has none); the memo gets the new anchors under the new checkpoint.

    A failure of any query of a metric makes that metric :class:`~modelrollout.api.observations.Unknown`
    (its anchors stay as they were); once a query finds Prometheus unreachable, the rest are not
    sent and get the same reason.
    """
    times = [at, counted_since, *(c for c in checkpoints.values() if c is not None)]
    if any(t.tzinfo is None for t in times):
        naive = Unknown("the reading's time, countedSince and the checkpoints must be timezone-aware")
        return {metric.name: naive for metric in counter_set.all_metrics()}
    at_s = seconds(at)
    until = at_millisecond(at)
    readings: dict[str, MetricReading] = {}
    down: list[Unknown] = []

    def guarded(fetch: FetchRange) -> FetchRange:
        def call(query: CounterQuery, a: float, b: float) -> list[Any] | Unknown:
            if down:
                return down[0]
            answer = fetch(query, a, b)
            if isinstance(answer, Unknown) and answer.reason.startswith("Prometheus unreachable"):
                down.append(answer)
            return answer

        return call

    for metric in counter_set.all_metrics():
        since = checkpoints.get(metric.name)
        checkpoint = seconds(since if since is not None else counted_since)
        counter = MetricCounter(
            metric,
            at=at_s,
            checkpoint=checkpoint,
            memo=memo,
            memo_checkpoint=seconds(since) if since is not None else None,
            fetch_range=guarded(fetch_range),
            fetch_last=guarded(fetch_last),
        )
        reading, anchors = counter.count()
        if isinstance(reading, CounterReading):
            reading = CounterReading(
                since=since, until=until, variants=reading.variants, breakdown=reading.breakdown
            )
            for part, kept in anchors.items():
                memo.put(part, at_s, kept)
        readings[metric.name] = reading
    return readings
