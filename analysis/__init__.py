"""Analysis of a MetaCAM results dataset (DESIGN §2-3): held-out paired evidence,
Cumulative Residual Effect, factorial effects, per-model tables and figures, from Parquet alone.

This package never imports torch. Public names are imported lazily so that
``import metacam.analysis`` stays cheap (pandas, statsmodels and matplotlib load on use).
"""

from importlib import import_module
from typing import Any

from metacam.analysis.errors import AnalysisError

# public name -> module that defines it
_EXPORTS = {
    "analyze": "metacam.analysis.pipeline",
    "compute": "metacam.analysis.pipeline",
    "AnalysisResult": "metacam.analysis.pipeline",
    "load_dataset": "metacam.analysis.dataset",
    "find_parquet_files": "metacam.analysis.dataset",
    "Dataset": "metacam.analysis.dataset",
    "ScoreSpec": "metacam.analysis.scores",
    "parse_score": "metacam.analysis.scores",
    "select_scores": "metacam.analysis.scores",
    "ClusterBootstrap": "metacam.analysis.bootstrap",
    "cre": "metacam.analysis.cre",
    "cre_curves": "metacam.analysis.cre",
    "cre_per_unit": "metacam.analysis.cre",
    "cre_identity": "metacam.analysis.cre",
    "main_effect_contrasts": "metacam.analysis.cre",
    "fit_factorial": "metacam.analysis.factorial",
    "FactorialFit": "metacam.analysis.factorial",
    "make_groups": "metacam.analysis.synthetic",
    "synthetic_results": "metacam.analysis.synthetic",
    "write_results": "metacam.analysis.synthetic",
    "write_synthetic": "metacam.analysis.synthetic",
    "main": "metacam.analysis.cli",
}

__all__ = ["AnalysisError", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'metacam.analysis' has no attribute {name!r}")
