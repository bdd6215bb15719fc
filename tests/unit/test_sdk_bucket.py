"""modelrollout.sdk.bucket: fixed values, stability across processes, uniformity, monotone
stickiness, and the bucket-range regexes the routes use."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest
from scipy import stats

from modelrollout.sdk import BUCKET_HEADER, BUCKETS, bucket

pytestmark = pytest.mark.unit

# Computed once and checked independently with `printf 'modelrollout:user-000123' | sha256sum`:
# the first 16 hex digits, as an integer, modulo 100.
KNOWN = {
    "user-000000": 30,
    "user-000001": 91,
    "user-000123": 82,
    "user-999999": 66,
    "alice": 9,
    "": 55,
    "ü-user": 75,
}


@pytest.mark.parametrize(("user", "expected"), sorted(KNOWN.items()))
def test_fixed_values(user: str, expected: int) -> None:
    assert bucket(user) == expected


def test_salt_and_bucket_count_change_the_assignment() -> None:
    assert bucket("user-000123", salt="exp-42") == 80
    assert bucket("user-000001", salt="exp-42") == 7
    assert bucket("user-000123", 10) == 2
    assert bucket("anyone", 1) == 0
    with pytest.raises(ValueError, match="at least 1"):
        bucket("anyone", 0)


def test_defaults() -> None:
    assert BUCKETS == 100
    assert BUCKET_HEADER == "x-modelrollout-bucket"


def test_stable_across_processes_and_hash_seeds() -> None:
    """Python's hash() is salted per process; bucket() must not be."""
    ids = [f"user-{i:06d}" for i in range(200)]
    code = (
        "import json, sys; from modelrollout.sdk import bucket; "
        "print(json.dumps([bucket(u) for u in json.loads(sys.argv[1])]))"
    )
    for seed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(ids)], env=env, check=True, capture_output=True, text=True
        ).stdout
        assert json.loads(out) == [bucket(u) for u in ids]


def test_uniform_over_100k_ids() -> None:
    counts = [0] * BUCKETS
    n = 100_000
    for i in range(n):
        counts[bucket(f"user-{i:06d}")] += 1
    expected = n / BUCKETS
    chi2 = sum((c - expected) ** 2 / expected for c in counts)
    # Reject uniformity only beyond the 99.9th percentile of chi-square with 99 df (about 148.2).
    assert chi2 < stats.chi2.ppf(0.999, BUCKETS - 1), (chi2, min(counts), max(counts))
    assert min(counts) > 0.85 * expected
    assert max(counts) < 1.15 * expected


def test_monotone_stickiness_as_steps_grow() -> None:
    """The challenger owns buckets [0, share): a user in it at 10 % is still in it at 25, 50, 100 %."""
    users = [f"user-{i:06d}" for i in range(5000)]
    steps = [10, 25, 50, 100]
    members = [{u for u in users if bucket(u) < step} for step in steps]
    for smaller, larger in itertools.pairwise(members):
        assert smaller <= larger
    assert members[-1] == set(users)
    # And the shares are about right.
    for step, group in zip(steps, members, strict=True):
        assert abs(len(group) / len(users) - step / 100) < 0.03
