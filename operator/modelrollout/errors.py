"""The project's error types and exit codes: one root, :class:`ModelRolloutError`.

Every error raised on purpose derives from it and carries the exit code the command line gives it
(:attr:`ModelRolloutError.exit_code`), so ``modelrollout`` maps errors to exits in one place
(:func:`modelrollout.cli.main`). Every boundary of the project (the statistics functions, the CLI,
the API models) raises :class:`InvalidInputError` for bad input, with a message that names the
offending value, so a caller can catch one type and show one clear line.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class ExitCode(IntEnum):
    """The exit codes of every ``modelrollout`` command."""

    OK = 0
    #: Something failed, or a check found a problem (a drifted CRD, a demo that did not end right).
    FAILED = 1
    #: Bad input: a flag, a value, a file, a spec.
    USAGE = 2
    #: ``modelrollout run --leader-elect`` lost its Lease (or could not renew it before the renew
    #: deadline) and exited at once, writing nothing more; the Deployment starts it again as a standby.
    LEASE_LOST = 3
    #: Interrupted (Ctrl-C), as shells report SIGINT.
    INTERRUPTED = 130


class ModelRolloutError(Exception):
    """Base class of every error raised on purpose by modelrollout."""

    exit_code: ClassVar[ExitCode] = ExitCode.FAILED


class InvalidInputError(ModelRolloutError, ValueError):
    """An argument is out of its domain; the message names the argument and its value."""

    exit_code: ClassVar[ExitCode] = ExitCode.USAGE


class FencedError(ModelRolloutError):
    """A write refused because this process is no longer sure to hold the leader's Lease.

    With leader election, every write (routes, status, Events, kopf's own patches) first asks the
    process-wide guard of :mod:`modelrollout.controller.leader`; once the renew deadline has passed
    without a successful renewal, the guard says no and the write raises this instead of happening.
    """

    exit_code: ClassVar[ExitCode] = ExitCode.LEASE_LOST
