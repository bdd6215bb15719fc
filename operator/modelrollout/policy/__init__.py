"""The decision procedure: ``decide(spec, status, observations, now) -> Decision``.

Pure functions over the API models and :mod:`modelrollout.api.observations`: no I/O, no kopf, no
kubernetes, no clock of its own. See :mod:`modelrollout.policy.decide` for the rules and their
order, and :class:`~modelrollout.policy.decision.Decision` for what a tick returns.
"""

from modelrollout.policy.decide import decide
from modelrollout.policy.decision import Decision, Event, EventType, Routes, Rule
from modelrollout.policy.steps import record_achieved, routes_for

__all__ = ["Decision", "Event", "EventType", "Routes", "Rule", "decide", "record_achieved", "routes_for"]
