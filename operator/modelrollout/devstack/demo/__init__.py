"""``modelrollout demo``: one experiment end to end on a private local stack.

``scenarios`` (what each scenario runs and how it must end, with its manifest in
``examples/demo/``), ``runner`` (start, watch, record, tear down, report) and ``cli``
(``register(subparsers)``). This package imports nothing heavy, so the CLI stays fast.
"""
