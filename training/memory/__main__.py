"""``python -m training.memory`` (see :mod:`training.memory.report`)."""

import sys

from training.memory.report import main

sys.exit(main())
