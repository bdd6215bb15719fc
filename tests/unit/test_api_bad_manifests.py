"""The offline validator rejects every bad manifest of the shared table, at the apiserver's path.

The same table (``tests/integration/bad_manifests/cases.yaml``) is sent to a real kube-apiserver by
``tests/integration/test_crd_apiserver.py``; here the Python mirror of the CRD's rules must name the
same field, with the same message for every CEL rule.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrollout.api import manifest_errors

pytestmark = pytest.mark.unit

CASES_FILE = Path(__file__).resolve().parents[1] / "integration" / "bad_manifests" / "cases.yaml"
TABLE: dict[str, Any] = yaml.safe_load(CASES_FILE.read_text())
CASES: list[dict[str, Any]] = TABLE["cases"]


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


def test_the_table_is_large_and_well_formed() -> None:
    assert len(CASES) >= 30
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
    for case in CASES:
        assert set(case) <= {"name", "patch", "path", "message", "python_message"}, case["name"]
        assert case["path"].startswith("spec")


def test_the_base_manifest_is_valid() -> None:
    assert manifest_errors(TABLE["base"]) == []


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bad_manifest_is_rejected_at_the_field(case: dict[str, Any]) -> None:
    manifest = merge_patch(TABLE["base"], case["patch"])
    errors = manifest_errors(manifest)
    expected = case.get("python_message", case["message"])
    at_path = [e for e in errors if e.startswith(case["path"] + ": ")]
    assert at_path, f"no error at {case['path']}: {errors}"
    assert any(expected in e for e in at_path), errors
