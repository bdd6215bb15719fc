"""Errors of the local environment: each carries one clear message for the user."""

from __future__ import annotations

from modelrollout.errors import ModelRolloutError


class LocalEnvError(ModelRolloutError):
    """Base class: something the local environment needs is missing or broke."""


class MissingPrerequisiteError(LocalEnvError):
    """A tool, binary or file is missing; the message says what and how to get it."""


class BuildError(LocalEnvError):
    """`go build` (or `go mod download`) failed; the message carries the tail of its output."""


class ComponentError(LocalEnvError):
    """A component (etcd, kube-apiserver, ...) exited or never became ready.

    The message carries the component's last log lines, so a port clash or a bad flag shows up
    where the failure is reported.
    """

    def __init__(self, component: str, problem: str, log_tail: str) -> None:
        self.component = component
        self.problem = problem
        self.log_tail = log_tail
        body = log_tail.rstrip() or "(no output)"
        super().__init__(f"{component}: {problem}\n--- last log lines of {component} ---\n{body}")
