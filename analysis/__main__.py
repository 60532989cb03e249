"""``python -m metacam.analysis RESULTS_DIR [--out DIR] ...``: same as ``metacam analyze``."""

import sys

from metacam.analysis.cli import main

sys.exit(main())
