"""Figures: the CRE plot, the per-unit CRE distribution and the effects plot.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas
explicitly, never through pyplot: no global backend, no GUI, safe on a
cluster node. Each function returns the Figure (tests read its artists);
:func:`save` writes a PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from metacam.analysis.scores import ScoreSpec
from metacam.analysis.stats import FactorialFit
from metacam.groups import GROUP_KEYS

# One fixed colour per group in every figure (colour-blind safe, Okabe-Ito).
GROUP_COLORS: dict[str, str] = dict(zip(GROUP_KEYS, [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#7F7F7F",
], strict=True))


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
             missing: int = 0) -> Figure:
    """CRE plot: experiments ranked best first; per group the running sum of r_e.

    Three panels sharing the x axis: the residuals r_e = s_e − median (bars),
    the running sums (one curve per group, ending at CRE_g, labelled at the
    right), and an on/off matrix showing which groups each experiment holds.
    """
    n = len(curves)
    x = curves["position"].to_numpy()
    figure = _figure(12.5, 8.6)
    grid = figure.add_gridspec(3, 1, height_ratios=[1.1, 3.4, 1.5], hspace=0.08,
                               left=0.1, right=0.78, top=0.92, bottom=0.1)
    ax_res = figure.add_subplot(grid[0])
    ax = figure.add_subplot(grid[1], sharex=ax_res)
    ax_on = figure.add_subplot(grid[2], sharex=ax_res)

    residual = curves["residual"].to_numpy()
    helps = spec.sign * residual > 0
    ax_res.bar(x, residual, width=0.8, color=np.where(helps, "#4C9A2A", "#B0B0B0"))
    ax_res.axhline(0, color="black", lw=0.8)
    ax_res.set_ylabel("$r_e = s_e - $median", fontsize=9)
    ax_res.tick_params(labelbottom=False, labelsize=8)
    ax_res.grid(axis="y", alpha=0.3)

    # Where residuals change sign (best-first order): curves peak there.
    split = int(helps.sum())
    if 0 < split < n:
        for axis in (ax_res, ax, ax_on):
            axis.axvline(split + 0.5, color="black", lw=0.8, ls=":", alpha=0.6)
        ax_res.annotate("median", xy=(split + 0.5, 1.0), xycoords=ax_res.get_xaxis_transform(),
                        xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=8)

    flags = ((curves["combo_id"].to_numpy()[:, None] >> np.arange(len(GROUP_KEYS))) & 1).astype(bool)
    ax.axhline(0, color="black", lw=0.8)
    ends = []
    for i, group in enumerate(GROUP_KEYS):
        y = curves[group].to_numpy()
        color = GROUP_COLORS[group]
        ax.plot(np.r_[0, x], np.r_[0.0, y], color=color, lw=1.8, label=group)
        ax.plot(x[flags[:, i]], y[flags[:, i]], "o", color=color, ms=3)
        ends.append(y[-1])
    ends_arr = np.asarray(ends)
    low, high = ax.get_ylim()
    heights = _spread(ends_arr, 0.065 * (high - low))
    digits = _decimals(cre_values.to_numpy())
    for group, end, height in zip(GROUP_KEYS, ends_arr, heights, strict=True):
        ax.annotate(f"{group}  CRE = {cre_values[group]:+.{digits}f}", xy=(n, end), xytext=(1.015, height),
                    textcoords=ax.get_yaxis_transform(), va="center", fontsize=9,
                    color=GROUP_COLORS[group], fontweight="bold",
                    arrowprops=dict(arrowstyle="-", color=GROUP_COLORS[group], lw=0.6, alpha=0.7))
    ax.set_ylabel(r"running sum of $r_e$ over experiments with the group on", fontsize=9)
    ax.tick_params(labelbottom=False, labelsize=8)
    ax.grid(axis="y", alpha=0.3)

    for i, group in enumerate(GROUP_KEYS):
        on = flags[:, i]
        ax_on.scatter(x[on], np.full(on.sum(), i), s=22, color=GROUP_COLORS[group], zorder=3)
        ax_on.scatter(x[~on], np.full((~on).sum(), i), s=5, color="#D0D0D0", zorder=2)
    ax_on.set_yticks(range(len(GROUP_KEYS)), GROUP_KEYS, fontsize=8)
    ax_on.set_ylim(len(GROUP_KEYS) - 0.5, -0.5)
    ax_on.set_xticks(x, [str(c) for c in curves["combo_id"]], fontsize=6, rotation=90)
    ax_on.set_xlim(0, n + 0.6)
    ax_on.set_xlabel(f"experiments ranked by {spec.short}, best first (tick label = combo_id)", fontsize=9)

    title = f"Cumulative Residual Effect — {spec.short} ({spec.direction}), mean over {n_units} units"
    figure.suptitle(title, fontsize=11)
    note = f"{n} experiments" + (f"; {missing} missing (partial sweep)" if missing else "")
    figure.text(0.78, 0.945, note, ha="right", fontsize=8, color="#444444")
    return figure


def plot_unit_cre(per_unit: pd.DataFrame, cre_values: pd.Series, spec: ScoreSpec) -> Figure:
    """Per-unit CRE per group: boxes (quartiles, whiskers at the 5th/95th percentiles),
    the CRE of the mean scores as a diamond, and the share of units with CRE > 0."""
    figure = _figure(9.5, 5.4)
    ax = figure.add_subplot(1, 1, 1)
    data = [per_unit[g].to_numpy() for g in GROUP_KEYS]
    boxes = ax.boxplot(data, positions=range(len(GROUP_KEYS)), widths=0.55, whis=(5, 95),
                       showfliers=False, patch_artist=True, medianprops=dict(color="black"))
    for patch, group in zip(boxes["boxes"], GROUP_KEYS, strict=True):
        patch.set_facecolor(GROUP_COLORS[group])
        patch.set_alpha(0.55)
    ax.scatter(range(len(GROUP_KEYS)), [cre_values[g] for g in GROUP_KEYS], marker="D", s=40,
               color="#C00000", zorder=4, label="CRE of the mean scores (all units)")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(GROUP_KEYS)), GROUP_KEYS, fontsize=9)
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.1 * (high - low))
    for i, values in enumerate(data):
        share = float(np.mean(spec.sign * values > 0)) if len(values) else np.nan
        ax.text(i, high + 0.03 * (high - low), f"{share:.0%} > 0" if spec.sign > 0 else f"{share:.0%} < 0",
                ha="center", fontsize=8, color="#333333")
    ax.set_ylabel(f"per-unit CRE of {spec.short}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    ax.set_title(f"CRE per unit (model × image × target), {len(per_unit)} units; "
                 "box = quartiles, whiskers = 5th–95th percentile", fontsize=10)
    figure.tight_layout()
    return figure


def plot_effects(fit: FactorialFit, spec: ScoreSpec) -> Figure:
    """OLS effects: point estimate and 95% CI per group (and per interaction)."""
    effects = fit.effects
    n = len(effects)
    width, height = 10.0, 1.7 + 0.4 * n
    figure = _figure(width, height)
    ax = figure.add_subplot(1, 1, 1)
    y = np.arange(n)
    digits = _decimals(effects[["estimate", "ci_low", "ci_high"]].to_numpy())
    for row, position in zip(effects.itertuples(index=False), y, strict=True):
        color = GROUP_COLORS.get(row.label, "#333333")
        ax.errorbar(row.estimate, position,
                    xerr=[[row.estimate - row.ci_low], [row.ci_high - row.estimate]],
                    fmt="o", color=color, ms=6, capsize=4, lw=1.6)
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
    cov = "SE clustered by unit" if fit.cov_type == "cluster" else "iid SE (one unit)"
    ax.set_title(f"OLS factorial effects with 95% CI ({cov}; {fit.n_clusters} units, {fit.n_obs} rows)",
                 fontsize=10)
    # Margins in inches: room for the longest term label on the left, the CI text on the right.
    longest = max((len(label) for label in effects["label"]), default=8)
    figure.subplots_adjust(left=(0.35 + 0.075 * longest) / width, right=1 - 2.5 / width,
                           top=1 - 0.45 / height, bottom=0.7 / height)
    return figure
