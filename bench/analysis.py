"""Benchmark `metacam analyze` on a synthetic sweep: 64 experiments × N units (+ 12 single methods).

    .venv/bin/python bench/analysis.py                 # 10,000 units, k grid 25/50/75/100
    .venv/bin/python bench/analysis.py --ks 5:100:5    # the full default 20-point k grid
    .venv/bin/python bench/analysis.py --units 2000 --interactions

Prints the time to write the dataset (not part of the analysis) and the wall
time of the analysis, split into reading, computing and writing outputs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder is first on sys.path and its name would shadow the
# installed `analysis` package; drop that entry before importing it.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402

from metacam.analysis.dataset import load_dataset  # noqa: E402
from metacam.analysis.pipeline import compute  # noqa: E402
from metacam.analysis.report import write_outputs  # noqa: E402
from metacam.analysis.scores import parse_score  # noqa: E402
from metacam.analysis.synthetic import write_synthetic  # noqa: E402


def parse_ks(text: str) -> tuple[float, ...]:
    """``25,50,100`` or ``start:stop:step`` (inclusive)."""
    if ":" in text:
        start, stop, step = (float(v) for v in text.split(":"))
        return tuple(float(k) for k in np.arange(start, stop + step / 2, step))
    return tuple(float(k) for k in text.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--ks", type=parse_ks, default=(25.0, 50.0, 75.0, 100.0))
    parser.add_argument("--interactions", action="store_true")
    parser.add_argument("--dir", type=Path, default=None, help="keep the dataset here (default: a temp dir)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        root = args.dir or Path(temporary)
        start = time.perf_counter()
        files = write_synthetic(root, args.units, ks=args.ks, seed=0)
        written = time.perf_counter() - start
        size = sum(f.stat().st_size for f in files) / 2**20
        rows = args.units * (64 + 12) * len(args.ks)
        print(f"dataset: {args.units} units × 64 experiments + 12 single methods × {len(args.ks)} k "
              f"= {rows:,} rows, {len(files)} files, {size:.0f} MiB, written in {written:.1f} s")

        spec = parse_score("adaptive")
        out = root / "analysis"
        t0 = time.perf_counter()
        dataset = load_dataset(root, keep_k=(100.0,), exclude=[out])
        t1 = time.perf_counter()
        result = compute(dataset, spec, interactions=args.interactions, out_dir=out)
        t2 = time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)
        write_outputs(result)
        t3 = time.perf_counter()
        print(f"analysis wall time: {t3 - t0:.2f} s  (read {t1 - t0:.2f} s, compute {t2 - t1:.2f} s "
              f"[CRE, OLS{' + interactions' if args.interactions else ''}, tables], "
              f"write tables/figures/report {t3 - t2:.2f} s)")
        print(f"rows kept for scoring: {len(dataset.rows):,}; OLS rows: {result.fit.n_obs if result.fit else 0:,}")


if __name__ == "__main__":
    main()
