"""``python -m illava``: the command line (``illava.cli``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
