"""Sanity checks for saliency maps: cascading model-parameter randomisation and class sensitivity.

**Cascading randomisation** (Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018, arXiv:1810.03292). The network's parameters are re-initialised
block by block from the output backwards (:func:`randomization_blocks`), each
step keeping the blocks randomised before it, and every member CAM and MetaCAM
is recomputed at every step for the trained model's top-1 class. A map that
still looks like the trained model's map (Spearman rank correlation and SSIM
against step 0) once the weights that produced the decision are gone cannot be
explaining that decision.

Re-initialisation (:func:`reinitialize`) is what each module's own
``reset_parameters()`` does, drawn from a ``torch.Generator`` seeded per block
from the run's seed (the global RNG is never used):

- ``Conv*d``/``Linear``: weight ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in),
  1/sqrt(fan_in)), bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (drawn on the CPU,
  so the same on every device);
- BatchNorm (timm's BatchNormAct2d included), InstanceNorm, LayerNorm,
  GroupNorm: weight 1, bias 0, and BatchNorm's running mean 0, running variance 1
  and batch count 0, so the running statistics stay consistent with the
  re-initialised affine parameters (a reset BatchNorm is the identity up to eps);
- any other module with parameters of its own and a ``reset_parameters()``: that
  method, under a forked RNG seeded from the generator (the global state is restored);
- a module with parameters but no ``reset_parameters()``: each of its parameters
  is permuted randomly (its values, hence its scale, kept; their placement lost).

Because re-initialised layers are not trained to keep activations at unit scale,
activations shrink through a fully randomised network; float32 keeps their
relative precision, so the maps stay defined, but ScoreCAM (differences of
near-uniform softmax scores) then shows mostly rounding.

**Class sensitivity.** Per method, Spearman's correlation between the map for
the top-1 class and the map for the top-2 class of the trained model. Members
whose map does not depend on the class (EigenCAM, RandomCAM) give exactly 1;
:data:`CLASS_AGNOSTIC_RHO` flags them.

Spearman correlation uses average ranks for ties (``scipy.stats.spearmanr``); two
identical maps have correlation 1, and a constant map against a different one
has none (NaN, reported as such). SSIM is scikit-image's
``structural_similarity`` with ``data_range=1`` (maps are in [0, 1]).

The command ``metacam sanity IMAGE... [--model NAME] [--out DIR]`` is
:func:`add_parser` and :func:`run`; it writes ``sanity.csv``,
``class_sensitivity.csv``, one ``<image_id>.png`` per image (the maps of every
method at every step, and that image's curves) and ``sanity_curves.png`` (the
curves averaged over images).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from metacam.config import PLAIN_K
from metacam.errors import MetaCAMError

if TYPE_CHECKING:
    from metacam.evaluation.engine import Evaluator
    from metacam.models import ModelBundle

# MetaCAM's threshold in this test: the plain map (k = 100 keeps every pixel), so MetaCAM
# is the normalised sum of the members, the plainest ensemble, with no tuned choice.
DEFAULT_K = PLAIN_K
DEFAULT_OUT = Path("metacam-sanity")
METACAM = "metacam"
# A method whose top-1 and top-2 maps correlate at least this much is flagged as
# class-insensitive (class-agnostic members give exactly 1).
CLASS_AGNOSTIC_RHO = 0.99
# A method whose map at the fully randomised model still correlates this much
# (mean Spearman over images) with the trained model's map fails the cascade.
SURVIVES_RHO = 0.5

SANITY_COLUMNS = ("image_id", "method", "step", "randomized", "spearman", "ssim")
CLASS_COLUMNS = ("image_id", "method", "top1", "top2", "spearman")

Block = tuple[str, list[nn.Module]]


# --- which blocks, and how they are re-initialised --------------------------------------


def randomization_blocks(net: nn.Module) -> list[Block]:
    """The blocks of the cascade, output first: ``[(name, [modules]), ...]``.

    timm EfficientNet(-Lite): ``classifier``, ``conv_head+bn2``, ``blocks.6``
    ... ``blocks.0`` (one per stage), ``conv_stem+bn1``. Any other network: its
    top-level children that hold parameters, in reverse definition order (a
    torchvision ResNet: ``fc``, ``layer4`` ... ``layer1``, ``bn1``, ``conv1``).
    """
    timm_efficientnet = sys.modules.get("timm.models.efficientnet")  # loaded iff net is timm's
    if timm_efficientnet is not None and isinstance(net, timm_efficientnet.EfficientNet):
        stages = net.blocks
        assert isinstance(stages, nn.Sequential)
        blocks: list[Block] = [
            ("classifier", [net.get_submodule("classifier")]),
            ("conv_head+bn2", [net.get_submodule("conv_head"), net.get_submodule("bn2")]),
        ]
        blocks += [(f"blocks.{i}", [stages[i]]) for i in reversed(range(len(stages)))]
        blocks.append(("conv_stem+bn1", [net.get_submodule("conv_stem"), net.get_submodule("bn1")]))
        return [(name, modules) for name, modules in blocks if _has_parameters(modules)]
    children = [(name, [child]) for name, child in net.named_children() if _has_parameters([child])]
    return list(reversed(children))


def _has_parameters(modules: Iterable[nn.Module]) -> bool:
    return any(True for module in modules for _ in module.parameters())


_DETERMINISTIC_RESET = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
_FAN_IN_UNIFORM = (nn.modules.conv._ConvNd, nn.Linear)


@torch.no_grad()
def reinitialize(modules: Sequence[nn.Module], generator: torch.Generator) -> None:
    """Re-initialise every parameter in ``modules`` (and their submodules) in place.

    The scheme is that of each module's ``reset_parameters()`` (see the module
    docstring), with every random draw from ``generator`` (a CPU generator).
    Memory formats, devices, dtypes and ``requires_grad`` are kept.
    """
    seen: set[int] = set()
    for top in modules:
        for module in top.modules():
            if id(module) in seen:
                continue
            seen.add(id(module))
            _reset(module, generator)


def _reset(module: nn.Module, generator: torch.Generator) -> None:
    own = list(module.parameters(recurse=False))
    if isinstance(module, _DETERMINISTIC_RESET):
        module.reset_parameters()  # type: ignore[operator]
    elif isinstance(module, _FAN_IN_UNIFORM):
        # exactly reset_parameters()'s draws, from ``generator``, on a contiguous CPU tensor
        weight = torch.empty(module.weight.shape, dtype=torch.float32)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
        module.weight.copy_(weight)
        if module.bias is not None:
            fan_in = weight[0].numel()  # in_features, or in_channels / groups * kernel size
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            bias = torch.empty(module.bias.shape, dtype=torch.float32)
            module.bias.copy_(bias.uniform_(-bound, bound, generator=generator))
    elif own and callable(getattr(module, "reset_parameters", None)):
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        cuda = torch.cuda.is_available() and any(p.is_cuda for p in own)
        devices = list(range(torch.cuda.device_count())) if cuda else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            module.reset_parameters()  # type: ignore[operator]
    else:
        for parameter in own:
            order = torch.randperm(parameter.numel(), generator=generator).to(parameter.device)
            parameter.copy_(parameter.detach().flatten()[order].view_as(parameter))


def block_seed(seed: int, block: str) -> int:
    """The seed of one block's re-initialisation: a hash of the run seed and the block's name,
    so a block gets the same weights whatever else is randomised."""
    digest = hashlib.sha256(f"metacam-sanity:{seed}:{block}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


# --- the computation --------------------------------------------------------------------


@dataclass
class Cascade:
    """Maps of every method at every step of the cascade.

    randomized: S + 1 names, ``""`` (the trained model) then the block
    re-initialised at each step; methods: member names then ``"metacam"``;
    maps: (S + 1, M, B, H, W) float32 in [0, 1] on the CPU; targets: (B,) the
    trained model's top-1, explained at every step.
    """

    randomized: list[str]
    methods: list[str]
    maps: Tensor
    targets: Tensor


@dataclass
class ClassSensitivity:
    """Top-1 versus top-2 maps of the trained model.

    top1, top2: (B,) classes; methods as in :class:`Cascade`; top1_maps,
    top2_maps: name -> (B, H, W); spearman: (M, B).
    """

    top1: Tensor
    top2: Tensor
    methods: list[str]
    top1_maps: dict[str, Tensor]
    top2_maps: dict[str, Tensor]
    spearman: np.ndarray


def method_maps(
    model: ModelBundle,
    x: Tensor,
    targets: Tensor,
    *,
    methods: Sequence[str] | None,
    k: float,
) -> dict[str, Tensor]:
    """The members' maps and MetaCAM_k over them: name -> (B, H, W) on the CPU."""
    from metacam.cams import member_cams
    from metacam.ensemble import metacam_map

    members = member_cams(model, x, targets=targets, methods=methods)
    maps = {name: value.detach().float().cpu() for name, value in members.items()}
    maps[METACAM] = metacam_map(maps, k)
    return maps


def class_sensitivity(
    model: ModelBundle,
    x: Tensor,
    *,
    methods: Sequence[str] | None = None,
    k: float = DEFAULT_K,
) -> ClassSensitivity:
    """Maps for each image's top-1 and top-2 classes and their Spearman correlation.

    x: (B, C, H, W) normalised images on the net's device. ``model.net`` is not modified.
    """
    with torch.no_grad():
        logits = model.net(x)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise MetaCAMError(
            f"model output shape {tuple(logits.shape)}: the class-sensitivity check needs "
            f"(B, classes) logits with at least 2 classes"
        )
    top = logits.float().topk(2, dim=1).indices
    top1_maps = method_maps(model, x, top[:, 0], methods=methods, k=k)
    top2_maps = method_maps(model, x, top[:, 1], methods=methods, k=k)
    names = list(top1_maps)
    rho = np.array(
        [
            [spearman(top1_maps[m][b].numpy(), top2_maps[m][b].numpy()) for b in range(len(x))]
            for m in names
        ]
    )
    return ClassSensitivity(top[:, 0].cpu(), top[:, 1].cpu(), names, top1_maps, top2_maps, rho)


def cascading_randomization(
    model: ModelBundle,
    x: Tensor,
    targets: Tensor | None = None,
    *,
    methods: Sequence[str] | None = None,
    k: float = DEFAULT_K,
    seed: int = 0,
    trained_maps: Mapping[str, Tensor] | None = None,
    progress: bool = False,
) -> Cascade:
    """Every method's maps as the blocks of a deep copy of ``model.net`` are re-initialised in turn
    (the same target layers, by name, and the same reshape).

    x: (B, C, H, W) normalised images on the net's device; targets: (B,) classes
    explained at every step (default: the trained model's top-1). Block
    ``name`` is re-initialised from ``torch.Generator().manual_seed(block_seed(seed, name))``.
    trained_maps: the step-0 maps if already computed (name -> (B, H, W), as
    :func:`method_maps` returns). ``model.net`` itself is never modified.
    """
    from tqdm import tqdm

    work = model.with_net(copy.deepcopy(model.net))
    if targets is None:
        with torch.no_grad():
            targets = work.net(x).argmax(dim=1)
    targets = torch.as_tensor(targets, device=x.device, dtype=torch.long)
    steps: list[Block] = [("", []), *randomization_blocks(work.net)]
    per_step: list[dict[str, Tensor]] = []
    for name, modules in tqdm(steps, desc="randomising", unit="step", disable=not progress):
        if modules:
            reinitialize(modules, torch.Generator().manual_seed(block_seed(seed, name)))
        if not modules and trained_maps is not None:
            per_step.append({m: v.detach().float().cpu() for m, v in trained_maps.items()})
        else:
            per_step.append(method_maps(work, x, targets, methods=methods, k=k))
    names = list(per_step[0])
    maps = torch.stack([torch.stack([step[m] for m in names]) for step in per_step])
    return Cascade([name for name, _ in steps], names, maps, targets.cpu())


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps' pixels (average ranks for ties).

    1 for identical maps; NaN when they differ and one of them is constant
    (no ranking to correlate).
    """
    import scipy.stats

    first, second = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if np.array_equal(first, second):
        return 1.0
    if first.min() == first.max() or second.min() == second.max():
        return math.nan
    return float(scipy.stats.spearmanr(first, second)[0])


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two (H, W) maps in [0, 1]: scikit-image's ``structural_similarity``, data_range 1."""
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), data_range=1.0
        )
    )


def sanity_rows(image_ids: Sequence[str], cascade: Cascade) -> list[dict[str, Any]]:
    """``sanity.csv`` rows: per image, method and step, Spearman and SSIM against step 0."""
    rows = []
    maps = cascade.maps.numpy()
    for b, image_id in enumerate(image_ids):
        for m, method in enumerate(cascade.methods):
            reference = maps[0, m, b]
            for step, randomized in enumerate(cascade.randomized):
                rows.append(
                    {
                        "image_id": image_id,
                        "method": method,
                        "step": step,
                        "randomized": randomized,
                        "spearman": spearman(reference, maps[step, m, b]),
                        "ssim": ssim(reference, maps[step, m, b]),
                    }
                )
    return rows


def class_rows(image_ids: Sequence[str], check: ClassSensitivity) -> list[dict[str, Any]]:
    """``class_sensitivity.csv`` rows: per image and method, the top-1 vs top-2 Spearman."""
    return [
        {
            "image_id": image_id,
            "method": method,
            "top1": int(check.top1[b]),
            "top2": int(check.top2[b]),
            "spearman": float(check.spearman[m, b]),
        }
        for b, image_id in enumerate(image_ids)
        for m, method in enumerate(check.methods)
    ]


@dataclass
class SanityReport:
    """Everything :func:`sanity_check` computed: the two tables and the maps behind them."""

    image_ids: list[str]
    cascade: Cascade
    classes: ClassSensitivity
    rows: list[dict[str, Any]]
    class_rows: list[dict[str, Any]]
    faithfulness_rows: list[dict[str, Any]] = field(default_factory=list)


def faithfulness(
    model: ModelBundle,
    x: Tensor,
    image_ids: Sequence[str],
    cascade: Cascade,
    evaluator: Evaluator,
    *,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The trained model's maps and the fully randomised model's, scored by the evaluation
    engine against the *trained* model (its plain maps, k = 100): a map that depends on
    the model should lose faithfulness once the model that made it is random.

    Rows: image_id, method, step (0 or the last), randomized, and the engine's columns
    (``road_combined``, ``deletion_auc``, ``sparseness``, ...) of the plain map.
    """
    from metacam.evaluation.roadscore import Probe

    probe = Probe.of(model.net, x, cascade.targets.to(x.device), image_ids=image_ids, seed=seed)
    last = len(cascade.randomized) - 1
    rows: list[dict[str, Any]] = []
    for step in (0, last):
        maps = {name: cascade.maps[step, i].to(x.device) for i, name in enumerate(cascade.methods)}
        result = evaluator.evaluate(probe, maps)
        for name in cascade.methods:
            for b, image_id in enumerate(image_ids):
                (plain,) = [row for row in result[name].rows(b) if row["k"] == PLAIN_K]
                scores = {c: plain.get(c) for c in result.columns}
                rows.append({"image_id": image_id, "method": name, "step": step,
                             "randomized": cascade.randomized[step], **scores})
    return rows


def sanity_evaluator() -> Evaluator:
    """The engine's settings for :func:`faithfulness`: the plain map only (k = 100; no
    threshold is chosen, so no held-out draw is needed), every built-in metric."""
    from metacam.config import HeldoutConfig
    from metacam.evaluation.engine import Evaluator

    return Evaluator.of(ks=(PLAIN_K,), heldout=HeldoutConfig(enabled=False))


def sanity_check(
    model: ModelBundle,
    x: Tensor,
    image_ids: Sequence[str],
    *,
    methods: Sequence[str] | None = None,
    k: float = DEFAULT_K,
    seed: int = 0,
    progress: bool = False,
    evaluator: Evaluator | None = None,
) -> SanityReport:
    """Class sensitivity, then the cascading randomisation, on deep copies of ``model.net``;
    with ``evaluator`` (e.g. :func:`sanity_evaluator`), also :func:`faithfulness`.

    x: (B, C, H, W) normalised images on the net's device; image_ids: B names.
    k: MetaCAM's threshold, in (0, 100].
    """
    from metacam.ensemble import check_ks

    (k,) = check_ks(k)
    if len(image_ids) != len(x):
        raise MetaCAMError(f"image_ids: {len(image_ids)} ids for {len(x)} images")
    trained = model.with_net(copy.deepcopy(model.net))
    classes = class_sensitivity(trained, x, methods=methods, k=k)
    cascade = cascading_randomization(
        trained,
        x,
        classes.top1.to(x.device),
        methods=methods,
        k=k,
        seed=seed,
        trained_maps=classes.top1_maps,
        progress=progress,
    )
    scored = faithfulness(trained, x, image_ids, cascade, evaluator, seed=seed) if evaluator is not None else []
    return SanityReport(
        list(image_ids),
        cascade,
        classes,
        sanity_rows(image_ids, cascade),
        class_rows(image_ids, classes),
        scored,
    )


# --- summary, figures, files ------------------------------------------------------------


def summary_table(report: SanityReport) -> list[dict[str, Any]]:
    """Per method: mean Spearman after the first block, after two, at the end; final SSIM;
    verdict; and the class-sensitivity Spearman with its flag."""
    import pandas as pd

    frame = pd.DataFrame(report.rows)
    classes = pd.DataFrame(report.class_rows).groupby("method", sort=False)["spearman"].mean()
    last = len(report.cascade.randomized) - 1
    table = []
    for method in report.cascade.methods:
        rows = frame[frame.method == method]
        by_step = rows.groupby("step")[["spearman", "ssim"]].mean()
        nan_final = int(rows[rows.step == last].spearman.isna().sum())
        final = float(by_step.spearman.get(last, math.nan))
        survives = not math.isnan(final) and abs(final) >= SURVIVES_RHO
        class_rho = float(classes.get(method, math.nan))
        table.append(
            {
                "method": method,
                "rho_step1": float(by_step.spearman.get(1, math.nan)),
                "rho_step2": float(by_step.spearman.get(2, math.nan)),
                "rho_final": final,
                "ssim_final": float(by_step.ssim.get(last, math.nan)),
                "constant_final": nan_final,
                "verdict": "FAILS" if survives else "passes",
                "class_rho": class_rho,
                "class_flag": "class-insensitive"
                if not math.isnan(class_rho) and class_rho >= CLASS_AGNOSTIC_RHO
                else "",
            }
        )
    return table


def format_summary(report: SanityReport, model: str) -> str:
    """The few lines ``metacam sanity`` prints."""
    steps = report.cascade.randomized
    table = summary_table(report)
    second = steps[2] if len(steps) > 2 else "-"
    header = (
        f"{'method':<20} {'after ' + steps[1] if len(steps) > 1 else '':>18} "
        f"{'after ' + second:>22} {'all random':>11} {'SSIM all':>9}  verdict  "
        f"{'top1~top2':>9}"
    )
    lines = [
        f"cascading randomisation of {model}: {len(steps) - 1} blocks, "
        f"{len(report.image_ids)} image(s); mean Spearman / SSIM against the trained model's map",
        header,
    ]
    for row in table:
        note = f" ({row['constant_final']} constant)" if row["constant_final"] else ""
        lines.append(
            f"{row['method']:<20} {row['rho_step1']:>18.3f} {row['rho_step2']:>22.3f} "
            f"{row['rho_final']:>11.3f} {row['ssim_final']:>9.3f}  "
            f"{row['verdict']:<7}  {row['class_rho']:>9.3f} {row['class_flag']}{note}"
        )
    failing = [row["method"] for row in table if row["verdict"] == "FAILS"]
    flagged = [row["method"] for row in table if row["class_flag"]]
    lines.append(
        f"fails the cascade (|Spearman| >= {SURVIVES_RHO} at the fully random model): "
        f"{', '.join(failing) or 'none'}"
    )
    lines.append(
        f"class-insensitive (top-1 vs top-2 Spearman >= {CLASS_AGNOSTIC_RHO}): "
        f"{', '.join(flagged) or 'none'}"
    )
    return "\n".join(lines)


def image_figure(display: np.ndarray, report: SanityReport, index: int, title: str) -> Any:
    """One image's figure: maps of every method (rows) at every step (columns), then the
    input and its Spearman and SSIM curves. display: (H, W, 3) in [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cascade = report.cascade
    steps, methods = len(cascade.randomized), len(cascade.methods)
    cell, curves_height = 1.0, 2.2  # inches: one map; the curves row
    width = max(cell * steps + 1.4, 10.0)
    height = cell * methods + curves_height + 2.0
    # maps on top (rows: methods, columns: steps); below: input | Spearman | SSIM | legend
    fig = plt.figure(figsize=(width, height))
    fig_grid = fig.add_gridspec(
        methods,
        steps,
        left=1.2 / width,
        right=1 - 0.2 / width,
        top=1 - 1.0 / height,
        bottom=(curves_height + 1.4) / height,
        wspace=0.05,
        hspace=0.1,
    )
    labels = ["trained", *cascade.randomized[1:]]
    maps = cascade.maps[:, :, index].numpy()
    for m, method in enumerate(cascade.methods):
        for s in range(steps):
            ax = fig.add_subplot(fig_grid[m, s])
            ax.imshow(maps[s, m], cmap="jet", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if m == 0:
                ax.set_title(labels[s], fontsize=7, rotation=30)
            if s == 0:
                ax.set_ylabel(method, fontsize=7)
    bottom = fig.add_gridspec(
        1,
        4,
        width_ratios=[0.7, 1, 1, 0.6],
        left=0.4 / width,
        right=1 - 0.2 / width,
        top=(curves_height + 0.9) / height,
        bottom=0.9 / height,
        wspace=0.35,
    )
    ax_image = fig.add_subplot(bottom[0, 0])
    ax_image.imshow(display)
    ax_image.axis("off")
    ax_rho, ax_ssim, ax_legend = (fig.add_subplot(bottom[0, i]) for i in (1, 2, 3))
    _plot_curves(ax_rho, ax_ssim, _curves(report, image=report.image_ids[index]), labels, ax_legend)
    fig.suptitle(title, fontsize=10)
    return fig


def curves_figure(report: SanityReport, title: str) -> Any:
    """Spearman and SSIM against the trained map, mean over images, per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["trained", *report.cascade.randomized[1:]]
    fig, (ax_rho, ax_ssim, ax_legend) = plt.subplots(
        1, 3, figsize=(14, 4.8), gridspec_kw={"width_ratios": [1, 1, 0.22]}
    )
    _plot_curves(ax_rho, ax_ssim, _curves(report), labels, ax_legend)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _curves(report: SanityReport, image: str | None = None) -> dict[str, tuple[list, list]]:
    import pandas as pd

    frame = pd.DataFrame(report.rows)
    if image is not None:
        frame = frame[frame.image_id == image]
    out = {}
    for method in report.cascade.methods:
        by_step = frame[frame.method == method].groupby("step")[["spearman", "ssim"]].mean()
        out[method] = (by_step.spearman.tolist(), by_step.ssim.tolist())
    return out


def _plot_curves(ax_rho, ax_ssim, curves, labels, ax_legend) -> None:
    import matplotlib

    steps = range(len(labels))
    colours = [matplotlib.colormaps["tab20"](i) for i in range(20)]  # no repeats for 13
    for index, (method, (rho, ssim_values)) in enumerate(curves.items()):
        style = (
            {"linewidth": 2.5, "color": "black"}
            if method == METACAM
            else {"linewidth": 1, "color": colours[index % len(colours)]}
        )
        ax_rho.plot(steps, rho, marker=".", label=method, **style)
        ax_ssim.plot(steps, ssim_values, marker=".", label=method, **style)
    for ax, name in ((ax_rho, "Spearman vs trained"), (ax_ssim, "SSIM vs trained")):
        ax.set_xticks(list(steps))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel(name, fontsize=8)
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set_ylim(-1.05, 1.05)  # both can be negative (anti-correlated, inverted maps)
        ax.tick_params(labelsize=7)
    ax_legend.axis("off")
    handles, names = ax_rho.get_legend_handles_labels()
    ax_legend.legend(handles, names, loc="center left", fontsize=7, frameon=False)


def format_faithfulness(report: SanityReport) -> str:
    """Per method, the mean plain ROAD (on the trained model) of the trained map and of the
    fully randomised model's map: a map that passes should lose most of its ROAD."""
    import pandas as pd

    frame = pd.DataFrame(report.faithfulness_rows)
    means = frame.pivot_table(index="method", columns="step", values="road_combined", sort=False)
    first, last = means.columns.min(), means.columns.max()
    lines = ["", "ROAD of the plain map on the trained model (mean over images):",
             f"{'method':<20} {'trained map':>12} {'random-model map':>17} {'drop':>8}"]
    for method, row in means.iterrows():
        lines.append(f"{method:<20} {row[first]:12.3f} {row[last]:17.3f} {row[first] - row[last]:8.3f}")
    return "\n".join(lines)


def write_report(
    report: SanityReport,
    out: Path,
    displays: Sequence[np.ndarray] | None = None,
    *,
    model: str = "model",
) -> list[Path]:
    """Write ``sanity.csv``, ``class_sensitivity.csv`` and the figures (when ``displays``,
    one (H, W, 3) image in [0, 1] per image, are given) atomically into ``out``."""
    import pandas as pd

    from metacam.atomic import write_atomically
    from metacam.figures import save_figure

    out.mkdir(parents=True, exist_ok=True)
    sanity = pd.DataFrame(report.rows, columns=list(SANITY_COLUMNS))
    classes = pd.DataFrame(report.class_rows, columns=list(CLASS_COLUMNS))
    written = [
        write_atomically(
            out / "sanity.csv", lambda path: sanity.to_csv(path, index=False, na_rep="nan")
        ),
        write_atomically(
            out / "class_sensitivity.csv",
            lambda path: classes.to_csv(path, index=False, na_rep="nan"),
        ),
    ]
    if report.faithfulness_rows:
        scored = pd.DataFrame(report.faithfulness_rows)
        written.append(write_atomically(out / "faithfulness.csv",
                                        lambda path: scored.to_csv(path, index=False, na_rep="nan")))
    if displays is not None:
        for index, image_id in enumerate(report.image_ids):
            title = (
                f"{image_id} ({model}, class {int(report.cascade.targets[index])}): "
                f"cascading randomisation, output block first"
            )
            fig = image_figure(displays[index], report, index, title)
            written.append(save_figure(fig, out / f"{image_id}.png", dpi=80))
        fig = curves_figure(report, f"{model}: mean over {len(report.image_ids)} image(s)")
        written.append(save_figure(fig, out / "sanity_curves.png"))
    return written


# --- command line ---------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``sanity`` sub-command to ``subparsers``; return its parser."""
    parser = subparsers.add_parser(
        "sanity",
        help="model-parameter randomisation and class-sensitivity checks of every member",
        description="Cascading model-parameter randomisation (Adebayo et al. 2018): re-initialise "
        "the network block by block from the output backwards and compare every member CAM's "
        "and MetaCAM's map with the trained model's (Spearman, SSIM); and the top-1 vs top-2 "
        "class sensitivity of each map.",
        epilog="outputs in --out: sanity.csv (image_id, method, step, randomized, spearman, "
        "ssim), class_sensitivity.csv (image_id, method, top1, top2, spearman), "
        "faithfulness.csv (image_id, method, step, randomized and the evaluation engine's "
        "scores of the trained and the fully randomised model's plain maps on the trained "
        "model), <image_id>.png per image and sanity_curves.png",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="files, folders, sample:NAME")
    parser.add_argument(
        "--model", default="efficientnet_lite0",
        help="model name as for explain: efficientnet_lite0 (default), a torchvision name, timm/NAME, module:factory",
    )
    parser.add_argument("--checkpoint", help="state-dict file for the model")
    parser.add_argument("--layer", help="target layer(s), several as a,b (default: the model's)")
    parser.add_argument(
        "--reshape", help="package.module:fn turning the layer's output into (B, C, h, w), or none "
        "(default: a recognised transformer's own)"
    )
    parser.add_argument(
        "--methods", help="comma-separated member names (default: all 12 built-in members)"
    )
    parser.add_argument(
        "--k",
        type=float,
        default=DEFAULT_K,
        help=f"MetaCAM's threshold percentage in this test (default {DEFAULT_K:g}: "
        f"all pixels, the plain sum of the members)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the re-initialisation (default 0)"
    )
    parser.add_argument(
        "--no-scores", action="store_true",
        help="skip faithfulness.csv (the trained and the fully randomised maps scored by the "
        "evaluation engine on the trained model)",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT}/)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``metacam sanity``: check the options, compute, print a summary, write the files.

    Returns 0, or 1 when some images could not be read (they are listed on stderr).
    Raises :class:`MetaCAMError` (one line) on bad input.
    """
    from metacam.device import resolve_device
    from metacam.ensemble import check_ks
    from metacam.images import load_images
    from metacam.models import load_model

    try:
        (k,) = check_ks(args.k)
    except MetaCAMError as error:
        raise MetaCAMError(f"--k {args.k:g}: {error}") from None
    methods = None
    if args.methods is not None:
        methods = [part.strip() for part in args.methods.split(",") if part.strip()]
        if not methods:
            raise MetaCAMError(f"--methods {args.methods!r}: name at least one member")
    device = resolve_device(args.device)
    bundle = load_model(args.model, device, layer=args.layer, reshape=args.reshape, checkpoint=args.checkpoint)
    from metacam.cams import check_members, resolve_members

    check_members(resolve_members(methods), bundle)  # the default 12 too (FullGrad on a ViT): one line, now
    images, problems = load_images(args.images)
    for problem in problems:
        print(f"metacam sanity: skipped {problem.source}: {problem.reason}", file=sys.stderr)
    if not images:
        raise MetaCAMError("no image could be read; check the paths above")
    x = bundle.preprocess(images)
    report = sanity_check(
        bundle,
        x,
        [image.image_id for image in images],
        methods=methods,
        k=k,
        seed=args.seed,
        progress=True,
        evaluator=None if args.no_scores else sanity_evaluator(),
    )
    displays = [bundle.to_display(image)[0].permute(1, 2, 0).numpy() for image in images]
    print(format_summary(report, bundle.name))
    if report.faithfulness_rows:
        print(format_faithfulness(report))
    write_report(report, Path(args.out), displays, model=bundle.name)
    scored = "faithfulness.csv, " if report.faithfulness_rows else ""
    print(
        f"sanity.csv, class_sensitivity.csv, {scored}{len(images) + 1} figure(s) written to {args.out}/"
    )
    return 1 if problems else 0
