"""Route tables from VirtualService and HTTPRoute dicts, and the routing decisions they make."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from modelrollout.devstack.sim.routes import (
    BackendRef,
    RequestInfo,
    RouteParseError,
    parse_http_route,
    parse_istio_host,
    parse_virtual_service,
)
from modelrollout.routing.buckets import buckets_regex
from modelrollout.sdk import BUCKET_HEADER

pytestmark = pytest.mark.unit


def request(
    path: str = "/predict",
    method: str = "POST",
    *,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    **named: str,
) -> RequestInfo:
    """A request; ``x_user_id="a"`` is the header ``x-user-id: a``."""
    all_headers = {k.replace("_", "-"): v for k, v in named.items()}
    all_headers.update(headers or {})
    return RequestInfo(method, path, all_headers, query or {})


def vs(http: list[dict[str, Any]], namespace: str = "shop") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "ranker", "namespace": namespace, "resourceVersion": "42", "generation": 3},
        "spec": {"hosts": ["ranker"], "http": http},
    }


def route(*pairs: tuple[str, int]) -> list[dict[str, Any]]:
    return [{"destination": {"host": host}, "weight": weight} for host, weight in pairs]


def draw(table: Any, req: RequestInfo, n: int = 20_000, seed: int = 1) -> Counter[str]:
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    for _ in range(n):
        selection = table.select(req, rng)
        counts[selection.backend.service if selection and selection.backend else "-"] += 1
    return counts


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("ranker-v7", ("ranker-v7", "shop")),
        ("ranker-v7.other", ("ranker-v7", "other")),
        ("ranker-v7.other.svc", ("ranker-v7", "other")),
        ("ranker-v7.other.svc.cluster.local", ("ranker-v7", "other")),
        ("Ranker-V7", ("ranker-v7", "shop")),
    ],
)
def test_istio_hosts(host: str, expected: tuple[str, str]) -> None:
    assert parse_istio_host(host, "shop") == expected


def test_istio_weights_metadata_and_per_request_draws() -> None:
    table = parse_virtual_service(
        vs([{"name": "primary", "route": route(("ranker-v6", 90), ("ranker-v7", 10))}])
    )
    assert (table.kind, table.name, table.namespace, table.resource_version, table.generation) == (
        "VirtualService",
        "ranker",
        "shop",
        "42",
        3,
    )
    assert table.weights() == {"primary": {"ranker-v6": 90, "ranker-v7": 10}}
    counts = draw(table, request())
    assert abs(counts["ranker-v7"] / 20_000 - 0.10) < 0.012
    # A bucket header alone changes nothing: weights stay per request.
    with_header = draw(table, request(headers={BUCKET_HEADER: "3"}))
    assert abs(with_header["ranker-v7"] / 20_000 - 0.10) < 0.012


def test_istio_single_destination_without_weight_takes_everything() -> None:
    table = parse_virtual_service(vs([{"route": [{"destination": {"host": "ranker-v6"}}]}]))
    assert table.rules[0].name == "http[0]"
    assert draw(table, request(), n=100) == {"ranker-v6": 100}


def test_zero_weights_select_no_backend() -> None:
    table = parse_virtual_service(vs([{"route": route(("ranker-v6", 0), ("ranker-v7", 0))}]))
    selection = table.select(request(), random.Random(1))
    assert selection is not None
    assert selection.backend is None


def test_istio_sticky_split_by_bucket_regex() -> None:
    table = parse_virtual_service(
        vs(
            [
                {
                    "name": "sticky",
                    "match": [{"headers": {BUCKET_HEADER: {"regex": buckets_regex(range(0, 25))}}}],
                    "route": [{"destination": {"host": "ranker-v7"}}],
                },
                {"name": "primary", "route": [{"destination": {"host": "ranker-v6"}}]},
            ]
        )
    )
    rng = random.Random(1)
    for b in range(100):
        selection = table.select(request(headers={BUCKET_HEADER: str(b)}), rng)
        assert selection is not None
        assert selection.backend is not None
        assert selection.backend.service == ("ranker-v7" if b < 25 else "ranker-v6"), b
    no_header = table.select(request(), rng)
    assert no_header is not None
    assert no_header.rule.name == "primary"


def test_istio_match_kinds() -> None:
    table = parse_virtual_service(
        vs(
            [
                {
                    "name": "exact",
                    "match": [{"headers": {"x-user-id": {"exact": "vip"}}}],
                    "route": route(("a", 100)),
                },
                {
                    "name": "prefix",
                    "match": [{"headers": {"x-user-id": {"prefix": "beta-"}}}],
                    "route": route(("b", 100)),
                },
                {"name": "present", "match": [{"headers": {"x-debug": {}}}], "route": route(("c", 100))},
                {
                    "name": "uri",
                    "match": [{"uri": {"prefix": "/v2/"}, "method": {"exact": "GET"}}],
                    "route": route(("d", 100)),
                },
                {
                    "name": "query",
                    "match": [{"queryParams": {"model": {"exact": "new"}}}],
                    "route": route(("e", 100)),
                },
                {
                    "name": "without",
                    "match": [{"uri": {"exact": "/predict"}, "withoutHeaders": {"x-user-id": {}}}],
                    "route": route(("f", 100)),
                },
                {
                    "name": "regex-uri",
                    "match": [{"uri": {"regex": "/PRED.*"}, "ignoreUriCase": True}],
                    "route": route(("g", 100)),
                },
            ]
        )
    )

    def rule(req: RequestInfo) -> str | None:
        found = table.match(req)
        return found.name if found else None

    assert rule(request(x_user_id="vip")) == "exact"
    assert rule(request(x_user_id="beta-7")) == "prefix"
    assert rule(request(x_user_id="someone", x_debug="1")) == "present"
    assert rule(request("/v2/predict", "GET", x_user_id="someone")) == "uri"
    assert rule(request("/v2/predict", "POST", x_user_id="someone")) is None
    assert rule(request("/other", x_user_id="someone", query={"model": "new"})) == "query"
    assert rule(request("/predict")) == "without"
    assert rule(request("/predict", x_user_id="someone")) == "regex-uri"
    assert rule(request("/nothing", x_user_id="someone")) is None


def test_istio_regex_is_a_full_match() -> None:
    table = parse_virtual_service(
        vs([{"match": [{"headers": {BUCKET_HEADER: {"regex": "1"}}}], "route": route(("ranker-v7", 100))}])
    )
    assert table.match(request(headers={BUCKET_HEADER: "1"})) is not None
    assert table.match(request(headers={BUCKET_HEADER: "12"})) is None


def test_istio_mirrors() -> None:
    table = parse_virtual_service(
        vs(
            [
                {
                    "name": "a",
                    "route": route(("ranker-v6", 100)),
                    "mirror": {"host": "ranker-v7"},
                    "mirrorPercentage": {"value": 25.5},
                },
                {
                    "name": "b",
                    "route": route(("ranker-v6", 100)),
                    "mirror": {"host": "ranker-v7", "subset": "canary"},
                },
                {
                    "name": "c",
                    "route": route(("ranker-v6", 100)),
                    "mirror": {"host": "ranker-v7"},
                    "mirrorPercent": 40,
                },
                {
                    "name": "d",
                    "route": route(("ranker-v6", 100)),
                    "mirrors": [
                        {"destination": {"host": "ranker-v7"}, "percentage": {"value": 10}},
                        {"destination": {"host": "ranker-v8.other"}},
                    ],
                },
            ],
            namespace="shop",
        )
    )
    mirrors = {rule.name: [(m.backend, m.percent) for m in rule.mirrors] for rule in table.rules}
    assert mirrors == {
        "a": [(BackendRef("ranker-v7", "shop"), 25.5)],
        "b": [(BackendRef("ranker-v7", "shop", "canary"), 100.0)],
        "c": [(BackendRef("ranker-v7", "shop"), 40.0)],
        "d": [(BackendRef("ranker-v7", "shop"), 10.0), (BackendRef("ranker-v8", "other"), 100.0)],
    }
    assert table.to_json()["rules"][0]["mirrors"] == [{"destination": "ranker-v7", "percent": 25.5}]


def test_istio_subsets_and_route_name_filter() -> None:
    obj = vs(
        [
            {
                "name": "primary",
                "route": [
                    {"destination": {"host": "ranker", "subset": "v6"}, "weight": 75},
                    {"destination": {"host": "ranker", "subset": "v7"}, "weight": 25},
                ],
            },
            {"name": "other", "route": route(("elsewhere", 100))},
        ]
    )
    table = parse_virtual_service(obj, route_names=["primary"])
    assert [r.name for r in table.rules] == ["primary"]
    assert table.weights() == {"primary": {"ranker/v6": 75, "ranker/v7": 25}}


def test_istio_unsupported_conditions_are_listed() -> None:
    table = parse_virtual_service(
        vs([{"match": [{"sourceLabels": {"app": "web"}}], "route": route(("a", 100))}])
    )
    assert table.warnings == (
        "spec.http[0].match[0].sourceLabels is not evaluated by the mesh stand-in (ignored)",
    )


@pytest.mark.parametrize(
    ("http", "message"),
    [
        ([{"route": [{"destination": {}}]}], "needs a host"),
        ([{"match": [{"headers": {"x": {"regex": "("}}}], "route": route(("a", 100))}], "invalid regex"),
        (
            [{"match": [{"headers": {"x": {"exact": "a", "prefix": "b"}}}], "route": route(("a", 100))}],
            "only one",
        ),
        (
            [{"route": route(("a", 100)), "mirror": {"host": "b"}, "mirrorPercentage": {"value": 150}}],
            r"\[0, 100\]",
        ),
    ],
)
def test_istio_invalid_objects(http: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(RouteParseError, match=message):
        parse_virtual_service(vs(http))


# ---- Gateway API ------------------------------------------------------------------------------
def httproute(rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "ranker", "namespace": "shop", "resourceVersion": "7", "generation": 2},
        "spec": {"parentRefs": [{"name": "edge"}], "rules": rules},
    }


def ref(name: str, weight: int | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "port": 8080, **extra}
    if weight is not None:
        out["weight"] = weight
    return out


def test_gateway_weights_default_match_and_default_weight() -> None:
    table = parse_http_route(httproute([{"backendRefs": [ref("ranker-v6", 3), ref("ranker-v7")]}]))
    assert table.kind == "HTTPRoute"
    assert table.weights() == {"rules[0]": {"ranker-v6": 3, "ranker-v7": 1}}
    counts = draw(table, request("/anything"))
    assert abs(counts["ranker-v7"] / 20_000 - 0.25) < 0.015


def test_gateway_precedence_exact_then_longest_prefix_then_headers() -> None:
    table = parse_http_route(
        httproute(
            [
                {
                    "name": "root",
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [ref("root")],
                },
                {
                    "name": "predict",
                    "matches": [{"path": {"type": "PathPrefix", "value": "/predict"}}],
                    "backendRefs": [ref("predict")],
                },
                {
                    "name": "sticky",
                    "matches": [
                        {
                            "path": {"type": "PathPrefix", "value": "/predict"},
                            "headers": [
                                {
                                    "type": "RegularExpression",
                                    "name": BUCKET_HEADER,
                                    "value": buckets_regex(range(0, 10)),
                                }
                            ],
                        }
                    ],
                    "backendRefs": [ref("sticky")],
                },
                {
                    "name": "exact",
                    "matches": [{"path": {"type": "Exact", "value": "/predict/batch"}}],
                    "backendRefs": [ref("exact")],
                },
            ]
        )
    )

    def rule(req: RequestInfo) -> str | None:
        found = table.match(req)
        return found.name if found else None

    assert rule(request("/predict", headers={BUCKET_HEADER: "5"})) == "sticky"
    assert rule(request("/predict", headers={BUCKET_HEADER: "50"})) == "predict"
    assert rule(request("/predict/batch", headers={BUCKET_HEADER: "5"})) == "exact"
    assert rule(request("/predictions")) == "root"  # PathPrefix matches whole path elements
    assert rule(request("/predict/x")) == "predict"


def test_gateway_mirror_filters_on_rules_and_backends() -> None:
    table = parse_http_route(
        httproute(
            [
                {
                    "filters": [
                        {
                            "type": "RequestMirror",
                            "requestMirror": {"backendRef": ref("ranker-v7"), "percent": 50},
                        },
                        {
                            "type": "RequestMirror",
                            "requestMirror": {
                                "backendRef": ref("ranker-v8"),
                                "fraction": {"numerator": 1, "denominator": 4},
                            },
                        },
                        {"type": "RequestHeaderModifier", "requestHeaderModifier": {}},
                    ],
                    "backendRefs": [
                        ref(
                            "ranker-v6",
                            filters=[
                                {"type": "RequestMirror", "requestMirror": {"backendRef": ref("ranker-v9")}}
                            ],
                        )
                    ],
                }
            ]
        )
    )
    rule = table.rules[0]
    assert [(m.backend.service, m.percent) for m in rule.mirrors] == [
        ("ranker-v7", 50.0),
        ("ranker-v8", 25.0),
    ]
    selection = table.select(request(), random.Random(1))
    assert selection is not None
    assert [m.backend.service for m in selection.mirrors] == ["ranker-v7", "ranker-v8", "ranker-v9"]
    assert table.warnings == (
        "spec.rules[0].filters[2]: filter 'RequestHeaderModifier' is not applied by the mesh stand-in",
    )


def test_gateway_method_and_query_matches() -> None:
    table = parse_http_route(
        httproute(
            [
                {
                    "name": "get",
                    "matches": [{"method": "GET", "queryParams": [{"name": "model", "value": "new"}]}],
                    "backendRefs": [ref("a")],
                },
            ]
        )
    )
    assert table.match(request("/x", "GET", query={"model": "new"})) is not None
    assert table.match(request("/x", "POST", query={"model": "new"})) is None
    assert table.match(request("/x", "GET")) is None


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"backendRefs": [{"port": 80}]}], "needs a name"),
        ([{"backendRefs": [ref("a", kind="ServiceImport", group="multicluster.x-k8s.io")]}], "only Service"),
        ([{"matches": [{"headers": [{"type": "PathPrefix", "name": "x", "value": "y"}]}]}], "unsupported"),
    ],
)
def test_gateway_invalid_objects(rules: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(RouteParseError, match=message):
        parse_http_route(httproute(rules))


def test_weight_header_emulates_envoys_header_name() -> None:
    table = parse_virtual_service(vs([{"route": route(("ranker-v7", 25), ("ranker-v6", 75))}]))
    rng = random.Random(1)
    for b in range(100):
        selection = table.select(request(headers={BUCKET_HEADER: str(b)}), rng, weight_header=BUCKET_HEADER)
        assert selection is not None
        assert selection.backend is not None
        assert selection.backend.service == ("ranker-v7" if b < 25 else "ranker-v6")


def test_empty_table_routes_nothing() -> None:
    from modelrollout.devstack.sim.routes import RouteTable

    assert RouteTable.empty("VirtualService", "ranker", "shop").select(request(), random.Random(1)) is None
