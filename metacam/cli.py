"""The ``metacam`` command: explain, models, sweep, analyze, status, compact.

User errors print one line, ``metacam <command>: error: <what and what to do>``,
and exit with status 2; no traceback. ``sweep`` and ``analyze`` hand their
arguments to the Hydra app and to the analysis, which parse their own.
"""

import argparse
import sys
import time
from collections.abc import Sequence
from importlib import import_module
from pathlib import Path
from typing import NoReturn

from metacam import __version__
from metacam.config import DEFAULT_KS, FINE_KS, TIE_RULES, RoadConfig
from metacam.errors import MetaCAMError
from metacam.groups import default_groups

EXPLAIN_EPILOG = """\
images: files, folders (their image files), sample:NAME (coffee, chelsea,
astronaut, rocket, cat: scikit-image photos that ship with the package) or
'samples' for all five.

outputs in --out: <image_id>.png per image (input, each member CAM and MetaCAM
overlaid, with plain ROAD, adaptive ROAD and k* in the titles), scores.csv and
scores.parquet (the sweep's rows and column names: per image x method its k* row
and its k = 100 row, with in-sample ROAD, held-out ROAD, deletion/insertion AUC,
sparseness, complexity and the --metrics plug-ins), maps/<image_id>.npz with
--save-maps (one (H, W) float32 array in [0, 1] per method).

examples:
  metacam explain samples
  metacam explain photos/ --model resnet50 --layer layer4.2 --groups gradcam,eigen
  metacam explain scan.png --model mypkg.nets:build_net --checkpoint net.pt \\
      --layer encoder.block4 --categories classes.txt --k 30
  metacam explain samples --metrics mymetrics:pointing_game
"""


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``metacam explain: error: ...``), exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def _csv_floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {text!r}"
        ) from None


def _grid(ks: Sequence[float]) -> str:
    return ",".join(f"{k:g}" for k in ks)


def _explain_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "explain",
        help="member CAMs, MetaCAM and ROAD scores for your model and images",
        description="Explain a classifier's decisions (a CNN or a vision transformer) on images "
        "with member CAMs and their MetaCAM ensemble, scored by ROAD and the other metrics, "
        "with k chosen per image by adaptive thresholding.",
        epilog=EXPLAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument(
        "--model",
        default="efficientnet_lite0",
        help="efficientnet_lite0 (default, offline), a torchvision name, timm/NAME (any timm "
        "classifier; pretrained weights only from the local cache, else --checkpoint), or "
        "module:factory",
    )
    parser.add_argument(
        "--layer",
        help="target layer(s) as dotted paths, e.g. layer4.1, or several as a,b (their maps "
        "combined as pytorch-grad-cam combines target layers; default: the model's, see "
        "`metacam models layers NAME`)",
    )
    parser.add_argument(
        "--reshape",
        help="package.module:fn turning the layer's output into (B, C, h, w), or none "
        "(default: a recognised transformer's own: ViT/DeiT tokens to a grid, Swin NHWC)",
    )
    parser.add_argument("--checkpoint", help="state-dict file for the model")
    parser.add_argument("--categories", help="text file with one class name per line")
    parser.add_argument("--num-classes", type=int, help="passed to a custom model factory")
    parser.add_argument("--target", help="class index or name to explain (default: top-1)")
    parser.add_argument(
        "--groups",
        help="comma-separated member groups (default: all): " + ", ".join(default_groups()),
    )
    parser.add_argument(
        "--methods",
        help="comma-separated member names or plug-ins (package.module:function) instead of --groups",
    )
    parser.add_argument(
        "--k",
        default="auto",
        help=f"auto (adaptive over {_grid(DEFAULT_KS)}; default), a percentage, or a grid like "
        f"10,50,100 (DESIGN's finer grid: {_grid(FINE_KS[:3])},...,100)",
    )
    parser.add_argument(
        "--metrics",
        help="comma-separated plug-in metrics (package.module:function, marked with "
        "@metacam.map_metric or @metacam.model_metric), scored besides the built-ins",
    )
    road = RoadConfig()
    parser.add_argument(
        "--percentiles",
        type=_csv_floats,
        help=f"ROAD removal percentages (default {','.join(f'{p:g}' for p in road.percentiles)})",
    )
    parser.add_argument(
        "--ties",
        choices=TIE_RULES,
        help=f"ROAD tie rule: random = seeded tie-break, exactly p%% removed; inclusive = "
        f"grad-cam's rule (default {road.ties})",
    )
    parser.add_argument("--noise", type=float, help=f"imputation noise std (default {road.noise:g})")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random stream (default 0)")
    parser.add_argument(
        "--no-road", action="store_true", help="maps and figures only, no ROAD scores"
    )
    parser.add_argument("--save-maps", action="store_true", help="also write maps/<image_id>.npz")
    parser.add_argument("--batch-size", type=int, help="images per forward pass (memory bound)")
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("metacam-out"), help="output folder (default metacam-out)"
    )


def _models_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "models",
        help="list models, their layers, or fetch weights",
        description="Models MetaCAM can load, and their layers.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="model names you can pass to --model")
    layers = actions.add_parser("layers", help="dotted names of a model's layers (for --layer)")
    layers.add_argument("name")
    fetch = actions.add_parser(
        "fetch",
        help="download torchvision weights into the torch cache "
        "(on a machine with network; copy the file to offline machines)",
    )
    fetch.add_argument("name")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="metacam",
        description="MetaCAM: ensemble class activation maps, scored by ROAD.",
        epilog="metacam sweep [HYDRA OVERRIDES...] [--detach]: the 2^G-experiment ablation\n"
        "metacam analyze RESULTS_DIR [--out DIR]: CRE, effects, tables and plots\n"
        "metacam status RESULTS_DIR: done / missing / failed per model, and an ETA\n"
        "metacam compact RESULTS_DIR: merge finished unit files into a few large files",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"metacam {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _explain_parser(commands)
    _models_parser(commands)
    from metacam.sanity import add_parser as add_sanity_parser

    add_sanity_parser(commands)
    commands.add_parser(
        "sweep", help="the 64-experiment ablation (Hydra; see README)", add_help=False
    )
    commands.add_parser(
        "analyze", help="CRE, factorial effects, tables and plots of a sweep", add_help=False
    )
    commands.add_parser(
        "status", help="a study's progress per model, from its files (exit 0 when complete)",
        add_help=False,
    )
    commands.add_parser(
        "compact", help="merge a dataset's finished unit files into a few large files, atomically",
        add_help=False,
    )
    return parser


def run_explain(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from metacam.cams import MemberOptions, check_members, resolve_members, resolve_methods
    from metacam.device import resolve_device
    from metacam.evaluation.deletion import DeletionConfig
    from metacam.explain import (
        ExplainOptions,
        evaluator,
        explain,
        methods_for_groups,
        parse_k,
        resolve_target,
    )
    from metacam.images import load_images
    from metacam.models import load_model
    from metacam.progress import TqdmProgress

    # Check every option before any heavy work.
    if args.groups and args.methods:
        raise MetaCAMError("give --groups or --methods, not both")
    if args.methods:
        methods = resolve_methods(part.strip() for part in args.methods.split(",") if part.strip())
    elif args.groups:
        methods = methods_for_groups(
            [part.strip() for part in args.groups.split(",") if part.strip()]
        )
    else:
        methods = resolve_methods(None)
    ks = parse_k(args.k)
    given = {"percentiles": args.percentiles, "ties": args.ties, "noise": args.noise,
             "batch_size": args.batch_size}
    road = replace(RoadConfig(), **{k: v for k, v in given.items() if v is not None}).checked()
    if args.batch_size is not None and args.batch_size < 1:
        raise MetaCAMError(f"--batch-size {args.batch_size} must be at least 1")
    batches = {} if args.batch_size is None else {"cpu_batch": args.batch_size, "cuda_batch": args.batch_size}
    evaluation = evaluator(ks=ks, road=road, deletion=DeletionConfig(**batches),
                           metrics=[m.strip() for m in (args.metrics or "").split(",") if m.strip()])
    device = resolve_device(args.device)
    bundle = load_model(
        args.model,
        device,
        layer=args.layer,
        reshape=args.reshape,
        checkpoint=args.checkpoint,
        categories=args.categories,
        num_classes=args.num_classes,
    )
    check_members(resolve_members(methods), bundle)  # e.g. FullGrad on a network without conv biases: one line, now
    options = ExplainOptions(
        methods=methods,
        target=resolve_target(bundle, args.target),
        evaluation=evaluation,
        seed=args.seed,
        score=not args.no_road,
        save_maps=args.save_maps,
        members=MemberOptions(batch_size=args.batch_size),
    )

    images, problems = load_images(args.images)
    for problem in problems:
        print(f"metacam explain: skipped {problem.source}: {problem.reason}", file=sys.stderr)
    if not images:
        raise MetaCAMError("no image could be read; check the paths above")

    def progress(i: int, image) -> TqdmProgress:
        return TqdmProgress(f"[{i + 1}/{len(images)}] {image.image_id}: ")

    started = time.perf_counter()
    run = explain(bundle, images, options, args.out, progress=progress)
    for problem in run.problems:
        print(f"metacam explain: failed on {problem.source}: {problem.reason}", file=sys.stderr)
    _print_summary(run, evaluation, args.out, time.perf_counter() - started)
    return 1 if problems or run.problems else 0


def _print_summary(run, evaluation, out: Path, seconds: float) -> None:
    """Per method, the means over images at k*: k*, in-sample ROAD and every headline score."""
    import pandas as pd

    if not run.rows:
        return
    frame = pd.DataFrame(run.rows)
    if "is_best_k" in frame:
        headline = [s for m in evaluation.metrics for s in m.scores if s.headline]
        columns = ["k", *(s.insample_column for s in headline if s.insample_column),
                   *(s.chosen_column for s in headline if s.chosen_column)]
        table = frame[frame["is_best_k"]].groupby("method", sort=False)[columns].mean()
        print(table.rename(columns={"k": "k*"}).round(3).to_string())
        if run.stats.road.masks:
            print(f"ROAD: {run.stats.road.summary()}")
    print(f"{len(run.figures)} figure(s) and {out / 'scores.csv'} written to {out}/ in {seconds:.1f}s")


def run_models(args: argparse.Namespace) -> int:
    from metacam import models

    if args.action == "list":
        print("\n".join(models.available_models()))
    elif args.action == "layers":
        bundle = models.load_model(args.name, "cpu", pretrained=False)
        default = bundle.target_layer_name
        for name in models.list_layers(bundle.net):
            print(f"{name}  (default)" if name == default else name)
    else:
        print(models.fetch_weights(args.name))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "analyze":
        return import_module("metacam.analysis.cli").main(argv[1:])
    if argv and argv[0] == "sweep":
        return import_module("metacam.experiments.sweep").cli(argv[1:])
    if argv and argv[0] in ("status", "compact"):
        return import_module(f"metacam.{argv[0]}").main(argv[1:])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or a one-line usage error
        return int(done.code or 0)
    try:
        if args.command == "sanity":
            from metacam.sanity import run as run_sanity

            return run_sanity(args)
        return run_explain(args) if args.command == "explain" else run_models(args)
    except MetaCAMError as error:
        print(f"metacam {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"metacam {args.command}: interrupted; finished work is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
