"""Recordings: a ModelExperiment's successive states, one JSON object per line.

Each line is ``{"time": "<RFC 3339, UTC>", "object": <the whole ModelExperiment>}``. The report
and the demo replay them, so the format is a contract: keys are only ever added.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelrollout.console.errors import ConsoleError


@dataclass(frozen=True)
class Snapshot:
    """One line of a recording: when it was taken and the object as the API returned it."""

    time: datetime
    object: dict[str, Any]


def format_time(time: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix; a naive time is taken to be UTC."""
    aware = time.replace(tzinfo=UTC) if time.tzinfo is None else time.astimezone(UTC)
    return aware.isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime.

    Raises
    ------
    ValueError
        If ``text`` is not a timestamp with a time zone.
    """
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return parsed.astimezone(UTC)


def append_snapshot(path: Path, obj: Mapping[str, Any], time: datetime | None = None) -> None:
    """Append one snapshot of ``obj`` to the recording at ``path`` (created if missing)."""
    line = json.dumps(
        {"time": format_time(time or datetime.now(UTC)), "object": obj},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    with Path(path).open("a", encoding="utf-8") as out:
        out.write(line + "\n")


def _snapshot_from_line(path: Path, number: int, line: str) -> Snapshot:
    where = f"{path}:{number}"
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConsoleError(f"{where}: not a recording line (invalid JSON: {exc.msg})") from exc
    if not isinstance(entry, dict):
        raise ConsoleError(f"{where}: not a recording line (expected a JSON object)")
    time_text, obj = entry.get("time"), entry.get("object")
    if not isinstance(time_text, str):
        raise ConsoleError(f"{where}: not a recording line (no \"time\" string)")
    if not isinstance(obj, dict):
        raise ConsoleError(f"{where}: not a recording line (no \"object\" object)")
    try:
        time = parse_time(time_text)
    except ValueError as exc:
        raise ConsoleError(f"{where}: bad \"time\" {time_text!r} (expected RFC 3339 with a zone)") from exc
    return Snapshot(time=time, object=obj)


def read_recording(path: Path) -> list[Snapshot]:
    """Every snapshot in the recording at ``path``, in file order; blank lines are skipped.

    Raises
    ------
    ConsoleError
        If the file cannot be read or a line is malformed (the message names the line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConsoleError(f"cannot read recording {path}: {exc.strerror or exc}") from exc
    return [
        _snapshot_from_line(path, number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]


#: Stands for "no snapshot yet", which differs from a snapshot whose object had no status (None).
_NOTHING: Any = object()


class Recorder:
    """Appends a snapshot to a recording only when the object's ``status`` changed.

    The first object seen is compared with the recording's last snapshot, if the file already
    has one, so that resuming a recording does not repeat the state it ended on.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._last_status: Any = _NOTHING
        self._primed = False

    def _prime(self) -> None:
        self._primed = True
        if self.path.exists() and self.path.stat().st_size > 0:
            snapshots = read_recording(self.path)
            if snapshots:
                self._last_status = snapshots[-1].object.get("status")

    def record(self, obj: Mapping[str, Any], time: datetime | None = None) -> bool:
        """Append ``obj`` if its status differs from the last one recorded; True if appended."""
        if not self._primed:
            self._prime()
        status = obj.get("status")
        if self._last_status is not _NOTHING and status == self._last_status:
            return False
        append_snapshot(self.path, obj, time)
        self._last_status = copy.deepcopy(status)
        return True
