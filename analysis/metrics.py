"""The metrics a score can be read from: the list the dataset records (CONTRACTS §1), or v0.2's.

Every result file's metadata record lists its analysable scores under ``"metrics"``
(key, label, in-sample and chosen-map columns, direction, headline, source). A file
without that list (a v0.2 dataset) means the first five built-ins below, plus
``sparseness`` and ``complexity`` where those columns exist.

Light (no pandas): the CLI may import it while parsing arguments.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass

from metacam.analysis.errors import AnalysisError


@dataclass(frozen=True)
class Metric:
    """One analysable score, as recorded in the dataset's metadata.

    key: the analysis's ``--metric NAME`` (unique in a dataset).
    label: the human name for tables and axes.
    insample_column: on every k row (the draw that chose k*), or None.
    chosen_column: on the k* and k = 100 rows only (the held-out re-scoring of the
        chosen and plain maps), or None.
    higher_is_better: the metric's direction.
    headline: the metric gets a row in the report's headline table.
    source: ``builtin`` or the plug-in's ``package.module:function``.
    source_hash: sha256 of a plug-in's source, else None.
    """

    key: str
    label: str
    insample_column: str | None
    chosen_column: str | None
    higher_is_better: bool
    headline: bool
    source: str = "builtin"
    source_hash: str | None = None

    @property
    def sign(self) -> int:
        """+1 when a higher score is better, -1 when lower is (MoRF, deletion, complexity)."""
        return 1 if self.higher_is_better else -1

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns this metric reads (one or two)."""
        return tuple(dict.fromkeys(c for c in (self.insample_column, self.chosen_column) if c))

    @property
    def two_draws(self) -> bool:
        """ROAD: an in-sample version (the draw that chose k*) and a held-out one."""
        return len(self.columns) == 2

    def column(self, heldout: bool) -> str:
        """The column of the held-out (chosen-map) or the in-sample version; the one there is
        when the metric has a single version (in-sample and chosen are then the same)."""
        first, second = (self.chosen_column, self.insample_column) if heldout else (
            self.insample_column, self.chosen_column)
        column = first or second
        assert column is not None, f"metric {self.key} records no column"
        return column


BUILTIN: tuple[Metric, ...] = (
    Metric("combined", "ROAD combined", "road_combined", "road_heldout_combined", True, True),
    Metric("morf", "ROAD MoRF", "road_morf", "road_heldout_morf", False, False),
    Metric("lerf", "ROAD LeRF", "road_lerf", "road_heldout_lerf", True, False),
    Metric("deletion", "deletion AUC", None, "deletion_auc", False, True),
    Metric("insertion", "insertion AUC", None, "insertion_auc", True, True),
    Metric("sparseness", "sparseness (Gini)", None, "sparseness", True, True),
    Metric("complexity", "complexity (entropy)", None, "complexity", False, True),
)
"""CONTRACTS §1's built-in entries, in the order a sweep computes them."""
V02_KEYS: tuple[str, ...] = ("combined", "morf", "lerf", "deletion", "insertion")
"""What a file without a ``"metrics"`` list records (a v0.2 dataset)."""
DEFAULT_METRIC = "combined"
_FIELDS = tuple(Metric.__dataclass_fields__)


def fallback_metrics(columns: Collection[str]) -> tuple[Metric, ...]:
    """A v0.2 file's metrics: the first five built-ins, plus those whose column the file has."""
    return tuple(m for m in BUILTIN if m.key in V02_KEYS or (m.chosen_column and m.chosen_column in columns))


def metrics_from_record(records: object) -> tuple[Metric, ...]:
    """The metadata's ``"metrics"`` list as Metric entries.

    Raises:
        ValueError: not a list of entries with CONTRACTS §1's fields, duplicate keys,
            or an entry with neither column.
    """
    if not isinstance(records, Sequence) or isinstance(records, (str, bytes)):
        raise ValueError("'metrics' is not a list")
    found = []
    for record in records:
        if not isinstance(record, Mapping):
            raise ValueError(f"metrics entry {record!r} is not an object")
        missing = [f for f in ("key", "label", "insample_column", "chosen_column", "higher_is_better", "headline")
                   if f not in record]
        if missing:
            raise ValueError(f"metrics entry {record.get('key', record)!r} lacks {', '.join(missing)}")
        metric = Metric(**{f: record[f] for f in _FIELDS if f in record})
        if not metric.columns:
            raise ValueError(f"metric {metric.key!r} records neither an in-sample nor a chosen column")
        found.append(metric)
    keys = [m.key for m in found]
    duplicated = sorted({k for k in keys if keys.count(k) > 1})
    if duplicated:
        raise ValueError(f"metric key(s) {', '.join(duplicated)} recorded twice")
    return tuple(found)


def metric_records(metrics: Sequence[Metric]) -> list[dict]:
    """The JSON-ready list of a metadata record (the inverse of :func:`metrics_from_record`)."""
    return [asdict(m) for m in metrics]


def resolve(metrics: Sequence[Metric], key: str) -> Metric:
    """The metric named ``key`` (``--metric``), or a one-line error listing the recorded ones."""
    for metric in metrics:
        if metric.key == key:
            return metric
    raise AnalysisError(f"--metric '{key}' is not recorded in this dataset; recorded metrics: "
                        f"{', '.join(m.key for m in metrics)}")


def headline_metrics(metrics: Sequence[Metric]) -> tuple[Metric, ...]:
    """The metrics whose ``headline`` is true: one row each in the report's headline table."""
    return tuple(m for m in metrics if m.headline)
