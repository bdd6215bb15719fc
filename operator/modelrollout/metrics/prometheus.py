"""The Prometheus metrics provider, on ``prometheus_api_client.PrometheusConnect``.

A tick reads the raw samples of every counter selector (see :mod:`modelrollout.metrics.counters`)
with an instant query of its range selector, evaluated at the tick's time to the millisecond, and
counts them exactly (:mod:`modelrollout.metrics.counting`). Each request has a timeout both on
the HTTP request and on the server's evaluation (the ``timeout`` parameter):
``spec.metrics.prometheus.timeout``. The HTTP client does not retry on its own beyond one
immediate reconnect (a tick is the retry: a failed query is an
:class:`~modelrollout.api.observations.Unknown` now and is asked again at the next tick, from the same
checkpoint, so nothing is lost), so a tick never waits longer than the timeout per query. Once a
query finds Prometheus unreachable, the rest of that tick's queries are not sent and get the same
reason.

How each failure reads (the ``reason`` of the ``Unknown``):

=============================================  ==================================================
failure                                         reason
=============================================  ==================================================
connection refused, DNS, TLS, connect timeout   ``Prometheus unreachable at <address>: <cause>``
no answer within the timeout                    ``Prometheus unreachable at <address>: no answer
                                                within <t> s``
HTTP 401/403                                    ``Prometheus at <address> refused the query (HTTP
                                                401): ... check ...bearerTokenSecretRef``
HTTP 400 ``bad_data``                           ``PromQL error in <path>: <Prometheus's message>``
HTTP 422 ``execution``                          ``Prometheus could not evaluate <path>: <message>``
HTTP 503 ``timeout``/``canceled``               ``Prometheus timed out evaluating <path>: ...``
other HTTP status                               ``Prometheus at <address> answered HTTP <code> ...``
an answer that is not JSON or not a vector      ``Prometheus ... unexpected/unreadable answer ...``
a variant without a series (a required field)   ``no data for variant <v> from <path> (selector:
                                                ...)``
=============================================  ==================================================

Nothing here raises into the caller, whatever the failure. Each failed request is also handed,
as one word of :data:`QUERY_ERROR_REASONS`, to the provider's ``on_error`` callback (the operator
counts them in ``modelrollout_prometheus_query_errors_total{reason}``).

:meth:`PrometheusProvider.check` parses every selector, as a range ``<selector>[1m]`` (which PromQL
allows only on a series selector), with ``/api/v1/format_query`` (Prometheus 2.38 and later: a
parse and type check without evaluation); where that endpoint is missing (older servers, some
Prometheus-compatible backends) it evaluates the query once instead. Only a ``bad_data`` answer is
a spec error.
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import os
import re
import tempfile
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from modelrollout.api.observations import MetricReading, SpecProblem, Unknown
from modelrollout.api.spec import Prometheus
from modelrollout.api.types import parse_duration
from modelrollout.errors import InvalidInputError
from modelrollout.metrics.counters import CounterQuery, CounterSet
from modelrollout.metrics.counting import AnchorMemo, count_set, milliseconds
from modelrollout.metrics.credentials import Credentials

#: Default number of queries of one tick in flight at once.
DEFAULT_CONCURRENCY: Final = 4

_STATUS_MESSAGE = re.compile(r"HTTP Status Code (\d+) \((.*)\)\s*$", re.DOTALL)
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")
_FailureKind = Literal["unreachable", "bad_data", "missing_endpoint", "other"]

#: Why a request failed, in one word (a closed set: the label of the operator's error counter).
QUERY_ERROR_REASONS: Final = (
    "unreachable",  # no connection: refused, DNS, TLS, connect timeout
    "timeout",  # no answer within the timeout, or Prometheus's own evaluation timed out
    "bad_data",  # HTTP 400: the PromQL does not parse
    "unauthorized",  # HTTP 401 or 403
    "execution",  # HTTP 422: Prometheus could not evaluate the query
    "not_found",  # HTTP 404: not the base URL of a Prometheus API
    "http_error",  # any other HTTP status
    "unreadable",  # an answer that is not JSON, or not of the expected shape
    "other",  # anything else
)


@dataclass(frozen=True)
class _Failure:
    """Why a request gave no answer: the reason for an Unknown, its kind, Prometheus's words, and
    the one word of :data:`QUERY_ERROR_REASONS` it counts under."""

    reason: str
    kind: _FailureKind
    message: str = ""
    label: str = "other"


def _body_of(exc: PrometheusApiClientException) -> tuple[int | None, bytes]:
    """The status code and body that ``PrometheusConnect`` put in its exception's message."""
    match = _STATUS_MESSAGE.match(str(exc))
    if match is None:
        return None, str(exc).encode()
    try:
        body = ast.literal_eval(match.group(2))
    except (ValueError, SyntaxError):
        body = match.group(2)
    return int(match.group(1)), body if isinstance(body, bytes) else str(body).encode()


def _prometheus_error(body: bytes) -> tuple[str, str]:
    """(errorType, error) of a Prometheus error answer, or ("", a short body)."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        return str(answer.get("errorType", "")), answer["error"]
    text = " ".join(body.decode("utf-8", "replace").split())
    return "", text[:200]


def _cause(exc: BaseException) -> str:
    """A short cause of a connection error (``Connection refused``), without the query URL."""
    text = str(exc)
    found = _ERRNO.search(text)
    if found:
        return found.group(1).strip()
    for pattern in ("Name or service not known", "certificate verify failed", "timed out"):
        if pattern in text:
            return pattern
    return type(exc).__name__


class PrometheusProvider:
    """The :class:`~modelrollout.metrics.base.MetricsProvider` of a Prometheus server.

    Parameters
    ----------
    address
        Base URL of the Prometheus HTTP API (``http://prometheus.monitoring:9090``; a path prefix
        is kept).
    timeout
        Seconds allowed to one query, on the wire and for the server's evaluation.
    bearer_token
        Sent as ``Authorization: Bearer <token>`` with every request.
    ca_pem
        PEM CA bundle that signs the server's certificate (``https://`` only); written to a
        private temporary file for the HTTP client, removed by :meth:`close`.
    max_concurrency
        Queries of one tick in flight at once in the ``a``-methods (threads).
    on_error
        Called with the failure's word of :data:`QUERY_ERROR_REASONS` for each request that gets
        no usable answer (from any thread; it must be quick and must not raise).
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 10.0,
        bearer_token: str | None = None,
        ca_pem: str | None = None,
        max_concurrency: int = DEFAULT_CONCURRENCY,
        pool_size: int = 10,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        if not isinstance(address, str) or not address.startswith(("http://", "https://")):
            raise InvalidInputError(f"address must be an http:// or https:// URL, got {address!r}")
        if not timeout > 0:
            raise InvalidInputError(f"timeout must be positive, got {timeout!r}")
        if max_concurrency < 1:
            raise InvalidInputError(f"max_concurrency must be at least 1, got {max_concurrency!r}")
        self.address = address.rstrip("/")
        self.timeout = float(timeout)
        self.max_concurrency = max_concurrency
        self._on_error = on_error
        self._headers = {"Accept": "application/json"}
        if bearer_token:
            self._headers["Authorization"] = f"Bearer {bearer_token}"
        self._session = _session_from_environment(self.address)
        self._ca_file: str | None = None
        if ca_pem:
            handle, self._ca_file = tempfile.mkstemp(prefix="modelrollout-ca-", suffix=".pem")
            with os.fdopen(handle, "w") as out:
                out.write(ca_pem)
            self._session.verify = self._ca_file
        self._cleanup = weakref.finalize(self, _cleanup, self._session, self._ca_file)
        # No retries beyond one immediate reconnect: the next tick is the retry.
        retry = Retry(total=1, connect=1, read=0, status=0, other=0, redirect=0, backoff_factor=0,
                      raise_on_status=False)
        self._client = PrometheusConnect(
            url=self.address, headers=self._headers, retry=retry, session=self._session, timeout=self.timeout
        )
        # One provider may serve many experiments from many worker threads at once: keep as many
        # connections as there are threads (requests' default pool keeps 10 and discards the rest).
        self._session.mount(self.address, HTTPAdapter(max_retries=retry, pool_maxsize=max(1, pool_size)))
        self._format_query_supported = True

    @classmethod
    def from_spec(
        cls, prometheus: Prometheus, credentials: Credentials | None = None, **kwargs: Any
    ) -> PrometheusProvider:
        """A provider for ``spec.metrics.prometheus``, with the credentials read by
        :func:`~modelrollout.metrics.credentials.read_credentials`."""
        credentials = credentials or Credentials()
        return cls(
            prometheus.address,
            timeout=parse_duration(prometheus.timeout).total_seconds(),
            bearer_token=credentials.bearer_token,
            ca_pem=credentials.ca_pem,
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"PrometheusProvider({self.address!r}, timeout={self.timeout:g})"

    def close(self) -> None:
        """Close the HTTP session and remove the CA file."""
        self._cleanup()

    def __enter__(self) -> PrometheusProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one request ----------------------------------------------------------------------------

    def _unreachable(self, cause: str, label: str = "unreachable") -> _Failure:
        return _Failure(f"Prometheus unreachable at {self.address}: {cause}", "unreachable", label=label)

    def _failed(self, failure: _Failure) -> _Failure:
        """``failure``, after telling ``on_error`` about it."""
        if self._on_error is not None:
            self._on_error(failure.label)
        return failure

    def _http_failure(self, status: int | None, body: bytes, path: str) -> _Failure:
        error_type, error = _prometheus_error(body)
        if status == 400 and error_type == "bad_data":
            return _Failure(f"PromQL error in {path}: {error}", "bad_data", error, "bad_data")
        if status in (401, 403):
            return _Failure(
                f"Prometheus at {self.address} refused the query (HTTP {status}): {error}; check "
                "spec.metrics.prometheus.bearerTokenSecretRef",
                "other",
                label="unauthorized",
            )
        if status == 422 or error_type == "execution":
            return _Failure(f"Prometheus could not evaluate {path}: {error}", "other", error, "execution")
        if error_type in ("timeout", "canceled"):
            return _Failure(f"Prometheus timed out evaluating {path}: {error}", "other", error, "timeout")
        if status == 404:
            return _Failure(
                f"Prometheus at {self.address} answered HTTP 404 (is the address the base URL of the "
                f"Prometheus API?): {error}",
                "missing_endpoint",
                label="not_found",
            )
        reason = f"Prometheus at {self.address} answered HTTP {status} for {path}: {error}"
        return _Failure(reason, "other", label="http_error")

    def _request_failure(self, exc: Exception, path: str) -> _Failure:
        """The failure for an exception of the HTTP client."""
        if isinstance(exc, PrometheusApiClientException):
            status, body = _body_of(exc)
            return self._http_failure(status, body, path)
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return self._unreachable(f"no connection within {self.timeout:g} s")
        if isinstance(exc, requests.exceptions.ReadTimeout) or (
            # without read retries, urllib3 reports a read timeout as "max retries exceeded"
            isinstance(exc, requests.exceptions.ConnectionError) and "Read timed out" in str(exc)
        ):
            return self._unreachable(f"no answer within {self.timeout:g} s", "timeout")
        if isinstance(exc, requests.exceptions.SSLError):
            return self._unreachable(f"TLS error: {_cause(exc)}")
        if isinstance(exc, requests.exceptions.ConnectionError):
            return self._unreachable(_cause(exc))
        if isinstance(exc, ValueError | KeyError | TypeError):  # JSON errors, answers without "data"
            return _Failure(
                f"Prometheus at {self.address} gave an unreadable answer for {path}: {type(exc).__name__}",
                "other",
                label="unreadable",
            )
        what = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, requests.exceptions.RequestException):
            return _Failure(f"request to Prometheus at {self.address} failed: {what}", "other")
        return _Failure(f"unexpected error querying Prometheus at {self.address}: {what}", "other")

    def query(self, promql: str, at: datetime | None = None, *, path: str = "query") -> Any | Unknown:
        """The ``result`` of an instant query at ``at`` (default: now), or why there is none."""
        answer = self._query(promql, path, at)
        return Unknown(answer.reason) if isinstance(answer, _Failure) else answer

    def _query(self, promql: str, path: str, at: datetime | None) -> Any | _Failure:
        params = {"timeout": f"{self.timeout:g}"}
        if at is not None:
            if at.tzinfo is None:
                return _Failure(f"the evaluation time of {path} must be timezone-aware", "other")
            ms = milliseconds(at)
            params["time"] = f"{ms // 1000}.{ms % 1000:03d}"
        try:
            return self._client.custom_query(promql, params=params, timeout=self.timeout)
        except Exception as exc:  # every failure becomes a reason, see the module docstring
            return self._failed(self._request_failure(exc, path))

    def _parse(self, promql: str, path: str) -> _Failure | None:
        """Whether ``promql`` parses: None, or the failure (``bad_data`` for a syntax or type error)."""
        if self._format_query_supported:
            try:
                response = self._session.get(
                    f"{self.address}/api/v1/format_query",
                    params={"query": promql},
                    headers=self._headers,
                    timeout=self.timeout,
                )
            except Exception as exc:
                return self._failed(self._request_failure(exc, path))
            if response.status_code == 200:
                return None
            failure = self._http_failure(response.status_code, response.content, path)
            if failure.kind != "missing_endpoint":
                return self._failed(failure)
            self._format_query_supported = False
        answer = self._query(promql, path, datetime.now(UTC))
        return answer if isinstance(answer, _Failure) else None

    # --- a tick ---------------------------------------------------------------------------------

    def _at(self, promql: str, path: str, at_seconds: float) -> Any | Unknown:
        answer = self._query(promql, path, _from_seconds(at_seconds))
        return Unknown(answer.reason) if isinstance(answer, _Failure) else answer

    def fetch_range(self, query: CounterQuery, start: float, end: float) -> Any | Unknown:
        """The raw samples of ``query``'s selector in ``[start, end]`` (seconds): an instant query of
        the range selector at ``end``."""
        span = max(0.001, end - start)
        return self._at(f"{query.selector}[{math.ceil(span * 1000)}ms]", query.path, end)

    def fetch_last(self, query: CounterQuery, window: float, at: float) -> Any | Unknown:
        """``last_over_time(selector[window])`` at ``at`` (seconds): each series' last value."""
        return self._at(f"last_over_time({query.selector}[{math.ceil(window * 1000)}ms])", query.path, at)

    def observe(
        self,
        counter_set: CounterSet,
        at: datetime,
        *,
        checkpoints: Mapping[str, datetime | None],
        counted_since: datetime,
        memo: AnchorMemo,
    ) -> dict[str, MetricReading]:
        """Every metric of ``counter_set`` counted exactly up to ``at`` from its checkpoint (see
        :func:`modelrollout.metrics.counting.count_set`); never raises."""
        return count_set(
            counter_set,
            at=at,
            checkpoints=checkpoints,
            counted_since=counted_since,
            memo=memo,
            fetch_range=self.fetch_range,
            fetch_last=self.fetch_last,
        )

    # --- checks ---------------------------------------------------------------------------------

    def online(self) -> Unknown | None:
        """None when Prometheus evaluates ``vector(1)``, else why not."""
        answer = self._query("vector(1)", "the connectivity check", None)
        if isinstance(answer, _Failure):
            return Unknown(answer.reason)
        return None

    def _check_query(self, query: CounterQuery) -> SpecProblem | _Failure | None:
        """The spec error of one counter query, the failure that stopped the check, or None.

        A range of the selector is parsed: PromQL allows a range only on a series selector, so an
        expression is reported as such."""
        failure = self._parse(f"{query.selector}[1m]", query.path)
        if failure is not None and failure.kind == "bad_data":
            return SpecProblem(
                query.path, f"the selector does not parse as a series selector: {failure.message}"
            )
        return failure

    def check(self, counter_set: CounterSet) -> list[SpecProblem] | Unknown:
        """The spec errors of ``counter_set``: those found while building it, and every selector
        that Prometheus does not parse.

        Returns an empty list when all is well, and :class:`Unknown` when Prometheus could not be
        asked and no error was found. Never raises.
        """
        errors = counter_set.spec_errors()
        unknown: Unknown | None = None
        for metric in counter_set.all_metrics():
            for f in metric.fields:
                for query in f.parts:
                    outcome = self._check_query(query)
                    if isinstance(outcome, SpecProblem):
                        errors.append(outcome)
                    elif isinstance(outcome, _Failure):
                        unknown = unknown or Unknown(f"could not check the queries: {outcome.reason}")
                        if outcome.kind == "unreachable":
                            return errors or unknown
        if errors:
            return errors
        return unknown if unknown is not None else []


def _from_seconds(at: float) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=round(at * 1000))


def _session_from_environment(address: str) -> requests.Session:
    """A session with the environment's proxies and CA bundle read once, not at every request.

    requests reads them (and looks for ``~/.netrc``, two ``stat`` calls) at every request while
    ``trust_env`` is on: a tenth of the operator's CPU at 1,000 experiments
    (``bench/operator_scale.py``). The same settings, resolved here, with ``trust_env`` off."""
    session = requests.Session()
    session.proxies.update(requests.utils.get_environ_proxies(address))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False
    return session


def _cleanup(session: Any, ca_file: str | None) -> None:
    session.close()
    if ca_file is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(ca_file)
