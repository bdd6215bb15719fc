"""``python -m modelrollout.cli``: the ``modelrollout`` command."""

import sys

from modelrollout.cli.main import main

sys.exit(main())
