"""The experiment report, built from recorded runs of the real decision procedure.

The recordings are generated on the fly: :func:`recorded_run` drives ``decide`` tick by tick
against the seeded simulated world of ``support.policy_world`` (counts drawn from the routes of the
last decision) and keeps a snapshot of the whole object after every tick, as ``modelrollout
console`` records a live one. Two runs: a better challenger promoted, and an equal challenger
rolled back when its error rate triples at step 2.
"""

from __future__ import annotations

import copy
import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrollout.api.status import ModelExperimentStatus
from modelrollout.cli import main
from modelrollout.console.recording import Snapshot, append_snapshot
from modelrollout.report import ReportError, ReportFiles, explain, write_report
from modelrollout.report.timeline import format_number, format_numbers
from support.policy_world import (
    T0,
    Experiment,
    World,
    challengers,
    finished,
    make_spec,
    spec_with_primary,
)

pytestmark = pytest.mark.unit

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("weights", "primary", "guardrails", "samples")


# --- a recorded run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """A finished run: the final object and the snapshots taken after every tick."""

    obj: dict[str, Any]
    recording: list[Snapshot]


def _object(exp: Experiment, status: ModelExperimentStatus) -> dict[str, Any]:
    return {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelExperiment",
        "metadata": {"name": "ranker-v7", "namespace": "shop", "generation": 1},
        "spec": exp.spec.model_dump(by_alias=True, mode="json", exclude_none=True),
        "status": status.model_dump(by_alias=True, mode="json", exclude_none=True),
    }


def recorded_run(
    exp: Experiment, *, before_tick: Callable[[Experiment], None] = lambda _: None, limit: int = 400
) -> Run:
    """Tick ``exp`` until a terminal phase, snapshotting the object after every tick."""
    recording = [Snapshot(time=T0, object=_object(exp, ModelExperimentStatus()))]
    for _ in range(limit):
        before_tick(exp)
        decision = exp.tick()
        recording.append(Snapshot(time=exp.now, object=_object(exp, decision.status)))
        if finished(decision):
            return Run(copy.deepcopy(recording[-1].object), recording)
    raise AssertionError(f"no verdict in {limit} ticks")


def promotion_run() -> Run:
    """A challenger 15 % better on conversion, 60 requests/s: promoted at step 2 after ~12 min."""
    spec = make_spec()
    world = World(spec, seed=3, rps=60, truth={"conversion": {"v2": 0.2 * 1.15}})
    return recorded_run(Experiment(spec, world, check_idempotent=False))


def guardrail_run() -> Run:
    """An equal challenger whose error rate goes from 1 % to 3 % two minutes into step 2."""
    spec = make_spec()
    exp = Experiment(spec, World(spec, seed=5, rps=100), check_idempotent=False)
    breaks_at: list[datetime] = []

    def fault(e: Experiment) -> None:
        if e.decisions and e.last.step == 2 and not breaks_at:
            breaks_at.append(e.now + timedelta(minutes=2))
        if breaks_at and e.now >= breaks_at[0]:
            e.world.truth["errors"] = {"v2": 0.03}

    return recorded_run(exp, before_tick=fault)


def abn_run() -> Run:
    """Two challengers: v3 worse (dropped), v2 better (promoted)."""
    spec = make_spec(challengers=challengers("v2", "v3"))
    truth = {"conversion": {"v2": 0.2 * 1.2, "v3": 0.2 * 0.8}}
    return recorded_run(Experiment(spec, World(spec, seed=11, rps=120, truth=truth), check_idempotent=False))


@pytest.fixture(scope="module")
def promoted() -> Run:
    return promotion_run()


@pytest.fixture(scope="module")
def rolled_back() -> Run:
    return guardrail_run()


@pytest.fixture(scope="module")
def promoted_report(promoted: Run, tmp_path_factory: pytest.TempPathFactory) -> ReportFiles:
    return write_report(promoted.obj, tmp_path_factory.mktemp("promoted"), recording=promoted.recording)


@pytest.fixture(scope="module")
def rolled_back_report(rolled_back: Run, tmp_path_factory: pytest.TempPathFactory) -> ReportFiles:
    return write_report(
        rolled_back.obj, tmp_path_factory.mktemp("rolled-back"), recording=rolled_back.recording
    )


# --- checks ---------------------------------------------------------------------------------------


def assert_valid_report(files: ReportFiles) -> str:
    """Every file exists, every PNG is a real PNG, and the HTML is self-contained; its text."""
    assert files.html.name == "report.html"
    assert set(files.pngs) == set(FIGURES)
    for name, path in files.pngs.items():
        assert path.name == f"{name}.png"
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 10_000, f"{name}.png is suspiciously small ({len(data)} bytes)"
    text = files.html.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.IGNORECASE)
    assert "<link" not in text
    assert "<script" not in text
    images = re.findall(r"""<img [^>]*src=['"]([^'"]+)['"]""", text)
    assert len(images) == len(FIGURES)
    assert all(src.startswith("data:image/png;base64,") for src in images)
    return text


def deciding(obj: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = obj["status"]["history"][-1]
    return entry


def test_promotion_report_files_and_decision_record(promoted: Run, promoted_report: ReportFiles) -> None:
    text = assert_valid_report(promoted_report)
    assert "one point per analysis in the recording" in text
    entry = deciding(promoted.obj)
    assert entry["reason"] == "PrimaryBetter"
    assert html.escape(entry["message"]) in text
    for name, value in entry["numbers"].items():
        assert f"<td>{html.escape(name)}</td><td class='num'>{format_number(value)}</td>" in text
    assert "Promoted" in text


def test_promotion_timeline_explains_every_transition(promoted: Run, promoted_report: ReportFiles) -> None:
    history = promoted.obj["status"]["history"]
    timeline = promoted_report.timeline
    assert len(timeline) == len(history) == 4
    for line, entry in zip(timeline, history, strict=True):
        assert entry["reason"] in line
        assert entry["message"] in line
        assert entry["toPhase"] in line
        for name, value in entry["numbers"].items():
            assert f"{name} = {format_number(value)}" in line
    assert "Pending → Progressing step 0" in timeline[0]
    assert "Progressing step 0 → Progressing step 1" in timeline[1]
    assert "v1 75 %, v2 25 %" in timeline[1]
    assert "Progressing step 2 → Promoted" in timeline[3]
    assert "significantly better" in timeline[3]
    page = promoted_report.html.read_text(encoding="utf-8")
    for entry in history:
        assert html.escape(format_numbers(entry["numbers"])) in page
        assert html.escape(entry["message"]) in page


def test_explain_says_promoted_with_the_lift_and_the_sample(promoted: Run) -> None:
    text = explain(promoted.obj)
    primary = promoted.obj["status"]["analysis"]["variants"]["v2"]["primary"]
    assert "ended Promoted" in text
    assert "PrimaryBetter" in text
    assert f"a lift of {100 * primary['relativeLift']:+.3g} %" in text
    assert f"{100 * primary['ci']['low']:+.3g} %" in text
    assert f"n = {format_number(primary['n'])} of a planned {format_number(primary['plannedN'])}" in text
    assert "minutes" in text
    assert "\n" not in text


def test_explain_shows_a_fractional_n_as_a_whole_count(promoted: Run) -> None:
    # increase() extrapolates, so Prometheus's counts are not whole; a count is still shown as one.
    obj = copy.deepcopy(promoted.obj)
    obj["status"]["analysis"]["variants"]["v2"]["primary"]["n"] = 297.4
    text = explain(obj)
    assert "n = 297 of a planned" in text
    assert "297.4" not in text


def test_guardrail_rollback_report(rolled_back: Run, rolled_back_report: ReportFiles) -> None:
    text = assert_valid_report(rolled_back_report)
    entry = deciding(rolled_back.obj)
    assert entry["reason"] == "GuardrailBreach"
    assert rolled_back.obj["status"]["phase"] == "RolledBack"
    assert html.escape(entry["message"]) in text
    for name, value in entry["numbers"].items():
        assert f"<td>{html.escape(name)}</td><td class='num'>{format_number(value)}</td>" in text
    assert "Progressing step 2 → RolledBack" in rolled_back_report.timeline[-1]
    words = explain(rolled_back.obj)
    assert "ended RolledBack" in words
    assert "GuardrailBreach" in words
    assert "Guardrail errors was breached" in words
    assert "a lift of" in words


def test_live_object_without_recording(promoted: Run, tmp_path: Path) -> None:
    files = write_report(promoted.obj, tmp_path)
    text = assert_valid_report(files)
    assert "recomputed from the per-step counts" in text
    assert "PrimaryBetter" in text
    assert len(files.timeline) == 4


def test_step_end_points_match_the_operators_counts(promoted: Run) -> None:
    from modelrollout.report import data

    parsed = data.parse(promoted.obj)
    points = data.step_end_analyses(parsed)
    strata = promoted.obj["status"]["strata"]
    assert len(points) == len(strata)  # all closed once promoted
    last_time, last = points[-1]
    assert last_time.isoformat().replace("+00:00", "Z") == promoted.obj["status"]["finishedAt"]
    final = promoted.obj["status"]["analysis"]["variants"]
    assert last.variants["v2"].n == final["v2"]["n"]
    assert last.variants["v1"].n == final["v1"]["n"]
    primary = last.variants["v2"].primary
    assert primary is not None
    assert primary.relative_lift == pytest.approx(final["v2"]["primary"]["relativeLift"], rel=1e-9)
    ns = [p.variants["v2"].n for _, p in points]
    assert ns == sorted(ns)


def test_abn_report_draws_every_challenger(tmp_path: Path) -> None:
    run = abn_run()
    files = write_report(run.obj, tmp_path, recording=run.recording)
    assert_valid_report(files)
    text = explain(run.obj)
    assert "v2's conversion" in text
    assert "v3" in text


MEAN_PRIMARY = {
    "name": "basket",
    "type": "mean",
    "count": 'a{m="{{variant}}"}',
    "sum": 'b{m="{{variant}}"}',
    "sumOfSquares": 'c{m="{{variant}}"}',
    "minimumDetectableEffect": 0.5,
    "mdeType": "absolute",
}
RATIO_PRIMARY = {
    "name": "ctr",
    "type": "ratio",
    **{f: f'{f}{{m="{{{{variant}}}}"}}' for f in ("units", "numerator", "denominator")},
    **{f: f'{f}{{m="{{{{variant}}}}"}}' for f in ("numeratorSquares", "denominatorSquares")},
    "crossProducts": 'x{m="{{variant}}"}',
    "minimumDetectableEffect": 0.05,
}
THRESHOLD_GUARDRAIL = {"name": "errors", "preset": "istio-error-rate", "threshold": 0.05, "failureLimit": 3}


@pytest.mark.parametrize(
    ("primary", "truth", "analysis"),
    [
        (MEAN_PRIMARY, {"v1": (10.0, 5.0), "v2": (11.0, 5.0)}, {"practicalThreshold": 0.2}),
        (RATIO_PRIMARY, {"v1": (0.10, 3.0), "v2": (0.12, 3.0)}, {}),
    ],
    ids=["mean-absolute", "ratio"],
)
def test_mean_and_ratio_primaries_with_a_threshold_guardrail(
    primary: dict[str, Any], truth: dict[str, Any], analysis: dict[str, Any], tmp_path: Path
) -> None:
    spec = spec_with_primary(primary, metrics={"guardrails": [THRESHOLD_GUARDRAIL]}, analysis=analysis)
    world = World(spec, seed=4, rps=200, truth={primary["name"]: truth})
    run = recorded_run(Experiment(spec, world, check_idempotent=False))
    assert run.obj["status"]["phase"] == "Promoted"
    for name, recording in (("recorded", run.recording), ("live", None)):
        files = write_report(run.obj, tmp_path / name, recording=recording)
        text = assert_valid_report(files)
        assert "PrimaryBetter" in text
    assert "ended Promoted" in explain(run.obj)


def test_a_pending_object_reports_that_there_is_no_data(tmp_path: Path) -> None:
    obj = {
        "kind": "ModelExperiment",
        "metadata": {"name": "new"},
        "spec": make_spec().model_dump(by_alias=True),
    }
    files = write_report(obj, tmp_path)
    for path in files.pngs.values():
        assert path.read_bytes().startswith(PNG_MAGIC)
    assert files.timeline == []
    assert "is Pending" in explain(obj)


def test_an_unreadable_object_is_a_report_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="not a ModelExperiment"):
        write_report({"kind": "Service", "spec": {}}, tmp_path)
    with pytest.raises(ReportError, match="unreadable status"):
        explain({"kind": "ModelExperiment", "spec": {}, "status": {"phase": "Nowhere"}})


# --- the command ---------------------------------------------------------------------------------


def _written(out: str) -> list[Path]:
    return [Path(line) for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("form", ["yaml", "json", "jsonl"])
def test_report_from_a_file(
    form: str, promoted: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / f"ranker.{form}"
    if form == "yaml":
        source.write_text(yaml.safe_dump(promoted.obj), encoding="utf-8")
    elif form == "json":
        source.write_text(json.dumps(promoted.obj), encoding="utf-8")
    else:
        for snap in promoted.recording:
            append_snapshot(source, snap.object, snap.time)
    out = tmp_path / "out"
    assert main(["report", "--from", str(source), "--out", str(out)]) == 0
    written = _written(capsys.readouterr().out)
    assert written[0] == out / "report.html"
    assert {p.name for p in written} == {"report.html", *(f"{f}.png" for f in FIGURES)}
    assert all(p.is_file() for p in written)
    assert "PrimaryBetter" in (out / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("content", "suffix", "expected"),
    [
        ("kind: Service\nspec: {}\n", ".yaml", "not a ModelExperiment"),
        ("{not json", ".json", "invalid JSON"),
        ("a: [1, 2\n", ".yaml", "invalid YAML"),
        ('{"time": "2026-03-01T12:00:00Z"}\n', ".jsonl", "not a recording line"),
        ("", ".jsonl", "empty"),
    ],
)
def test_a_bad_file_is_one_line_and_exit_1(
    content: str, suffix: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / f"bad{suffix}"
    source.write_text(content, encoding="utf-8")
    assert main(["report", "--from", str(source), "--out", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("modelrollout report: error: ")
    assert expected in lines[0]


def test_a_missing_file_and_no_source_are_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--from", str(tmp_path / "nope.yaml"), "--out", str(tmp_path)]) == 1
    assert "cannot read" in capsys.readouterr().err
    assert main(["report", "--out", str(tmp_path)]) == 1
    assert "NAME or --from" in capsys.readouterr().err


def test_a_live_name_without_a_kubeconfig_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["report", "ranker-v7", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith("modelrollout report: error: ")


def test_without_matplotlib_the_report_says_which_extra_to_install(
    promoted: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    import modelrollout.report

    monkeypatch.delitem(sys.modules, "modelrollout.report.plots", raising=False)
    monkeypatch.delattr(modelrollout.report, "plots", raising=False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    with pytest.raises(ReportError, match=r"pip install 'modelrollout\[report\]'"):
        write_report(promoted.obj, tmp_path / "out")


def test_a_report_with_segments_has_their_forest_plot(promoted: Run, tmp_path: Path) -> None:
    obj = copy.deepcopy(promoted.obj)
    obj["status"]["analysis"]["variants"]["v2"]["segments"] = [
        {"metric": "conversion", "value": "mobile", "protected": True, "harmed": True, "estimate": 0.1,
         "championEstimate": 0.2, "difference": -0.1, "ci": {"low": -0.14, "high": -0.06}, "n": 812},
        {"metric": "conversion", "value": "desktop", "protected": False, "estimate": 0.25,
         "championEstimate": 0.2, "difference": 0.05, "ci": {"low": -0.01, "high": 0.11}, "n": 2400},
    ]
    files = write_report(obj, tmp_path)
    assert set(files.pngs) == {*FIGURES, "segments"}
    assert files.pngs["segments"].read_bytes().startswith(PNG_MAGIC)
    assert len(files.pngs["segments"].read_bytes()) > 10_000
    text = files.html.read_text(encoding="utf-8")
    assert "<h2>Segments</h2>" in text
    assert "never decided on" in text
    assert len(re.findall(r"<img ", text)) == len(FIGURES) + 1
