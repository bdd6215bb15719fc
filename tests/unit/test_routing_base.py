"""Tests of modelrollout.routing.base: input validation, largest remainder, the drift record."""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelrollout.errors import InvalidInputError
from modelrollout.routing import (
    GatewayAPIRouter,
    IstioRouter,
    Mirror,
    Router,
    RouteState,
    ServiceRouter,
    TrafficTarget,
    Variant,
    router_for,
)
from modelrollout.routing.base import (
    ROUTES_ANNOTATION,
    largest_remainder,
    recorded_states,
    updated_record,
    validate_state,
)

pytestmark = pytest.mark.unit

V6, V7 = Variant("v6", "ranker-v6"), Variant("v7", "ranker-v7")


def target(**kw: Any) -> TrafficTarget:
    args: dict[str, Any] = {"namespace": "shop", "name": "ranker", "variants": (V6, V7), "champion": "v6",
                            "routes": ("primary",)}
    args.update(kw)
    return TrafficTarget(**args)


@pytest.mark.parametrize("weights", [
    {"v6": 90, "v7": 9},          # sums to 99
    {"v6": 101, "v7": -1},        # out of range
    {"v6": 90.0, "v7": 10},       # not an integer
    {"v6": True, "v7": 99},       # bool is not a weight
    {},
])
def test_route_state_rejects_bad_weights(weights: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        RouteState(weights)


def test_route_state_and_mirror_validation() -> None:
    state = RouteState({"v6": 75, "v7": 25}, (Mirror("v7", 50),))
    assert state.describe() == "v6=75% v7=25%, mirror v7 50%"
    assert state.live() == ["v6", "v7"]
    assert RouteState.from_json(json.loads(json.dumps(state.to_json()))) == state
    for percent in (0, -1, 100.5, float("nan"), True):
        with pytest.raises(InvalidInputError):
            Mirror("v7", percent)
    with pytest.raises(InvalidInputError):
        RouteState({"v6": 100, "v7": 0}, (Mirror("v7"), Mirror("v7", 10)))
    with pytest.raises(InvalidInputError):
        RouteState.from_json({"weights": "x"})


def test_validate_state_against_the_target() -> None:
    t = target()
    validate_state(t, RouteState({"v6": 100, "v7": 0}))
    with pytest.raises(InvalidInputError, match="one entry per variant"):
        validate_state(t, RouteState({"v6": 100}))
    with pytest.raises(InvalidInputError, match="unknown"):
        validate_state(t, RouteState({"v6": 90, "v7": 5, "v8": 5}))
    with pytest.raises(InvalidInputError, match="champion"):
        validate_state(t, RouteState({"v6": 100, "v7": 0}, (Mirror("v6"),)))
    with pytest.raises(InvalidInputError, match="unknown variant"):
        validate_state(t, RouteState({"v6": 100, "v7": 0}, (Mirror("v9"),)))
    assert RouteState.champion_only(t) == RouteState({"v6": 100, "v7": 0})


@pytest.mark.parametrize(("kw", "message"), [
    ({"variants": (V6,)}, "at least one challenger"),
    ({"variants": (V6, V6)}, "unique"),
    ({"champion": "v9"}, "champion"),
    ({"routes": ("a", "a")}, "unique"),
    ({"routes": ("modelrollout-sticky.x",)}, "reserved"),
    ({"bucket_header": "X-Bucket"}, "lowercase"),
    ({"replicas": 0}, "positive"),
    ({"variants": (V6, Variant("V6", "x")), "bucket_header": "x-b"}, "collide"),
    ({"namespace": ""}, "namespace"),
])
def test_traffic_target_validation(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        target(**kw)


def test_variant_validation() -> None:
    for kw in ({"port": 0}, {"port": True}, {"subset": ""}, {"deployment": ""}):
        with pytest.raises(InvalidInputError):
            Variant("v7", "ranker-v7", **kw)
    with pytest.raises(InvalidInputError):
        Variant("", "x")
    with pytest.raises(InvalidInputError):
        target().variant("v9")


@given(st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 10**6), min_size=1),
       st.integers(0, 1000))
def test_largest_remainder_is_the_hamilton_apportionment(amounts: dict[str, int], total: int) -> None:
    result = largest_remainder(amounts, total)
    whole = sum(amounts.values())
    if whole == 0:
        assert result == dict.fromkeys(amounts, 0)
        return
    assert sum(result.values()) == total
    for key, amount in amounts.items():
        quota = Fraction(amount * total, whole)
        assert abs(result[key] - quota) < 1


def test_largest_remainder_examples() -> None:
    assert largest_remainder({"a": 1, "b": 1, "c": 1}, 100) == {"a": 34, "b": 33, "c": 33}
    assert largest_remainder({"a": 9, "b": 1}, 100) == {"a": 90, "b": 10}
    assert largest_remainder({"a": 0.5, "b": 0.25}, 4) == {"a": 3, "b": 1}
    with pytest.raises(InvalidInputError):
        largest_remainder({"a": -1}, 10)


def test_the_record_keeps_other_routes() -> None:
    annotations = {ROUTES_ANNOTATION: json.dumps({"other": {"weights": {"a": 100}, "mirrors": []}})}
    state = RouteState({"v6": 90, "v7": 10}, (Mirror("v7", 12.5),))
    value = updated_record(annotations, ["primary"], state)
    assert set(json.loads(value)) == {"other", "primary"}
    assert recorded_states({ROUTES_ANNOTATION: value}, ["primary", "missing"]) == {"primary": state}
    assert recorded_states({ROUTES_ANNOTATION: "not json"}, ["primary"]) == {}
    assert recorded_states({ROUTES_ANNOTATION: json.dumps({"primary": {"weights": {"v6": 5}}})},
                           ["primary"]) == {}
    assert recorded_states(None, ["primary"]) == {}


def test_router_for_and_the_protocol() -> None:
    from kubernetes import client

    api = client.ApiClient()
    try:
        for provider, cls in (("istio", IstioRouter), ("gatewayAPI", GatewayAPIRouter),
                              ("service", ServiceRouter)):
            router = router_for(provider, api)
            assert isinstance(router, cls)
            assert isinstance(router, Router)
            assert router.provider == provider
        with pytest.raises(InvalidInputError, match="unknown traffic provider"):
            router_for("linkerd", api)
    finally:
        api.close()  # type: ignore[no-untyped-call]
