"""The console for people: ``status``, ``list`` and the manual controls, and recordings.

``recording`` (JSON Lines snapshots), ``client`` (the Kubernetes API, with errors worded for
people) and ``view`` (the experiment as a rich panel or plain text) are also used by the report
and the demo.
"""

from modelrollout.console.errors import (
    ConsoleError,
    CRDNotInstalledError,
    ExperimentNotFoundError,
    UnreachableError,
)

__all__ = ["CRDNotInstalledError", "ConsoleError", "ExperimentNotFoundError", "UnreachableError"]
