"""``python -m sthinge``: the command line (as the ``sthinge`` script), e.g. ``torchrun -m sthinge predict ...``."""

import sys

from sthinge._cli import main

sys.exit(main())
