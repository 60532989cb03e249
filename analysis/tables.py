"""Formatting numbers for Markdown, and the CSV + Markdown writer every table goes through."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd


def id_ranges(ids: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"`` (compact lists of missing combo_ids)."""
    runs: list[list[int]] = []
    for value in sorted(ids):
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _missing(value: object) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, (float, np.floating)) and not math.isfinite(float(value))


def fmt(value: object, digits: int = 4) -> str:
    """A number for a Markdown table: fixed digits, ``n/a`` for missing values."""
    if _missing(value):
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


def fmt_ci(mean: object, low: object, high: object, digits: int = 3) -> str:
    """``mean [low, high]``; ``mean`` alone without an interval; ``n/a`` if missing."""
    if _missing(mean):
        return "n/a"
    if _missing(low) or _missing(high):
        return f"{float(mean):+.{digits}f}"  # type: ignore[arg-type]
    return f"{float(mean):+.{digits}f} [{float(low):+.{digits}f}, {float(high):+.{digits}f}]"  # type: ignore[arg-type]


def fmt_p(value: object) -> str:
    """A p-value: two significant digits below 1e-3, ``n/a`` when missing."""
    if not isinstance(value, (int, float, np.number)) or not math.isfinite(float(value)):
        return "n/a"
    value = float(value)
    return "<1e-300" if value < 1e-300 else (f"{value:.1e}" if value < 1e-3 else f"{value:.3f}")


def fmt_share(value: object) -> str:
    return "n/a" if _missing(value) else f"{float(value):.0%}"  # type: ignore[arg-type]


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
