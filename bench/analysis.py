"""Benchmark `metacam analyze` on a synthetic sweep: 2^G experiments × units (+ single methods, controls),
this version against v0.2 (bench/baseline.py) on the same dataset, in one run.

    .venv/bin/python bench/analysis.py                         # 6 groups, 2 models × 5,000 images = 10,000 units
    .venv/bin/python bench/analysis.py --ks 5:100:5            # the full default 20-point k grid
    .venv/bin/python bench/analysis.py --groups 10 --images 100 --targets 2 --no-baseline
    .venv/bin/python bench/analysis.py --images 1000 --interactions

Prints the time to write the dataset (not part of the analysis), then for v0.2's analysis
(a subprocess importing the old tree) and this one (in this process): CPU time (the honest
figure on a shared machine) and wall time, split into reading, computing (bootstrap, CRE,
OLS, paired tests, selection, study tables) and writing outputs, and the ratio this / v0.2
(goal: within 1.5×). Each is the best of --repeat runs. Name the CPU beside any number you quote.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder is first on sys.path; drop it so nothing there shadows a package.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder's helpers, after the packages

from baseline import BASELINE, run_json  # noqa: E402

from metacam.analysis.dataset import load_dataset  # noqa: E402
from metacam.analysis.metrics import DEFAULT_METRIC  # noqa: E402
from metacam.analysis.pipeline import compute  # noqa: E402
from metacam.analysis.report import write_outputs  # noqa: E402
from metacam.analysis.scores import parse_score  # noqa: E402
from metacam.analysis.settings import DEFAULT_REPLICATES  # noqa: E402
from metacam.analysis.synthetic import make_groups, write_synthetic  # noqa: E402

# v0.2's analysis of the same folder, timed like ours; its API: load_dataset, compute, write_outputs.
BEFORE = """
import json, time
from pathlib import Path
from metacam.analysis.dataset import load_dataset
from metacam.analysis.pipeline import compute
from metacam.analysis.report import write_outputs
from metacam.analysis.scores import parse_score
root, out = Path({root!r}), Path({out!r})
cpu = time.process_time()
t0 = time.perf_counter()
dataset = load_dataset(root, keep_k=(100.0,), exclude=[out, root / "analysis"])
t1 = time.perf_counter()
result = compute(dataset, parse_score("adaptive"), interactions={interactions}, out_dir=out, replicates={replicates})
t2 = time.perf_counter()
out.mkdir(parents=True, exist_ok=True)
write_outputs(result)
t3 = time.perf_counter()
print(json.dumps(dict(cpu=time.process_time() - cpu, wall=t3 - t0, read=t1 - t0, compute=t2 - t1, write=t3 - t2,
                      clusters=dataset.n_clusters)))
"""


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


def measure(root: Path, out: Path, interactions: bool, replicates: int) -> dict:
    """This version's analysis of ``root`` into ``out``: seconds (cpu, wall, read, compute, write) and sizes."""
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    dataset = load_dataset(root, keep_k=(100.0,), exclude=[out, root / "analysis-before"])
    t1 = time.perf_counter()
    spec = parse_score("adaptive", dataset.metric(DEFAULT_METRIC))
    result = compute(dataset, spec, interactions=interactions, out_dir=out, replicates=replicates)
    t2 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(result)
    t3 = time.perf_counter()
    return dict(cpu=time.process_time() - cpu0, wall=t3 - t0, read=t1 - t0, compute=t2 - t1, write=t3 - t2,
                clusters=dataset.n_clusters, rows=len(dataset.rows), ols=result.fit.n_obs if result.fit else 0,
                metrics=len(result.headline) if result.headline is not None else 0)


def line(name: str, t: dict, replicates: int) -> str:
    return (f"{name}: CPU {t['cpu']:.2f} s, wall {t['wall']:.2f} s (read {t['read']:.2f} s, compute "
            f"{t['compute']:.2f} s [{replicates} bootstrap replicates over {t['clusters']:,} clusters], write "
            f"{t['write']:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=6, help="number of groups G (2^G experiments)")
    parser.add_argument("--images", type=int, default=5_000, help="images per model")
    parser.add_argument("--models", type=int, default=2)
    parser.add_argument("--targets", type=int, default=1, help="target ranks per image")
    parser.add_argument("--ks", type=parse_ks, default=(25.0, 50.0, 75.0, 100.0))
    parser.add_argument("--interactions", action="store_true")
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_REPLICATES)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each analysis; the best is reported")
    parser.add_argument("--no-baseline", action="store_true", help="time this version only")
    parser.add_argument("--baseline", default=BASELINE, help=f"the revision to compare with (default {BASELINE})")
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
        before = None
        if not args.no_baseline:
            code = BEFORE.format(root=str(root), out=str(root / "analysis-before"), interactions=args.interactions,
                                 replicates=args.bootstrap)
            runs = [run_json(code, args.baseline) for _ in range(args.repeat)]
            before = min(runs, key=lambda t: t["cpu"])  # type: ignore[index]
            print(line(f"v0.2 ({args.baseline}, subprocess)", before, args.bootstrap))  # type: ignore[arg-type]
        after = min((measure(root, root / "analysis", args.interactions, args.bootstrap) for _ in range(args.repeat)),
                    key=lambda t: t["cpu"])
        print(line("this version", after, args.bootstrap))
        print(f"this version: {after['rows']:,} rows kept for scoring, {after['ols']:,} OLS rows, "
              f"{after['metrics']} headline metrics")
        if before is not None:
            print(f"ratio this / v0.2: CPU {after['cpu'] / before['cpu']:.2f}×, wall {after['wall'] / before['wall']:.2f}× "
                  f"(goal ≤ 1.5×)")
        print(json.dumps({"before": before, "after": after}))



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
