"""``python -m analysis RESULTS_DIR [--out DIR] ...``: same as ``metacam analyze``."""

import sys

from analysis.cli import main

sys.exit(main())
