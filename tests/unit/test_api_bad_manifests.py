"""The offline validator rejects every bad manifest of the shared table, at the apiserver's path.

The same table (``tests/data/bad_manifests/cases.yaml``) is sent to a real kube-apiserver by
``tests/integration/test_crd_apiserver.py``; here the Python mirror of the CRD's rules must name the
same field, with the same message for every CEL rule.
"""

from __future__ import annotations

from typing import Any

import pytest

from modelrollout.api import manifest_errors
from support.manifests import bad_manifests, merge_patch

pytestmark = pytest.mark.unit

TABLE: dict[str, Any] = bad_manifests()
CASES: list[dict[str, Any]] = TABLE["cases"]


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
