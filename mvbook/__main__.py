"""``python -m mvbook ...``: the ``mvbook`` command line (see :mod:`mvbook.cli`)."""

import sys

from mvbook.cli import main

if __name__ == "__main__":
    sys.exit(main())
