"""The console's view of an experiment: the content a person reads, and no crash on partial data."""

from __future__ import annotations

import copy
import io
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console

from modelrollout.console.view import (
    experiment_panel,
    experiment_text,
    is_terminal,
    list_table,
    list_text,
    render_plain,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 3, 10, tzinfo=UTC)
ANSI = re.compile(r"\x1b\[")

PENDING: dict[str, Any] = {
    "apiVersion": "modelrollout.io/v1alpha1",
    "kind": "ModelExperiment",
    "metadata": {"name": "ranker-v7", "namespace": "shop", "creationTimestamp": "2026-12-01T03:00:00Z"},
    "spec": {
        "champion": {"name": "v1", "service": "model-v1"},
        "challengers": [{"name": "v2", "service": "model-v2"}],
        "metrics": {"primary": {"name": "conversion", "type": "proportion", "minimumDetectableEffect": 0.1}},
    },
}

PROGRESSING: dict[str, Any] = copy.deepcopy(PENDING)
PROGRESSING["status"] = {
    "phase": "Progressing",
    "currentStep": 1,
    "weights": {"v1": 75, "v2": 25},
    "startedAt": "2026-12-01T03:01:00Z",
    "analysis": {
        "updatedAt": "2026-12-01T03:09:00Z",
        "plannedN": 9257,
        "variants": {
            "v1": {"n": 4210, "primary": {"n": 4210, "estimate": 0.1502}, "decision": "Pending"},
            "v2": {
                "n": 1398,
                "primary": {
                    "n": 1398,
                    "estimate": 0.1645,
                    "difference": 0.0143,
                    "relativeLift": 0.0952,
                    "ci": {"low": -0.081, "high": 0.312},
                    "pValue": 0.41,
                    "eValue": 0.62,
                    "plannedN": 9257,
                    "decision": "Pending",
                },
                "guardrails": {
                    "error-rate": {
                        "estimate": 0.011,
                        "championEstimate": 0.010,
                        "difference": 0.001,
                        "limit": 0.002,
                        "pValue": 0.5,
                        "breached": False,
                    }
                },
                "decision": "Pending",
                "rule": "e-value 0.62 below 1/alpha [20]",
            },
        },
        "srm": {
            "pValue": 0.73,
            "observedShares": {"v1": 0.751, "v2": 0.249},
            "expectedShares": {"v1": 0.75, "v2": 0.25},
            "mismatch": False,
        },
    },
    "history": [
        {
            "time": "2026-12-01T03:05:00Z",
            "fromPhase": "Progressing",
            "toPhase": "Progressing",
            "fromStep": 0,
            "toStep": 1,
            "weights": {"v1": 75, "v2": 25},
            "reason": "StepAdvanced",
            "message": "Step 1 held 5m with no guardrail breach.",
            "numbers": {"srmP": 0.73},
        }
    ],
}

PROMOTED: dict[str, Any] = copy.deepcopy(PROGRESSING)
PROMOTED["status"].update(
    phase="Promoted",
    currentStep=3,
    weights={"v1": 0, "v2": 100},
    finishedAt="2026-12-01T04:00:00Z",
)
PROMOTED["status"]["analysis"]["variants"]["v2"]["decision"] = "Better"
PROMOTED["status"]["history"].append(
    {
        "time": "2026-12-01T04:00:00Z",
        "fromPhase": "Progressing",
        "toPhase": "Promoted",
        "fromStep": 2,
        "toStep": 3,
        "weights": {"v1": 0, "v2": 100},
        "reason": "PrimaryBetter",
        "message": "v2 is better: e-value 41 >= 20.",
        "numbers": {"eValue": 41.0},
    }
)


def lines_with(text: str, word: str) -> list[str]:
    return [line for line in text.splitlines() if word in line]


def primary_row(text: str, variant: str) -> str:
    """The variant's row of the primary-metric table (the one with "n / planned")."""
    (row,) = [line for line in text.splitlines() if line.startswith(f"{variant} ") and " / " in line]
    return row


def test_pending_without_status_shows_what_is_known() -> None:
    text = experiment_text(PENDING, now=NOW)
    assert "shop/ranker-v7" in text
    assert lines_with(text, "Phase")[0].split()[-1] == "Pending"
    assert "- of 4" in text  # the default steps 10, 25, 50, 100; none taken yet
    assert "no analysis yet" in text
    assert "(10m ago)" in text
    assert "Guardrails" not in text
    assert "Last transition" not in text


def test_progressing_shows_step_weights_and_the_primary_comparison() -> None:
    text = experiment_text(PROGRESSING, now=NOW)
    assert lines_with(text, "Phase")[0].split()[-1] == "Progressing"
    assert "2 of 4 (25 %)" in text
    assert "v1 75%, v2 25%" in text
    challenger = primary_row(text, "v2")
    assert challenger.split() == [
        "v2", "1,398", "/", "9,257", "0.1645", "+0.0143", "+9.5%", "[-8.1,", "+31.2]%", "Pending"
    ]  # n / planned, estimate, difference, relative lift, CI on the relative (mdeType) scale
    champion = primary_row(text, "v1").split()
    assert champion == ["v1", "4,210", "/", "9,257", "0.1502", "-", "-", "-", "champion"]
    # The evidence and the rule; brackets are shown as written, not eaten as rich markup.
    assert "v2: p 0.410 e 0.62; e-value 0.62 below 1/alpha [20]" in text
    assert "CI of the lift" in text


def test_progressing_shows_guardrails_srm_and_the_last_transition() -> None:
    text = experiment_text(PROGRESSING, now=NOW)
    (guardrail,) = lines_with(text, "error-rate")
    assert guardrail.split() == ["v2", "error-rate", "0.011", "0.01", "+0.001", "0.002", "0.500", "no"]
    assert "Sample ratio: ok, p 0.730" in text
    assert "v2 24.9 % (expected 25.0 %)" in text
    assert "Progressing -> Progressing  (step 1 -> 2)  StepAdvanced" in text
    assert "Step 1 held 5m with no guardrail breach." in text


def test_promoted_shows_the_decision_and_why() -> None:
    text = experiment_text(PROMOTED, now=NOW)
    assert lines_with(text, "Phase")[0].split()[-1] == "Promoted"
    assert "4 of 4 (100 %)" in text
    assert "v1 0%, v2 100%" in text
    challenger = primary_row(text, "v2")
    assert challenger.rstrip().endswith("Better")
    assert "Progressing -> Promoted" in text
    assert "PrimaryBetter" in text
    assert "v2 is better: e-value 41 >= 20." in text
    assert "Finished" in text


def test_breach_mismatch_and_absolute_scale_are_flagged() -> None:
    obj = copy.deepcopy(PROGRESSING)
    obj["spec"]["metrics"]["primary"].update(mdeType="absolute", direction="decrease")
    analysis = obj["status"]["analysis"]
    analysis["variants"]["v2"]["guardrails"]["error-rate"]["breached"] = True
    analysis["srm"].update(mismatch=True, pValue=0.0001)
    text = experiment_text(obj, now=NOW)
    assert lines_with(text, "error-rate")[0].split()[-1] == "BREACHED"
    assert "Sample ratio: MISMATCH, p <0.001" in text
    assert "[-0.081, +0.312]" in text  # the difference in the metric's units
    assert "CI of the difference" in text
    assert "(lower is better)" in text


@pytest.mark.parametrize("obj", [PENDING, PROGRESSING, PROMOTED])
def test_text_is_plain_and_panel_has_the_same_content(obj: dict[str, Any]) -> None:
    text = experiment_text(obj, now=NOW)
    assert not ANSI.search(text)
    panel = render_plain(experiment_panel(obj, now=NOW), width=160)
    for line in text.splitlines():
        for word in line.split():
            assert word in panel, word


def test_panel_is_coloured_on_a_terminal() -> None:
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=140, color_system="standard").print(
        experiment_panel(PROMOTED, now=NOW)
    )
    assert ANSI.search(out.getvalue())
    assert "modelexperiment shop/ranker-v7" in out.getvalue()


PARTIAL_STATUSES: list[Any] = [
    None,
    {},
    {"phase": "Shadowing"},
    {"phase": "SomethingNew", "currentStep": 99, "weights": {"v1": "a lot"}},
    {"phase": "Paused", "pause": {"reason": "SpecPaused"}},
    {"analysis": {"variants": {"v2": {"primary": {"ci": {"low": None}}, "guardrails": {"g": None}}}}},
    {"analysis": {"variants": {"v9": {}}, "srm": {"pValue": "NaN"}}},
    {"history": [{}], "conditions": [{"type": "InvalidSpec", "status": "True"}], "droppedChallengers": [{}]},
    {"analysis": "not a mapping", "history": "nor this", "weights": []},
]


@pytest.mark.parametrize("status", PARTIAL_STATUSES)
def test_partial_or_odd_status_never_crashes(status: Any) -> None:
    obj = copy.deepcopy(PENDING)
    obj["status"] = status
    text = experiment_text(obj, now=NOW)
    assert "shop/ranker-v7" in text
    render_plain(experiment_panel(obj, now=NOW))
    assert "ranker-v7" in list_text([obj], now=NOW)


def test_an_empty_object_still_renders() -> None:
    assert "Pending" in experiment_text({}, now=NOW)
    assert list_text([{}], now=NOW).splitlines()[1].split()[0] == "-"


def test_shadowing_and_paused_are_explained() -> None:
    shadow = copy.deepcopy(PENDING)
    shadow["status"] = {"phase": "Shadowing", "weights": {"v1": 100, "v2": 0}}
    assert "shadow (0 of 4)" in experiment_text(shadow, now=NOW)
    paused = copy.deepcopy(PROGRESSING)
    paused["status"].update(
        phase="Paused",
        pause={"reason": "SpecPaused", "since": "2026-12-01T03:08:00Z", "fromPhase": "Progressing"},
    )
    assert "SpecPaused since 2026-12-01 03:08:00Z, resumes Progressing" in experiment_text(paused, now=NOW)


def test_list_text_has_one_row_per_experiment_in_kubectl_columns() -> None:
    text = list_text([PENDING, PROGRESSING, PROMOTED], now=NOW)
    header, *rows = text.splitlines()
    assert header.split() == ["NAME", "NAMESPACE", "PHASE", "STEP", "WEIGHTS", "AGE"]
    assert [row.split()[2] for row in rows] == ["Pending", "Progressing", "Promoted"]
    assert "2/4 (25%)" in rows[1]
    assert "v1 75%, v2 25%" in rows[1]
    assert all(row.split()[-1] == "10m" for row in rows)
    assert not ANSI.search(text)


def test_list_table_has_the_same_rows() -> None:
    rendered = render_plain(list_table([PENDING, PROGRESSING], now=NOW))
    assert "NAME" in rendered
    assert "Progressing" in rendered
    assert "2/4 (25%)" in rendered


@pytest.mark.parametrize(
    ("created", "age"),
    [
        ("2026-12-01T03:09:58Z", "2s"),
        ("2026-12-01T01:00:00Z", "2h"),
        ("2026-11-28T03:10:00Z", "3d"),
        (None, "-"),
    ],
)
def test_age_is_shown_as_kubectl_does(created: str | None, age: str) -> None:
    obj = copy.deepcopy(PENDING)
    obj["metadata"]["creationTimestamp"] = created
    assert list_text([obj], now=NOW).splitlines()[1].split()[-1] == age


@pytest.mark.parametrize(
    ("phase", "terminal"),
    [(None, False), ("Progressing", False), ("Paused", False), ("Promoted", True), ("RolledBack", True),
     ("Failed", True), ("Unheard", False)],
)
def test_is_terminal(phase: str | None, terminal: bool) -> None:
    obj = copy.deepcopy(PENDING)
    obj["status"] = {"phase": phase}
    assert is_terminal(obj) is terminal


def test_segments_are_shown_with_the_protected_verdict_and_the_exploratory_ones_marked() -> None:
    obj = copy.deepcopy(PROGRESSING)
    obj["status"]["analysis"]["variants"]["v2"]["segments"] = [
        {"metric": "conversion", "value": "mobile", "protected": True, "harmed": True, "estimate": 0.1,
         "championEstimate": 0.2, "difference": -0.1, "ci": {"low": -0.14, "high": -0.06}, "n": 812,
         "pValue": 0.0004},
        {"metric": "conversion", "value": "desktop", "protected": False, "harmed": False, "estimate": 0.25,
         "championEstimate": 0.2, "difference": 0.05, "ci": {"low": -0.01, "high": 0.11}, "n": 2400},
    ]
    text = experiment_text(obj, now=NOW)
    (mobile,) = lines_with(text, "mobile")
    assert mobile.split()[:3] == ["v2", "conversion", "mobile"]
    assert mobile.split()[-1] == "HARMED"
    assert "[-0.14, -0.06]" in mobile
    (desktop,) = lines_with(text, "desktop")
    assert "(exploratory)" in desktop
    assert "HARMED" not in desktop
