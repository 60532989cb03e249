"""Hydra callbacks of the sweep: announce it before the jobs; after them, compact the
dataset (``compact=true``) and say where it is."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from metacam.experiments.plan import job_spec
        from metacam.sweep import all_experiments, shard_units, validate

        spec = job_spec(config)
        job = validate(spec)
        experiments = all_experiments(job.groups, spec.controls)
        images = len(job.images.entries)
        drawn = f" (a sample of {job.images.total})" if images < job.images.total else ""
        print(
            f"MetaCAM sweep {spec.sweep_id}: {job.groups.n_combos} combinations of {job.groups.size} "
            f"groups, {len(experiments)} experiments (baselines and controls included) on "
            f"{images} image(s){drawn} in {len(shard_units(spec))} unit(s), model {spec.model.name}, targets "
            f"{job.targets.text()}, k grid {','.join(f'{k:g}' for k in job.evaluator.ks)}, ROAD ties "
            f"{job.evaluator.road.ties}, metrics {', '.join(m.name for m in job.evaluator.metrics)}"
            f"\nresults: {spec.results_dir}",
            flush=True,
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from metacam.experiments.plan import job_spec
        from metacam.status import study_status

        spec = job_spec(config)
        if config.compact:
            from metacam.compact import compact

            print(f"\nCompacting {spec.results_dir}: {compact(spec.results_dir).line()}", flush=True)
        status = study_status(spec.results_dir, read=False)
        print(f"\nDataset: {spec.results_dir} ({status.files_done}/{status.files_expected} result files)")
        if not status.complete:
            print("Some units are missing; rerun the same command to fill them in "
                  f"(`metacam status {spec.results_dir}` lists them).")
        print(f"Analyse it with:\n  metacam analyze {spec.results_dir}", flush=True)
