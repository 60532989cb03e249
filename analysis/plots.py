"""Figures: the CRE plot, the per-unit CRE distribution, the effects plot and the
small multiples of CRE per model, for any number of groups (1-10).

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas
explicitly, never through pyplot: no global backend, no GUI, safe on a
cluster node. Each function returns the Figure (tests read its artists);
:func:`save` writes a PNG. Group names come from the data; each group keeps
one colour (by its position) in every figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from metacam.analysis.design import flag_matrix
from metacam.analysis.factorial import FactorialFit
from metacam.analysis.scores import ScoreSpec

# Ten colour-blind-friendly colours (Okabe-Ito, then Tol's muted), one per group position.
PALETTE: tuple[str, ...] = (
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00",
    "#56B4E9", "#882255", "#117733", "#999933", "#7F7F7F",
)  # fmt: skip
MAX_TICK_LABELS = 64  # above this many experiments the x axis shows positions, not combo_ids


def group_colors(names: Sequence[str]) -> dict[str, str]:
    """One colour per group, by position (up to 10 groups)."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _decimals(values: np.ndarray) -> int:
    """Decimals that give the largest |value| three significant digits (one format per figure)."""
    finite = np.abs(np.asarray(values, dtype=float))
    finite = finite[np.isfinite(finite) & (finite > 0)]
    if not len(finite):
        return 3
    return int(max(0, 2 - np.floor(np.log10(finite.max()))))


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=150)
    FigureCanvasAgg(figure)
    return figure


def save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=150)
    return path


def _spread(values: np.ndarray, gap: float) -> np.ndarray:
    """Label heights near ``values`` with at least ``gap`` between neighbours (order kept)."""
    order = np.argsort(values)
    placed = values[order].astype(float).copy()
    for i in range(1, len(placed)):
        placed[i] = max(placed[i], placed[i - 1] + gap)
    # Re-centre so the block of labels sits on the values, not only above them.
    placed -= (placed - values[order]).mean()
    for i in range(1, len(placed)):
        placed[i] = max(placed[i], placed[i - 1] + gap)
    out = np.empty_like(placed)
    out[order] = placed
    return out


def plot_cre(curves: pd.DataFrame, cre_values: pd.Series, spec: ScoreSpec, n_units: int,
             missing: int = 0, ci: tuple[np.ndarray, np.ndarray] | None = None) -> Figure:
    """CRE plot: experiments ranked best first; per group the running sum of r_e.

    Three panels sharing the x axis: the residuals r_e = s_e − median (bars),
    the running sums (one curve per group, ending at CRE_g, labelled at the
    right with its 95% CI when given), and an on/off matrix showing which
    groups each experiment holds.

    Args:
        curves: :func:`metacam.analysis.cre.cre_curves` (one column per group).
        cre_values: CRE per group (index: group names, in bit order).
        ci: optional (low, high) arrays, one value per group.
    """
    names = list(cre_values.index)
    colors = group_colors(names)
    n, n_groups = len(curves), len(names)
    x = curves["position"].to_numpy()
    figure = _figure(12.5, 7.4 + 0.2 * n_groups)
    grid = figure.add_gridspec(3, 1, height_ratios=[1.1, 3.4, 0.3 + 0.2 * n_groups], hspace=0.08,
                               left=0.1, right=0.72, top=0.92, bottom=0.1)
    ax_res = figure.add_subplot(grid[0])
    ax = figure.add_subplot(grid[1], sharex=ax_res)
    ax_on = figure.add_subplot(grid[2], sharex=ax_res)

    residual = curves["residual"].to_numpy()
    above = spec.sign * residual > 0  # experiments better than the median
    ax_res.bar(x, residual, width=0.8, color=np.where(above, "#4C9A2A", "#B0B0B0"))
    ax_res.axhline(0, color="black", lw=0.8)
    ax_res.set_ylabel("$r_e = s_e - $median", fontsize=9)
    ax_res.tick_params(labelbottom=False, labelsize=8)
    ax_res.grid(axis="y", alpha=0.3)

    # Where residuals change sign (best-first order): curves peak there.
    split = int(above.sum())
    if 0 < split < n:
        for axis in (ax_res, ax, ax_on):
            axis.axvline(split + 0.5, color="black", lw=0.8, ls=":", alpha=0.6)
        ax_res.annotate("median", xy=(split + 0.5, 1.0), xycoords=ax_res.get_xaxis_transform(),
                        xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=8)

    flags = flag_matrix(curves["combo_id"], n_groups).astype(bool)
    ax.axhline(0, color="black", lw=0.8)
    marker = 3 if n <= 256 else 0
    for i, group in enumerate(names):
        y = curves[group].to_numpy()
        ax.plot(np.r_[0, x], np.r_[0.0, y], color=colors[group], lw=1.6, label=group)
        if marker:
            ax.plot(x[flags[:, i]], y[flags[:, i]], "o", color=colors[group], ms=marker)
    ends = np.asarray([curves[g].to_numpy()[-1] for g in names])
    low, high = ax.get_ylim()
    heights = _spread(ends, min(0.065, 0.85 / max(n_groups, 1)) * (high - low))
    digits = _decimals(cre_values.to_numpy())
    for i, (group, end, height) in enumerate(zip(names, ends, heights, strict=True)):
        text = f"{group}  CRE = {cre_values[group]:+.{digits}f}"
        if ci is not None and np.isfinite(ci[0][i]):
            text += f" [{ci[0][i]:+.{digits}f}, {ci[1][i]:+.{digits}f}]"
        ax.annotate(text, xy=(n, end), xytext=(1.015, height), textcoords=ax.get_yaxis_transform(),
                    va="center", fontsize=8.5, color=colors[group], fontweight="bold",
                    arrowprops=dict(arrowstyle="-", color=colors[group], lw=0.6, alpha=0.7))
    ax.set_ylabel(r"running sum of $r_e$ over experiments with the group on", fontsize=9)
    ax.tick_params(labelbottom=False, labelsize=8)
    ax.grid(axis="y", alpha=0.3)

    if n <= MAX_TICK_LABELS:
        for i, group in enumerate(names):
            on = flags[:, i]
            ax_on.scatter(x[on], np.full(on.sum(), i), s=22, color=colors[group], zorder=3)
            ax_on.scatter(x[~on], np.full((~on).sum(), i), s=5, color="#D0D0D0", zorder=2)
        ax_on.set_xticks(x, [str(c) for c in curves["combo_id"]], fontsize=6, rotation=90)
        xlabel = "tick label = combo_id"
    else:  # too many experiments for markers and labels: an image of the on/off matrix
        ax_on.imshow(flags.T.astype(float), aspect="auto", cmap="Greys", interpolation="nearest",
                     extent=(0.5, n + 0.5, n_groups - 0.5, -0.5), vmin=0, vmax=1.6)
        xlabel = "position; dark = group on; combo_ids in cre_curves.csv"
    ax_on.set_yticks(range(n_groups), names, fontsize=8)
    ax_on.set_ylim(n_groups - 0.5, -0.5)
    ax_on.set_xlim(0, n + 0.6)
    ax_on.set_xlabel(f"experiments ranked by {spec.short}, best first ({xlabel})", fontsize=9)

    title = f"Cumulative Residual Effect — {spec.short} ({spec.direction}), mean over {n_units} units"
    figure.suptitle(title, fontsize=11)
    note = f"{n} experiments" + (f"; {missing} missing (partial sweep)" if missing else "")
    figure.text(0.72, 0.945, note, ha="right", fontsize=8, color="#444444")
    return figure


def plot_unit_cre(per_unit: pd.DataFrame, cre_values: pd.Series, spec: ScoreSpec,
                  ci: tuple[np.ndarray, np.ndarray] | None = None) -> Figure:
    """Per-unit CRE per group: boxes (quartiles, whiskers at the 5th/95th percentiles),
    the CRE of the mean scores as a diamond with its 95% CI, and the share of units
    on the helpful side."""
    names = list(cre_values.index)
    colors = group_colors(names)
    figure = _figure(max(7.0, 1.2 + 1.15 * len(names)), 5.4)
    ax = figure.add_subplot(1, 1, 1)
    positions = np.arange(len(names))
    data = [per_unit[g].to_numpy() for g in names]
    boxes = ax.boxplot(data, positions=positions, widths=0.55, whis=(5, 95), showfliers=False,
                       patch_artist=True, medianprops=dict(color="black"))
    for patch, group in zip(boxes["boxes"], names, strict=True):
        patch.set_facecolor(colors[group])
        patch.set_alpha(0.55)
    values = cre_values.to_numpy()
    ax.scatter(positions, values, marker="D", s=40, color="#C00000", zorder=4,
               label="CRE of the mean scores (all units)" + (" with 95% CI" if ci is not None else ""))
    if ci is not None:
        ax.errorbar(positions, values, yerr=[values - ci[0], ci[1] - values], fmt="none", color="#C00000",
                    capsize=4, lw=1.2, zorder=4)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(positions, names, fontsize=9, rotation=30 if len(names) > 6 else 0)
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.1 * (high - low))
    side = "> 0" if spec.sign > 0 else "< 0"
    for i, values_g in enumerate(data):
        share = float(np.mean(spec.sign * values_g > 0)) if len(values_g) else np.nan
        ax.text(i, high + 0.03 * (high - low), f"{share:.0%} {side}", ha="center", fontsize=8, color="#333333")
    ax.set_ylabel(f"per-unit CRE of {spec.short}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    ax.set_title(f"CRE per unit (model × image × target), {len(per_unit)} units; "
                 "box = quartiles, whiskers = 5th–95th percentile", fontsize=10)
    figure.tight_layout()
    return figure


def plot_effects(fit: FactorialFit, spec: ScoreSpec, names: Sequence[str]) -> Figure:
    """OLS effects: point estimate and 95% CI per group (and per interaction)."""
    effects = fit.effects
    colors = group_colors(names)
    n = len(effects)
    width, height = 10.0, 1.7 + 0.4 * n
    figure = _figure(width, height)
    ax = figure.add_subplot(1, 1, 1)
    y = np.arange(n)
    digits = _decimals(effects[["estimate", "ci_low", "ci_high"]].to_numpy())
    for row, position in zip(effects.itertuples(index=False), y, strict=True):
        color = colors.get(str(row.label), "#333333")
        low = row.estimate - row.ci_low if math.isfinite(row.ci_low) else 0.0
        high = row.ci_high - row.estimate if math.isfinite(row.ci_high) else 0.0
        ax.errorbar(row.estimate, position, xerr=[[low], [high]], fmt="o", color=color, ms=6, capsize=4, lw=1.6)
        ax.annotate(f"{row.estimate:+.{digits}f} [{row.ci_low:+.{digits}f}, {row.ci_high:+.{digits}f}]",
                    xy=(1.02, position), xycoords=ax.get_yaxis_transform(), va="center", fontsize=8,
                    family="monospace")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, effects["label"].tolist(), fontsize=9)
    ax.set_ylim(n - 0.5, -0.5)
    mains = int((effects["kind"] == "main").sum())
    if 0 < mains < n:
        ax.axhline(mains - 0.5, color="#999999", lw=0.8, ls="--")
    ax.grid(axis="x", alpha=0.3)
    meaning = ("change in score when the group is switched on" if not fit.interactions else
               "main: average effect of switching the group on; a × b: change in a's effect when b is on")
    ax.set_xlabel(f"effect on {spec.short} ({meaning})", fontsize=9)
    models = f", model fixed effects ({fit.n_models})" if fit.n_models > 1 else ""
    ax.set_title(f"OLS factorial effects, 95% CI ({fit.inference} clustered by image{models}; "
                 f"{fit.n_clusters} images, {fit.n_units} units)", fontsize=10)
    # Margins in inches: room for the longest term label on the left, the CI text on the right.
    longest = max((len(label) for label in effects["label"]), default=8)
    figure.subplots_adjust(left=(0.35 + 0.075 * longest) / width, right=1 - 2.5 / width,
                           top=1 - 0.45 / height, bottom=0.7 / height)
    return figure


def plot_cre_by(panels: Sequence[tuple[str, pd.DataFrame, int]], names: Sequence[str], spec: ScoreSpec,
                dimension: str = "model") -> Figure:
    """Small multiples: the CRE running sums in each panel (pooled first, then one per model).

    Args:
        panels: (title, cre_curves frame, n_units) per panel.
        names: the group names (curve columns), in bit order.
    """
    colors = group_colors(names)
    n = len(panels)
    columns = min(n, 3)
    rows = math.ceil(n / columns)
    figure = _figure(4.6 * columns + 1.8, 3.4 * rows + 0.9)
    axes = []
    for index, (title, curves, n_units) in enumerate(panels):
        ax = figure.add_subplot(rows, columns, index + 1)
        x = curves["position"].to_numpy()
        for group in names:
            ax.plot(np.r_[0, x], np.r_[0.0, curves[group].to_numpy()], color=colors[group], lw=1.4, label=group)
        ax.axhline(0, color="black", lw=0.7)
        ax.set_title(f"{title} ({n_units} units)", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if index % columns == 0:
            ax.set_ylabel("running sum of $r_e$", fontsize=8)
        if index >= n - columns:
            ax.set_xlabel("experiments, best first", fontsize=8)
        axes.append(ax)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    figure.suptitle(f"CRE by {dimension}: {spec.short} ({spec.direction}); each panel ranks its own experiments",
                    fontsize=10)
    figure.tight_layout(rect=(0, 0, 1 - 1.6 / (4.6 * columns + 1.8), 0.95))
    return figure
