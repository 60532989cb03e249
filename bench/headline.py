"""The paper's headline, measured: does MetaCAM with adaptive thresholding beat every single
CAM — on held-out scores, on a second metric, against null controls — and under which
ROAD tie rule?

Runs two studies (``road=default``: seeded tie-break, exactly p% removed; ``road=paper``:
grad-cam's inclusive ties) over the three EfficientNet-Lite models, every bundled photo
(``data=photos``), top-1 targets and DESIGN's 20-value k grid. Only the jobs the question
needs are run: the six single-group jobs (which score the 12 single methods), the
pre-specified comparator (every group but the random control, combo 31) and the
all-groups job (combo 63, which also scores the two null controls). Then ``metacam
analyze`` of each, and the held-out answer of each report side by side.
Run: python bench/headline.py [--out DIR] [--models ...] [extra overrides...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from road import cpu_name  # noqa: E402

COMBOS = "1,2,4,8,16,31,32,63"
MODELS = "efficientnet_lite0,efficientnet_lite1,efficientnet_lite2"


def run(command: list[str]) -> str:
    print("$", " ".join(command), flush=True)
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(result.stdout[-3000:], result.stderr[-3000:])
        raise SystemExit(1)
    return result.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "headline")
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}")
    summary = []
    for rule in ("default", "paper"):
        start = time.perf_counter()
        out = run([sys.executable, "-m", "metacam.cli", "sweep", f"model={args.models}", "data=photos",
                   "threshold=fine", f"road={rule}", f"combo_id={COMBOS}", f"out_dir={args.out}", *args.overrides])
        results = next(line.split()[1] for line in out.splitlines() if line.startswith("Dataset: "))
        seconds = time.perf_counter() - start
        run([sys.executable, "-m", "metacam.cli", "analyze", results])
        analysis = Path(results) / "analysis"
        headline = pd.read_csv(analysis / "headline.csv")
        comparisons = pd.read_csv(analysis / "comparisons.csv")
        print(f"\n=== road={rule}: {results} ({seconds / 60:.1f} min) ===")
        print(headline.to_string(index=False))
        print(comparisons.to_string(index=False))
        gains = analysis / "gain_split.csv"
        if gains.exists():
            print(pd.read_csv(gains).to_string(index=False))
        summary.append((rule, results))
    print("\nreports:", ", ".join(f"{rule}: {Path(r) / 'analysis' / 'report.md'}" for rule, r in summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
