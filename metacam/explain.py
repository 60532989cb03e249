"""``metacam explain``: member CAMs and MetaCAM for a practitioner's own model and images,
scored by every metric of the run, as figures and one scores table.

MetaCAM here is the pre-specified ensemble: every chosen member that is not a
control (RandomCAM is shown beside it, as a control). The scoring is the evaluation
engine's (:class:`metacam.evaluation.engine.Evaluator`), the sweep's own: candidates at
every k, in-sample ROAD, k*, then held-out ROAD, deletion/insertion AUC, sparseness,
complexity and any plug-in metric on the chosen (k*) and plain (k = 100) maps. The table
holds the sweep's rows (its column names) at k* and k = 100; this module only makes
the figures and the tables.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from metacam.atomic import write_atomically
from metacam.cams import MemberOptions, compute_members, resolve_members
from metacam.config import DEFAULT_KS, PLAIN_K, check_ks
from metacam.errors import MetaCAMError
from metacam.evaluation.adaptive import candidate_maps
from metacam.evaluation.engine import EvaluationStats, Evaluator, MapSource
from metacam.evaluation.roadscore import Probe
from metacam.figures import Panel, overlay_figure, save_figure
from metacam.groups import default_groups
from metacam.images import ImageProblem, LoadedImage
from metacam.models import ModelBundle
from metacam.progress import NO_PROGRESS, Progress
from metacam.schema import FIXED_COLUMNS, KIND_CONTROL, KIND_METACAM, KIND_SINGLE

METACAM = KIND_METACAM  # MetaCAM's method name in the table (its kind's word)
TABLE_COLUMNS = ("source", "target_name")
"""explain's own columns besides the results schema's (no metric may take one)."""


def evaluator(**settings) -> Evaluator:
    """The engine's settings for explain (Evaluator.of's keywords); plug-in metric
    columns may not take one of the table's columns."""
    return Evaluator.of(**settings, reserved=(*FIXED_COLUMNS, *TABLE_COLUMNS))


@dataclass
class ExplainOptions:
    """What to compute for each image (defaults: all 12 members; the engine's defaults:
    adaptive k over the default grid, ROAD, held-out ROAD, deletion/insertion AUC,
    sparseness and complexity)."""

    methods: list[str] = field(default_factory=lambda: [m.name for m in resolve_members(None)])
    target: int | None = None
    evaluation: Evaluator = field(default_factory=evaluator)  # the k grid (one value: a fixed k), metrics
    seed: int = 0
    score: bool = True  # False: maps and figures only
    save_maps: bool = False
    members: MemberOptions = field(default_factory=MemberOptions)


def methods_for_groups(groups: Sequence[str]) -> list[str]:
    """The members of the named default groups, in registry order."""
    known = default_groups()
    chosen: list[str] = []
    for group in groups:
        if group not in known:
            near = difflib.get_close_matches(group, known, n=2)
            hint = f"did you mean {', '.join(near)}? " if near else ""
            raise MetaCAMError(f"unknown group {group!r}; {hint}groups are: {', '.join(known)}")
        chosen.extend(known[group])
    order = [m.name for m in resolve_members(None)]
    return [name for name in order if name in chosen]


def ensemble_members(methods: Sequence[str]) -> list[str]:
    """MetaCAM's members among ``methods``: all that are not controls (all, if all are)."""
    real = [m.name for m in resolve_members(methods) if not m.control]
    return real or list(methods)


def parse_k(text: str) -> tuple[float, ...]:
    """``auto`` -> the default grid; ``PERCENT`` -> that k alone; ``5,10,...`` -> a grid."""
    if text.strip().lower() == "auto":
        return DEFAULT_KS
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise MetaCAMError(
            f"--k {text!r}: give 'auto', a percentage like 30, or a list like 10,50,100"
        ) from None
    return tuple(check_ks(values))


def resolve_target(bundle: ModelBundle, target: str | None) -> int | None:
    """A class index or a category name (case-insensitive) -> index; None = top-1."""
    if target is None:
        return None
    if target.strip().lstrip("-").isdigit():
        index = int(target)
        if not 0 <= index < len(bundle.categories):
            raise MetaCAMError(f"--target {index} is outside 0..{len(bundle.categories) - 1}")
        return index
    lowered = [name.lower() for name in bundle.categories]
    if target.lower() in lowered:
        return lowered.index(target.lower())
    near = difflib.get_close_matches(target.lower(), lowered, n=3)
    hint = f"; nearest: {', '.join(near)}" if near else ""
    raise MetaCAMError(f"--target {target!r} is not a class of {bundle.name}{hint}")


@dataclass
class ImageExplanation:
    """Everything computed for one image. maps: name -> (H, W) in [0, 1] (members and
    'metacam' at its chosen k); rows: the scores table rows of this image;
    failures: method -> why a metric could not score it."""

    image: LoadedImage
    target: int
    target_prob: float
    maps: dict[str, np.ndarray]
    rows: list[dict]
    failures: dict[str, str] = field(default_factory=dict)


def explain_image(
    bundle: ModelBundle,
    image: LoadedImage,
    options: ExplainOptions,
    stats: EvaluationStats | None = None,
    progress: Progress = NO_PROGRESS,
) -> ImageExplanation:
    """Members, MetaCAM and every score of them for one image."""
    x = bundle.preprocess([image.image])
    ids = [image.image_id]
    members = compute_members(
        bundle, x, options.target, options.methods,
        seed=options.seed, image_ids=ids, options=options.members, progress=progress,
    )
    target = int(members.targets[0])
    target_prob = float(members.logits.float().softmax(-1)[0, target])
    names = list(members.maps)
    ensemble = {name: members.maps[name] for name in ensemble_members(names)}
    kinds = {name: KIND_SINGLE if name in ensemble else KIND_CONTROL for name in names}
    maps = {name: members.maps[name][0].cpu().numpy() for name in names}
    base = {
        "image_id": image.image_id,
        "source": image.source,
        "model": bundle.name,
        "target_layer": bundle.target_layer_name,
        "target_class": target,
        "target_name": bundle.categories[target],
        "target_prob": target_prob,
    }
    if not options.score:
        rows = [{**base, "method": name, "kind": kinds[name]} for name in names]
        maps[METACAM] = candidate_maps(ensemble, options.evaluation.ks[-1:])[0, 0].cpu().numpy()
        return ImageExplanation(image, target, target_prob, maps, rows)

    probe = Probe.of(bundle.net, x, members.targets, image_ids=ids, seed=options.seed)
    sources: dict[str, MapSource] = {**{name: members.maps[name] for name in names}, METACAM: ensemble}
    evaluation = options.evaluation.evaluate(probe, sources, stats=stats, progress=progress)
    provenance = options.evaluation.provenance(seed=options.seed, device=bundle.device)
    rows = []
    failures = {}
    for name, result in evaluation.methods.items():
        kind = KIND_METACAM if name == METACAM else kinds[name]
        status = result.failures.get(0, "ok")
        if status != "ok":
            failures[name] = status
        rows += [{**base, "method": name, "kind": kind, **row, "status": status, **provenance}
                 for row in result.rows(0) if row["is_best_k"] or row["k"] == PLAIN_K]
    maps[METACAM] = evaluation[METACAM].best_map[0].cpu().numpy()
    return ImageExplanation(image, target, target_prob, maps, rows, failures)


def chosen_and_plain(rows: list[dict]) -> dict[str, tuple[dict, dict]]:
    """method -> (its k* row, its k = 100 row) among one image's rows (the same row when k* = 100)."""
    found: dict[str, list] = {}
    for row in rows:
        pair = found.setdefault(row["method"], [None, None])
        if row.get("is_best_k"):
            pair[0] = row
        if row.get("k") == PLAIN_K:
            pair[1] = row
    return {method: (best, plain) for method, (best, plain) in found.items()}


def figure_for(explanation: ImageExplanation, bundle: ModelBundle) -> Figure:
    """The figure of one image: input, every member, MetaCAM; scores in the titles."""
    display = bundle.to_display([explanation.image.image])[0].permute(1, 2, 0).numpy()
    kinds = {row["method"]: row["kind"] for row in explanation.rows}
    scored = chosen_and_plain(explanation.rows) if "k" in (explanation.rows or [{}])[0] else {}
    panels = []
    for name, saliency in explanation.maps.items():
        label = "MetaCAM" if name == METACAM else resolve_members([name])[0].label
        if kinds.get(name) == KIND_CONTROL:
            label += " (control)"
        if name not in scored:
            title = label
        else:
            best, plain = scored[name]
            if name == METACAM:
                title = (f"{label}  k*={best['k']:g}\nROAD {best['road_combined']:+.3f} "
                         f"(held-out {_number(best.get('road_heldout_combined'))})")
            else:
                title = (f"{label}\nROAD {plain['road_combined']:+.3f} | "
                         f"adaptive {best['road_combined']:+.3f} (k*={best['k']:g})")
        panels.append(Panel(title, saliency))
    title = (
        f"{explanation.image.image_id} — {bundle.name}: "
        f"{bundle.categories[explanation.target]} (class {explanation.target}, "
        f"p={explanation.target_prob:.2f})"
    )
    return overlay_figure(display, panels, title)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def write_table(rows: list[dict], out: Path) -> tuple[Path, Path]:
    """scores.csv and scores.parquet, each written whole (temporary name, then rename)."""
    frame = pd.DataFrame(rows)
    csv = write_atomically(out / "scores.csv", lambda partial: frame.to_csv(partial, index=False))
    parquet = write_atomically(
        out / "scores.parquet", lambda partial: frame.to_parquet(partial, index=False)
    )
    return csv, parquet


def save_maps(explanation: ImageExplanation, out: Path) -> Path:
    """maps/<image_id>.npz: one (H, W) float32 array in [0, 1] per method."""
    arrays: dict[str, np.ndarray] = {k: v.astype(np.float32) for k, v in explanation.maps.items()}
    return write_atomically(
        out / "maps" / f"{explanation.image.image_id}.npz",
        lambda partial: np.savez_compressed(partial, **arrays),  # type: ignore[arg-type]
    )


@dataclass
class ExplainRun:
    """What ``explain`` produced: table rows, files, and the inputs it had to skip."""

    rows: list[dict] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    map_files: list[Path] = field(default_factory=list)
    problems: list[ImageProblem] = field(default_factory=list)
    tables: tuple[Path, ...] = ()
    stats: EvaluationStats = field(default_factory=EvaluationStats)


def explain(
    bundle: ModelBundle,
    images: list[LoadedImage],
    options: ExplainOptions,
    out: Path,
    progress: Callable[[int, LoadedImage], Progress] | None = None,
) -> ExplainRun:
    """Explain every image; a failure on one image is recorded and the rest go on.
    The table is rewritten after every image, so an interrupted run keeps its work.

    progress(i, image) gives the Progress of image i (default: none).
    """
    out.mkdir(parents=True, exist_ok=True)
    run = ExplainRun()
    for i, image in enumerate(images):
        reporter = progress(i, image) if progress else NO_PROGRESS
        try:
            explanation = explain_image(bundle, image, options, stats=run.stats, progress=reporter)
        except MetaCAMError:
            raise
        except (RuntimeError, ValueError) as error:  # e.g. an image the model cannot take
            reason = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            run.problems.append(ImageProblem(image.source, reason))
            continue
        finally:
            reporter.close()
        run.problems += [ImageProblem(image.source, reason) for reason in dict.fromkeys(explanation.failures.values())]
        run.rows.extend(explanation.rows)
        run.figures.append(
            save_figure(figure_for(explanation, bundle), out / f"{image.image_id}.png")
        )
        if options.save_maps:
            run.map_files.append(save_maps(explanation, out))
        run.tables = write_table(run.rows, out)
    return run
