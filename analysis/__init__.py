"""Analysis of a MetaCAM results dataset (DESIGN §2-3): Cumulative Residual Effect,
factorial effects, paper tables and figures, from Parquet alone.

This package never imports torch. Public names are imported lazily so that
``import analysis`` stays cheap (pandas, statsmodels and matplotlib load on use).
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
    "experiment_summary": "metacam.analysis.cre",
    "cre": "metacam.analysis.cre",
    "cre_curves": "metacam.analysis.cre",
    "cre_per_unit": "metacam.analysis.cre",
    "main_effect_contrasts": "metacam.analysis.cre",
    "cre_ols_identity": "metacam.analysis.cre",
    "fit_factorial": "metacam.analysis.stats",
    "FactorialFit": "metacam.analysis.stats",
    "synthetic_results": "metacam.analysis.synthetic",
    "write_results": "metacam.analysis.synthetic",
    "write_synthetic": "metacam.analysis.synthetic",
    "main": "metacam.analysis.cli",
}

__all__ = ["AnalysisError", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
