"""The shared table of bad ModelExperiment manifests (``tests/data/bad_manifests/cases.yaml``), read by
the offline validator's unit tests and sent to a real kube-apiserver by the integration tier, and the
JSON merge patch that builds each case from the table's base."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

DATA = Path(__file__).resolve().parents[1] / "data"
BAD_MANIFESTS_FILE = DATA / "bad_manifests" / "cases.yaml"


def bad_manifests() -> dict[str, Any]:
    """The table: ``base`` (a valid manifest) and ``cases`` (name, patch, path, message, ...)."""
    table: dict[str, Any] = yaml.safe_load(BAD_MANIFESTS_FILE.read_text())
    return table


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: mappings merge, anything else replaces, null deletes."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged
