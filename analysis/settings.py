"""Defaults of the analysis, each written once (light: the CLI imports it for ``--help``)."""

LEVEL = 0.95
"""Confidence level of every interval."""
ALPHA = 0.05
"""Significance level of every verdict (after Holm's correction)."""
DEFAULT_REPLICATES = 2000
"""Cluster-bootstrap replicates."""
DEFAULT_SEED = 0
"""Seed of the cluster bootstrap."""
MIN_CLUSTERS = 30
"""Below this many clusters the analysis warns and uses small-sample inference (CR2)."""
