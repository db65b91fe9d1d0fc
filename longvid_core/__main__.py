"""``python -m longvid_core`` = the ``longvid`` command (see :mod:`longvid_core.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
