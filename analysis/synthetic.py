"""Synthetic results datasets in the schema of DESIGN §3, with planted effects, for any G.

Used by the tests and the benchmark. Units are models × images × target ranks; a
cluster is one image, the same photo under every model (its ``image_id`` is the same
under each, as metacam/images.py makes it). The in-sample adaptive score of every
(entry, unit) — an entry is a combination, a single method or a control — is

    a = bound(level(entry) + model_offset + rank_offset
              + image_i + model_image_mi + unit_u          (shared by every entry)
              + entry_image_ei + noise_eu),                 (the entry's own)

with level(combo) = baseline + Σ_g effect_g·on_g [+ interaction]. The random parts are
drawn *per image* and shared across the image's models and targets (image_sd for all
entries alike, entry_image_sd for one entry: what makes a comparison between two
entries vary from image to image), per (model, image) (model_image_sd), per unit
(unit_sd) and per row (noise): a comparison's differences are correlated across the
models and targets of one image, as in a real study — the pseudo-replication that
(model, image) clusters would hide. Every draw is normal, or a shifted gamma with
skewness ``skew``; ``bounds`` clips the scores; ``n_targets`` may differ per image
(unequal cluster sizes). :func:`draw_shared` and :func:`draw_own` are the same model,
vectorised over simulated studies, for the tests' simulations.

Every other k scores strictly less than k* (so ``is_best_k`` marks a unique argmax
unless a bound ties them); the plain map (k = 100) is a if k* = 100 and lower
otherwise. ``road_lerf − road_morf = 2·road_combined``.

Held-out columns are filled on the k* and k = 100 rows only: on the k* row
held-out = a − optimism(entry) (+ N(0, heldout_noise²)), on a k = 100 row that
is not k* held-out = in-sample (+ the same noise). So the analysis's
"optimism" of an entry is exactly its planted optimism when heldout_noise = 0.
The chosen-map metrics, on the same rows, move with the held-out score h:
deletion = 0.35 − 0.5·h, insertion = 0.45 + 0.5·h, sparseness = 0.5 + 0.5·h,
complexity = 10 − h, a plug-in column = ±h (its direction), each + N(0, auc_noise²).

Every file carries the group definition, provenance and the metrics list
(CONTRACTS §1) as metadata (unless ``metadata=False``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from metacam.analysis.dataset import DEFAULT_TIES
from metacam.analysis.design import CONTROL, METACAM, SINGLE, group_names_from_columns
from metacam.analysis.metrics import BUILTIN, Metric, fallback_metrics, metric_records
from metacam.groups import GroupSet
from metacam.schema import CONTROL_METHODS, METADATA_KEY, file_metadata, results_schema

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


def _targets_per_image(n_images: int, n_targets: int | Sequence[int]) -> np.ndarray:
    counts = np.full(n_images, n_targets, dtype=np.int64) if np.isscalar(n_targets) else np.asarray(n_targets)
    if counts.shape != (n_images,) or (counts < 1).any():
        raise ValueError(f"n_targets: one count >= 1 per image ({n_images}), or one number for all")
    return counts


def make_units(n_images: int, models: Sequence[str] = DEFAULT_MODELS, n_targets: int | Sequence[int] = 1
               ) -> pd.DataFrame:
    """Unit table in (model, image, target rank) order: model, model_index, image_index, image_id,
    target_class, target_rank and ``cluster`` (= image_index: the image is the cluster).

    n_targets: target ranks 1..n per image, one number for all images or one per image (the
        same under every model).
    """
    counts = _targets_per_image(n_images, n_targets)
    image_one = np.repeat(np.arange(n_images), counts)
    rank_one = np.concatenate([np.arange(1, c + 1) for c in counts]) if n_images else np.zeros(0, np.int64)
    model = np.repeat(np.arange(len(models)), len(image_one))
    image = np.tile(image_one, len(models))
    rank = np.tile(rank_one, len(models))
    ids = np.array([f"image_{i:05d}.jpg-{hashlib.sha1(str(i).encode()).hexdigest()[:8]}" for i in range(n_images)],
                   dtype=object)
    return pd.DataFrame({
        "model": np.asarray(models, dtype=object)[model],
        "model_index": model,
        "image_index": image,
        "image_id": ids[image],
        "target_class": ((image * 37 + rank * 101) % 1000).astype(np.int32),
        "target_rank": rank.astype(np.int16),
        "cluster": image,
    })


@dataclass(frozen=True)
class Variation:
    """Standard deviations of the random parts of a score (module docstring), their skewness and bounds."""

    image_sd: float = 0.05
    model_image_sd: float = 0.0
    unit_sd: float = 0.02
    entry_image_sd: float = 0.01
    noise: float = 0.02
    skew: float = 0.0
    bounds: tuple[float, float] | None = None

    def bound(self, values: np.ndarray) -> np.ndarray:
        return values if self.bounds is None else np.clip(values, *self.bounds)


def standard_draws(rng: np.random.Generator, size: tuple[int, ...], skew: float = 0.0) -> np.ndarray:
    """Mean-0, sd-1 draws: normal, or a shifted gamma with skewness ``skew`` (negative: mirrored)."""
    if skew == 0:
        return rng.standard_normal(size)
    shape = (2.0 / abs(skew)) ** 2
    return np.sign(skew) * (rng.gamma(shape, 1.0, size) - shape) / np.sqrt(shape)


def draw_shared(units: pd.DataFrame, variation: Variation, rng: np.random.Generator, n_studies: int = 1
                ) -> np.ndarray:
    """The random part every entry of a unit shares: ``(n_studies, n_units)`` (image, model × image, unit)."""
    image = units["image_index"].to_numpy()
    pair = units["model_index"].to_numpy() * (int(image.max()) + 1 if len(image) else 1) + image
    n_images, n_pairs = int(image.max()) + 1 if len(image) else 0, int(pair.max()) + 1 if len(pair) else 0
    draws = [(variation.image_sd, n_images, image), (variation.model_image_sd, n_pairs, pair),
             (variation.unit_sd, len(units), np.arange(len(units)))]
    total = np.zeros((n_studies, len(units)))
    for sd, size, index in draws:
        if sd:
            total += sd * standard_draws(rng, (n_studies, size), variation.skew)[:, index]
    return total


def draw_own(units: pd.DataFrame, variation: Variation, rng: np.random.Generator, n_studies: int = 1) -> np.ndarray:
    """One entry's own random part: ``(n_studies, n_units)`` (entry × image, shared by the image's models and
    targets, plus per-row noise)."""
    image = units["image_index"].to_numpy()
    total = np.zeros((n_studies, len(units)))
    if variation.entry_image_sd:
        n_images = int(image.max()) + 1 if len(image) else 0
        total += variation.entry_image_sd * standard_draws(rng, (n_studies, n_images), variation.skew)[:, image]
    if variation.noise:
        total += variation.noise * standard_draws(rng, (n_studies, len(units)), variation.skew)
    return total


def synthetic_metrics(plugins: Mapping[str, bool] | None = None) -> tuple[Metric, ...]:
    """The metrics a synthetic dataset records: the built-ins, then one plug-in-like entry per
    ``plugins`` name (value: higher is better)."""
    extra = tuple(Metric(name, name, None, name, higher, True, f"synthetic.plugins:{name}",
                         hashlib.sha256(name.encode()).hexdigest()) for name, higher in (plugins or {}).items())
    return (*BUILTIN, *extra)


def metadata_record(groups: GroupSet, provenance: Mapping[str, object], metrics: Sequence[Metric] | None
                    ) -> dict[bytes, bytes]:
    """The Parquet metadata of a file: :func:`metacam.schema.file_metadata`'s record with the
    CONTRACTS §1 ``"metrics"`` list (format 3) added, or without it (``metrics=None``: as v0.2 wrote)."""
    parsed = json.loads(file_metadata(groups.to_json(), provenance)[METADATA_KEY])
    parsed.pop("metrics", None)
    if metrics is None:
        parsed["format"] = 2
    else:
        parsed.update(format=max(3, int(parsed.get("format", 3))), metrics=metric_records(metrics))
    return {METADATA_KEY: json.dumps(parsed, sort_keys=True, default=str).encode()}


def _extend_schema(schema: pa.Schema, columns: Sequence[str]) -> pa.Schema:
    """The base schema plus float32 fields for the metric columns it lacks (sparseness, complexity and
    plug-ins until metacam.schema lists them)."""
    extra = [pa.field(c, pa.float32()) for c in columns if c not in schema.names]
    return pa.schema([*schema, *extra], metadata=schema.metadata)


def _entry_table(*, kind: str, combo_id: int | None, method: str, flags: Sequence[bool], adaptive: np.ndarray,
                 units: pd.DataFrame, ks: Sequence[float], optimism: float, heldout_noise: float,
                 auc_noise: float, plain_gap: float, variation: Variation, metrics: Sequence[Metric],
                 rng: np.random.Generator, sweep_id: str, ties: str, seed: int, schema: pa.Schema,
                 provenance_columns: bool) -> pa.Table:
    """All rows (units × ks) of one combination, single method or control, as an Arrow table."""
    n, n_k = len(units), len(ks)
    ks_array = np.asarray(ks, dtype=np.float64)
    k_star = rng.integers(0, n_k, n)
    # Scores fall off with distance from k*; the strictly positive jitter keeps the argmax unique.
    position = np.arange(n_k)
    gap = plain_gap * np.abs(position[None, :] - k_star[:, None]) / max(n_k - 1, 1)
    gap = gap + rng.uniform(2e-3, 6e-3, (n, n_k))
    gap[np.arange(n), k_star] = 0.0
    combined = variation.bound(adaptive[:, None] - gap)
    best = position[None, :] == k_star[:, None]
    plain = np.isclose(ks_array, 100.0)[None, :].repeat(n, 0)
    scored = best | plain
    heldout = variation.bound(np.where(best, combined - optimism, combined)
                              + heldout_noise * rng.standard_normal((n, n_k)))
    heldout = np.where(scored, heldout, np.nan)
    offset = rng.uniform(0.4, 0.6, (n, n_k))  # LeRF/MoRF around a plausible probability
    offset_heldout = rng.uniform(0.4, 0.6, (n, n_k))
    rows = n * n_k

    def f32(values: np.ndarray) -> pa.Array:
        return pa.array(values.ravel().astype(np.float32), pa.float32(), mask=np.isnan(values.ravel()))

    def repeat(column: str) -> np.ndarray:
        return np.repeat(units[column].to_numpy(), n_k)

    def chosen(intercept: float, slope: float) -> pa.Array:
        return f32(intercept + slope * heldout + auc_noise * rng.standard_normal((n, n_k)))

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
        "deletion_auc": chosen(0.35, -0.5),
        "insertion_auc": chosen(0.45, 0.5),
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
    extra = {"sparseness": (0.5, 0.5), "complexity": (10.0, -1.0)}
    for metric in metrics:
        column = metric.chosen_column
        if column is not None and column not in columns:
            columns[column] = chosen(*extra.get(column, (0.0, float(metric.sign))))
    if not provenance_columns:
        for column in OPTIONAL_PROVENANCE:
            columns.pop(column)
    return pa.table({name: columns[name] for name in schema.names}, schema=schema)


def _lookup(values: Mapping[str, float] | float, key: str) -> float:
    return float(values) if isinstance(values, (int, float)) else float(values.get(key, 0.0))


def iter_synthetic(
    n_images: int = 20,
    *,
    groups: GroupSet | None = None,
    models: Sequence[str] = DEFAULT_MODELS,
    n_targets: int | Sequence[int] = 1,
    effects: Mapping[str, float] | None = None,
    interaction: tuple[str, str, float] | None = None,
    baseline: float = 0.1,
    model_step: float = 0.02,
    rank_step: float = -0.01,
    image_sd: float = 0.05,
    model_image_sd: float = 0.0,
    unit_sd: float = 0.02,
    entry_image_sd: float = 0.01,
    noise: float = 0.02,
    skew: float = 0.0,
    bounds: tuple[float, float] | None = None,
    optimism: Mapping[str, float] | float = 0.0,
    heldout_noise: float = 0.0,
    auc_noise: float = 0.005,
    singles: Mapping[str, float] | None = None,
    controls: Mapping[str, float] | None = None,
    ks: Sequence[float] = DEFAULT_KS,
    missing_combos: Iterable[int] = (),
    plain_gap: float = 0.05,
    plugins: Mapping[str, bool] | None = None,
    record_metrics: bool = True,
    seed: int = 0,
    sweep_id: str = "synthetic",
    ties: str = DEFAULT_TIES,
    metadata: bool = True,
    provenance_columns: bool = True,
) -> Iterator[tuple[str, pa.Table]]:
    """Yield ``(file stem, table)`` per combination, then per single method, then per control.

    Args:
        n_images: images (clusters); units = models × Σ targets per image.
        groups: the group definition (default :func:`make_groups` ``(6)``).
        models: model names; model i adds ``i · model_step`` to every score.
        n_targets: target ranks 1..n per image (one number, or one per image: unequal clusters);
            rank r adds ``(r − 1) · rank_step``.
        effects: planted additive effect per group name (missing: 0); default :func:`default_effects`.
        interaction: ``(group_a, group_b, size)`` added when both groups are on.
        baseline: score of combo 0 before random effects.
        image_sd, model_image_sd, unit_sd, entry_image_sd, noise, skew, bounds: the random
            parts (:class:`Variation`, module docstring).
        optimism: in-sample minus held-out at k*, per ``method`` value (a
            combination's method is its groups joined by "+"), or one number for all.
        heldout_noise: extra noise of the held-out draw.
        auc_noise: noise of the chosen-map metrics around their planted lines.
        singles: level per single method (``{}`` for none); default :func:`default_singles`.
        controls: level per control method (``{}`` for none); default :data:`DEFAULT_CONTROLS`.
        ks: threshold grid; include 100 for plain scores.
        missing_combos: combo_ids to leave out (a partial sweep).
        plugins: plug-in-like metric columns to add, name -> higher is better (recorded with headline true).
        record_metrics: record the CONTRACTS §1 metrics list and write sparseness and complexity;
            False writes what v0.2 wrote (five metrics, no list).
        seed: seeds everything; the same arguments give the same dataset.
        ties: the recorded ROAD tie rule.
        metadata: attach the group definition, provenance and metrics to each file.
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
    variation = Variation(image_sd, model_image_sd, unit_sd, entry_image_sd, noise, skew, bounds)
    units = make_units(n_images, models, n_targets)
    root = np.random.SeedSequence(seed)
    shared = np.random.default_rng(root.spawn(1)[0])
    fixed = (model_step * units["model_index"].to_numpy() + rank_step * (units["target_rank"].to_numpy() - 1))
    common_part = draw_shared(units, variation, shared)[0] + fixed
    members = [m for group in groups.members for m in group]
    # One child stream per entry, so leaving some out changes nothing else.
    streams = root.spawn(1 + groups.n_combos + len(members) + len(CONTROL_METHODS))[1:]
    metrics = synthetic_metrics(plugins) if record_metrics else fallback_metrics(())
    metadata_record_ = (metadata_record(groups, provenance_record(ties, ks, seed),
                                        metrics if record_metrics else None) if metadata else None)
    schema = _extend_schema(results_schema(groups.names, metadata_record_),
                            [m.chosen_column for m in metrics if m.chosen_column])
    if not provenance_columns:
        schema = pa.schema([f for f in schema if f.name not in OPTIONAL_PROVENANCE], metadata=schema.metadata)
    common = dict(units=units, ks=ks, heldout_noise=heldout_noise, auc_noise=auc_noise, plain_gap=plain_gap,
                  variation=variation, metrics=metrics, sweep_id=sweep_id, ties=ties, seed=seed, schema=schema,
                  provenance_columns=provenance_columns)

    def adaptive(level: float, rng: np.random.Generator) -> np.ndarray:
        return variation.bound(level + common_part + draw_own(units, variation, rng)[0])

    missing = set(missing_combos)
    for combo_id in range(groups.n_combos):
        if combo_id in missing:
            continue
        on = groups.flags(combo_id)
        level = baseline + sum(effects.get(name, 0.0) for name, flag in on.items() if flag)
        if interaction is not None and on[interaction[0]] and on[interaction[1]]:
            level += interaction[2]
        method = groups.combo_name(combo_id)
        rng = np.random.default_rng(streams[combo_id])
        yield f"metacam-combo{combo_id:04d}", _entry_table(
            kind=METACAM, combo_id=combo_id, method=method, flags=list(on.values()), adaptive=adaptive(level, rng),
            optimism=_lookup(optimism, method), rng=rng, **common)
    for index, method in enumerate(members):
        if method not in singles:
            continue
        flags = [method in group for group in groups.members]
        rng = np.random.default_rng(streams[groups.n_combos + index])
        yield f"single-{_safe(method)}", _entry_table(
            kind=SINGLE, combo_id=None, method=method, flags=flags, adaptive=adaptive(singles[method], rng),
            optimism=_lookup(optimism, method), rng=rng, **common)
    for index, method in enumerate(CONTROL_METHODS):
        if method not in controls:
            continue
        rng = np.random.default_rng(streams[groups.n_combos + len(members) + index])
        yield f"control-{method}", _entry_table(
            kind=CONTROL, combo_id=None, method=method, flags=[False] * groups.size,
            adaptive=adaptive(controls[method], rng), optimism=_lookup(optimism, method), rng=rng, **common)


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
                  provenance: Mapping[str, object] | None = None, metrics: Sequence[Metric] | None = None,
                  typed: bool = True) -> list[Path]:
    """Write a results DataFrame as one Parquet file per combination / single method / control.

    Args:
        frame: rows in the results schema (columns may be dropped or added).
        root: the folder (files ``metacam-comboNNNN``, ``single-METHOD``, ``control-METHOD``).
        groups: recorded as file metadata when given (with ``provenance`` and ``metrics``, by
            default the built-ins whose columns the frame has); without it the files carry no
            metadata, as an older writer's would.
        typed: cast the schema's columns to the schema's types (``False`` keeps
            the frame's own types, to write deliberately malformed datasets).
    """
    root = Path(root)
    names = group_names_from_columns(list(frame.columns))
    metadata = None
    if groups is not None:
        metadata = metadata_record(groups, dict(provenance or provenance_record(DEFAULT_TIES, [], 0)),
                                   fallback_metrics(frame.columns) if metrics is None else metrics)
    full = results_schema(names)
    kind = frame["kind"].astype(str)
    stems = np.where(
        kind == METACAM,
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
