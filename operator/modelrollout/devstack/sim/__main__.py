"""``python -m modelrollout.devstack.sim {model,mesh,load} ...``: run one simulated component."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

USAGE = "usage: python -m modelrollout.devstack.sim {model,mesh,load} [options]  (--help after the component)"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    component, rest = args[0], args[1:]
    entry: Callable[[Sequence[str]], int]
    if component == "model":
        from modelrollout.devstack.sim.model_server import main as entry
    elif component == "mesh":
        from modelrollout.devstack.sim.mesh import main as entry
    elif component == "load":
        from modelrollout.devstack.sim.loadgen import main as entry
    else:
        print(f"unknown component {component!r}\n{USAGE}", file=sys.stderr)
        return 2
    return entry(rest)


if __name__ == "__main__":
    sys.exit(main())
