"""What an application links to take part in an experiment.

* :func:`bucket` -- the sticky bucket (0-99) of a user id, a consistent SHA-256 hash that is the
  same in every process and language (:mod:`modelrollout.sdk.bucket` has the exact recipe).
* :class:`ShadowComparator` -- Prometheus counters of shadow predictions compared with, and
  differing from, the live ones (:mod:`modelrollout.sdk.shadow`).
"""

from modelrollout.sdk.bucket import (
    BUCKET_HEADER,
    BUCKETS,
    DEFAULT_SALT,
    bucket,
    in_range,
)
from modelrollout.sdk.shadow import ShadowComparator, predictions_differ

__all__ = [
    "BUCKETS",
    "BUCKET_HEADER",
    "DEFAULT_SALT",
    "ShadowComparator",
    "bucket",
    "in_range",
    "predictions_differ",
]
