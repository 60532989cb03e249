"""Benchmark `metacam analyze` on a synthetic sweep: 2^G experiments × units (+ single methods, controls).

    .venv/bin/python bench/analysis.py                         # 6 groups, 2 models × 5,000 images = 10,000 units
    .venv/bin/python bench/analysis.py --ks 5:100:5            # the full default 20-point k grid
    .venv/bin/python bench/analysis.py --groups 10 --images 100 --targets 2
    .venv/bin/python bench/analysis.py --images 1000 --interactions

Prints the time to write the dataset (not part of the analysis), the analysis's
CPU time (the honest figure on a shared machine) and its wall time, split into
reading, computing (bootstrap, CRE, OLS, paired tests, study tables) and
writing outputs. Name the CPU (/proc/cpuinfo) beside any number you quote.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder is first on sys.path; drop it so nothing there shadows a package.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402

from metacam.analysis.dataset import load_dataset  # noqa: E402
from metacam.analysis.pipeline import compute  # noqa: E402
from metacam.analysis.report import write_outputs  # noqa: E402
from metacam.analysis.scores import parse_score  # noqa: E402
from metacam.analysis.settings import DEFAULT_REPLICATES  # noqa: E402
from metacam.analysis.synthetic import make_groups, write_synthetic  # noqa: E402


def parse_ks(text: str) -> tuple[float, ...]:
    """``25,50,100`` or ``start:stop:step`` (inclusive)."""
    if ":" in text:
        start, stop, step = (float(v) for v in text.split(":"))
        return tuple(float(k) for k in np.arange(start, stop + step / 2, step))
    return tuple(float(k) for k in text.split(","))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=6, help="number of groups G (2^G experiments)")
    parser.add_argument("--images", type=int, default=5_000, help="images per model")
    parser.add_argument("--models", type=int, default=2)
    parser.add_argument("--targets", type=int, default=1, help="target ranks per image")
    parser.add_argument("--ks", type=parse_ks, default=(25.0, 50.0, 75.0, 100.0))
    parser.add_argument("--interactions", action="store_true")
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_REPLICATES)
    parser.add_argument("--dir", type=Path, default=None, help="keep the dataset here (default: a temp dir)")
    args = parser.parse_args()

    groups = make_groups(args.groups)
    models = tuple(f"model_{i}" for i in range(args.models))
    with tempfile.TemporaryDirectory() as temporary:
        root = args.dir or Path(temporary)
        start = time.perf_counter()
        files = write_synthetic(root, args.images, groups=groups, models=models, n_targets=args.targets,
                                ks=args.ks, seed=0, optimism=0.01, heldout_noise=0.01)
        written = time.perf_counter() - start
        size = sum(f.stat().st_size for f in files) / 2**20
        units = args.images * args.models * args.targets
        entries = groups.n_combos + sum(len(m) for m in groups.members) + 2
        rows = units * entries * len(args.ks)
        print(f"CPU: {cpu_name()}")
        print(f"dataset: {units:,} units ({args.models} models × {args.images:,} images × {args.targets} targets) × "
              f"{groups.n_combos} experiments + singles + controls × {len(args.ks)} k = {rows:,} rows, "
              f"{len(files)} files, {size:.0f} MiB, written in {written:.1f} s")

        spec = parse_score("adaptive")
        out = root / "analysis"
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        dataset = load_dataset(root, keep_k=(100.0,), exclude=[out])
        t1 = time.perf_counter()
        result = compute(dataset, spec, interactions=args.interactions, out_dir=out, replicates=args.bootstrap)
        t2 = time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)
        write_outputs(result)
        t3 = time.perf_counter()
        cpu = time.process_time() - cpu0
        print(f"analysis CPU time: {cpu:.2f} s (this process; on a shared machine wall time also counts waiting)")
        print(f"analysis wall time: {t3 - t0:.2f} s  (read {t1 - t0:.2f} s, compute {t2 - t1:.2f} s "
              f"[{args.bootstrap} bootstrap replicates over {dataset.n_clusters:,} clusters, CRE, OLS"
              f"{' + interactions' if args.interactions else ''}, paired tests, study tables], "
              f"write tables/figures/report {t3 - t2:.2f} s)")
        print(f"rows kept for scoring: {len(dataset.rows):,}; OLS rows: {result.fit.n_obs if result.fit else 0:,}")



# --- compaction (issue 19): files and `metacam analyze` time before/after `metacam compact` ---


def compaction(argv: list[str]) -> None:
    """A synthetic study laid out as a sweep writes it (one file per model × experiment × unit
    of 16 images, manifests), analysed, compacted, analysed again; the outputs must be equal.

        .venv/bin/python bench/analysis.py --compaction [--images 1000] [--models 3] [--groups 6]
    """
    import filecmp
    import shutil

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.layout
    from metacam.analysis import analyze
    from metacam.compact import compact
    from metacam.results import dataset_files
    from metacam.status import study_status
    from tests.layout import write_study

    parser = argparse.ArgumentParser(description=compaction.__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000)
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--groups", type=int, default=6, help="2^G combinations + singles + 2 controls")
    parser.add_argument("--images-per-unit", type=int, default=16)
    parser.add_argument("--ks", type=parse_ks, default=tuple(float(k) for k in range(10, 101, 10)))
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_REPLICATES)
    parser.add_argument("--dir", type=Path, default=None, help="keep the dataset here (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        work = args.dir or Path(temporary)
        root = work / "results"
        start = time.perf_counter()
        layout = write_study(root, args.images, models=[f"model_{i}" for i in range(args.models)],
                             n_groups=args.groups, images_per_unit=args.images_per_unit, ks=args.ks)
        written = time.perf_counter() - start
        print(f"CPU: {cpu_name()}")
        print(f"dataset: {args.images:,} images x {args.models} models x {len(layout.experiments)} experiments x "
              f"{len(args.ks)} k, units of {args.images_per_unit} images: {len(layout.files):,} unit files, "
              f"written in {written:.0f} s")

        def timed_analysis(label: str) -> tuple[int, float, float, float]:
            files = len(dataset_files(root))
            cpu0, t0 = time.process_time(), time.perf_counter()
            status = study_status(root)
            t1 = time.perf_counter()
            analyze(root, work / label, replicates=args.bootstrap)
            t2 = time.perf_counter()
            print(f"{label:>7}: {files:6,} files; metacam analyze {t2 - t1:6.1f} s wall "
                  f"({time.process_time() - cpu0:.1f} s CPU with status); metacam status {t1 - t0:5.1f} s "
                  f"({status.files_done:,}/{status.files_expected:,} units)")
            return files, t2 - t1, t1 - t0, status.eta_seconds or 0.0

        before = timed_analysis("before")
        start, cpu0 = time.perf_counter(), time.process_time()
        report = compact(root)
        print(f"metacam compact: {time.perf_counter() - start:.1f} s wall, {time.process_time() - cpu0:.1f} s CPU: "
              f"{report.line()}")
        after = timed_analysis("after")
        same = [name.name for name in sorted((work / "before").glob("*.csv"))
                if filecmp.cmp(name, work / "after" / name.name, shallow=False)]
        total = len(list((work / "before").glob("*.csv")))
        print(f"files {before[0]:,} -> {after[0]:,} ({before[0] / after[0]:.0f}x fewer); analyze "
              f"{before[1]:.1f} -> {after[1]:.1f} s ({before[1] / after[1]:.2f}x); status {before[2]:.1f} -> "
              f"{after[2]:.1f} s; analysis tables identical: {len(same)}/{total}")
        if args.dir is None:
            shutil.rmtree(work / "before", ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--compaction"]:
        compaction(sys.argv[2:])
    else:
        main()
