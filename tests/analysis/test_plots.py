"""Figures for any number of groups: they draw the computed numbers, and their labels
neither overlap nor leave the canvas."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Annotation, Text

from metacam.analysis.cre import cre, cre_curves, cre_per_unit
from metacam.analysis.factorial import fit_factorial
from metacam.analysis.plots import (
    PALETTE,
    group_colors,
    plot_cre,
    plot_cre_by,
    plot_effects,
    plot_unit_cre,
    save,
)
from metacam.analysis.scores import parse_score

SPEC = parse_score("adaptive")


def names_of(n_groups: int) -> list[str]:
    return [f"group{i + 1}" for i in range(n_groups)]


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
        assert canvas.x0 - 1 <= box.x0 and box.x1 <= canvas.x1 + 1 and canvas.y0 - 1 <= box.y0 and box.y1 <= canvas.y1 + 1


def symmetric_means(noise: float, n_groups: int = 6) -> pd.Series:
    """s_e = number of groups on (+ noise): every group gets (nearly) the same CRE."""
    rng = np.random.default_rng(0)
    combos = np.arange(2**n_groups)
    popcount = np.array([bin(c).count("1") for c in combos], dtype=float)
    return pd.Series(popcount + rng.normal(0, noise, len(combos)), index=combos)


def test_one_colour_per_group_up_to_ten():
    colors = group_colors(names_of(10))
    assert len(set(colors.values())) == 10 and list(colors.values()) == list(PALETTE)


@pytest.mark.parametrize(("n_groups", "noise"), [(6, 3.0), (6, 1e-3), (3, 1e-3), (10, 1e-3)])
def test_cre_plot_draws_curves_ending_at_cre_with_readable_labels(n_groups, noise, tmp_path):
    names = names_of(n_groups)
    means = symmetric_means(noise, n_groups)
    curves = cre_curves(means, names)
    values = cre(means, names)
    ci = (values.to_numpy() - 0.1, values.to_numpy() + 0.1)
    figure = plot_cre(curves, values, SPEC, n_units=10, ci=ci)
    _, main, matrix = figure.axes
    lines = [line for line in main.get_lines() if line.get_label() in names]
    assert [line.get_label() for line in lines] == names
    for line in lines:
        assert line.get_ydata()[-1] == pytest.approx(values[line.get_label()])
        assert line.get_xdata()[-1] == 2**n_groups
    labels = [t for t in main.texts if "CRE =" in t.get_text()]
    assert len(labels) == n_groups and all("[" in t.get_text() for t in labels)  # with the CI
    assert_apart_and_inside(figure, labels)
    assert [t.get_text() for t in matrix.get_yticklabels()] == names
    if n_groups <= 6:  # up to 64 experiments the x axis names each combo_id
        ticks = matrix.get_xticklabels()
        assert [t.get_text() for t in ticks] == [str(c) for c in curves["combo_id"]]
        assert_apart_and_inside(figure, ticks)
    else:  # 1,024 experiments: the on/off matrix is an image, one column per experiment
        (image,) = matrix.get_images()
        assert image.get_array().shape == (n_groups, 2**n_groups)
    path = save(figure, tmp_path / "cre.png")
    assert path.stat().st_size > 10_000


@pytest.mark.parametrize("n_groups", [6, 9])
def test_unit_cre_plot_marks_the_cre_of_the_means(n_groups):
    names = names_of(n_groups)
    rng = np.random.default_rng(1)
    frame = pd.DataFrame([(c, u, rng.normal()) for c in range(2**n_groups) for u in range(8)],
                         columns=["combo_id", "unit", "score"])
    per_unit = cre_per_unit(frame, names)
    values = cre(frame.groupby("combo_id")["score"].mean(), names)
    figure = plot_unit_cre(per_unit, values, SPEC, ci=(values.to_numpy() - 1, values.to_numpy() + 1))
    ax = figure.axes[0]
    diamonds = ax.collections[0].get_offsets()
    np.testing.assert_allclose(np.asarray(diamonds)[:, 1], values.to_numpy())
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    shares = [t for t in ax.texts if "> 0" in t.get_text()]
    assert len(shares) == n_groups
    assert_apart_and_inside(figure, shares + ax.get_xticklabels())


@pytest.mark.parametrize("interactions", [False, True])
def test_effects_plot_shows_each_term_with_its_interval(interactions):
    rng = np.random.default_rng(2)
    names = names_of(6)
    frame = pd.DataFrame([(c, u, 0.05 * (c & 1) + rng.normal(0, 0.05)) for c in range(64) for u in range(10)],
                         columns=["combo_id", "unit", "score"])
    units = pd.DataFrame({"model": ["m"] * 10, "cluster": range(10)}, index=pd.Index(range(10), name="unit"))
    fit = fit_factorial(frame, units, names, interactions=interactions)
    figure = plot_effects(fit, SPEC, names)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == fit.effects["label"].tolist()
    assert len(ax.containers) == len(fit.effects) == (21 if interactions else 6)
    for container, row in zip(ax.containers, fit.effects.itertuples(), strict=True):
        x, _ = container.lines[0].get_data()
        assert x[0] == pytest.approx(row.estimate)
    assert_apart_and_inside(figure, list(ax.get_yticklabels()) + list(ax.texts))
    assert "CR2" in ax.get_title()  # 10 clusters


def test_small_multiples_one_panel_per_model_plus_pooled():
    names = names_of(3)
    rng = np.random.default_rng(3)
    panels = [(title, cre_curves(pd.Series(rng.normal(size=8), index=range(8)), names), 12)
              for title in ("pooled, 2 model(s)", "net_a", "net_b")]
    figure = plot_cre_by(panels, names, SPEC)
    assert [ax.get_title() for ax in figure.axes] == ["pooled, 2 model(s) (12 units)", "net_a (12 units)",
                                                      "net_b (12 units)"]
    for ax, (_, curves, _) in zip(figure.axes, panels, strict=True):
        ends = [line.get_ydata()[-1] for line in ax.get_lines() if line.get_label() in names]
        np.testing.assert_allclose(ends, curves[names].iloc[-1])
    assert_apart_and_inside(figure, [ax.title for ax in figure.axes])
