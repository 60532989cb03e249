"""The paper's headline, measured: does MetaCAM with adaptive thresholding beat every single
CAM — on held-out scores, on every headline metric, against null controls — and under which
ROAD tie rule?

Runs one study per tie rule (``road=default``: seeded tie-break, exactly p% removed;
``road=paper``: grad-cam's inclusive ties) over the three EfficientNet-Lite models, every
bundled photo (``data=photos``), top-1 targets and DESIGN's 20-value k grid. Only the jobs
the question needs are run: the six single-group jobs (which score the 12 single methods),
the pre-specified comparator (every group but the random control, combo 31) and the
all-groups job (combo 63, which also scores the two null controls). Then ``metacam
analyze`` of each, and what the README's headline section states, per rule:

* the images (clusters) and the intersection–union answer per headline metric;
* the closest single CAM: difference [95% CI], p, mde and n_needed;
* the null controls with their Holm p;
* the out-of-sample choice: the combination chosen on the other folds − the single chosen
  the same way, and how stable each choice is;
* the paper's comparison decomposed into optimism, thresholding and ensembling.

Run: python bench/headline.py [--out DIR] [--models ...] [--data photos] [--threshold fine]
     [extra overrides...]
     python bench/headline.py --summarise RESULTS/analysis    # print an existing analysis only
A smoke check on the plumbing (no real explanation): --models tiny_random --data samples
--threshold deciles road.percentiles=[50] heldout.percentiles=[30,70] deletion.steps=4
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

from metacam.analysis.design import CONTROL  # noqa: E402
from metacam.analysis.tables import fmt_ci, fmt_p  # noqa: E402

COMBOS = "1,2,4,8,16,31,32,63"
MODELS = "efficientnet_lite0,efficientnet_lite1,efficientnet_lite2"


def run(command: list[str]) -> str:
    print("$", " ".join(command), flush=True)
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(result.stdout[-3000:], result.stderr[-3000:])
        raise SystemExit(1)
    return result.stdout


def _count(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{int(value)}"


def _number(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.4f}"


def summarise(analysis: Path) -> list[str]:
    """What the README's headline section needs, from one analysis folder's CSV files."""
    lines = []
    headline = pd.read_csv(analysis / "headline.csv")
    comparisons = pd.read_csv(analysis / "comparisons.csv")
    lines.append(f"images (clusters): {int(headline['n_clusters'].max())}")
    for row in headline.itertuples():
        lines.append(
            f"{row.score}: beats every single CAM? {row.answer} ({row.singles_beaten} of {row.singles} beaten, "
            f"largest p {fmt_p(row.p_iut)}); closest {row.closest_single} "
            f"{fmt_ci(row.closest_difference, row.closest_ci_low, row.closest_ci_high, 4)}, p {fmt_p(row.closest_p)}, "
            f"mde {_number(row.closest_mde)}, n_needed {_count(row.closest_n_needed)}")
        controls = comparisons[(comparisons["metric"] == row.metric) & (comparisons["opponent_kind"] == CONTROL)]
        for c in controls.itertuples():
            lines.append(f"    vs {c.opponent}: {fmt_ci(c.mean_difference, c.ci_low, c.ci_high, 4)}, "
                         f"images W/T/L {c.wins}/{c.ties}/{c.losses}, Holm p {fmt_p(c.p_adjusted)} ({c.verdict})")
    selection = analysis / "selection.csv"
    if selection.exists():
        for row in pd.read_csv(selection).itertuples():
            lines.append(f"chosen out of sample, {row.score} ({row.fold_rule}): combination − single "
                         f"{fmt_ci(row.mean_difference, row.ci_low, row.ci_high, 4)}, p {fmt_p(row.p)} ({row.verdict}); "
                         f"combinations {row.combos_chosen}; singles {row.singles_chosen}")
    paper = analysis / "paper_comparison.csv"
    if paper.exists():
        table = pd.read_csv(paper)
        rows = table[table["metric"] == table["metric"].iloc[0]]  # the analysis's metric; the rest in the CSV
        lines.append(f"paper's comparison, {rows['score'].iloc[0]} (in-sample adaptive MetaCAM − plain single "
                     "= optimism + thresholding + ensembling):")
        for r in rows.itertuples():
            lines.append(f"    {r.single}: {fmt_ci(r.paper_gap, r.paper_ci_low, r.paper_ci_high)} = "
                         f"{fmt_ci(r.optimism, r.optimism_ci_low, r.optimism_ci_high)} + "
                         f"{fmt_ci(r.thresholding, r.thresholding_ci_low, r.thresholding_ci_high)} + "
                         f"{fmt_ci(r.ensembling, r.ensembling_ci_low, r.ensembling_ci_high)}; "
                         f"carried by {r.carried_by}")
    gains = analysis / "gain_split.csv"
    if gains.exists():
        for r in pd.read_csv(gains).itertuples():
            if r.metric == headline["metric"].iloc[0] and r.component in ("thresholding", "ensembling"):
                chosen = f"; {r.best_single}" if r.component == "ensembling" else ""
                lines.append(f"{r.component} ({r.contrast}{chosen}): {fmt_ci(r.mean_difference, r.ci_low, r.ci_high, 4)}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "headline")
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--data", default="photos")
    parser.add_argument("--threshold", default="fine")
    parser.add_argument("--rules", default="default,paper", help="ROAD tie rules, one study each")
    parser.add_argument("--summarise", type=Path, default=None, metavar="ANALYSIS_DIR",
                        help="print an existing analysis folder's headline and exit")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.summarise is not None:
        print("\n".join(summarise(args.summarise)))
        return 0
    print(f"CPU: {cpu_name()}")
    summary = []
    for rule in args.rules.split(","):
        start = time.perf_counter()
        out = run([sys.executable, "-m", "metacam.cli", "sweep", f"model={args.models}", f"data={args.data}",
                   f"threshold={args.threshold}", f"road={rule}", f"combo_id={COMBOS}", f"out_dir={args.out}",
                   *args.overrides])
        results = next(line.split()[1] for line in out.splitlines() if line.startswith("Dataset: "))
        seconds = time.perf_counter() - start
        run([sys.executable, "-m", "metacam.cli", "analyze", results])
        analysis = Path(results) / "analysis"
        print(f"\n=== road={rule}: {results} (sweep {seconds / 60:.1f} min) ===")
        print("\n".join(summarise(analysis)))
        summary.append((rule, results))
    print("\nreports:", ", ".join(f"{rule}: {Path(r) / 'analysis' / 'report.md'}" for rule, r in summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
