"""Coverage and size of the analysis's inference, by simulation, where v0.2's failed.

Each simulated study is what the analysis sees at study scale: 3 models × N images,
1-3 target ranks per image (unequal clusters), scores that are skewed (gamma draws,
skewness 1.5) and bounded (clipped to [0, 0.4]), with an image effect shared across the
models and targets of the image — both one common to every method and one per method,
so that a comparison's differences are correlated within an image — drawn with the
synthetic generator's own model (:func:`metacam.analysis.synthetic.draw_shared`,
:func:`~metacam.analysis.synthetic.draw_own`). Every study is analysed by the library's
own functions, vectorised over 1,000 studies (2,000 for the paired comparison) at 10
and at 40 images. A 95% interval's coverage estimate from 1,000 studies has a standard
error of 0.007, so the band 0.93-0.97 is about ±3 standard errors; the size must be at
most 0.07.

The truths are expectations over the same model, computed once from 400,000 images.
Clustering by (model, image), as v0.2 did, is asserted to fail (the test can fail).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metacam.analysis.bootstrap import ClusterBootstrap, cluster_sums, t_interval
from metacam.analysis.cre import contrast_weights, cre_matrix
from metacam.analysis.design import flag_matrix
from metacam.analysis.factorial import fit_scores
from metacam.analysis.paired import image_means, summarise, verdict
from metacam.analysis.synthetic import Variation, draw_own, draw_shared, make_units

MODELS = ("a", "b", "c")
VARIATION = Variation(image_sd=0.06, model_image_sd=0.02, unit_sd=0.02, entry_image_sd=0.04, noise=0.03,
                      skew=1.5, bounds=(0.0, 0.4))
STUDIES = 1000
REPLICATES = 400
EFFECTS = np.array([0.04, 0.0, -0.03])  # three groups, the second a null group
LEVELS = 0.1 + flag_matrix(np.arange(8), 3) @ EFFECTS  # experiment levels before the random parts


def study_units(n_images: int) -> pd.DataFrame:
    """3 models × n images, targets per image cycling 1, 2, 3 (unequal clusters)."""
    return make_units(n_images, MODELS, [1 + i % 3 for i in range(n_images)])


def scores(units: pd.DataFrame, levels: np.ndarray, rng: np.random.Generator, n_studies: int) -> np.ndarray:
    """``(n_studies, n_units, len(levels))`` bounded scores: a shared part plus each entry's own part."""
    shared = draw_shared(units, VARIATION, rng, n_studies)
    return np.stack([VARIATION.bound(level + shared + draw_own(units, VARIATION, rng, n_studies))
                     for level in levels], axis=2)


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    """The expected score of each experiment level, then of level 0.13 (per unit: every unit has the
    same distribution); equal levels share one estimate, so the null group's β is exactly 0."""
    units = make_units(400_000, ("a",))
    levels, inverse = np.unique(np.r_[LEVELS, 0.1 + 0.03], return_inverse=True)
    return scores(units, levels, np.random.default_rng(12345), 1)[0].mean(axis=0)[inverse]


def _paired(n_images: int, difference: float, seed: int, clusters_of: str = "image") -> pd.DataFrame:
    """2,000 comparator-vs-single studies summarised as the analysis does (clusters: images or, as
    in v0.2, (model, image) pairs)."""
    units = study_units(n_images)
    values = scores(units, np.array([0.1 + difference, 0.1]), np.random.default_rng(seed), 2 * STUDIES)
    if clusters_of == "image":
        clusters = units["cluster"].to_numpy()
    else:
        clusters = (units["model_index"] * n_images + units["image_index"]).to_numpy()
    differences = image_means((values[:, :, 0] - values[:, :, 1]).T, clusters, int(clusters.max()) + 1)
    return summarise(differences, power=None)


@pytest.mark.parametrize("n_images", [10, 40])
def test_paired_comparison_size_is_at_most_007(n_images):
    # No true difference (comparator and single exchangeable within each unit).
    table = _paired(n_images, 0.0, seed=n_images)
    rejected = np.array([verdict(1, a, b, p) != "no clear difference"
                         for a, b, p in zip(table["ci_low"], table["ci_high"], table["p"], strict=True)])
    outside = ~((table["ci_low"] <= 0) & (0 <= table["ci_high"]))
    # Measured: rule 0.036 / 0.038, t interval 0.044 / 0.052, Wilcoxon 0.046 / 0.053 (10 / 40 images).
    assert rejected.mean() <= 0.07 and outside.mean() <= 0.07 and (table["p"] < 0.05).mean() <= 0.07


@pytest.mark.parametrize("n_images", [10, 40])
def test_paired_comparison_interval_covers(n_images, truth):
    table = _paired(n_images, 0.03, seed=100 + n_images)
    expected = truth[-1] - truth[0]  # E[bound(0.13 + ...) − bound(0.1 + ...)]
    covered = (table["ci_low"] <= expected) & (expected <= table["ci_high"])
    # Measured: 0.951 at 10 images, 0.949 at 40.
    assert 0.93 <= covered.mean() <= 0.97, covered.mean()


def test_model_image_clusters_undercover_as_in_v02(truth):
    # The pseudo-replication the issue measured: the same photo under 3 models counted as 3 clusters.
    table = _paired(10, 0.03, seed=110, clusters_of="model image")
    expected = truth[-1] - truth[0]
    covered = (table["ci_low"] <= expected) & (expected <= table["ci_high"])
    assert covered.mean() < 0.90  # measured 0.768 (the issue measured 0.755 in its setting)


def _factorial_studies(n_images: int, seed: int, clusters_of: str = "image"):
    units = study_units(n_images)
    if clusters_of != "image":
        units = units.assign(cluster=units["model_index"] * n_images + units["image_index"])
    values = scores(units, LEVELS, np.random.default_rng(seed), STUDIES)
    return units, values


@pytest.mark.parametrize("n_images", [10, 40])
def test_factorial_effects_cover_and_the_null_group_keeps_its_size(n_images, truth):
    units, values = _factorial_studies(n_images, seed=200 + n_images)
    fit = fit_scores(values, units, list(range(8)), ["g1", "g2", "g3"])
    assert fit.inference == ("CR2" if n_images < 30 else "CR1")
    expected = truth[:8] @ contrast_weights(flag_matrix(np.arange(8), 3))  # β of the bounded model
    assert expected[1] == pytest.approx(0.0, abs=1e-12)  # the null group is null after clipping too
    offset = fit.design.offset
    low, high = fit.ci_low[:, offset:], fit.ci_high[:, offset:]
    coverage = ((low <= expected) & (expected <= high)).mean(axis=0)
    size = (fit.p_value[:, offset + 1] < 0.05).mean()
    # Measured: coverage 0.942-0.948 at 10 images (CR2, Bell-McCaffrey df 7.4 with these unequal
    # clusters, against C − 1 = 9), 0.944-0.954 at 40 (CR1); size of the null group 0.056 / 0.053.
    assert ((0.93 <= coverage) & (coverage <= 0.97)).all(), coverage
    assert size <= 0.07, size


def test_factorial_with_model_image_clusters_undercovers():
    units, values = _factorial_studies(10, seed=210, clusters_of="model image")
    fit = fit_scores(values, units, list(range(8)), ["g1", "g2", "g3"])
    offset = fit.design.offset
    size = (fit.p_value[:, offset + 1] < 0.05).mean()
    assert size > 0.10  # measured 0.25: v0.2's clusters over-reject


@pytest.mark.parametrize("n_images", [10, 40])
def test_cre_and_experiment_intervals_cover(n_images, truth):
    units, values = _factorial_studies(n_images, seed=300 + n_images)
    flags = flag_matrix(np.arange(8), 3)
    expected_means, expected_cre = truth[:8], cre_matrix(truth[:8], flags)
    clusters = units["cluster"].to_numpy()
    covered_means, covered_cre = np.zeros(8), np.zeros(3)
    for start in range(0, STUDIES, 100):  # a bootstrap plan per 100 studies
        chunk = values[start:start + 100]
        boot = ClusterBootstrap.draw(n_images, REPLICATES, (n_images, start))
        sums, counts = cluster_sums(chunk.transpose(1, 0, 2).reshape(len(units), -1), clusters, n_images)
        means = boot.ratio(sums, counts)
        low, high = means.interval()
        covered_means += ((low <= np.tile(expected_means, len(chunk))) & (np.tile(expected_means, len(chunk)) <= high)
                          ).reshape(-1, 8).sum(axis=0)
        point = means.point.reshape(-1, 8)
        replicates = means.replicates.reshape(REPLICATES, -1, 8)
        cre_point, cre_replicates = cre_matrix(point, flags), cre_matrix(replicates, flags)
        for s in range(len(chunk)):
            a, b = t_interval(cre_point[s], cre_replicates[:, s], n_images)
            covered_cre += (a <= expected_cre) & (expected_cre <= b)
    means_coverage, cre_coverage = covered_means / STUDIES, covered_cre / STUDIES
    # Measured: CRE 0.937-0.964 at 10 images, 0.955-0.959 at 40 (r_e = s_e − median: the image effect
    # common to all experiments cancels, as in every comparison).
    assert ((0.93 <= cre_coverage) & (cre_coverage <= 0.97)).all(), cre_coverage
    # A single experiment's mean keeps the skewed image effect, and a symmetric interval around the mean
    # of 10 skewed, clipped image effects undercovers whatever its width: measured 0.910-0.938 at 10
    # images (about 0.94 with normal, unbounded draws) and 0.929-0.954 at 40 (mean 0.938). These are
    # descriptive intervals (tables of means); no verdict rests on them.
    assert ((0.90 <= means_coverage) & (means_coverage <= 0.97)).all(), means_coverage
    if n_images >= 40:
        assert means_coverage.mean() >= 0.935, means_coverage
