"""The chart's Grafana dashboard and alert rules, as the tests read them: every panel's PromQL with
Grafana's variables filled in, and promtool (Debian's prometheus package ships it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "modelrollout" / "files" / "dashboard.json"
#: Grafana's built-in interval variables, with values a 1 s-scraped test Prometheus can answer.
BUILTINS = {"__rate_interval": "1m", "__range": "10m", "__interval": "15s"}


@dataclass(frozen=True)
class PanelQuery:
    """One query of one panel: the panel's title, the target's refId, and its PromQL."""

    panel: str
    ref: str
    expr: str


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every panel that is not a row (rows' nested panels included)."""
    found: list[dict[str, Any]] = []
    for p in (board or dashboard())["panels"]:
        if p["type"] == "row":
            found += p.get("panels", [])
        else:
            found.append(p)
    return found


def queries(board: Mapping[str, Any] | None = None) -> list[PanelQuery]:
    """Every target's PromQL, in the dashboard's order."""
    return [PanelQuery(p["title"], t["refId"], t["expr"]) for p in panels(board) for t in p["targets"]]


def fill(expr: str, values: Mapping[str, str]) -> str:
    """``expr`` with ``$name`` and ``${name}`` replaced from ``values`` (then :data:`BUILTINS`);
    a variable left over is an error."""
    merged = {**BUILTINS, **values}

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in merged:
            raise KeyError(f"no value for the Grafana variable ${name} in {expr!r}")
        return merged[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def find_promtool() -> Path | None:
    for candidate in (os.environ.get("MODELROLLOUT_PROMTOOL"), shutil.which("promtool"), "/usr/bin/promtool"):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def promtool(binary: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool; the completed process (check its returncode; stdout and stderr are kept)."""
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          check=False)


def recording_rules(items: Mapping[str, str]) -> str:
    """A rule file with one recording rule per ``name: expr`` (promtool parses each expr)."""
    rules = [{"record": name, "expr": expr} for name, expr in items.items()]
    return yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False)


def served_series() -> set[str]:
    """The name of every series the operator's ``/metrics`` can serve under ``modelrollout_``."""
    from modelrollout.controller.telemetry import OperatorMetrics

    names: set[str] = set()
    for family in OperatorMetrics(standard_collectors=False).collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        names |= {family.name + suffix for suffix in suffixes}
    return names
