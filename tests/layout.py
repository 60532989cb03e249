"""A synthetic study laid out as a sweep lays out its results: one Parquet file per
(model, experiment, unit of images) under ``<model>/<experiment>/``, and a manifest per
model, so that ``metacam status``, ``metacam compact`` and ``metacam analyze`` read it as
a real dataset. The rows come from :mod:`metacam.analysis.synthetic` (planted effects);
the compaction tests and ``bench/analysis.py`` use it."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metacam.analysis.synthetic import iter_synthetic, make_groups
from metacam.results import MANIFEST_DIR


@dataclass
class Layout:
    """What :func:`write_study` wrote."""

    root: Path
    units: dict[str, list[str]]  # model -> unit file names, in image order
    experiments: list[str]
    files: list[Path] = field(default_factory=list)


def unit_file(model: str, index: int) -> str:
    return f"unit-{hashlib.sha1(f'{model}/{index}'.encode()).hexdigest()[:16]}.parquet"


def write_study(root: Path, n_images: int, *, models: Sequence[str] = ("model_a", "model_b"), n_groups: int = 2,
                images_per_unit: int = 2, ks: Sequence[float] = (25.0, 50.0, 100.0), seed: int = 0,
                missing: Sequence[tuple[str, str, int]] = (), failed: Sequence[tuple[str, str, int]] = (),
                start_time: float = 1.7e9) -> Layout:
    """Write the study; return its layout.

    missing: (model, experiment, unit index) files left out (a study still running);
    failed: units whose first row gets an ``unreadable image`` status (a failure reason).
    Unit files get mtimes one second apart from ``start_time`` in writing order (so the
    status ETA is defined).
    """
    groups = make_groups(n_groups)
    units = {m: [unit_file(m, u) for u in range(-(-n_images // images_per_unit))] for m in models}
    layout = Layout(root, units, [])
    clock = start_time
    for stem, table in iter_synthetic(n_images, groups=groups, models=tuple(models), ks=tuple(ks), seed=seed):
        layout.experiments.append(stem)
        for model in models:
            rows = table.filter(pc.equal(table["model"], model))
            images = np.unique(rows["image_id"].to_numpy(zero_copy_only=False))  # image_NNNNN...: in order
            index = {image: i // images_per_unit for i, image in enumerate(images)}
            unit_of = np.array([index[i] for i in rows["image_id"].to_pylist()])
            for u, name in enumerate(units[model]):
                if (model, stem, u) in missing:
                    continue
                part = rows.filter(pa.array(unit_of == u))
                if (model, stem, u) in failed:
                    status = part["status"].to_pylist()
                    status[0] = "unreadable image: broken.png: not an image file"
                    part = part.set_column(part.schema.get_field_index("status"), "status",
                                           pa.array(status, pa.string()))
                path = root / model / stem / name
                path.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(part, path)
                os.utime(path, (clock, clock))
                clock += 1.0
                layout.files.append(path)
    (root / MANIFEST_DIR).mkdir(parents=True, exist_ok=True)
    for model in models:
        record = {"format": 1, "sweep_id": "synthetic", "model": model, "model_key": model, "model_dir": model,
                  "shard_index": 0, "shard_count": 1, "experiments": layout.experiments, "units": units[model],
                  "images_per_unit": images_per_unit, "target": "top1"}
        (root / MANIFEST_DIR / f"{model}.shard-0-of-1.json").write_text(json.dumps(record))
    return layout
