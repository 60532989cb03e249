"""Read a results dataset (DESIGN §3): every ``*.parquet`` under a folder, checked.

Only the rows the analysis can use are converted to pandas: rows with
``status == "ok"`` that are the adaptive choice (``is_best_k``) or sit at one
of the requested k values. Failed rows are kept aside to be counted and listed.
Filtering happens per file in Arrow, so memory follows what is kept, not the
size of the k grid.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metacam.analysis.errors import AnalysisError
from metacam.groups import GROUP_KEYS
from metacam.schema import GROUP_COLUMNS, RESULTS_SCHEMA

N_COMBOS = 2 ** len(GROUP_KEYS)
SCORE_COLUMNS: tuple[str, ...] = ("road_combined", "road_morf", "road_lerf")
UNIT_COLUMNS: tuple[str, ...] = ("model", "image_id", "target_class")

ANALYSIS_COLUMNS: tuple[str, ...] = (
    "sweep_id", "kind", "combo_id", "method", *GROUP_COLUMNS, *UNIT_COLUMNS,
    "k", *SCORE_COLUMNS, "is_best_k", "road_mode", "status",
)
"""The columns of RESULTS_SCHEMA the analysis reads; a file lacking any of them is refused.
Provenance columns (device, seed, ...) are not needed to regenerate the analysis."""

FAILED_COLUMNS: tuple[str, ...] = ("sweep_id", "kind", "combo_id", "method", *UNIT_COLUMNS, "k", "status")
_DICT = pa.dictionary(pa.int32(), pa.string())
K_TOLERANCE = 1e-3  # k is float32 on disk; "k=12.5" must match 12.5 stored as float32


@dataclass(frozen=True)
class Dataset:
    """The usable rows of one sweep of a results dataset.

    Attributes:
        root: the folder that was read.
        files: the Parquet files read, sorted.
        rows: ok rows kept for scoring (adaptive choices and requested k),
            with a ``unit`` column (int code of model × image_id × target_class).
        units: one row per unit code: model, image_id, target_class.
        failed: rows with ``status != "ok"`` (key columns, k, status).
        n_rows: rows of this sweep in the files (ok or not, all k).
        sweep_id: the sweep analysed.
        road_mode: its ROAD mode (``default`` or ``paper``).
        k_values: the k values present among its ok rows, sorted.
        other_kinds: row counts of ``kind`` values other than metacam/single (ignored).
    """

    root: Path
    files: tuple[Path, ...]
    rows: pd.DataFrame
    units: pd.DataFrame
    failed: pd.DataFrame
    n_rows: int
    sweep_id: str
    road_mode: str
    k_values: tuple[float, ...]
    other_kinds: dict[str, int] = field(default_factory=dict)


def find_parquet_files(root: str | Path, exclude: Iterable[str | Path] = ()) -> list[Path]:
    """Every ``*.parquet`` under ``root``, recursively, sorted.

    Skips hidden files and folders (a leading dot), names ending in ``.tmp``
    (files being written) and the folders in ``exclude`` (the analysis output).
    """
    root = Path(root)
    excluded = {Path(p).resolve() for p in exclude}
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        # Prune in place so os.walk does not descend into skipped folders.
        dirs[:] = sorted(
            d for d in dirs
            if not d.startswith(".") and not d.endswith(".tmp") and (here / d).resolve() not in excluded
        )
        found.extend(
            here / f for f in files
            if f.endswith(".parquet") and not f.startswith(".") and not f.endswith(".tmp")
        )
    return sorted(found)


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
        f"no Parquet files (*.parquet) under '{root}' (hidden files, *.tmp and the output folder are skipped); "
        "pass the folder the sweep wrote its results to"
    )


def _check_columns(files: Sequence[Path], root: Path, columns: Sequence[str]) -> None:
    """Every file must be Parquet and hold ``columns``; one error naming what is missing where."""
    lacking: dict[tuple[str, ...], list[Path]] = {}
    for path in files:
        try:
            present = set(pq.read_schema(path).names)
        except (pa.ArrowException, OSError) as error:
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise AnalysisError(f"cannot read '{path.relative_to(root)}' as Parquet ({first}); "
                                "delete it or rerun the job that wrote it") from None
        missing = tuple(c for c in columns if c not in present)
        if missing:
            lacking.setdefault(missing, []).append(path)
    if lacking:
        missing, paths = max(lacking.items(), key=lambda item: len(item[1]))
        others = sum(len(p) for p in lacking.values()) - 1
        where = f"'{paths[0].relative_to(root)}'" + (f" and {others} other file(s)" if others else "")
        raise AnalysisError(
            f"{where} lack(s) required column(s) {', '.join(missing)}; "
            "the analysis needs the results schema of DESIGN §3 (metacam/schema.py)"
        )


def _read_file(path: Path, root: Path, columns: Sequence[str], schema: pa.Schema) -> pa.Table:
    """One file's analysis columns, cast to the schema's types."""
    name = path.relative_to(root)
    try:
        # Strings read as dictionaries: ~4x faster than materialising millions of repeated ids.
        strings = [f.name for f in schema if pa.types.is_dictionary(f.type)]
        return pq.read_table(path, columns=list(columns), read_dictionary=strings).cast(schema)
    except (pa.ArrowException, OSError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise AnalysisError(f"cannot read '{name}' with the schema's column types ({first}); "
                            "rewrite it with metacam/schema.py's RESULTS_SCHEMA") from None


def _near(values: pa.ChunkedArray, k: float) -> pa.ChunkedArray:
    return pc.less_equal(pc.abs(pc.subtract(pc.cast(values, pa.float64()), k)), K_TOLERANCE)


def _choose(values: pd.Series, requested: str | None, what: str) -> str:
    """The single sweep to analyse, or a clear error listing the choices."""
    present = sorted(values.fillna("(null)").astype(str).unique())
    if requested is not None:
        if requested not in present:
            raise AnalysisError(f"--sweep-id '{requested}' is not in the dataset; {what} present: {', '.join(present)}")
        return requested
    if len(present) > 1:
        raise AnalysisError(f"the dataset holds {len(present)} sweeps ({', '.join(present)}); choose one with --sweep-id")
    return present[0]


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
            sweeps or road modes, no usable rows, inconsistent experiment ids.
    """
    root = Path(root)
    files = _check_folder(root, [Path(p) for p in exclude])
    fields = [RESULTS_SCHEMA.field(c) for c in ANALYSIS_COLUMNS]
    schema = pa.schema([f.with_type(_DICT) if f.type == pa.string() else f for f in fields])
    plain = pa.schema(fields)  # for the small tables that pandas should see as plain strings
    _check_columns(files, root, ANALYSIS_COLUMNS)
    kept, failed, keys = [], [], []
    for path in files:
        table = _read_file(path, root, ANALYSIS_COLUMNS, schema)
        ok = pc.fill_null(pc.equal(table["status"], "ok"), False)
        failed.append(table.filter(pc.invert(ok)).select(list(FAILED_COLUMNS))
                      .cast(pa.schema([plain.field(c) for c in FAILED_COLUMNS])))
        table = table.filter(ok)
        # Distinct (sweep, road mode, k) of the ok rows: tiny, and enough to check mixing and k.
        keys.append(table.group_by(["sweep_id", "road_mode", "k"]).aggregate([([], "count_all")])
                    .cast(pa.schema([plain.field("sweep_id"), plain.field("road_mode"), plain.field("k"),
                                     pa.field("count_all", pa.int64())])))
        wanted = pc.fill_null(table["is_best_k"], False)
        for k in keep_k:
            wanted = pc.or_(wanted, pc.fill_null(_near(table["k"], k), False))
        kept.append(table.filter(wanted))

    key_frame = pa.concat_tables(keys).to_pandas()
    failed_frame = pa.concat_tables(failed).to_pandas()
    n_total = int(key_frame["count_all"].sum()) + len(failed_frame)
    if n_total == 0:
        raise AnalysisError(f"the {len(files)} Parquet file(s) under '{root}' hold no rows; rerun the sweep")

    chosen = _choose(pd.concat([key_frame["sweep_id"], failed_frame["sweep_id"]]), sweep_id, "sweeps")
    in_sweep = key_frame["sweep_id"].fillna("(null)") == chosen
    key_frame = key_frame[in_sweep]
    failed_frame = failed_frame[failed_frame["sweep_id"].fillna("(null)") == chosen].drop(columns="sweep_id")
    n_rows = int(key_frame["count_all"].sum()) + len(failed_frame)
    if key_frame.empty:
        statuses = ", ".join(f"{s}: {n}" for s, n in failed_frame["status"].fillna("(null)").value_counts().items())
        raise AnalysisError(f"sweep '{chosen}' has no rows with status 'ok' ({len(failed_frame)} failed rows; {statuses}); "
                            "fix the failures and rerun the sweep")
    modes = sorted(key_frame["road_mode"].fillna("(null)").unique())
    if len(modes) > 1:
        raise AnalysisError(
            f"sweep '{chosen}' mixes ROAD modes {', '.join(modes)}, whose scores are not comparable; "
            "write each mode under its own sweep_id and analyse them one at a time (--sweep-id)"
        )

    table = pa.concat_tables(kept)
    in_chosen = pc.is_null(table["sweep_id"]) if chosen == "(null)" else pc.equal(table["sweep_id"], chosen)
    table = table.filter(pc.fill_null(in_chosen, False))
    rows = table.drop_columns(["sweep_id", "road_mode", "status"]).to_pandas(strings_to_categorical=True)
    rows, other_kinds = _keep_known_kinds(rows)
    _check_experiments(rows)
    rows, units = _code_units(rows)
    return Dataset(
        root=root,
        files=tuple(files),
        rows=rows,
        units=units,
        failed=failed_frame.reset_index(drop=True),
        n_rows=n_rows,
        sweep_id=chosen,
        road_mode=modes[0],
        k_values=tuple(sorted(float(k) for k in key_frame["k"].dropna().unique())),
        other_kinds=other_kinds,
    )


def _keep_known_kinds(rows: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    kind = rows["kind"].astype(str)
    known = kind.isin(["metacam", "single"])
    other = kind[~known].value_counts()
    return rows[known].reset_index(drop=True), {str(k): int(n) for k, n in other.items()}


def _check_experiments(rows: pd.DataFrame) -> None:
    """MetaCAM rows need a combo_id in 0..63 whose bits match the group flags."""
    metacam = rows[rows["kind"] == "metacam"]
    combo = metacam["combo_id"]
    bad = metacam[combo.isna() | (combo < 0) | (combo >= N_COMBOS)]
    if len(bad):
        examples = ", ".join(sorted({str(c) for c in bad["combo_id"].head(50)})[:5])
        raise AnalysisError(f"{len(bad)} metacam rows have a combo_id outside 0..{N_COMBOS - 1} (e.g. {examples}); "
                            "the dataset is not from a MetaCAM sweep")
    if metacam.empty:
        return
    ids = combo.to_numpy(dtype=np.int64)
    mismatch = np.zeros(len(metacam), dtype=bool)
    for bit, column in enumerate(GROUP_COLUMNS):
        flag = metacam[column].fillna(False).to_numpy(dtype=bool)
        mismatch |= flag != ((ids >> bit) & 1).astype(bool)
    if mismatch.any():
        examples = ", ".join(str(c) for c in sorted(set(ids[mismatch].tolist()))[:5])
        raise AnalysisError(f"{int(mismatch.sum())} metacam rows have group flags (g_*) that do not match their combo_id "
                            f"(bit 0 = gradcam ...), e.g. combo {examples}; the rows are corrupt — rerun those experiments")


def _code_units(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add an int ``unit`` code per (model, image_id, target_class) and return the unit table."""
    codes = rows.groupby(list(UNIT_COLUMNS), observed=True, sort=True, dropna=False).ngroup()
    rows = rows.assign(unit=codes.to_numpy(dtype=np.int64))
    units = (rows.drop_duplicates("unit")[["unit", *UNIT_COLUMNS]]
             .set_index("unit").sort_index())
    units = units.astype({"model": str, "image_id": str})
    return rows, units
