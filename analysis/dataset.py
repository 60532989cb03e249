"""Read a results dataset (DESIGN §3): every ``*.parquet`` under a folder, checked.

The group definition (names, order, members, which are controls) is read from
the files' metadata (``metacam.schema.read_file_metadata``); files without it
fall back to their ``g_<group>`` columns in schema order, with no controls.
The metrics (which score columns exist, their names and directions) come from
the metadata's ``"metrics"`` list (CONTRACTS §1), or v0.2's five built-ins
(:func:`metacam.analysis.metrics.fallback_metrics`); all files must agree.
The ROAD tie rule comes from the optional ``road_ties`` column, else the older
``road_mode`` (default -> random, paper -> inclusive), else the metadata's
provenance, else :data:`DEFAULT_TIES`; the report says which.

Only the rows the analysis can use are converted to pandas: rows with
``status == "ok"`` that are the adaptive choice (``is_best_k``) or sit at one
of the requested k values. Failed rows are kept aside to be counted and listed.
Filtering happens per file in Arrow, so memory follows what is kept, not the
size of the k grid.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metacam.analysis.design import FLAG_PREFIX, METACAM, SINGLE, groups_from_columns
from metacam.analysis.errors import AnalysisError
from metacam.analysis.metrics import Metric, fallback_metrics, metrics_from_record, resolve
from metacam.groups import GroupError, GroupSet
from metacam.results import dataset_files
from metacam.schema import KINDS, REQUIRED_COLUMNS, read_file_metadata, results_schema

KEY_COLUMNS: tuple[str, ...] = ("sweep_id", "kind", "combo_id", "method")
UNIT_COLUMNS: tuple[str, ...] = ("model", "image_id", "target_class")
"""A unit: one (model, image, target). Scores of one unit are paired across methods."""
CLUSTER_COLUMNS: tuple[str, ...] = ("image_id",)
"""A cluster: one image, identified by its content (``image_id`` = file name + a hash of its
pixels, the same under every model: metacam/images.py). Images are the sampled units; the
models and target ranks an image is scored under are fixed conditions within its cluster."""
READ_COLUMNS: tuple[str, ...] = (*KEY_COLUMNS, *UNIT_COLUMNS, "target_rank", "k", "is_best_k", "status")
"""The DESIGN §3 columns the analysis reads besides one g_<group> per group and each recorded
metric's columns; a file lacking any of them is refused. Every other column is optional."""
assert set(READ_COLUMNS) <= set(REQUIRED_COLUMNS)

TIES_COLUMN = "road_ties"
LEGACY_MODE_COLUMN = "road_mode"
LEGACY_MODES = {"default": "random", "paper": "inclusive"}
DEFAULT_TIES = "random"
FAILED_COLUMNS: tuple[str, ...] = (*KEY_COLUMNS[1:], *UNIT_COLUMNS, "target_rank", "k", "status")
K_TOLERANCE = 1e-3  # k is float32 on disk; "k=12.5" must match 12.5 stored as float32

_FIELDS = {f.name: f for f in results_schema(())}
_DICT = pa.dictionary(pa.int32(), pa.string())


@dataclass(frozen=True)
class Dataset:
    """The usable rows of one sweep of a results dataset.

    Attributes:
        root: the folder that was read.
        files: the Parquet files of this sweep, sorted.
        rows: ok rows kept for scoring (adaptive choices and requested k):
            kind, combo_id, method, k, is_best_k, the score columns and ``unit``.
        units: index ``unit`` (int code); columns model, image_id, target_class,
            target_rank (nullable), cluster (int code of the image: image_id).
        failed: rows with ``status != "ok"`` (FAILED_COLUMNS).
        n_rows: rows of this sweep in the files (ok or not, all k).
        sweep_id: the sweep analysed.
        groups: the group definition (names in combo_id bit order, members, controls).
        groups_source: ``metadata`` or ``columns`` (fallback: no metadata in the files).
        ties: the ROAD tie rule, ``random`` or ``inclusive``.
        ties_source: where ``ties`` came from (column, legacy column, metadata or default).
        provenance: the metadata's provenance record (empty without metadata).
        k_values: the k values present among its ok rows, sorted.
        metrics: the recorded metrics (CONTRACTS §1), in the sweep's order.
        metrics_source: ``metadata`` or ``v0.2 fallback``.
        other_kinds: row counts of ``kind`` values the analysis does not know (ignored).
    """

    root: Path
    files: tuple[Path, ...]
    rows: pd.DataFrame
    units: pd.DataFrame
    failed: pd.DataFrame
    n_rows: int
    sweep_id: str
    groups: GroupSet
    groups_source: str
    ties: str
    ties_source: str
    provenance: dict
    k_values: tuple[float, ...]
    metrics: tuple[Metric, ...] = ()
    metrics_source: str = "metadata"
    other_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def n_clusters(self) -> int:
        """Images (the clusters of every inference)."""
        return int(self.units["cluster"].nunique())

    def metric(self, key: str) -> Metric:
        """The recorded metric ``key``; a one-line error listing the recorded ones otherwise."""
        return resolve(self.metrics, key)


@dataclass(frozen=True)
class _FileInfo:
    path: Path
    columns: tuple[str, ...]
    metadata: dict | None
    sweep_ids: frozenset[str]


def find_parquet_files(root: str | Path, exclude: Iterable[str | Path] = ()) -> list[Path]:
    """The dataset's live Parquet files under ``root``, recursively, sorted
    (:func:`metacam.results.dataset_files`: the one listing status, resume and the sweep use).

    Skips hidden files and folders (a leading dot, e.g. ``.unit-*.partial.parquet``),
    names ending in ``.tmp`` (files being written), folders starting with ``_``
    (``_manifest``), the folders in ``exclude`` (the analysis output), and files a
    compaction superseded (``metacam compact``: unit files merged into a part).
    """
    return dataset_files(root, exclude)


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _check_folder(root: Path, exclude: Sequence[Path]) -> list[Path]:
    if not root.exists():
        raise AnalysisError(f"results folder '{root}' does not exist; pass the folder the sweep wrote its Parquet files to")
    if not root.is_dir():
        raise AnalysisError(f"'{root}' is not a folder; pass the folder that holds the sweep's Parquet files")
    files = find_parquet_files(root, exclude)
    if files:
        return files
    if not any(root.iterdir()):
        raise AnalysisError(f"results folder '{root}' is empty; run `metacam sweep` first or pass the folder it wrote to")
    raise AnalysisError(
        f"no Parquet files (*.parquet) under '{root}' (hidden files, *.tmp, _manifest and the output folder "
        "are skipped); pass the folder the sweep wrote its results to"
    )


def _sweep_ids_from_statistics(parquet: pq.ParquetFile, index: int) -> frozenset[str] | None:
    """The sweep ids of a file from its row-group statistics (no data read), or None if they do not say."""
    found: set[str] = set()
    metadata = parquet.metadata
    for group in range(metadata.num_row_groups):
        column = metadata.row_group(group).column(index)
        stats = column.statistics
        if stats is None:
            return None
        if stats.null_count:
            found.add("(null)")
        if stats.null_count == column.num_values:
            continue
        if not stats.has_min_max or stats.min != stats.max:
            return None
        found.add(str(stats.min))
    return frozenset(found)


def _survey(path: Path, root: Path) -> _FileInfo:
    """A file's columns, metadata and sweep ids (from the footer's statistics when they suffice)."""
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        sweep_ids: frozenset[str] = frozenset()
        if "sweep_id" in schema.names:
            from_statistics = _sweep_ids_from_statistics(parquet, schema.get_field_index("sweep_id"))
            if from_statistics is None:
                column = parquet.read(columns=["sweep_id"], use_threads=False)["sweep_id"]
                values = pc.unique(pc.cast(column, pa.string())).to_pylist()
                from_statistics = frozenset("(null)" if v is None else str(v) for v in values)
            sweep_ids = from_statistics
    except (pa.ArrowException, OSError) as error:
        raise AnalysisError(f"cannot read '{path.relative_to(root)}' as Parquet ({_first_line(error)}); "
                            "delete it or rerun the job that wrote it") from None
    return _FileInfo(path, tuple(schema.names), read_file_metadata(schema), sweep_ids)


def _read_metrics(infos: Sequence[_FileInfo], root: Path) -> tuple[tuple[Metric, ...], str]:
    """The sweep's metrics: each file's ``"metrics"`` record (or v0.2's list); all files must agree."""
    found: dict[tuple[Metric, ...], _FileInfo] = {}
    sources = set()
    for info in infos:
        record = (info.metadata or {}).get("metrics")
        if record is None:
            metrics, source = fallback_metrics(info.columns), "v0.2 fallback"
        else:
            try:
                metrics, source = metrics_from_record(record), "metadata"
            except (ValueError, TypeError) as error:
                raise AnalysisError(f"'{info.path.relative_to(root)}' records an unusable metrics list "
                                    f"({_first_line(error)}); rewrite it with metacam/schema.py") from None
        found.setdefault(metrics, info)
        sources.add(source)
    if len(found) > 1:
        first, second = list(found.items())[:2]
        raise AnalysisError(
            f"'{first[1].path.relative_to(root)}' and '{second[1].path.relative_to(root)}' record different metrics "
            f"({', '.join(m.key for m in first[0])} vs {', '.join(m.key for m in second[0])}); the files of one "
            "dataset must record the same metrics — write each list under its own sweep_id")
    return next(iter(found)), "; ".join(sorted(sources))


def _metric_columns(metrics: Sequence[Metric]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c for m in metrics for c in m.columns))


def _check_columns(infos: Sequence[_FileInfo], root: Path, flags: Sequence[str], scores: Sequence[str]) -> None:
    """Every file must hold READ_COLUMNS, the sweep's flag columns and its metrics' columns; one error
    naming what is missing where."""
    lacking: dict[tuple[str, ...], list[Path]] = {}
    for info in infos:
        missing = tuple(c for c in (*READ_COLUMNS, *flags, *scores) if c not in info.columns)
        if missing:
            lacking.setdefault(missing, []).append(info.path)
    if lacking:
        missing, paths = max(lacking.items(), key=lambda item: len(item[1]))
        others = sum(len(p) for p in lacking.values()) - 1
        where = f"'{paths[0].relative_to(root)}'" + (f" and {others} other file(s)" if others else "")
        raise AnalysisError(
            f"{where} lack(s) required column(s) {', '.join(missing)}; "
            "the analysis needs the results columns of DESIGN §3 (metacam/schema.py)"
        )


def _choose_sweep(infos: Sequence[_FileInfo], requested: str | None) -> str:
    """The single sweep to analyse, or a clear error listing the choices."""
    present = sorted(set().union(*(info.sweep_ids for info in infos)))
    if not present:
        raise AnalysisError(f"the {len(infos)} Parquet file(s) hold no rows; rerun the sweep")
    if requested is not None:
        if requested not in present:
            raise AnalysisError(f"--sweep-id '{requested}' is not in the dataset; sweeps present: {', '.join(present)}")
        return requested
    if len(present) > 1:
        raise AnalysisError(f"the dataset holds {len(present)} sweeps ({', '.join(present)}); choose one with --sweep-id")
    return present[0]


def _read_groups(infos: Sequence[_FileInfo], root: Path, sweep: str) -> tuple[GroupSet, str]:
    """The sweep's group definition from the file metadata, or from the flag columns."""
    recorded = {json.dumps(info.metadata["groups"], sort_keys=True): info
                for info in infos if info.metadata and "groups" in info.metadata}
    if len(recorded) > 1:
        examples = ", ".join(f"'{info.path.relative_to(root)}'" for info in list(recorded.values())[:2])
        raise AnalysisError(f"files of sweep '{sweep}' record different group definitions (e.g. {examples}); "
                            "a sweep has one set of groups — write each under its own sweep_id")
    if recorded:
        text, info = next(iter(recorded.items()))
        try:
            return GroupSet.from_json(json.loads(text)), "metadata"
        except (GroupError, KeyError, TypeError, AttributeError) as error:
            raise AnalysisError(f"'{info.path.relative_to(root)}' records an unusable group definition "
                                f"({_first_line(error)}); rewrite it with metacam/schema.py") from None
    layouts = {tuple(c for c in info.columns if c.startswith(FLAG_PREFIX)) for info in infos}
    names = max(layouts, key=len)
    if not names:
        raise AnalysisError(f"'{infos[0].path.relative_to(root)}' has no group flag columns (g_<group>) and no "
                            "group metadata; the analysis needs the results schema of DESIGN §3")
    return groups_from_columns([c[len(FLAG_PREFIX):] for c in names]), "columns"


def _ties_column(table: pa.Table, info: _FileInfo) -> tuple[pa.ChunkedArray, str]:
    """The tie rule of each row and where it came from."""
    n = len(table)
    if TIES_COLUMN in info.columns:
        return pc.cast(table[TIES_COLUMN], pa.string()), f"column {TIES_COLUMN}"
    if LEGACY_MODE_COLUMN in info.columns:
        modes = pc.cast(table[LEGACY_MODE_COLUMN], pa.string())
        mapped = modes
        for old, new in LEGACY_MODES.items():
            mapped = pc.if_else(pc.equal(mapped, old), new, mapped)
        return mapped, f"column {LEGACY_MODE_COLUMN} (default -> random, paper -> inclusive)"
    provenance = (info.metadata or {}).get("provenance") or {}
    if isinstance(provenance, dict) and provenance.get("ties") is not None:
        return pa.chunked_array([pa.array([str(provenance["ties"])] * n, pa.string())]), "file metadata"
    return pa.chunked_array([pa.nulls(n, pa.string())]), f"not recorded: assumed '{DEFAULT_TIES}'"


def _read_file(info: _FileInfo, root: Path, flags: Sequence[str], scores: Sequence[str]) -> pa.Table:
    """One file's analysis columns, cast to the schema's types (strings as dictionaries; a plug-in
    metric's column, which the base schema does not know, as float32 like the built-in scores)."""
    columns = [*READ_COLUMNS, *flags, *scores]
    optional = [c for c in (TIES_COLUMN, LEGACY_MODE_COLUMN) if c in info.columns]
    target = pa.schema(
        [(_FIELDS[c].name, _DICT if _FIELDS[c].type == pa.string() else _FIELDS[c].type) for c in READ_COLUMNS]
        + [(c, pa.bool_()) for c in flags]
        + [(c, _FIELDS[c].type if c in _FIELDS else pa.float32()) for c in scores]
        + [(c, pa.string()) for c in optional]
    )
    try:
        table = pq.read_table(info.path, columns=columns + optional, use_threads=False)  # small files: faster
        return table.select(target.names).cast(target)
    except (pa.ArrowException, OSError) as error:
        raise AnalysisError(f"cannot read '{info.path.relative_to(root)}' with the schema's column types "
                            f"({_first_line(error)}); rewrite it with metacam/schema.py") from None


def _near(values: pa.ChunkedArray, k: float) -> pa.ChunkedArray:
    return pc.less_equal(pc.abs(pc.subtract(pc.cast(values, pa.float64()), k)), K_TOLERANCE)


def _flag_mismatches(table: pa.Table, groups: GroupSet) -> tuple[int, list, int, list[int]]:
    """MetaCAM rows whose combo_id is outside 0..2^G-1, or whose g_* flags differ from its bits.

    Returns (n out of range, examples, n mismatched, examples).
    """
    metacam = table.filter(pc.fill_null(pc.equal(table["kind"], METACAM), False))
    if not len(metacam):
        return 0, [], 0, []
    combo = pc.fill_null(pc.cast(metacam["combo_id"], pa.int64()), -1).to_numpy()
    outside = (combo < 0) | (combo >= groups.n_combos)
    bad = sorted({int(c) for c in combo[outside]})[:5]
    examples_outside: list = ["null" if c == -1 else c for c in bad]
    flags = np.column_stack([pc.fill_null(metacam[c], False).to_numpy(zero_copy_only=False) for c in groups.columns])
    expected = ((combo[:, None] >> np.arange(groups.size)[None, :]) & 1).astype(bool)
    mismatch = ~outside & (flags != expected).any(axis=1)
    examples = sorted({int(c) for c in combo[mismatch]})[:5]
    return int(outside.sum()), examples_outside, int(mismatch.sum()), examples


def load_dataset(
    root: str | Path,
    *,
    sweep_id: str | None = None,
    keep_k: Sequence[float] = (100.0,),
    exclude: Iterable[str | Path] = (),
) -> Dataset:
    """Read and check the results dataset under ``root``.

    Args:
        root: folder of Parquet files, possibly nested.
        sweep_id: which sweep to analyse; required when the dataset holds several.
        keep_k: k values whose rows are kept besides the ``is_best_k`` rows.
        exclude: folders to skip (the analysis output).

    Raises:
        AnalysisError: no files, unreadable files, missing columns, several
            sweeps or tie rules, no usable rows, inconsistent experiment ids.
    """
    root = Path(root)
    files = _check_folder(root, [Path(p) for p in exclude])
    infos = [_survey(path, root) for path in files]
    chosen = _choose_sweep(infos, sweep_id)
    infos = [info for info in infos if chosen in info.sweep_ids]
    groups, groups_source = _read_groups(infos, root, chosen)
    metrics, metrics_source = _read_metrics(infos, root)
    scores = _metric_columns(metrics)
    _check_columns(infos, root, groups.columns, scores)

    kept, failed = [], []
    n_ok = 0
    ties_seen: set[str] = set()
    k_seen: set[float] = set()
    ties_sources: set[str] = set()
    n_outside = n_mismatch = 0
    outside_examples: list[int] = []
    mismatch_examples: list[int] = []
    for info in infos:
        table = _read_file(info, root, groups.columns, scores)
        ties, source = _ties_column(table, info)
        table = table.drop_columns([c for c in (TIES_COLUMN, LEGACY_MODE_COLUMN) if c in table.column_names])
        table = table.append_column("ties", ties)
        in_sweep = (pc.is_null(table["sweep_id"]) if chosen == "(null)"
                    else pc.equal(pc.cast(table["sweep_id"], pa.string()), chosen))
        table = table.filter(pc.fill_null(in_sweep, False))
        ok = pc.fill_null(pc.equal(table["status"], "ok"), False)
        failed.append(table.filter(pc.invert(ok)).select(list(FAILED_COLUMNS)))
        table = table.filter(ok)
        if len(table):
            ties_sources.add(source)
        outside, outside_ex, mismatch, mismatch_ex = _flag_mismatches(table, groups)
        n_outside, n_mismatch = n_outside + outside, n_mismatch + mismatch
        outside_examples += outside_ex
        mismatch_examples += mismatch_ex
        # Distinct tie rules and k of the ok rows: enough to check mixing and list k.
        n_ok += len(table)
        ties_seen.update("(null)" if t is None else t for t in pc.unique(table["ties"]).to_pylist())
        k_seen.update(k for k in pc.unique(table["k"]).to_pylist() if k is not None)
        wanted = pc.fill_null(table["is_best_k"], False)
        for k in keep_k:
            wanted = pc.or_(wanted, pc.fill_null(_near(table["k"], k), False))
        kept.append(table.filter(wanted).drop_columns(["sweep_id", "status", "ties"]))

    _raise_for_experiments(groups, n_outside, outside_examples, n_mismatch, mismatch_examples)
    failed_frame = _plain_strings(pa.concat_tables(failed)).to_pandas()
    n_rows = n_ok + len(failed_frame)
    if not n_ok:
        if not len(failed_frame):
            raise AnalysisError(f"the {len(infos)} Parquet file(s) of sweep '{chosen}' hold no rows; rerun the sweep")
        statuses = ", ".join(f"{s}: {n}" for s, n in failed_frame["status"].fillna("(null)").value_counts().items())
        raise AnalysisError(f"sweep '{chosen}' has no rows with status 'ok' ({len(failed_frame)} failed rows; {statuses}); "
                            "fix the failures and rerun the sweep")
    rules = sorted({DEFAULT_TIES if t == "(null)" else t for t in ties_seen})
    if len(rules) > 1:
        raise AnalysisError(
            f"sweep '{chosen}' mixes ROAD tie rules {', '.join(rules)}, whose scores are not comparable; "
            "write each rule under its own sweep_id and analyse them one at a time (--sweep-id)"
        )

    rows = pa.concat_tables(kept).to_pandas(strings_to_categorical=True)
    rows, other_kinds = _keep_known_kinds(rows)
    if groups_source == "columns":
        groups = groups_from_columns(groups.names, _members_from_singles(rows, groups))
    rows, units = _code_units(rows)
    rows = rows.drop(columns=[*groups.columns, *UNIT_COLUMNS, "target_rank"])
    provenance = next((dict(info.metadata.get("provenance") or {}) for info in infos if info.metadata), {})
    return Dataset(
        root=root,
        files=tuple(info.path for info in infos),
        rows=rows,
        units=units,
        failed=failed_frame.reset_index(drop=True),
        n_rows=n_rows,
        sweep_id=chosen,
        groups=groups,
        groups_source=groups_source,
        ties=rules[0],
        ties_source="; ".join(sorted(ties_sources)),
        provenance=provenance,
        k_values=tuple(sorted(float(k) for k in k_seen)),
        metrics=metrics,
        metrics_source=metrics_source,
        other_kinds=other_kinds,
    )


def _plain_strings(table: pa.Table) -> pa.Table:
    """Dictionary columns decoded (small tables that pandas should see as plain strings)."""
    return table.cast(pa.schema([
        pa.field(f.name, pa.string()) if pa.types.is_dictionary(f.type) else f for f in table.schema
    ]))


def _raise_for_experiments(groups: GroupSet, n_outside: int, outside: list, n_mismatch: int, mismatch: list) -> None:
    if n_outside:
        examples = ", ".join(str(c) for c in outside[:5])
        raise AnalysisError(f"{n_outside} metacam rows have a combo_id outside 0..{groups.n_combos - 1} (e.g. {examples}) "
                            f"for the {groups.size} group(s) {', '.join(groups.names)}; "
                            "the dataset is not from a MetaCAM sweep with these groups")
    if n_mismatch:
        examples = ", ".join(str(c) for c in sorted(set(mismatch))[:5])
        raise AnalysisError(f"{n_mismatch} metacam rows have group flags (g_*) that do not match their combo_id "
                            f"(bit 0 = {groups.names[0]}, ...), e.g. combo {examples}; "
                            "the rows are corrupt — rerun those experiments")


def _keep_known_kinds(rows: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    kind = rows["kind"].astype(str)
    known = kind.isin(list(KINDS))
    other = kind[~known].value_counts()
    return rows[known].reset_index(drop=True), {str(k): int(n) for k, n in other.items()}


def _members_from_singles(rows: pd.DataFrame, groups: GroupSet) -> dict[str, list[str]]:
    """Without metadata: each group's members as far as single-method rows show them."""
    singles = rows[rows["kind"] == SINGLE]
    return {name: sorted(str(m) for m in singles.loc[singles[column].fillna(False).astype(bool), "method"].unique())
            for name, column in zip(groups.names, groups.columns, strict=True)}


def _code_units(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add an int ``unit`` code per (model, image_id, target_class) and return the unit table."""
    codes = rows.groupby(list(UNIT_COLUMNS), observed=True, sort=True, dropna=False).ngroup()
    rows = rows.assign(unit=codes.to_numpy(dtype=np.int64))
    units = rows.drop_duplicates("unit")[["unit", *UNIT_COLUMNS, "target_rank"]].set_index("unit").sort_index()
    units = units.astype({"model": str, "image_id": str})
    units["target_rank"] = units["target_rank"].astype("Int64")
    units["cluster"] = units.groupby(list(CLUSTER_COLUMNS), sort=True).ngroup().to_numpy(dtype=np.int64)
    return rows, units
