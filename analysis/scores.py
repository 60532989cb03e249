"""Which number the analysis calls "the score" of an (experiment or method, unit).

``--score adaptive`` (default) takes the row marked ``is_best_k`` (the map at
k*), ``--score plain`` the row with k = 100 (the unthresholded map), ``--score
k=K`` the row with k = K (in-sample only: chosen-map scores exist only at k* and
k = 100).

Held-out by default. k* (and the best combination) are chosen on in-sample
ROAD, so in-sample ROAD at k* is the maximum of noisy estimates and biased
upward; every comparison therefore reads a metric's ``chosen_column`` (for ROAD
the held-out re-scoring ``road_heldout_*``: an independent draw) unless
``--in-sample`` asks for its ``insample_column``. A metric with one version
(deletion/insertion AUC, sparseness, complexity, plug-ins) reads it either way.

``--metric NAME``: any metric the dataset records (CONTRACTS §1: ROAD
``combined`` by default, ``morf``, ``lerf``, ``deletion``, ``insertion``,
``sparseness``, ``complexity``, plug-in columns). ``ScoreSpec.sign`` carries its
direction to every ranking and comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from metacam.analysis.dataset import K_TOLERANCE, Dataset
from metacam.analysis.design import CONTROL, METACAM, SINGLE
from metacam.analysis.errors import AnalysisError
from metacam.analysis.metrics import BUILTIN, Metric

PLAIN_K = 100.0
MODES: tuple[str, ...] = ("adaptive", "plain")


@dataclass(frozen=True)
class ScoreSpec:
    """A score choice.

    mode: ``adaptive`` (k*), ``plain`` (k = 100) or ``k`` (then ``k`` is set).
    definition: the metric (as the dataset records it).
    heldout: read the chosen-map (held-out) column; no effect on a one-version metric.
    """

    mode: str = "adaptive"
    k: float | None = None
    definition: Metric = BUILTIN[0]
    heldout: bool = True

    @property
    def metric(self) -> str:
        """The metric's key (``--metric``)."""
        return self.definition.key

    @property
    def column(self) -> str:
        return self.definition.column(self.heldout)

    @property
    def sign(self) -> int:
        """+1 when a higher score is better, -1 when lower is (MoRF, deletion)."""
        return self.definition.sign

    @property
    def source(self) -> str:
        """``held-out`` or ``in-sample`` for a metric with two draws (ROAD); empty otherwise."""
        if not self.definition.two_draws:
            return ""
        return "held-out" if self.heldout else "in-sample"

    @property
    def short(self) -> str:
        """A compact name for axis labels and headings, e.g. ``held-out adaptive ROAD combined``."""
        if self.mode in MODES:
            return " ".join(p for p in (self.source, self.mode, self.definition.label) if p)
        return " ".join(p for p in (self.source, self.definition.label, f"at k = {self.k:g}") if p)

    @property
    def label(self) -> str:
        """The short name and where the score is read."""
        where = {"adaptive": " (at each unit's k*)", "plain": " (k = 100, the unthresholded map)"}
        return self.short + where.get(self.mode, "")

    @property
    def direction(self) -> str:
        return "higher is better" if self.sign > 0 else "lower is better"

    def with_mode(self, mode: str) -> ScoreSpec:
        return replace(self, mode=mode, k=PLAIN_K if mode == "plain" else None)

    def with_metric(self, metric: Metric) -> ScoreSpec:
        return replace(self, definition=metric)

    def in_sample(self) -> ScoreSpec:
        return replace(self, heldout=False)

    def held_out(self) -> ScoreSpec:
        return replace(self, heldout=True)


def parse_score(text: str, metric: Metric = BUILTIN[0], *, heldout: bool = True) -> ScoreSpec:
    """Parse ``adaptive``, ``plain`` or ``k=K`` (K a percentage in (0, 100]) for ``metric``."""
    text = text.strip().lower()
    if text in MODES:
        return ScoreSpec(mode=text, k=PLAIN_K if text == "plain" else None, definition=metric, heldout=heldout)
    if text.startswith("k="):
        try:
            k = float(text[2:])
        except ValueError:
            k = math.nan
        if not 0 < k <= 100:
            raise AnalysisError(f"--score '{text}': K must be a percentage in (0, 100], e.g. k=25")
        if abs(k - PLAIN_K) <= K_TOLERANCE:
            return ScoreSpec(mode="plain", k=PLAIN_K, definition=metric, heldout=heldout)
        if heldout or metric.insample_column is None:
            raise AnalysisError(f"--score '{text}': held-out ROAD and the chosen-map metrics (deletion/insertion "
                                "AUC, ...) exist only at k* and k = 100; use --score adaptive or plain, or add "
                                "--in-sample for in-sample ROAD at k=K")
        return ScoreSpec(mode="k", k=k, definition=metric, heldout=False)
    raise AnalysisError(f"--score '{text}' is unknown; use adaptive, plain or k=K (e.g. k=25)")


@dataclass(frozen=True)
class Scores:
    """One score per (experiment, unit), per (single method, unit) and per (control, unit).

    Attributes:
        spec: how the score was chosen.
        metacam: columns ``combo_id`` (int64), ``unit`` (int64), ``score`` (float64),
            ``at_k_star`` (bool: the row is the unit's k*, e.g. a plain row where k* = 100).
        singles: columns ``method`` (str), ``unit``, ``score``, ``at_k_star``.
        controls: columns ``method`` (str), ``unit``, ``score``, ``at_k_star``.
        n_null: ok rows dropped because the chosen column was null/NaN.
    """

    spec: ScoreSpec
    metacam: pd.DataFrame
    singles: pd.DataFrame
    controls: pd.DataFrame
    n_null: int
    _wide: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def empty(self) -> bool:
        return self.metacam.empty and self.singles.empty and self.controls.empty

    def frame_of(self, kind: str) -> tuple[pd.DataFrame, str]:
        """The long frame of one kind and its key column: metacam (combo_id), single or control (method)."""
        return {METACAM: (self.metacam, "combo_id"), SINGLE: (self.singles, "method"),
                CONTROL: (self.controls, "method")}[kind]

    def matrix(self, kind: str, keys: list, n_units: int, value: str = "score") -> np.ndarray:
        """``value`` of the entries ``keys`` of one kind as ``(n_units, len(keys))`` floats, NaN where absent.

        The matrix of every entry of the kind is built once and cached.
        """
        if (kind, value, n_units) not in self._wide:
            frame, column = self.frame_of(kind)
            present, full = wide(frame, column, n_units, value=value)
            self._wide[(kind, value, n_units)] = ({k: i for i, k in enumerate(present)}, full)
        position, full = self._wide[(kind, value, n_units)]
        out = np.full((n_units, len(keys)), np.nan)
        found = [(j, position[k]) for j, k in enumerate(keys) if k in position]
        if found:
            out[:, [j for j, _ in found]] = full[:, [i for _, i in found]]
        return out

    def column(self, kind: str, key: int | str, n_units: int, value: str = "score") -> np.ndarray:
        """One entry's ``value`` as a ``(n_units,)`` float array, NaN where absent."""
        return self.matrix(kind, [key], n_units, value)[:, 0]


def select_scores(dataset: Dataset, spec: ScoreSpec) -> Scores:
    """Pick the score rows of ``spec`` from the dataset.

    Raises:
        AnalysisError: the chosen k is absent (the message lists the k values
            present), no ``is_best_k`` rows, or the same score appears twice.
    """
    rows = dataset.rows
    if spec.mode == "adaptive":
        chosen = rows["is_best_k"].fillna(False).to_numpy(dtype=bool)
        if not chosen.any():
            raise AnalysisError("no rows are marked is_best_k, so there is no adaptive score; use --score plain")
    else:
        assert spec.k is not None
        present = dataset.k_values
        if not any(abs(k - spec.k) <= K_TOLERANCE for k in present):
            listed = ", ".join(f"{k:g}" for k in present)
            raise AnalysisError(f"no rows with k = {spec.k:g} ({spec.mode} score); k values present: {listed}; "
                                "choose --score k=K with one of them, or --score adaptive")
        chosen = np.abs(rows["k"].to_numpy(dtype=np.float64) - spec.k) <= K_TOLERANCE
    score = rows[spec.column].to_numpy(dtype=np.float64, na_value=np.nan)
    null = chosen & np.isnan(score)
    chosen = chosen & ~null
    kind = _categorical(rows["kind"])
    method = _categorical(rows["method"])
    frames = {}
    for name in (METACAM, SINGLE, CONTROL):
        where = chosen & (kind.codes == kind.categories.get_loc(name) if name in kind.categories else False)
        frame = pd.DataFrame({"unit": rows["unit"].to_numpy()[where], "score": score[where],
                              "at_k_star": rows["is_best_k"].fillna(False).to_numpy(dtype=bool)[where]})
        if name == METACAM:
            frame.insert(0, "combo_id", rows["combo_id"].to_numpy()[where].astype(np.int64))
        else:
            frame.insert(0, "method", method.categories.to_numpy(dtype=object)[method.codes[where]].astype(str))
        frames[name] = frame
    metacam, singles, controls = frames[METACAM], frames[SINGLE], frames[CONTROL]
    for frame, key, what in ((metacam, "combo_id", "MetaCAM experiment"), (singles, "method", "single method"),
                             (controls, "method", "control")):
        duplicated = frame.duplicated([key, "unit"])
        if duplicated.any():
            first = frame.loc[duplicated].iloc[0]
            unit = dataset.units.loc[int(first["unit"])]
            raise AnalysisError(
                f"{int(duplicated.sum())} {spec.mode} scores appear more than once for the same {what} and unit "
                f"(e.g. {key} {first[key]}, model {unit['model']}, image {unit['image_id']}); "
                "the dataset holds some results twice — remove the duplicate files"
            )
    return Scores(spec=spec, metacam=metacam.reset_index(drop=True), singles=singles.reset_index(drop=True),
                  controls=controls.reset_index(drop=True), n_null=int(null.sum()))


def _categorical(column: pd.Series) -> pd.Categorical:
    """The column as a Categorical (it already is when read from Parquet dictionaries)."""
    values = column.array
    return values if isinstance(values, pd.Categorical) else pd.Categorical(column)


def wide(frame: pd.DataFrame, key: str, n_units: int, keys: list | None = None,
         value: str = "score") -> tuple[list, np.ndarray]:
    """Long scores ``(key, unit, value)`` as a ``(n_units, K)`` float matrix, NaN where absent.

    Units are the dataset's codes 0..n_units-1; ``keys`` fixes the columns
    (default: the sorted keys present). Returns (keys, matrix).
    """
    if keys is None:
        keys = sorted(frame[key].unique().tolist())
    position = {k: i for i, k in enumerate(keys)}
    matrix = np.full((n_units, len(keys)), np.nan)
    column = frame[key].map(position)
    inside = column.notna().to_numpy()
    matrix[frame["unit"].to_numpy(dtype=np.int64)[inside], column.to_numpy()[inside].astype(np.int64)] = (
        frame[value].to_numpy(dtype=np.float64)[inside])
    return keys, matrix
