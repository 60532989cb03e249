"""``metacam explain``: member CAMs, MetaCAM, plain and adaptive ROAD for a practitioner's
own model and images, as figures and one scores table."""

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
from metacam.cams import MEMBERS, compute_members
from metacam.ensemble import DEFAULT_KS, check_ks, metacam_maps, threshold_maps
from metacam.errors import MetaCAMError
from metacam.figures import Panel, overlay_figure, save_figure
from metacam.groups import DEFAULT_GROUPS
from metacam.images import ImageProblem, LoadedImage
from metacam.models import ModelBundle
from metacam.roadscore import DEFAULT_PERCENTILES, RoadStats, image_seed, road


@dataclass
class ExplainOptions:
    """What to compute for each image (defaults: all 12 members, adaptive k, default ROAD)."""

    methods: list[str] = field(default_factory=lambda: list(MEMBERS))
    target: int | None = None
    ks: tuple[float, ...] = DEFAULT_KS  # one value = a fixed k
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
    ties: str = "random"
    noise: float = 0.01
    seed: int = 0
    road: bool = True
    save_maps: bool = False
    batch_size: int | None = None


def methods_for_groups(groups: Sequence[str]) -> list[str]:
    """The members of the named default groups, in registry order."""
    chosen: list[str] = []
    for group in groups:
        if group not in DEFAULT_GROUPS:
            near = difflib.get_close_matches(group, DEFAULT_GROUPS, n=2)
            hint = f"did you mean {', '.join(near)}? " if near else ""
            raise MetaCAMError(
                f"unknown group {group!r}; {hint}groups are: {', '.join(DEFAULT_GROUPS)}"
            )
        chosen.extend(DEFAULT_GROUPS[group])
    return [name for name in MEMBERS if name in chosen]


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
    progress: Callable[[int], None] | None = None,
) -> ImageExplanation:
    """Members, MetaCAM and their ROAD scores for one image."""
    x = bundle.preprocess([image.image])
    members = compute_members(
        bundle.net,
        x,
        bundle.target_layer,
        options.target,
        options.methods,
        image_seeds=[image_seed(options.seed, image.image_id)],
        batch_size=options.batch_size,
        progress=progress,
    )
    target = int(members.targets[0])
    target_prob = float(members.logits.float().softmax(-1)[0, target])
    names = list(members.maps)
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
    if not options.road:
        rows = [{**base, "method": name, "kind": "single"} for name in names]
        metacam = metacam_maps(members.maps, options.ks[-1:])[0, 0]
        maps["metacam"] = metacam.cpu().numpy()
        return ImageExplanation(image, target, target_prob, maps, rows)

    # Every candidate of every method (members at each k, MetaCAM at each k, plus
    # k = 100 for the plain score) goes through ROAD in one call.
    grid = tuple(sorted(set(options.ks) | {100.0}))
    stacked = torch.stack([members.maps[name] for name in names])  # (M, 1, H, W)
    candidates = torch.cat(
        [threshold_maps(members.maps[name], grid) for name in names]
        + [metacam_maps(stacked, grid)],
        dim=1,
    )  # (1, (M + 1) * K, H, W)
    scores = road(
        bundle.net,
        x,
        candidates,
        members.targets,
        options.percentiles,
        ties=options.ties,
        noise=options.noise,
        image_seeds=[image_seed(options.seed, image.image_id)],
        batch_size=options.batch_size,
        stats=stats,
    )
    rows = []
    chosen = [grid.index(k) for k in options.ks]
    for i, name in enumerate([*names, "metacam"]):
        view = slice(i * len(grid), (i + 1) * len(grid))
        combined = scores.combined[0, view]
        best = chosen[int(combined[chosen].argmax())]  # first maximum: the smallest k on ties
        rows.append(
            {
                **base,
                "method": name,
                "kind": "metacam" if name == "metacam" else "single",
                "road_plain": float(combined[grid.index(100.0)]),
                "road_adaptive": float(combined[best]),
                "k_star": grid[best],
                "morf_adaptive": float(scores.morf[0, view][best]),
                "lerf_adaptive": float(scores.lerf[0, view][best]),
            }
        )
        if name == "metacam":
            maps["metacam"] = candidates[0, view][best].cpu().numpy()
    return ImageExplanation(image, target, target_prob, maps, rows)


def figure_for(explanation: ImageExplanation, bundle: ModelBundle) -> Figure:
    """The figure of one image: input, every member, MetaCAM; scores in the titles."""
    display = bundle.to_display([explanation.image.image])[0].permute(1, 2, 0).numpy()
    rows = {row["method"]: row for row in explanation.rows}
    panels = []
    for name, saliency in explanation.maps.items():
        label = "MetaCAM" if name == "metacam" else MEMBERS[name].label
        row = rows.get(name, {})
        if "road_plain" not in row:
            title = label
        elif name == "metacam":
            title = f"{label}  k*={row['k_star']:g}\nROAD {row['road_adaptive']:+.3f}"
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
    progress_bar: Callable | None = None,
) -> ExplainRun:
    """Explain every image; a failure on one image is recorded and the rest go on.
    The table is rewritten after every image, so an interrupted run keeps its work."""
    out.mkdir(parents=True, exist_ok=True)
    run = ExplainRun()
    iterator = progress_bar(images) if progress_bar else images
    for image in iterator:
        try:
            explanation = explain_image(bundle, image, options, stats=run.stats)
        except MetaCAMError:
            raise
        except (RuntimeError, ValueError) as error:  # e.g. an image the model cannot take
            reason = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            run.problems.append(ImageProblem(image.source, reason))
            continue
        for row in explanation.rows:
            row.update(
                metacam_version=__version__,
                device=str(bundle.device),
                seed=options.seed,
                ties=options.ties,
            )
        run.rows.extend(explanation.rows)
        run.figures.append(
            save_figure(figure_for(explanation, bundle), out / f"{image.image_id}.png")
        )
        if options.save_maps:
            run.map_files.append(save_maps(explanation, out))
        run.tables = write_table(run.rows, out)
    return run
