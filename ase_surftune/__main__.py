"""``python -m ase_surftune`` == ``surftune``."""

import sys

from ase_surftune.cli import main

sys.exit(main())
