"""Choosing out of sample: the MetaCAM you would pick against the single CAM you would pick.

The paper's practical advice is "use the best MetaCAM"; choosing the best of 2^G − 1
combinations and scoring it on the same images flatters it (the winner's curse).
Here the choice is cross-validated over images:

1. the images (clusters: one photo under every model and target) are split into K
   folds (default 5, a seeded permutation; leave-one-out below 10 images);
2. for each fold, on the *other* folds' images only, the combination with the best
   mean score (images weighted equally, like every comparison) is chosen, and the
   single CAM method the same way (combo 0, the constant no-explanation map, and the
   members of control groups are not candidates);
3. both are scored on the fold's own images, which the choice never saw.

Pooled over the folds, each image has the score of the combination and of the single
chosen without it; the two are compared paired by image
(:func:`metacam.analysis.paired.compare`), with CI, p and power. How often each
combination and single is chosen shows how stable the choice is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from metacam.analysis.design import METACAM, SINGLE
from metacam.analysis.paired import compare, image_means, verdict
from metacam.analysis.scores import Scores
from metacam.analysis.settings import DEFAULT_FOLD_SEED, DEFAULT_FOLDS, LEAVE_ONE_OUT_BELOW
from metacam.groups import GroupSet


def assign_folds(n_images: int, folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_FOLD_SEED) -> np.ndarray:
    """Fold of each image, ``(n_images,)`` in 0..K−1: K near-equal folds of a seeded permutation;
    one image per fold (leave-one-out) below LEAVE_ONE_OUT_BELOW images."""
    if n_images < LEAVE_ONE_OUT_BELOW:
        return np.arange(n_images)
    k = max(2, min(int(folds), n_images))
    order = np.random.default_rng(np.random.SeedSequence(seed)).permutation(n_images)
    fold = np.empty(n_images, dtype=np.int64)
    fold[order] = np.arange(n_images) % k
    return fold


def choose_by_fold(by_image: np.ndarray, fold: np.ndarray, sign: int) -> np.ndarray:
    """For each fold, the column of ``by_image (C, K)`` (per-image mean scores of K candidates, NaN
    where absent) with the best mean over the images *outside* the fold; ties go to the lower
    column, a candidate without training data is never chosen. Returns ``(n_folds,)`` (-1: none)."""
    n_folds = int(fold.max()) + 1 if len(fold) else 0
    picks = np.full(n_folds, -1, dtype=np.int64)
    for f in range(n_folds):
        training = by_image[fold != f]
        counts = (~np.isnan(training)).sum(axis=0)
        with np.errstate(all="ignore"):
            means = np.where(counts > 0, np.nansum(training, axis=0) / np.maximum(counts, 1), np.nan)
        key = np.where(np.isnan(means), -np.inf, sign * means)
        if np.isfinite(key).any():
            picks[f] = int(np.argmax(key))
    return picks


def chosen_per_unit(matrix: np.ndarray, picks: np.ndarray, fold: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Each unit's score of the candidate its image's fold chose: ``(n_units, K) -> (n_units,)``."""
    column = picks[fold[clusters]]
    values = np.full(len(matrix), np.nan)
    ok = column >= 0
    values[ok] = matrix[np.flatnonzero(ok), column[ok]]
    return values


def stability(picks: np.ndarray, names: Sequence[str]) -> str:
    """``name: n/K; other: m/K`` over the folds, most often chosen first."""
    counts = Counter(names[p] for p in picks if p >= 0)
    return "; ".join(f"{name}: {n}/{len(picks)}" for name, n in counts.most_common())


@dataclass(frozen=True)
class Candidates:
    """The combinations and single CAMs a selection chooses among, and their scores per unit."""

    combos: list[int]
    singles: list[str]
    combo_scores: np.ndarray  # (n_units, len(combos))
    single_scores: np.ndarray  # (n_units, len(singles))

    @classmethod
    def of(cls, scores: Scores, groups: GroupSet, n_units: int, real_singles: Sequence[str]) -> Candidates:
        combos = sorted(int(c) for c in scores.metacam["combo_id"].unique() if int(c) != 0)
        singles = [m for m in sorted(scores.singles["method"].unique()) if m in set(real_singles)]
        return cls(combos, singles, scores.matrix(METACAM, combos, n_units), scores.matrix(SINGLE, singles, n_units))


def cross_validated(scores: Scores, groups: GroupSet, real_singles: Sequence[str], clusters: np.ndarray,
                    n_clusters: int, folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_FOLD_SEED
                    ) -> tuple[dict, pd.DataFrame] | None:
    """The cross-validated comparison of the chosen combination with the chosen single CAM.

    Returns (summary, per fold) or None without candidates of both kinds. ``summary``: metric,
    score, folds, fold_rule, fold_seed, n_units and every column of
    :func:`metacam.analysis.paired.compare` (mine = the chosen combination, theirs = the chosen
    single), verdict, combos_chosen, singles_chosen (stability). Per fold: metric, fold,
    test_images, combo_id, combination, single, and each one's training and test means.
    """
    sign = scores.spec.sign
    candidates = Candidates.of(scores, groups, len(clusters), real_singles)
    if not candidates.combos or not candidates.singles:
        return None
    fold = assign_folds(n_clusters, folds, seed)
    combo_by_image = image_means(candidates.combo_scores, clusters, n_clusters)
    single_by_image = image_means(candidates.single_scores, clusters, n_clusters)
    pick_combo = choose_by_fold(combo_by_image, fold, sign)
    pick_single = choose_by_fold(single_by_image, fold, sign)
    mine = chosen_per_unit(candidates.combo_scores, pick_combo, fold, clusters)
    theirs = chosen_per_unit(candidates.single_scores, pick_single, fold, clusters)
    row = compare(mine, theirs[:, None], ["chosen single CAM"], clusters, n_clusters, sign).iloc[0].to_dict()
    combo_names = [f"combo {c} ({groups.combo_name(c)})" for c in candidates.combos]
    summary = {
        "metric": scores.spec.metric, "score": scores.spec.short, "folds": len(pick_combo),
        "fold_rule": "leave-one-out" if n_clusters < LEAVE_ONE_OUT_BELOW else f"{len(pick_combo)}-fold",
        "fold_seed": seed, **{k: v for k, v in row.items() if k != "opponent"},
        "verdict": verdict(sign, row["ci_low"], row["ci_high"], row["p"]),
        "combos_chosen": stability(pick_combo, combo_names),
        "singles_chosen": stability(pick_single, candidates.singles),
    }
    rows = []
    for f, (c, s) in enumerate(zip(pick_combo, pick_single, strict=True)):
        test, training = fold == f, fold != f
        rows.append({
            "metric": scores.spec.metric, "fold": f, "test_images": int(test.sum()),
            "combo_id": candidates.combos[c] if c >= 0 else pd.NA,
            "combination": groups.combo_name(candidates.combos[c]) if c >= 0 else None,
            "single": candidates.singles[s] if s >= 0 else None,
            "combo_training_mean": _mean(combo_by_image[training, c]) if c >= 0 else np.nan,
            "single_training_mean": _mean(single_by_image[training, s]) if s >= 0 else np.nan,
            "combo_test_mean": _mean(combo_by_image[test, c]) if c >= 0 else np.nan,
            "single_test_mean": _mean(single_by_image[test, s]) if s >= 0 else np.nan,
        })
    return summary, pd.DataFrame(rows)


def _mean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if len(finite) else float("nan")
