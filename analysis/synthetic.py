"""Synthetic results datasets in the full schema of DESIGN §3, with planted effects.

Used by the tests and the benchmark: the adaptive score of every
(experiment, unit) is *exactly* the planted value

    a(u, e) = baseline + unit_u + Σ_g effect_g·on_g(e) [+ interaction·on_g1·on_g2] + noise,

with unit_u ~ N(0, unit_sd²) shared by all experiments of a unit and
noise ~ N(0, noise²) independent per row. Every other k scores strictly less
(so ``is_best_k`` marks a unique argmax); the plain map (k = 100) is a if
k* = 100 and lower otherwise. ``road_lerf − road_morf = 2·road_combined``
as in ROAD. Single CAM methods get their own mean level.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from metacam.groups import DEFAULT_GROUPS, GROUP_KEYS, combo_flags, combo_name
from metacam.schema import GROUP_COLUMNS, RESULTS_SCHEMA

N_COMBOS = 2 ** len(GROUP_KEYS)

DEFAULT_EFFECTS: dict[str, float] = {
    "gradcam": 0.06,
    "gradcampp": 0.04,
    "perturbation": 0.025,
    "eigen": 0.01,
    "fullgrad": -0.015,
    "random": -0.05,
}
"""Planted additive effect of switching each group on (adaptive ROAD combined)."""

DEFAULT_SINGLE_MEANS: dict[str, float] = {
    "gradcam": 0.14,
    "hirescam": 0.13,
    "gradcam_elementwise": 0.12,
    "gradcampp": 0.15,
    "xgradcam": 0.12,
    "layercam": 0.11,
    "scorecam": 0.16,
    "ablationcam": 0.10,
    "eigencam": 0.05,
    "eigengradcam": 0.06,
    "fullgrad": 0.09,
    "randomcam": -0.02,
}
"""Mean adaptive score of each single CAM method (every member of DEFAULT_GROUPS)."""

DEFAULT_KS: tuple[float, ...] = (25.0, 50.0, 75.0, 100.0)


def _units(n_units: int, models: Sequence[str]) -> pd.DataFrame:
    """Unit table: unit i is image i // len(models) under model i % len(models)."""
    index = np.arange(n_units)
    image = index // len(models)
    ids = [f"image_{i:05d}.jpg-{hashlib.sha1(str(i).encode()).hexdigest()[:8]}" for i in image]
    return pd.DataFrame(
        {
            "model": np.asarray(models, dtype=object)[index % len(models)],
            "image_id": ids,
            "target_class": ((image * 37) % 1000).astype(np.int32),
        }
    )


def _experiment_table(
    *,
    kind: str,
    combo_id: int | None,
    method: str,
    flags: Mapping[str, bool],
    level: np.ndarray,
    units: pd.DataFrame,
    ks: Sequence[float],
    noise: float,
    plain_gap: float,
    rng: np.random.Generator,
    sweep_id: str,
    road_mode: str,
    seed: int,
) -> pa.Table:
    """All rows (units × ks) of one experiment or single method, as an Arrow table."""
    n, n_k = len(units), len(ks)
    adaptive = level + noise * rng.standard_normal(n)
    k_star = rng.integers(0, n_k, n)
    # Scores fall off with distance from k*; the strictly positive jitter keeps the argmax unique.
    position = np.arange(n_k)
    gap = plain_gap * np.abs(position[None, :] - k_star[:, None]) / max(n_k - 1, 1)
    gap = gap + rng.uniform(2e-3, 6e-3, (n, n_k))
    gap[np.arange(n), k_star] = 0.0
    combined = (adaptive[:, None] - gap).ravel()
    offset = rng.uniform(0.4, 0.6, n * n_k)  # LeRF/MoRF around a plausible probability
    rows = n * n_k
    repeat = np.repeat
    columns = {
        "sweep_id": pa.array([sweep_id] * rows, pa.string()),
        "kind": pa.array([kind] * rows, pa.string()),
        "combo_id": pa.array([combo_id] * rows, pa.int16()),
        "method": pa.array([method] * rows, pa.string()),
        **{
            column: pa.array(np.full(rows, flags[key]), pa.bool_())
            for column, key in zip(GROUP_COLUMNS, GROUP_KEYS, strict=True)
        },
        "model": pa.array(repeat(units["model"].to_numpy(dtype=object), n_k), pa.string()),
        "target_layer": pa.array(repeat(np.where(units["model"] == "resnet18", "layer4.1", "bn2").astype(object), n_k), pa.string()),
        "image_id": pa.array(repeat(units["image_id"].to_numpy(dtype=object), n_k), pa.string()),
        "image_path": pa.array(repeat(units["image_id"].to_numpy(dtype=object), n_k), pa.string()),
        "label": pa.nulls(rows, pa.int32()),
        "target_class": pa.array(repeat(units["target_class"].to_numpy(), n_k), pa.int32()),
        "target_prob": pa.array(repeat(rng.uniform(0.3, 0.99, n), n_k).astype(np.float32), pa.float32()),
        "k": pa.array(np.tile(np.asarray(ks, dtype=np.float32), n), pa.float32()),
        "road_combined": pa.array(combined.astype(np.float32), pa.float32()),
        "road_morf": pa.array((offset - combined).astype(np.float32), pa.float32()),
        "road_lerf": pa.array((offset + combined).astype(np.float32), pa.float32()),
        "is_best_k": pa.array((position[None, :] == k_star[:, None]).ravel(), pa.bool_()),
        "road_mode": pa.array([road_mode] * rows, pa.string()),
        "percentiles": pa.array(["20,40,60,80"] * rows, pa.string()),
        "seed": pa.array(np.full(rows, seed, dtype=np.int64), pa.int64()),
        "device": pa.array(["cpu"] * rows, pa.string()),
        "metacam_version": pa.array(["synthetic"] * rows, pa.string()),
        "status": pa.array(["ok"] * rows, pa.string()),
    }
    return pa.table(columns, schema=RESULTS_SCHEMA)


def iter_synthetic(
    n_units: int = 50,
    *,
    effects: Mapping[str, float] | None = None,
    interaction: tuple[str, str, float] | None = None,
    baseline: float = 0.1,
    unit_sd: float = 0.05,
    noise: float = 0.02,
    seed: int = 0,
    missing_combos: Iterable[int] = (),
    ks: Sequence[float] = DEFAULT_KS,
    models: Sequence[str] = ("resnet18", "efficientnet_lite0"),
    singles: Mapping[str, float] | None = None,
    plain_gap: float = 0.05,
    sweep_id: str = "synthetic",
    road_mode: str = "default",
) -> Iterator[tuple[str, pa.Table]]:
    """Yield ``(file stem, table)`` per experiment, then per single method.

    Args:
        n_units: number of (model, image, target) units; spread over ``models``.
        effects: planted additive effect per group key (missing keys: 0);
            default :data:`DEFAULT_EFFECTS`.
        interaction: ``(group_a, group_b, size)`` added when both groups are on.
        baseline: score of combo 0 before unit effects and noise.
        unit_sd: standard deviation of the per-unit intercept.
        noise: standard deviation of the per-row noise.
        seed: seeds everything; the same arguments give the same dataset.
        missing_combos: combo_ids to leave out (a partial sweep).
        ks: threshold grid; include 100 for plain scores.
        models: model names the units are spread over.
        singles: mean level per single CAM method (``{}`` for none); default
            :data:`DEFAULT_SINGLE_MEANS`.
        plain_gap: how much lower than k* the farthest k scores, on average.
    """
    effects = dict(DEFAULT_EFFECTS if effects is None else effects)
    unknown = set(effects) - set(GROUP_KEYS)
    if interaction is not None:
        unknown |= set(interaction[:2]) - set(GROUP_KEYS)
    if unknown:
        raise ValueError(f"unknown group keys {sorted(unknown)}; known: {list(GROUP_KEYS)}")
    singles = dict(DEFAULT_SINGLE_MEANS if singles is None else singles)
    units = _units(n_units, models)
    root = np.random.SeedSequence(seed)
    unit_effect = np.random.default_rng(root.spawn(1)[0]).normal(0.0, unit_sd, n_units)
    # One child stream per experiment and method, so leaving some out changes nothing else.
    streams = root.spawn(1 + N_COMBOS + len(DEFAULT_SINGLE_MEANS))[1:]
    common = dict(units=units, ks=ks, noise=noise, plain_gap=plain_gap, sweep_id=sweep_id,
                  road_mode=road_mode, seed=seed)
    missing = set(missing_combos)
    for combo_id in range(N_COMBOS):
        if combo_id in missing:
            continue
        flags = combo_flags(combo_id)
        level = baseline + sum(effects.get(key, 0.0) for key in GROUP_KEYS if flags[key])
        if interaction is not None and flags[interaction[0]] and flags[interaction[1]]:
            level += interaction[2]
        table = _experiment_table(kind="metacam", combo_id=combo_id, method=combo_name(combo_id),
                                  flags=flags, level=level + unit_effect,
                                  rng=np.random.default_rng(streams[combo_id]), **common)
        yield f"metacam-combo{combo_id:02d}", table
    members = [m for members in DEFAULT_GROUPS.values() for m in members]
    for index, method in enumerate(members):
        if method not in singles:
            continue
        flags = {key: method in DEFAULT_GROUPS[key] for key in GROUP_KEYS}
        table = _experiment_table(kind="single", combo_id=None, method=method, flags=flags,
                                  level=singles[method] + unit_effect,
                                  rng=np.random.default_rng(streams[N_COMBOS + index]), **common)
        yield f"single-{method}", table


def synthetic_results(n_units: int = 50, **kwargs: object) -> pd.DataFrame:
    """The whole synthetic dataset as one DataFrame; arguments as :func:`iter_synthetic`.

    Integer columns that may hold nulls (``combo_id``, ``label``) are pandas
    nullable integers, so ``combo_id`` stays an integer beside the singles' nulls.
    """
    tables = [table for _, table in iter_synthetic(n_units, **kwargs)]  # type: ignore[arg-type]
    nullable = {pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype()}
    return pa.concat_tables(tables).to_pandas(types_mapper=nullable.get)


def _write_table(table: pa.Table, path: Path) -> Path:
    """Write whole or not at all: a temporary name in the same folder, then an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temporary)
    os.replace(temporary, path)
    return path


def write_results(frame: pd.DataFrame, root: str | Path, *, schema: pa.Schema | None = RESULTS_SCHEMA) -> list[Path]:
    """Write a results DataFrame as one Parquet file per experiment / single method.

    Files are named ``metacam-comboNN.parquet`` and ``single-METHOD.parquet``
    under ``root``. ``schema=None`` keeps the frame's own columns and types
    (to write deliberately malformed datasets in tests).
    """
    root = Path(root)
    paths = []
    stems = np.where(
        frame["kind"].astype(str) == "metacam",
        "metacam-combo" + frame["combo_id"].astype("Int64").astype(str).str.zfill(2),
        frame["kind"].astype(str) + "-" + frame["method"].astype(str),
    )
    for stem, part in frame.groupby(stems, sort=True):
        table = pa.Table.from_pandas(part.reset_index(drop=True), schema=schema, preserve_index=False)
        paths.append(_write_table(table, root / f"{stem}.parquet"))
    return paths


def write_synthetic(root: str | Path, n_units: int = 50, **kwargs: object) -> list[Path]:
    """Generate and write a synthetic dataset one experiment at a time (bounded memory).

    Arguments as :func:`iter_synthetic`; returns the files written.
    """
    root = Path(root)
    return [_write_table(table, root / f"{stem}.parquet")
            for stem, table in iter_synthetic(n_units, **kwargs)]  # type: ignore[arg-type]
