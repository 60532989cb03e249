"""The paper's comparison, reproduced and decomposed.

The paper scored MetaCAM *with adaptive thresholding* against each single CAM *as it is*
(the plain map, k = 100), on the draw that chose k* (in-sample). For each single CAM S
and the comparator MC, per unit (IS = in-sample, HO = held-out; a = adaptive at k*,
p = plain at k = 100):

    paper gap    = IS(MC, a) − IS(S, p)
                 = optimism + thresholding + ensembling, exactly, with
    optimism     = [IS(MC, a) − HO(MC, a)] − [IS(S, p) − HO(S, p)]   (in-sample − held-out)
    thresholding = HO(S, a) − HO(S, p)        (what adaptive thresholding is worth to the single)
    ensembling   = HO(MC, a) − HO(S, a)       (MetaCAM − the single, like for like, held-out:
                                               the headline's comparison)

Each component is averaged per image first and gets its 95% t interval over images
(:func:`metacam.analysis.paired.summarise`), like every comparison. ``carried_by`` names
the component with the largest favourable mean among those whose interval excludes 0 on
the favourable side ("none" when no component's does): the part of the paper's gap that
survives held-out, like-for-like scoring is the ensembling term alone. A metric recorded
with one draw (deletion/insertion AUC, ...) has no in-sample version: its optimism is 0
by construction and shown as such.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from metacam.analysis.design import METACAM, SINGLE
from metacam.analysis.paired import image_means, summarise
from metacam.analysis.scores import Scores
from metacam.groups import GroupSet

COMPONENTS: tuple[str, ...] = ("optimism", "thresholding", "ensembling")


def paper_comparison(scores: dict[tuple[str, bool], Scores], groups: GroupSet, singles: list[str],
                     clusters: np.ndarray, n_clusters: int) -> pd.DataFrame | None:
    """The decomposition of the paper's gap for each single CAM.

    Args:
        scores: ``{(mode, heldout): Scores}`` for mode ``adaptive``/``plain`` and heldout
            True/False, of one metric (for a one-draw metric both draws are the same Scores).
        singles: the single CAM methods to compare with (control members excluded).

    Returns:
        One row per single: metric, single, n_clusters, n_units, then for ``paper`` and each of
        :data:`COMPONENTS` its mean, ci_low, ci_high (``paper_gap``, ``paper_ci_low``, ...), and
        carried_by. None without the comparator or singles.
    """
    if not singles:
        return None
    n_units = len(clusters)
    spec = scores[("adaptive", True)].spec
    sign = spec.sign
    mc = {key: s.column(METACAM, groups.comparator, n_units) for key, s in scores.items()}
    single = {key: s.matrix(SINGLE, singles, n_units) for key, s in scores.items()}
    if np.isnan(mc[("adaptive", True)]).all():
        return None
    parts = {
        "paper": mc[("adaptive", False)][:, None] - single[("plain", False)],
        "optimism": (mc[("adaptive", False)] - mc[("adaptive", True)])[:, None]
        - (single[("plain", False)] - single[("plain", True)]),
        "thresholding": single[("adaptive", True)] - single[("plain", True)],
        "ensembling": mc[("adaptive", True)][:, None] - single[("adaptive", True)],
    }
    common = np.logical_and.reduce([~np.isnan(v) for v in parts.values()])
    table = pd.DataFrame({"metric": spec.metric, "score": spec.definition.label, "single": singles,
                          "n_units": common.sum(axis=0)})
    for name, values in parts.items():
        summary = summarise(image_means(np.where(common, values, np.nan), clusters, n_clusters), sign, power=None)
        if name == "paper":
            table["n_clusters"] = summary["n_clusters"].to_numpy()
        stem = "paper_gap" if name == "paper" else name
        table[stem] = summary["mean_difference"].to_numpy()
        table[f"{name}_ci_low"] = summary["ci_low"].to_numpy()
        table[f"{name}_ci_high"] = summary["ci_high"].to_numpy()
    table["carried_by"] = [_carried_by(row, sign) for _, row in table.iterrows()]
    return table


def _carried_by(row: pd.Series, sign: int) -> str:
    """The component with the largest favourable mean among those whose CI is favourable."""
    favourable = {}
    for name in COMPONENTS:
        low, high = sorted((sign * row[f"{name}_ci_low"], sign * row[f"{name}_ci_high"]))
        if np.isfinite(low) and low > 0:
            favourable[name] = sign * row[name]
    return max(favourable, key=lambda k: favourable[k]) if favourable else "none"
