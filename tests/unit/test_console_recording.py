"""Recordings: JSON Lines of snapshots, a round trip, clear errors on bad lines, and the Recorder."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from modelrollout.console import ConsoleError
from modelrollout.console.recording import (
    Recorder,
    Snapshot,
    append_snapshot,
    format_time,
    read_recording,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 1, 3, 0, 0, tzinfo=UTC)


def experiment(phase: str | None, step: int | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelExperiment",
        "metadata": {"name": "ranker-v7", "namespace": "shop", "resourceVersion": "1"},
        "spec": {"champion": {"name": "v1", "service": "model-v1"}},
    }
    if phase is not None:
        obj["status"] = {"phase": phase, "currentStep": step, "weights": {"v1": 90, "v2": 10}}
    return obj


def test_round_trip_keeps_times_and_objects(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    objs = [experiment(None), experiment("Progressing", 0), experiment("Promoted", 3)]
    for i, obj in enumerate(objs):
        append_snapshot(path, obj, T0 + timedelta(seconds=i, microseconds=250))
    snapshots = read_recording(path)
    assert snapshots == [
        Snapshot(time=T0 + timedelta(seconds=i, microseconds=250), object=obj) for i, obj in enumerate(objs)
    ]
    assert all(s.time.tzinfo is not None and s.time.utcoffset() == timedelta(0) for s in snapshots)


def test_each_line_is_time_and_object_in_utc(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    plus_two = timezone(timedelta(hours=2))
    append_snapshot(path, experiment("Pending"), datetime(2026, 12, 1, 5, 0, tzinfo=plus_two))
    (line,) = path.read_text().splitlines()
    entry = json.loads(line)
    assert set(entry) == {"time", "object"}
    assert entry["time"] == "2026-12-01T03:00:00Z"
    assert entry["object"]["status"]["phase"] == "Pending"


def test_default_time_is_now(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    before = datetime.now(UTC)
    append_snapshot(path, experiment("Pending"))
    (snapshot,) = read_recording(path)
    assert before <= snapshot.time <= datetime.now(UTC)


def test_naive_time_is_taken_as_utc() -> None:
    assert format_time(datetime(2026, 12, 1, 3, 0)) == "2026-12-01T03:00:00Z"


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    append_snapshot(path, experiment("Pending"), T0)
    path.write_text(path.read_text() + "\n   \n")
    append_snapshot(path, experiment("Progressing", 0), T0)
    assert [s.object["status"]["phase"] for s in read_recording(path)] == ["Pending", "Progressing"]


GOOD = json.dumps({"time": "2026-12-01T03:00:00Z", "object": {"kind": "ModelExperiment"}})


@pytest.mark.parametrize(
    ("bad_line", "says"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"object": {}}), '"time"'),
        (json.dumps({"time": "2026-12-01T03:00:00Z"}), '"object"'),
        (json.dumps({"time": "2026-12-01T03:00:00Z", "object": [1]}), '"object"'),
        (json.dumps({"time": "yesterday", "object": {}}), "bad \"time\" 'yesterday'"),
        (json.dumps({"time": "2026-12-01T03:00:00", "object": {}}), "with a zone"),
    ],
)
def test_malformed_line_names_the_file_and_line(tmp_path: Path, bad_line: str, says: str) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text(f"{GOOD}\n\n{bad_line}\n{GOOD}\n")
    with pytest.raises(ConsoleError) as caught:
        read_recording(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: ")
    assert says in message
    assert "\n" not in message


def test_missing_file_is_a_console_error(tmp_path: Path) -> None:
    with pytest.raises(ConsoleError, match="cannot read recording"):
        read_recording(tmp_path / "absent.jsonl")


def test_recorder_appends_only_when_the_status_changes(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    recorder = Recorder(path)
    pending = experiment(None)
    assert recorder.record(pending, T0) is True  # the first object, even without a status
    moved = {**pending, "metadata": {**pending["metadata"], "resourceVersion": "2"}}
    assert recorder.record(moved, T0) is False  # metadata changed, status did not
    assert recorder.record(experiment("Progressing", 0), T0) is True
    assert recorder.record(experiment("Progressing", 0), T0) is False
    assert recorder.record(experiment("Progressing", 1), T0) is True
    assert recorder.record(experiment(None), T0) is True  # a status that disappears is a change
    assert [s.object.get("status", {}).get("currentStep") for s in read_recording(path)] == [None, 0, 1, None]


def test_recorder_is_not_fooled_by_a_mutated_object(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    recorder = Recorder(path)
    obj = experiment("Progressing", 0)
    recorder.record(obj, T0)
    obj["status"]["currentStep"] = 1  # the caller edits the same dict in place
    assert recorder.record(obj, T0) is True
    assert len(read_recording(path)) == 2


def test_recorder_resumes_an_existing_recording_without_repeating(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    Recorder(path).record(experiment("Progressing", 1), T0)
    again = Recorder(path)
    assert again.record(experiment("Progressing", 1), T0) is False
    assert again.record(experiment("Promoted", 3), T0) is True
    assert len(read_recording(path)) == 2


def test_recorder_refuses_to_extend_a_corrupt_recording(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text("garbage\n")
    with pytest.raises(ConsoleError, match=":1: "):
        Recorder(path).record(experiment("Pending"), T0)
    assert path.read_text() == "garbage\n"
