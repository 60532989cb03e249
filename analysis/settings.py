"""Defaults of the analysis, each written once (light: the CLI imports it for ``--help``)."""

LEVEL = 0.95
"""Confidence level of every interval (two-sided)."""
ALPHA = 0.05
"""Significance level of every verdict (two-sided, like the intervals)."""
POWER = 0.80
"""The power at which ``mde`` is the detectable difference and ``n_needed`` the images needed."""
DEFAULT_REPLICATES = 2000
"""Cluster-bootstrap replicates."""
DEFAULT_SEED = 0
"""Seed of the cluster bootstrap."""
MIN_CLUSTERS = 30
"""Below this many clusters (images) the analysis warns and uses small-sample inference (CR2)."""
DEFAULT_FOLDS = 5
"""Folds of the cross-validation over images that chooses the best combination and single CAM."""
LEAVE_ONE_OUT_BELOW = 10
"""With fewer images than this, the cross-validation leaves one image out per fold."""
DEFAULT_FOLD_SEED = 0
"""Seed of the assignment of images to folds."""
