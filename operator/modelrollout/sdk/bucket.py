"""Sticky assignment: a consistent hash of the user id into buckets.

The bucket of a user is::

    digest = SHA-256( UTF-8( salt + ":" + user_id ) )
    bucket = (first 8 bytes of digest, read as a big-endian unsigned 64-bit integer) mod buckets

with ``salt = "modelrollout"`` and ``buckets = 100`` unless told otherwise. It depends only on
those bytes, so it is the same in every process, on every machine and in every Python version
(Python's ``hash()`` is salted per process and must never be used for this). Any language can
compute it: for example, in a shell,
``printf 'modelrollout:user-000123' | sha256sum | cut -c1-16`` gives the hex of the 64-bit
integer to reduce modulo 100. The modulo bias of a 64-bit integer reduced to 100 buckets is below
1e-17 and is negligible.

**Monotone stickiness.** The buckets of a user never change, so a split that hands a challenger
the bucket range ``[0, p)`` at share ``p`` and ``[0, p')`` with ``p' > p`` at the next step keeps
every user who already saw the challenger on the challenger: a user in the challenger at 10 %
(buckets 0-9) is still in it at 25 % (buckets 0-24). Several challengers get disjoint ranges
that each grow without overlapping the others, for example ``v7: [0, p7)`` and
``v8: [50, 50 + p8)`` while each share stays at or below 50 %.

The mesh carries the bucket in a request header (``x-modelrollout-bucket`` by default) that the
SDK or the edge sets; a route then sends a range of buckets to a variant with a header match.
The operator's routers write those header matches (:func:`modelrollout.routing.buckets.buckets_regex`
gives the compact regular expression that Istio's ``regex`` and the Gateway API's
``RegularExpression`` header matches accept).

A different ``salt`` per experiment gives independent assignments across experiments (no user is
always in the challenger of every experiment); the same salt must then be used by every caller
of the same experiment.
"""

from __future__ import annotations

import hashlib

BUCKETS = 100
"""The number of buckets of the operator's sticky split: one bucket per percent of traffic."""

DEFAULT_SALT = "modelrollout"
"""The salt hashed in front of the user id when none is given."""

BUCKET_HEADER = "x-modelrollout-bucket"
"""The request header that carries the bucket (``spec.traffic.stickiness.bucketHeader``)."""


def bucket(user_id: str, buckets: int = BUCKETS, *, salt: str = DEFAULT_SALT) -> int:
    """The bucket of ``user_id``: an integer in ``0 .. buckets - 1`` (see the module docstring).

    >>> bucket("user-000123")
    82
    """
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, not {buckets}")
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % buckets


def in_range(user_bucket: int, start: int, stop: int) -> bool:
    """Whether ``user_bucket`` lies in the half-open range ``[start, stop)``."""
    return start <= user_bucket < stop
