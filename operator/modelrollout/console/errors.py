"""The errors the console raises: each is a single line a person can act on."""

from __future__ import annotations

from modelrollout.errors import ModelRolloutError


class ConsoleError(ModelRolloutError):
    """A failure of a console command, worded as one clear line for a person."""


class ExperimentNotFoundError(ConsoleError):
    """No ModelExperiment of that name in that namespace."""


class CRDNotInstalledError(ConsoleError):
    """The apiserver does not serve the ModelExperiment resource: the CRD is not installed."""


class UnreachableError(ConsoleError):
    """The apiserver could not be reached (refused, timed out, TLS failure); may be transient."""
