"""``metacam analyze RESULTS_DIR [--out DIR] ...`` (also ``python -m metacam.analysis``).

User errors print one line, ``metacam analyze: error: <what and what to do>``,
on stderr and return 2; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from metacam.analysis.errors import AnalysisError
from metacam.analysis.metrics import DEFAULT_METRIC
from metacam.analysis.settings import (
    DEFAULT_FOLD_SEED,
    DEFAULT_FOLDS,
    DEFAULT_REPLICATES,
    DEFAULT_SEED,
    LEAVE_ONE_OUT_BELOW,
)

PROG = "metacam analyze"


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so errors stay one line."""

    def error(self, message: str) -> NoReturn:
        raise AnalysisError(f"{message} (see `{PROG} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Held-out evidence (does MetaCAM beat every single CAM and the controls?), "
                    "Cumulative Residual Effect, factorial effects, per-model tables and figures "
                    "from a MetaCAM results dataset (a folder of Parquet files).",
    )
    parser.add_argument("results_dir", metavar="RESULTS_DIR",
                        help="folder of Parquet result files (read recursively)")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="output folder (default: RESULTS_DIR/analysis)")
    parser.add_argument("--score", default="adaptive", metavar="adaptive|plain|k=K",
                        help="score per unit: the map at its adaptive k* (default), the plain map "
                             "(k = 100), or at a fixed k (in-sample ROAD only)")
    parser.add_argument("--metric", default=DEFAULT_METRIC, metavar="NAME",
                        help="any metric the dataset records: ROAD combined (default), morf or lerf, deletion or "
                             "insertion AUC, sparseness, complexity, or a plug-in metric's column; its direction "
                             "comes from the dataset")
    parser.add_argument("--in-sample", action="store_true",
                        help="compare on in-sample ROAD (the draw that chose k*: optimistic) instead of the "
                             "held-out re-scoring")
    parser.add_argument("--interactions", action="store_true",
                        help="add all two-way group interactions to the OLS model (Holm-corrected tests)")
    parser.add_argument("--sweep-id", default=None,
                        help="the sweep to analyse when the dataset holds several")
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_REPLICATES, metavar="N",
                        help=f"cluster-bootstrap replicates (default {DEFAULT_REPLICATES})")
    parser.add_argument("--bootstrap-seed", type=int, default=DEFAULT_SEED, metavar="SEED",
                        help=f"seed of the cluster bootstrap (default {DEFAULT_SEED})")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS, metavar="K",
                        help=f"folds of the cross-validation over images that chooses the best combination and "
                             f"single CAM out of sample (default {DEFAULT_FOLDS}; leave-one-out below "
                             f"{LEAVE_ONE_OUT_BELOW} images)")
    parser.add_argument("--fold-seed", type=int, default=DEFAULT_FOLD_SEED, metavar="SEED",
                        help=f"seed of the assignment of images to folds (default {DEFAULT_FOLD_SEED})")
    return parser


def _error(message: object) -> int:
    text = " ".join(str(message).split())  # one line, whatever the message held
    print(f"{PROG}: error: {text}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run the analysis; returns the exit status (0 ok, 2 user error)."""
    try:
        args = build_parser().parse_args(argv)
    except AnalysisError as error:
        return _error(error)
    except SystemExit as done:  # --help
        return int(done.code or 0)
    # Imported here so that `--help` and argument errors stay instant.
    from metacam.analysis.pipeline import analyze
    from metacam.analysis.report import summary_text

    try:
        result = analyze(args.results_dir, args.out, score=args.score, metric=args.metric,
                         in_sample=args.in_sample, interactions=args.interactions, sweep_id=args.sweep_id,
                         replicates=args.bootstrap, seed=args.bootstrap_seed, folds=args.folds,
                         fold_seed=args.fold_seed)
    except AnalysisError as error:
        return _error(error)
    try:
        print(summary_text(result), flush=True)
    except BrokenPipeError:  # stdout piped into `head`: the files are written, nothing to report
        sys.stdout = open(os.devnull, "w")  # keeps the final flush quiet
    return 0
