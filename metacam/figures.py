"""Figures: the input beside each saliency map overlaid on it, with scores in the titles."""

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from metacam.atomic import write_atomically  # noqa: E402


@dataclass
class Panel:
    """One overlay: a title and a saliency map (H, W) in [0, 1]."""

    title: str
    saliency: np.ndarray


def overlay_figure(
    image: np.ndarray, panels: list[Panel], title: str, *, columns: int = 5
) -> Figure:
    """The input, then every panel's map in 'jet' at half opacity over the input.

    image: (H, W, 3) in [0, 1]. Returns the figure (the caller saves and closes it).
    """
    count = 1 + len(panels)
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.0 * columns, 3.3 * rows + 0.6), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(image)
    axes.flat[0].set_title("input", fontsize=9)
    for ax, panel in zip(axes.flat[1:], panels, strict=False):
        ax.imshow(image)
        ax.imshow(panel.saliency, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(panel.title, fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Path, dpi: int = 110) -> Path:
    """Write the PNG atomically (temporary name, then rename) and free the figure."""
    try:
        return write_atomically(path, lambda partial: fig.savefig(partial, dpi=dpi))
    finally:
        plt.close(fig)
