"""The demo's scenarios: the simulated models, the example manifest, and the outcome each must reach.

Every scenario pairs a file of ``examples/demo/`` (the experiment, as a user would write it) with
the behaviour of the simulated model servers behind it (click-through, error rate, latency) and,
for the guardrail scenario, a fault injected mid-run. :func:`outcome_problems` says whether the
experiment ended as the scenario promises; the demo exits 0 only when it did.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelrollout.devstack.controlplane.paths import source_root
from modelrollout.devstack.sim.model_server import ModelConfig

TERMINAL_PHASES = ("Promoted", "RolledBack", "Failed")

#: The folder of the scenarios' manifests, relative to the source checkout.
EXAMPLES_SUBDIR = Path("examples") / "demo"


def simulated_model(variant: str, *, click_rate: float, error_rate: float = 0.0,
                    disagreement: float = 0.0) -> ModelConfig:
    """A fast simulated model (2 ms median, 10 ms p99), so latency never decides a scenario."""
    return ModelConfig(variant, click_rate=click_rate, error_rate=error_rate, disagreement=disagreement,
                       latency_median_ms=2.0, latency_p99_ms=10.0, seed=7)


@dataclass(frozen=True)
class Incident:
    """A change to a running model server, made a while after the experiment reaches a step.

    This is how the guardrail scenario makes a challenger start failing while it holds real
    traffic, as an incident would, rather than failing from the first request.
    """

    variant: str
    changes: Mapping[str, float]
    at_step: int          # index into spec.rollout.steps
    after_s: float        # seconds after the demo first sees that step
    description: str


#: Extra checks of a scenario on the final object: each returns the problems it found.
OutcomeCheck = Callable[[Mapping[str, Any]], list[str]]


@dataclass(frozen=True)
class Scenario:
    """One demo run: what the models do, which manifest is applied, and how it must end."""

    name: str
    summary: str
    example: str                                # file name in examples/demo/
    models: tuple[ModelConfig, ...]             # the champion first
    expected_phase: str
    expected_reason: str                        # reason of the history entry that decided
    incident: Incident | None = None
    rps: float = 200.0
    timeout_s: float = 240.0
    checks: tuple[OutcomeCheck, ...] = field(default_factory=tuple)

    def example_path(self, root: Path | None = None) -> Path:
        """The manifest's path in the source checkout (``root``, or the one this package is in)."""
        base = root or source_root()
        if base is None:
            raise FileNotFoundError(
                f"the demo's manifests live in the project's checkout ({EXAMPLES_SUBDIR}/); run the demo "
                "from a source checkout (pip install -e .) or set $MODELROLLOUT_SOURCE_ROOT to one"
            )
        return base / EXAMPLES_SUBDIR / self.example


def deciding_entry(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The history entry that moved the experiment to its final phase (None before that)."""
    status = obj.get("status") or {}
    phase = status.get("phase")
    for entry in reversed(status.get("history") or []):
        if entry.get("toPhase") == phase and phase in TERMINAL_PHASES:
            return dict(entry)
    return None


def _shadow_passed_before_promotion(obj: Mapping[str, Any]) -> list[str]:
    reasons = [h.get("reason") for h in (obj.get("status") or {}).get("history") or []]
    if "ShadowPassed" not in reasons:
        return [f"the shadow phase never passed (history reasons: {reasons})"]
    return []


def _one_dropped_one_promoted(obj: Mapping[str, Any]) -> list[str]:
    status = obj.get("status") or {}
    weights = status.get("weights") or {}
    winners = [v for v, w in weights.items() if w == 100]
    # The winner's rivals are listed as NotSelected at promotion; a loser dropped by the analysis
    # has its own reason, and must have been dropped before the end.
    dropped = [d for d in status.get("droppedChallengers") or [] if d.get("reason") != "NotSelected"]
    problems = []
    if winners != ["v7"]:
        problems.append(f"expected v7 promoted to 100 %, weights are {weights}")
    if [d.get("name") for d in dropped] != ["v8"]:
        problems.append(f"expected v8 dropped by the analysis, dropped: {status.get('droppedChallengers')}")
    return problems


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="promote",
            summary="a better challenger (30 % vs 20 % click-through) climbs every step and is promoted",
            example="promote.yaml",
            models=(simulated_model("v6", click_rate=0.20), simulated_model("v7", click_rate=0.30)),
            expected_phase="Promoted",
            expected_reason="PrimaryBetter",
        ),
        Scenario(
            name="guardrail-breach",
            summary="a challenger starts failing half of its requests at 25 % and is rolled back by its "
                    "error-rate guardrail",
            example="guardrail-breach.yaml",
            models=(simulated_model("v6", click_rate=0.20, error_rate=0.01),
                    simulated_model("v7", click_rate=0.20, error_rate=0.01)),
            expected_phase="RolledBack",
            expected_reason="GuardrailBreach",
            # After the 25 % step's first tick, which is left out of the counts while weights settle.
            incident=Incident("v7", {"error_rate": 0.5}, at_step=1, after_s=2.0,
                              description="v7 now fails 50 % of its requests"),
            timeout_s=180.0,
        ),
        Scenario(
            name="worse",
            summary="a worse challenger (20 % vs 30 % click-through) is rolled back by the primary metric",
            example="worse.yaml",
            models=(simulated_model("v6", click_rate=0.30), simulated_model("v7", click_rate=0.20)),
            expected_phase="RolledBack",
            expected_reason="PrimaryWorse",
            timeout_s=180.0,
        ),
        Scenario(
            name="shadow",
            summary="a challenger that agrees with the champion passes 10 s of shadow traffic, then is "
                    "promoted",
            example="shadow.yaml",
            models=(simulated_model("v6", click_rate=0.20),
                    simulated_model("v7", click_rate=0.30, disagreement=0.01)),
            expected_phase="Promoted",
            expected_reason="PrimaryBetter",
            checks=(_shadow_passed_before_promotion,),
            timeout_s=300.0,
        ),
        Scenario(
            name="abn",
            summary="two challengers: the worse (v8, 10 %) is dropped, the better (v7, 30 %) promoted",
            example="abn.yaml",
            models=(simulated_model("v6", click_rate=0.20), simulated_model("v7", click_rate=0.30),
                    simulated_model("v8", click_rate=0.10)),
            expected_phase="Promoted",
            expected_reason="PrimaryBetter",
            checks=(_one_dropped_one_promoted,),
            timeout_s=300.0,
        ),
    )
}


def outcome_problems(scenario: Scenario, obj: Mapping[str, Any] | None) -> list[str]:
    """Why the experiment did not end as ``scenario`` promises (empty when it did)."""
    if obj is None:
        return ["the experiment was never read"]
    status = obj.get("status") or {}
    phase = status.get("phase")
    if phase != scenario.expected_phase:
        return [f"ended in phase {phase}, expected {scenario.expected_phase}"]
    entry = deciding_entry(obj)
    reason = entry.get("reason") if entry else None
    problems = []
    if reason != scenario.expected_reason:
        problems.append(f"decided by {reason}, expected {scenario.expected_reason}")
    for check in scenario.checks:
        problems += check(obj)
    return problems


def steps_taken(obj: Mapping[str, Any], snapshots: Sequence[Mapping[str, Any]] = ()) -> list[int]:
    """The challengers' share of each step the experiment reached, in order (100 when promoted).

    Read from the history, and from the recorded objects in case the bounded history dropped
    early entries. Steps only go forward within one run (only a retry starts over, and the demo
    never retries), so the order of the step indices is the order they were taken.
    """
    steps = list(((obj.get("spec") or {}).get("rollout") or {}).get("steps") or [10, 25, 50, 100])
    indices: set[int] = set()
    for snap in snapshots:
        st = snap.get("status") or {}
        if st.get("phase") == "Progressing" and isinstance(st.get("currentStep"), int):
            indices.add(st["currentStep"])
    for entry in (obj.get("status") or {}).get("history") or []:
        if entry.get("toPhase") == "Progressing" and isinstance(entry.get("toStep"), int):
            indices.add(entry["toStep"])
    taken = [int(steps[i]) for i in sorted(indices) if 0 <= i < len(steps)]
    if (obj.get("status") or {}).get("phase") == "Promoted" and (not taken or taken[-1] != 100):
        taken.append(100)
    return taken
