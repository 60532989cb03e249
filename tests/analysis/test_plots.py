"""Figures: they draw the computed numbers, and their labels neither overlap nor leave the canvas."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Annotation, Text

from metacam.analysis.cre import cre, cre_curves, cre_per_unit
from metacam.analysis.plots import plot_cre, plot_effects, plot_unit_cre, save
from metacam.analysis.scores import parse_score
from metacam.analysis.stats import fit_factorial
from metacam.groups import GROUP_KEYS

SPEC = parse_score("adaptive")


def boxes(figure, texts):
    """Extents of the text itself (an Annotation's own extent would include its arrow)."""
    renderer = figure.canvas.get_renderer()
    found = []
    for text in texts:
        if not text.get_text():
            continue
        if isinstance(text, Annotation):
            text.update_positions(renderer)  # place the text where it is drawn
        found.append(Text.get_window_extent(text, renderer))
    return found


def assert_apart_and_inside(figure, texts):
    found = boxes(figure, texts)
    assert found, "no text to check"
    for a, b in itertools.combinations(found, 2):
        assert not a.overlaps(b), (a, b)
    canvas = figure.bbox
    for box in found:
        assert (
            canvas.x0 - 1 <= box.x0
            and box.x1 <= canvas.x1 + 1
            and canvas.y0 - 1 <= box.y0
            and box.y1 <= canvas.y1 + 1
        )


def symmetric_means(noise: float) -> pd.Series:
    """s_e = number of groups on (+ noise): every group gets (nearly) the same CRE."""
    rng = np.random.default_rng(0)
    popcount = np.array([bin(c).count("1") for c in range(64)], dtype=float)
    return pd.Series(popcount + rng.normal(0, noise, 64), index=range(64))


@pytest.mark.parametrize(
    "noise", [3.0, 1e-3]
)  # distinct CREs, and equal CREs whose labels would collide
def test_cre_plot_draws_curves_ending_at_cre_with_readable_labels(noise, tmp_path):
    means = symmetric_means(noise)
    curves = cre_curves(means)
    values = cre(means)
    figure = plot_cre(curves, values, SPEC, n_units=10)
    _, main, matrix = figure.axes
    lines = [line for line in main.get_lines() if line.get_label() in GROUP_KEYS]
    assert [line.get_label() for line in lines] == list(GROUP_KEYS)
    for line in lines:
        assert line.get_ydata()[-1] == pytest.approx(values[line.get_label()])
        assert line.get_xdata()[-1] == 64
    labels = [t for t in main.texts if "CRE =" in t.get_text()]
    assert len(labels) == 6
    assert_apart_and_inside(figure, labels)
    ticks = matrix.get_xticklabels()
    assert [t.get_text() for t in ticks] == [str(c) for c in curves["combo_id"]]
    assert_apart_and_inside(figure, ticks)
    path = save(figure, tmp_path / "cre.png")
    assert path.stat().st_size > 10_000


def test_unit_cre_plot_marks_the_cre_of_the_means():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        [(c, u, rng.normal()) for c in range(64) for u in range(20)],
        columns=["combo_id", "unit", "score"],
    )
    per_unit = cre_per_unit(frame)
    values = cre(frame.groupby("combo_id")["score"].mean())
    figure = plot_unit_cre(per_unit, values, SPEC)
    ax = figure.axes[0]
    diamonds = ax.collections[0].get_offsets()
    np.testing.assert_allclose(np.asarray(diamonds)[:, 1], values.to_numpy())
    assert [t.get_text() for t in ax.get_xticklabels()] == list(GROUP_KEYS)
    shares = [t for t in ax.texts if "> 0" in t.get_text()]
    assert len(shares) == 6
    assert_apart_and_inside(figure, shares + ax.get_xticklabels())


@pytest.mark.parametrize("interactions", [False, True])
def test_effects_plot_shows_each_term_with_its_interval(interactions):
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(
        [(c, u, 0.05 * (c & 1) + rng.normal(0, 0.05)) for c in range(64) for u in range(10)],
        columns=["combo_id", "unit", "score"],
    )
    fit = fit_factorial(frame, interactions=interactions)
    figure = plot_effects(fit, SPEC)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == fit.effects["label"].tolist()
    assert len(ax.containers) == len(fit.effects) == (21 if interactions else 6)
    for container, row in zip(ax.containers, fit.effects.itertuples(), strict=True):
        x, _ = container.lines[0].get_data()
        assert x[0] == pytest.approx(row.estimate)
    assert_apart_and_inside(figure, list(ax.get_yticklabels()) + list(ax.texts))
