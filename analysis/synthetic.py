"""Synthetic results datasets in the schema of DESIGN §3, with planted effects, for any G.

Used by the tests and the benchmark. Units are models × images × target ranks;
a cluster is one image under one model. The in-sample adaptive score of every
(entry, unit) — an entry is a combination, a single method or a control — is
exactly the planted value

    a = level(entry) + model_offset + cluster_u + unit_u + rank_offset + noise,

with level(combo) = baseline + Σ_g effect_g·on_g [+ interaction], cluster_u ~
N(0, cluster_sd²) per (model, image), unit_u ~ N(0, unit_sd²) per target and
noise ~ N(0, noise²) per row. Every other k scores strictly less (so
``is_best_k`` marks a unique argmax); the plain map (k = 100) is a if k* = 100
and lower otherwise. ``road_lerf − road_morf = 2·road_combined``.

Held-out columns are filled on the k* and k = 100 rows only: on the k* row
held-out = a − optimism(entry) (+ N(0, heldout_noise²)), on a k = 100 row that
is not k* held-out = in-sample (+ the same noise). So the analysis's
"optimism" of an entry is exactly its planted optimism when heldout_noise = 0.
Deletion and insertion AUC, on the same rows, fall and rise with the held-out
score: deletion = 0.35 − 0.5·h, insertion = 0.45 + 0.5·h (each + N(0, auc_noise²)).

Every file carries the group definition and provenance as metadata (unless
``metadata=False``).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from metacam.analysis.dataset import DEFAULT_TIES
from metacam.analysis.design import group_names_from_columns
from metacam.groups import GroupSet
from metacam.schema import CONTROL_METHODS, file_metadata, results_schema

DEFAULT_KS: tuple[float, ...] = (25.0, 50.0, 75.0, 100.0)
DEFAULT_MODELS: tuple[str, ...] = ("model_a", "model_b")
OPTIONAL_PROVENANCE: tuple[str, ...] = ("road_ties", "percentiles", "heldout_percentiles", "noise", "torch_version")
_SIZES = (3, 3, 2, 2, 1, 1)  # members per group for the first six groups, then one each


def make_groups(n_groups: int = 6, *, control_last: bool = True, sizes: Sequence[int] | None = None) -> GroupSet:
    """A synthetic group definition: ``group1 .. groupG`` with members ``groupI_camJ``.

    control_last: the last group is a control (member ``groupG_random``), so the
        comparator is every other group (for G >= 2).
    """
    sizes = list(sizes) if sizes is not None else [(_SIZES[i] if i < len(_SIZES) else 1) for i in range(n_groups)]
    mapping: dict[str, list[str]] = {}
    for i in range(n_groups):
        name = f"group{i + 1}"
        control = control_last and n_groups > 1 and i == n_groups - 1
        mapping[name] = [f"{name}_random"] if control else [f"{name}_cam{j + 1}" for j in range(sizes[i])]
    return GroupSet.from_mapping(mapping, is_control=lambda member: member.endswith("_random"))


def default_effects(groups: GroupSet) -> dict[str, float]:
    """Planted effects: from +0.06 down to +0.01 over the real groups, −0.05 for controls."""
    real = [n for n, c in zip(groups.names, groups.controls, strict=True) if not c]
    steps = np.linspace(0.06, 0.01, len(real)) if len(real) > 1 else np.array([0.06])
    effects = dict(zip(real, steps.tolist(), strict=True))
    return {n: effects.get(n, -0.05) for n in groups.names}


def default_singles(groups: GroupSet, effects: Mapping[str, float], baseline: float) -> dict[str, float]:
    """Planted level of each member alone: its group's effect plus a little, falling with position
    (so with two or more helpful groups the comparator beats every member)."""
    return {member: baseline + effects.get(name, 0.0) + 0.005 - 0.01 * j
            for name, members in zip(groups.names, groups.members, strict=True) for j, member in enumerate(members)}


DEFAULT_CONTROLS: dict[str, float] = dict(zip(CONTROL_METHODS, (0.0, 0.005), strict=True))


def provenance_record(ties: str, ks: Sequence[float], seed: int) -> dict:
    return {"ties": ties, "percentiles": [20, 40, 60, 80], "heldout_percentiles": [10, 30, 50, 70, 90],
            "noise": 0.01, "ks": list(ks), "seed": seed, "torch": "synthetic", "device": "cpu",
            "metacam": "synthetic"}


def _units(n_images: int, models: Sequence[str], n_targets: int) -> pd.DataFrame:
    """Unit table in (model, image, target rank) order, with the cluster index (model, image)."""
    model = np.repeat(np.arange(len(models)), n_images * n_targets)
    image = np.tile(np.repeat(np.arange(n_images), n_targets), len(models))
    rank = np.tile(np.arange(1, n_targets + 1), len(models) * n_images)
    ids = np.array([f"image_{i:05d}.jpg-{hashlib.sha1(str(i).encode()).hexdigest()[:8]}" for i in range(n_images)],
                   dtype=object)
    return pd.DataFrame({
        "model": np.asarray(models, dtype=object)[model],
        "model_index": model,
        "image_id": ids[image],
        "target_class": ((image * 37 + rank * 101) % 1000).astype(np.int32),
        "target_rank": rank.astype(np.int16),
        "cluster": model * n_images + image,
    })


def _entry_table(*, kind: str, combo_id: int | None, method: str, flags: Sequence[bool], level: np.ndarray,
                 units: pd.DataFrame, ks: Sequence[float], noise: float, optimism: float, heldout_noise: float,
                 auc_noise: float,
                 plain_gap: float, rng: np.random.Generator, sweep_id: str, ties: str, seed: int,
                 schema: pa.Schema, provenance_columns: bool) -> pa.Table:
    """All rows (units × ks) of one combination, single method or control, as an Arrow table."""
    n, n_k = len(units), len(ks)
    ks_array = np.asarray(ks, dtype=np.float64)
    adaptive = level + noise * rng.standard_normal(n)
    k_star = rng.integers(0, n_k, n)
    # Scores fall off with distance from k*; the strictly positive jitter keeps the argmax unique.
    position = np.arange(n_k)
    gap = plain_gap * np.abs(position[None, :] - k_star[:, None]) / max(n_k - 1, 1)
    gap = gap + rng.uniform(2e-3, 6e-3, (n, n_k))
    gap[np.arange(n), k_star] = 0.0
    combined = adaptive[:, None] - gap
    best = position[None, :] == k_star[:, None]
    plain = np.isclose(ks_array, 100.0)[None, :].repeat(n, 0)
    scored = best | plain
    heldout = np.where(best, combined - optimism, combined) + heldout_noise * rng.standard_normal((n, n_k))
    heldout = np.where(scored, heldout, np.nan)
    offset = rng.uniform(0.4, 0.6, (n, n_k))  # LeRF/MoRF around a plausible probability
    offset_heldout = rng.uniform(0.4, 0.6, (n, n_k))
    rows = n * n_k

    def f32(values: np.ndarray) -> pa.Array:
        return pa.array(values.ravel().astype(np.float32), pa.float32(), mask=np.isnan(values.ravel()))

    def repeat(column: str) -> np.ndarray:
        return np.repeat(units[column].to_numpy(), n_k)

    columns = {
        "sweep_id": pa.array([sweep_id] * rows, pa.string()),
        "kind": pa.array([kind] * rows, pa.string()),
        "combo_id": pa.array([combo_id] * rows, pa.int16()),
        "method": pa.array([method] * rows, pa.string()),
        **{f"g_{name}": pa.array(np.full(rows, flag), pa.bool_())
           for name, flag in zip(group_names_from_columns(schema.names), flags, strict=True)},
        "model": pa.array(repeat("model").astype(object), pa.string()),
        "target_layer": pa.array(["layer4"] * rows, pa.string()),
        "image_id": pa.array(repeat("image_id").astype(object), pa.string()),
        "image_path": pa.array(repeat("image_id").astype(object), pa.string()),
        "label": pa.nulls(rows, pa.int32()),
        "target_class": pa.array(repeat("target_class"), pa.int32()),
        "target_rank": pa.array(repeat("target_rank"), pa.int16()),
        "target_prob": pa.array(np.repeat(0.9 / units["target_rank"].to_numpy(), n_k).astype(np.float32)),
        "k": pa.array(np.tile(ks_array.astype(np.float32), n), pa.float32()),
        "road_combined": f32(combined),
        "road_morf": f32(offset - combined),
        "road_lerf": f32(offset + combined),
        "road_heldout_combined": f32(heldout),
        "road_heldout_morf": f32(offset_heldout - heldout),
        "road_heldout_lerf": f32(offset_heldout + heldout),
        "deletion_auc": f32(0.35 - 0.5 * heldout + auc_noise * rng.standard_normal((n, n_k))),
        "insertion_auc": f32(0.45 + 0.5 * heldout + auc_noise * rng.standard_normal((n, n_k))),
        "is_best_k": pa.array(best.ravel(), pa.bool_()),
        "road_ties": pa.array([ties] * rows, pa.string()),
        "percentiles": pa.array(["20,40,60,80"] * rows, pa.string()),
        "heldout_percentiles": pa.array(["10,30,50,70,90"] * rows, pa.string()),
        "noise": pa.array(np.full(rows, 0.01, dtype=np.float32)),
        "seed": pa.array(np.full(rows, seed, dtype=np.int64)),
        "device": pa.array(["cpu"] * rows, pa.string()),
        "torch_version": pa.array(["synthetic"] * rows, pa.string()),
        "metacam_version": pa.array(["synthetic"] * rows, pa.string()),
        "status": pa.array(["ok"] * rows, pa.string()),
    }
    if not provenance_columns:
        for column in OPTIONAL_PROVENANCE:
            columns.pop(column)
    return pa.table(columns, schema=schema)


def _lookup(values: Mapping[str, float] | float, key: str) -> float:
    return float(values) if isinstance(values, (int, float)) else float(values.get(key, 0.0))


def iter_synthetic(
    n_images: int = 20,
    *,
    groups: GroupSet | None = None,
    models: Sequence[str] = DEFAULT_MODELS,
    n_targets: int = 1,
    effects: Mapping[str, float] | None = None,
    interaction: tuple[str, str, float] | None = None,
    baseline: float = 0.1,
    model_step: float = 0.02,
    rank_step: float = -0.01,
    cluster_sd: float = 0.05,
    unit_sd: float = 0.02,
    noise: float = 0.02,
    optimism: Mapping[str, float] | float = 0.0,
    heldout_noise: float = 0.0,
    auc_noise: float = 0.005,
    singles: Mapping[str, float] | None = None,
    controls: Mapping[str, float] | None = None,
    ks: Sequence[float] = DEFAULT_KS,
    missing_combos: Iterable[int] = (),
    plain_gap: float = 0.05,
    seed: int = 0,
    sweep_id: str = "synthetic",
    ties: str = DEFAULT_TIES,
    metadata: bool = True,
    provenance_columns: bool = True,
) -> Iterator[tuple[str, pa.Table]]:
    """Yield ``(file stem, table)`` per combination, then per single method, then per control.

    Args:
        n_images: images per model; units = models × images × n_targets.
        groups: the group definition (default :func:`make_groups` ``(6)``).
        models: model names; model i adds ``i · model_step`` to every score.
        n_targets: target ranks 1..n_targets per image; rank r adds ``(r − 1) · rank_step``.
        effects: planted additive effect per group name (missing: 0); default :func:`default_effects`.
        interaction: ``(group_a, group_b, size)`` added when both groups are on.
        baseline: score of combo 0 before random effects.
        cluster_sd, unit_sd, noise: standard deviations of the (model, image)
            effect, the per-target effect and the per-row noise.
        optimism: in-sample minus held-out at k*, per ``method`` value (a
            combination's method is its groups joined by "+"), or one number for all.
        heldout_noise: extra noise of the held-out draw.
        auc_noise: noise of deletion and insertion AUC around their planted lines.
        singles: level per single method (``{}`` for none); default :func:`default_singles`.
        controls: level per control method (``{}`` for none); default :data:`DEFAULT_CONTROLS`.
        ks: threshold grid; include 100 for plain scores.
        missing_combos: combo_ids to leave out (a partial sweep).
        seed: seeds everything; the same arguments give the same dataset.
        ties: the recorded ROAD tie rule.
        metadata: attach the group definition and provenance to each file.
        provenance_columns: include the optional provenance columns (road_ties, ...).
    """
    groups = groups if groups is not None else make_groups(6)
    effects = dict(default_effects(groups) if effects is None else effects)
    unknown = set(effects) - set(groups.names)
    if interaction is not None:
        unknown |= set(interaction[:2]) - set(groups.names)
    if unknown:
        raise ValueError(f"unknown group names {sorted(unknown)}; known: {list(groups.names)}")
    singles = dict(default_singles(groups, effects, baseline) if singles is None else singles)
    controls = dict(DEFAULT_CONTROLS if controls is None else controls)
    units = _units(n_images, models, n_targets)
    root = np.random.SeedSequence(seed)
    shared = np.random.default_rng(root.spawn(1)[0])
    cluster = shared.normal(0.0, cluster_sd, len(models) * n_images)[units["cluster"].to_numpy()]
    random_part = (cluster + shared.normal(0.0, unit_sd, len(units))
                   + model_step * units["model_index"].to_numpy()
                   + rank_step * (units["target_rank"].to_numpy() - 1))
    members = [m for group in groups.members for m in group]
    # One child stream per entry, so leaving some out changes nothing else.
    streams = root.spawn(1 + groups.n_combos + len(members) + len(CONTROL_METHODS))[1:]
    metadata_record = file_metadata(groups.to_json(), provenance_record(ties, ks, seed)) if metadata else None
    schema = results_schema(groups.names, metadata_record)
    if not provenance_columns:
        schema = pa.schema([f for f in schema if f.name not in OPTIONAL_PROVENANCE], metadata=schema.metadata)
    common = dict(units=units, ks=ks, noise=noise, heldout_noise=heldout_noise, auc_noise=auc_noise,
                  plain_gap=plain_gap,
                  sweep_id=sweep_id, ties=ties, seed=seed, schema=schema, provenance_columns=provenance_columns)
    missing = set(missing_combos)
    for combo_id in range(groups.n_combos):
        if combo_id in missing:
            continue
        on = groups.flags(combo_id)
        level = baseline + sum(effects.get(name, 0.0) for name, flag in on.items() if flag)
        if interaction is not None and on[interaction[0]] and on[interaction[1]]:
            level += interaction[2]
        method = groups.combo_name(combo_id)
        yield f"metacam-combo{combo_id:04d}", _entry_table(
            kind="metacam", combo_id=combo_id, method=method, flags=list(on.values()), level=level + random_part,
            optimism=_lookup(optimism, method), rng=np.random.default_rng(streams[combo_id]), **common)
    for index, method in enumerate(members):
        if method not in singles:
            continue
        flags = [method in group for group in groups.members]
        yield f"single-{_safe(method)}", _entry_table(
            kind="single", combo_id=None, method=method, flags=flags, level=singles[method] + random_part,
            optimism=_lookup(optimism, method), rng=np.random.default_rng(streams[groups.n_combos + index]), **common)
    for index, method in enumerate(CONTROL_METHODS):
        if method not in controls:
            continue
        yield f"control-{method}", _entry_table(
            kind="control", combo_id=None, method=method, flags=[False] * groups.size,
            level=controls[method] + random_part, optimism=_lookup(optimism, method),
            rng=np.random.default_rng(streams[groups.n_combos + len(members) + index]), **common)


def _safe(name: str) -> str:
    """A file-name-safe form of a method name (plug-in paths hold ':')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def synthetic_results(n_images: int = 20, **kwargs: object) -> pd.DataFrame:
    """The whole synthetic dataset as one DataFrame; arguments as :func:`iter_synthetic`.

    Integer columns that may hold nulls (``combo_id``, ``label``) are pandas
    nullable integers, so ``combo_id`` stays an integer beside the singles' nulls.
    """
    tables = [table for _, table in iter_synthetic(n_images, **kwargs)]  # type: ignore[arg-type]
    nullable = {pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype()}
    return pa.concat_tables(tables).to_pandas(types_mapper=nullable.get)


def _write_table(table: pa.Table, path: Path) -> Path:
    """Write whole or not at all: a temporary name in the same folder, then an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temporary)
    os.replace(temporary, path)
    return path


def write_results(frame: pd.DataFrame, root: str | Path, groups: GroupSet | None = None, *,
                  provenance: Mapping[str, object] | None = None, typed: bool = True) -> list[Path]:
    """Write a results DataFrame as one Parquet file per combination / single method / control.

    Args:
        frame: rows in the results schema (columns may be dropped or added).
        root: the folder (files ``metacam-comboNNNN``, ``single-METHOD``, ``control-METHOD``).
        groups: recorded as file metadata when given (with ``provenance``); without
            it the files carry no metadata, as an older writer's would.
        typed: cast the schema's columns to the schema's types (``False`` keeps
            the frame's own types, to write deliberately malformed datasets).
    """
    root = Path(root)
    names = group_names_from_columns(list(frame.columns))
    metadata = None
    if groups is not None:
        metadata = file_metadata(groups.to_json(), dict(provenance or provenance_record(DEFAULT_TIES, [], 0)))
    full = results_schema(names)
    kind = frame["kind"].astype(str)
    stems = np.where(
        kind == "metacam",
        "metacam-combo" + frame["combo_id"].astype("Int64").astype(str).str.zfill(4),
        kind + "-" + frame["method"].astype(str).map(_safe),
    )
    paths = []
    for stem, part in frame.groupby(stems, sort=True):
        table = pa.Table.from_pandas(part.reset_index(drop=True), preserve_index=False)
        if typed:
            target = pa.schema([full.field(c) if c in full.names else table.schema.field(c)
                                for c in table.column_names])
            table = table.cast(target)
        table = table.replace_schema_metadata(metadata)
        paths.append(_write_table(table, root / f"{stem}.parquet"))
    return paths


def write_synthetic(root: str | Path, n_images: int = 20, **kwargs: object) -> list[Path]:
    """Generate and write a synthetic dataset one entry at a time (bounded memory).

    Arguments as :func:`iter_synthetic`; returns the files written.
    """
    root = Path(root)
    return [_write_table(table, root / f"{stem}.parquet")
            for stem, table in iter_synthetic(n_images, **kwargs)]  # type: ignore[arg-type]
