"""The ``modelrollout`` command: one entry point (:func:`main`) that maps every error to its exit code.

:mod:`~modelrollout.cli.main` builds the parser from the commands of each layer (``plan``,
``analyze``, ``simulate`` and ``run`` here; ``crd`` from the API; ``status``, ``list`` and the
controls from the console; ``report``; ``demo`` and ``localenv`` from the dev stack) and runs one;
:mod:`~modelrollout.cli.planning` is the glue of ``plan``, ``analyze`` and ``simulate`` to the
statistics. The exit codes are :class:`~modelrollout.errors.ExitCode`.
"""

from modelrollout.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
