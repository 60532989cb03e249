"""Analysis of a MetaCAM results dataset (DESIGN §2-3): Cumulative Residual Effect,
factorial effects, paper tables and figures, from Parquet alone.

This package never imports torch. Public names are imported lazily so that
``import analysis`` stays cheap (pandas, statsmodels and matplotlib load on use).
"""

from importlib import import_module
from typing import Any

from analysis.errors import AnalysisError

# public name -> module that defines it
_EXPORTS = {
    "analyze": "analysis.pipeline",
    "compute": "analysis.pipeline",
    "AnalysisResult": "analysis.pipeline",
    "load_dataset": "analysis.dataset",
    "find_parquet_files": "analysis.dataset",
    "Dataset": "analysis.dataset",
    "ScoreSpec": "analysis.scores",
    "parse_score": "analysis.scores",
    "select_scores": "analysis.scores",
    "experiment_summary": "analysis.cre",
    "cre": "analysis.cre",
    "cre_curves": "analysis.cre",
    "cre_per_unit": "analysis.cre",
    "main_effect_contrasts": "analysis.cre",
    "cre_ols_identity": "analysis.cre",
    "fit_factorial": "analysis.stats",
    "FactorialFit": "analysis.stats",
    "synthetic_results": "analysis.synthetic",
    "write_results": "analysis.synthetic",
    "write_synthetic": "analysis.synthetic",
    "main": "analysis.cli",
}

__all__ = ["AnalysisError", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
