"""The one error the report raises: a single line a person can act on."""

from __future__ import annotations

from modelrollout.errors import ModelRolloutError


class ReportError(ModelRolloutError):
    """The report cannot be built (an unreadable object or file), worded as one line."""
