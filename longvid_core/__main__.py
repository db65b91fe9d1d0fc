"""``python -m longvid_core`` = the ``longvid`` command (see :mod:`longvid_core.run.cli`)."""

import sys

from .run.cli import main

if __name__ == "__main__":
    sys.exit(main())
