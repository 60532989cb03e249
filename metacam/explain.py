"""``metacam explain``: member CAMs, MetaCAM, plain, adaptive and held-out ROAD for a
practitioner's own model and images, as figures and one scores table.

MetaCAM here is the pre-specified ensemble: every chosen member that is not a
control (RandomCAM is shown beside it, as a control). Every candidate map of every
method goes through one batched ROAD call (:func:`metacam.evaluation.adaptive.score_methods`);
the chosen (k*) maps are then re-scored with an independent draw (the held-out
ROAD, DESIGN §2), which is the number to compare methods by.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from metacam import __version__
from metacam.atomic import write_atomically
from metacam.cams import MemberOptions, compute_members, resolve_members
from metacam.config import DEFAULT_KS, HeldoutConfig, RoadConfig, check_ks
from metacam.ensemble import metacam_maps, threshold_maps
from metacam.errors import MetaCAMError
from metacam.evaluation.adaptive import choose_k, score_methods
from metacam.evaluation.roadscore import Probe, RoadStats, road_many
from metacam.figures import Panel, overlay_figure, save_figure
from metacam.groups import default_groups
from metacam.images import ImageProblem, LoadedImage
from metacam.models import ModelBundle
from metacam.progress import NO_PROGRESS, Progress

METACAM = "metacam"
PLAIN_K = 100.0


@dataclass
class ExplainOptions:
    """What to compute for each image (defaults: all 12 members, adaptive k over
    5..100, ROAD and held-out ROAD with their defaults)."""

    methods: list[str] = field(default_factory=lambda: [m.name for m in resolve_members(None)])
    target: int | None = None
    ks: tuple[float, ...] = DEFAULT_KS  # one value = a fixed k
    road: RoadConfig = field(default_factory=RoadConfig)
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)
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
    'metacam' at its chosen k); rows: the scores table rows of this image."""

    image: LoadedImage
    target: int
    target_prob: float
    maps: dict[str, np.ndarray]
    rows: list[dict]


def explain_image(
    bundle: ModelBundle,
    image: LoadedImage,
    options: ExplainOptions,
    stats: RoadStats | None = None,
    progress: Progress = NO_PROGRESS,
) -> ImageExplanation:
    """Members, MetaCAM and their ROAD scores for one image."""
    x = bundle.preprocess([image.image])
    ids = [image.image_id]
    members = compute_members(
        bundle.net, x, bundle.target_layer, options.target, options.methods,
        seed=options.seed, image_ids=ids, options=options.members, progress=progress,
    )
    target = int(members.targets[0])
    target_prob = float(members.logits.float().softmax(-1)[0, target])
    names = list(members.maps)
    ensemble = {name: members.maps[name] for name in ensemble_members(names)}
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
        rows = [{**base, "method": name, "kind": "single"} for name in names]
        maps[METACAM] = metacam_maps(ensemble, options.ks[-1:])[0, 0].cpu().numpy()
        return ImageExplanation(image, target, target_prob, maps, rows)

    # Every candidate of every method (members at each k, MetaCAM at each k, plus
    # k = 100 for the plain score) goes through ROAD in one call.
    grid = tuple(sorted(set(options.ks) | {PLAIN_K}))
    candidates = {name: threshold_maps(members.maps[name], grid) for name in names}
    candidates[METACAM] = metacam_maps(ensemble, grid)
    probe = Probe.of(bundle.net, x, members.targets, image_ids=ids, seed=options.seed)
    chosen = [grid.index(k) for k in options.ks]  # the adaptive choice is among the user's ks
    restricted = {name: cand[:, chosen] for name, cand in candidates.items()}
    results = score_methods(probe, candidates, grid, options.road, stats=stats, progress=progress)
    # k* among the user's ks (the grid may hold k = 100 only for the plain score)
    best = {name: chosen[int(choose_k(result.scores.combined[:, chosen], options.ks)[0][0])]
            for name, result in results.items()}
    rescored = None
    if options.heldout.enabled:
        picked = torch.stack([restricted[name][0, chosen.index(best[name])] for name in results])[None]
        rescored = road_many(probe, picked, options.heldout.road(options.road), stats=stats)

    rows = []
    for i, (name, result) in enumerate(results.items()):
        k = best[name]
        rows.append(
            {
                **base,
                "method": name,
                "kind": METACAM if name == METACAM else ("control" if name not in ensemble else "single"),
                "road_plain": float(result.scores.combined[0, grid.index(PLAIN_K)]),
                "road_adaptive": float(result.scores.combined[0, k]),
                "road_adaptive_heldout": float(rescored.combined[0, i]) if rescored is not None else float("nan"),
                "k_star": grid[k],
                "morf_adaptive": float(result.scores.morf[0, k]),
                "lerf_adaptive": float(result.scores.lerf[0, k]),
            }
        )
        if name == METACAM:
            maps[METACAM] = result.candidates[0, k].cpu().numpy()
    return ImageExplanation(image, target, target_prob, maps, rows)


def figure_for(explanation: ImageExplanation, bundle: ModelBundle) -> Figure:
    """The figure of one image: input, every member, MetaCAM; scores in the titles."""
    display = bundle.to_display([explanation.image.image])[0].permute(1, 2, 0).numpy()
    rows = {row["method"]: row for row in explanation.rows}
    panels = []
    for name, saliency in explanation.maps.items():
        row = rows.get(name, {})
        label = "MetaCAM" if name == METACAM else resolve_members([name])[0].label
        if row.get("kind") == "control":
            label += " (control)"
        if "road_plain" not in row:
            title = label
        elif name == METACAM:
            title = (f"{label}  k*={row['k_star']:g}\nROAD {row['road_adaptive']:+.3f} "
                     f"(held-out {row['road_adaptive_heldout']:+.3f})")
        else:
            title = (
                f"{label}\nROAD {row['road_plain']:+.3f} | "
                f"adaptive {row['road_adaptive']:+.3f} (k*={row['k_star']:g})"
            )
        panels.append(Panel(title, saliency))
    title = (
        f"{explanation.image.image_id} — {bundle.name}: "
        f"{bundle.categories[explanation.target]} (class {explanation.target}, "
        f"p={explanation.target_prob:.2f})"
    )
    return overlay_figure(display, panels, title)


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
    stats: RoadStats = field(default_factory=RoadStats)


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
        for row in explanation.rows:
            row.update(
                metacam_version=__version__,
                device=str(bundle.device),
                seed=options.seed,
                ties=options.road.ties,
            )
        run.rows.extend(explanation.rows)
        run.figures.append(
            save_figure(figure_for(explanation, bundle), out / f"{image.image_id}.png")
        )
        if options.save_maps:
            run.map_files.append(save_maps(explanation, out))
        run.tables = write_table(run.rows, out)
    return run
