"""``python -m ase_surftune.cli`` == ``surftune``."""

import sys

from ase_surftune.cli import main

sys.exit(main())
