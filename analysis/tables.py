"""Paper tables: MetaCAM versus single CAMs, win rates, the ranking of experiments;
and the CSV + Markdown writer every table goes through.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from metacam.analysis.summary import summarise, t_halfwidth
from metacam.groups import GROUP_KEYS, combo_name

ALL_GROUPS_COMBO = 2 ** len(GROUP_KEYS) - 1


def best_combo(metacam: pd.DataFrame, sign: int = 1) -> int:
    """combo_id with the best mean score (ties: the lowest combo_id)."""
    means = metacam.groupby("combo_id")["score"].mean()
    return int((sign * means).sort_index().idxmax())


def best_single(singles: pd.DataFrame, sign: int = 1) -> str:
    """Single method with the best mean score (ties: alphabetical)."""
    means = singles.groupby("method")["score"].mean()
    return str((sign * means).sort_index().idxmax())


def _ci_columns(frame: pd.DataFrame | None, key: str, values: list, prefix: str) -> pd.DataFrame:
    """mean, ci_low, ci_high, n for each of ``values`` of ``key`` (NaN where absent)."""
    columns = [f"{prefix}_mean", f"{prefix}_ci_low", f"{prefix}_ci_high", f"{prefix}_n"]
    if frame is None or frame.empty:
        return pd.DataFrame(np.nan, index=range(len(values)), columns=columns)
    table = summarise(frame, key).reindex(values)
    out = table[["mean", "ci_low", "ci_high", "n"]].reset_index(drop=True)
    out.columns = columns
    return out


def metacam_vs_single(
    adaptive: tuple[pd.DataFrame, pd.DataFrame] | None,
    plain: tuple[pd.DataFrame, pd.DataFrame] | None,
    best: int | None,
    sign: int = 1,
) -> pd.DataFrame:
    """MetaCAM (best combination, all groups) against every single member.

    Args:
        adaptive, plain: ``(metacam, singles)`` score frames for the adaptive
            and the plain (k = 100) score, or None where the dataset lacks them.
        best: combo_id of the best combination (None: no MetaCAM rows).
        sign: +1 if higher is better.

    Returns:
        One row per entry: entry, kind, combo_id, then for ``plain`` and
        ``adaptive``: mean, ci_low, ci_high, n (95% t-interval over units).
        Singles are sorted best first by adaptive mean (plain if no adaptive).
    """
    entries: list[tuple[str, str, int | None]] = []
    combos = set()
    for frames in (adaptive, plain):
        if frames is not None:
            combos |= set(frames[0]["combo_id"].unique().tolist())
    if best is not None:
        entries.append((f"MetaCAM best: {combo_name(best)}", "metacam", best))
    if ALL_GROUPS_COMBO in combos and best != ALL_GROUPS_COMBO:
        entries.append((f"MetaCAM all groups: {combo_name(ALL_GROUPS_COMBO)}", "metacam", ALL_GROUPS_COMBO))
    ranking = adaptive if adaptive is not None and not adaptive[1].empty else plain
    if ranking is not None and not ranking[1].empty:
        means = ranking[1].groupby("method")["score"].mean()
        order = (-sign * means).sort_values(kind="stable").index
        methods = sorted(set().union(*(set(f[1]["method"].unique()) for f in (adaptive, plain) if f is not None)))
        methods = list(order) + [m for m in methods if m not in set(order)]
        entries += [(m, "single", None) for m in methods]
    table = pd.DataFrame(entries, columns=["entry", "kind", "combo_id"])
    table["combo_id"] = table["combo_id"].astype("Int64")
    for prefix, frames in (("plain", plain), ("adaptive", adaptive)):
        parts = []
        mc = table["kind"] == "metacam"
        combos_wanted = table.loc[mc, "combo_id"].astype(int).tolist()
        methods_wanted = table.loc[~mc, "entry"].tolist()
        parts.append(_ci_columns(None if frames is None else frames[0], "combo_id", combos_wanted, prefix))
        parts.append(_ci_columns(None if frames is None else frames[1], "method", methods_wanted, prefix))
        table = pd.concat([table, pd.concat(parts, ignore_index=True)], axis=1)
    return table


def win_rates(metacam: pd.DataFrame, singles: pd.DataFrame, best: int, sign: int = 1) -> pd.DataFrame:
    """Per-unit win rate of MetaCAM's ``best`` combination over single CAMs.

    Two comparisons, each paired over the units that have both scores:
    against the best single method overall (highest mean score) and against
    each unit's own best single method. A win is a strictly better score
    (direction ``sign``); ties are counted apart.

    Returns:
        One row per comparison: opponent, n_units, wins, ties, losses,
        win_rate (wins / n_units), mean_difference (MetaCAM − opponent, in
        score units) with its 95% t-interval.
    """
    mine = metacam.loc[metacam["combo_id"] == best].set_index("unit")["score"]
    table = singles.pivot(index="unit", columns="method", values="score")
    top = best_single(singles, sign)
    per_unit_best = (sign * table).max(axis=1, skipna=True) * sign
    rows = []
    for opponent, theirs in ((f"best single method ({top})", table[top]),
                             ("per-unit best single method", per_unit_best)):
        paired = pd.concat([mine.rename("mine"), theirs.rename("theirs")], axis=1, join="inner").dropna()
        difference = paired["mine"] - paired["theirs"]
        better = sign * difference
        n = len(paired)
        std = float(difference.std()) if n > 1 else math.nan
        half = float(t_halfwidth(np.array([std]), np.array([n]))[0])
        mean = float(difference.mean()) if n else math.nan
        rows.append({
            "opponent": opponent,
            "n_units": n,
            "wins": int((better > 0).sum()),
            "ties": int((better == 0).sum()),
            "losses": int((better < 0).sum()),
            "win_rate": float((better > 0).mean()) if n else math.nan,
            "mean_difference": mean,
            "diff_ci_low": mean - half,
            "diff_ci_high": mean + half,
        })
    return pd.DataFrame(rows)


def ranking_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The ranking of all experiments present (from :func:`analysis.cre.experiment_summary`)."""
    columns = ["rank", "combo_id", "method", "n_groups", "mean", "ci_low", "ci_high", "std", "n", "residual"]
    return summary[columns].rename(columns={"n": "n_units", "n_groups": "groups_on"})


# ---------------------------------------------------------------- formatting


def id_ranges(ids: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"`` (compact lists of missing combo_ids)."""
    runs: list[list[int]] = []
    for value in sorted(ids):
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def fmt(value: object, digits: int = 4) -> str:
    """A number for a Markdown table: fixed digits, ``n/a`` for missing values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or value is pd.NA:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if value != 0 and abs(value) < 10 ** -digits:
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|")


def fmt_ci(mean: float, low: float, high: float, digits: int = 3) -> str:
    """``mean ± half-width`` of a symmetric interval; ``n/a`` if missing."""
    if mean is None or not math.isfinite(float(mean)):
        return "n/a"
    if low is None or not math.isfinite(float(low)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(high - low) / 2:.{digits}f}"


def fmt_p(value: object) -> str:
    """A p-value: two significant digits below 1e-3, ``n/a`` when missing."""
    if not isinstance(value, (int, float, np.number)) or not math.isfinite(float(value)):
        return "n/a"
    value = float(value)
    return "<1e-300" if value < 1e-300 else (f"{value:.1e}" if value < 1e-3 else f"{value:.3f}")


def markdown(frame: pd.DataFrame, formats: Mapping[str, Callable[[object], str]] | None = None) -> str:
    """A GitHub Markdown table (no extra dependency); numbers through :func:`fmt`."""
    formats = formats or {}
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(frame[c]) else "---" for c in frame.columns) + "|"
    lines = [header, rule]
    for row in frame.itertuples(index=False):
        cells = [formats.get(c, fmt)(v) for c, v in zip(frame.columns, row, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(frame: pd.DataFrame, folder: Path, stem: str, *, display: pd.DataFrame | None = None,
                formats: Mapping[str, Callable[[object], str]] | None = None) -> tuple[Path, Path]:
    """Write ``stem.csv`` (full precision) and ``stem.md`` (``display`` or the frame, formatted)."""
    csv, md = folder / f"{stem}.csv", folder / f"{stem}.md"
    frame.to_csv(csv, index=False)
    md.write_text(markdown(frame if display is None else display, formats))
    return csv, md
