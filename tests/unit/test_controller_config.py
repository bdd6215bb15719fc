"""The operator's configuration comes from one place (flags and the environment, read by `run`), and
the handlers are registered on the registry `run` gives kopf, with a login (kopf puts its own only
on its default registry: without one the operator could not reach the apiserver)."""

from __future__ import annotations

import kopf
import pytest

from modelrollout.controller.config import TIMER_ENV, OperatorConfig
from modelrollout.controller.handlers import register
from modelrollout.errors import InvalidInputError

pytestmark = pytest.mark.unit


def test_the_timer_period_comes_from_the_environment_and_is_checked() -> None:
    assert OperatorConfig.from_environment({}).timer_seconds == 1.0
    assert OperatorConfig.from_environment({TIMER_ENV: "0.25"}).timer_seconds == 0.25
    assert OperatorConfig.from_environment({}, cluster_scan=False).cluster_scan is False
    for bad in ("soon", "0", "-1", "nan"):
        with pytest.raises(InvalidInputError, match=TIMER_ENV):
            OperatorConfig.from_environment({TIMER_ENV: bad})


def test_the_handlers_are_registered_with_a_login_and_no_timer_per_object() -> None:
    registry = kopf.OperatorRegistry()
    register(registry, OperatorConfig(timer_seconds=2.5))
    activities = [h.id for h in registry._activities.get_all_handlers()]
    assert activities == ["login", "startup", "cleanup"]
    # The ticks come from one scheduler fed by the watch, not from a kopf timer per experiment.
    assert list(registry._spawning.get_all_handlers()) == []
    assert [h.id for h in registry._watching.get_all_handlers()] == ["watched"]
    reasons = {(h.id, h.reason) for h in registry._changing.get_all_handlers()}
    # A new experiment is due at once in the scheduler: no create or resume handler ticks it twice.
    assert reasons == {("changed", kopf.Reason.UPDATE), ("deleted", kopf.Reason.DELETE)}


def test_kopfs_line_for_every_watch_event_is_dropped_and_the_others_are_kept() -> None:
    import logging

    register(kopf.OperatorRegistry(), OperatorConfig())
    objects = logging.getLogger("kopf.objects")

    def kept(message: str) -> bool:
        record = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, message, None, None)
        return all(f.filter(record) for f in objects.filters)  # type: ignore[union-attr]

    assert not kept("Handler 'watched' succeeded.")
    assert kept("Handler 'changed' succeeded.")
    assert kept("tick")
