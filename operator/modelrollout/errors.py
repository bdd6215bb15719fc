"""The project's error types.

Every boundary of the project (the statistics functions, the CLI, later the API models) raises
:class:`InvalidInputError` for bad input, with a message that names the offending value, so a
caller can catch one type and show one clear line.
"""

from __future__ import annotations


class ModelRolloutError(Exception):
    """Base class of every error raised on purpose by modelrollout."""


class InvalidInputError(ModelRolloutError, ValueError):
    """An argument is out of its domain; the message names the argument and its value."""
