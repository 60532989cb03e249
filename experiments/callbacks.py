"""Hydra callbacks of the sweep: announce it before the jobs, say where the dataset is after."""

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from metacam.experiments.sweep import job_spec, sweep_size
        from metacam.sweep import units_of

        spec = job_spec(config)
        jobs, experiments = sweep_size(spec)
        units = len(units_of(spec.data))
        print(
            f"MetaCAM sweep {spec.sweep_id}: {jobs} combinations + {experiments - jobs} single-method "
            f"baselines on {units} unit(s) of images, model {spec.model.name}, k grid "
            f"{','.join(f'{k:g}' for k in spec.ks)}, ROAD {spec.road.mode}\n"
            f"results: {spec.results_dir}",
            flush=True,
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from metacam.experiments.sweep import finished_experiments, job_spec, sweep_size

        spec = job_spec(config)
        _, experiments = sweep_size(spec)
        done = finished_experiments(spec)
        results = Path(spec.results_dir)
        print(f"\nDataset: {results} ({done}/{experiments} experiments complete)")
        if done < experiments:
            print("Some jobs did not finish; rerun the same command to fill in the rest.")
        print(f"Analyse it with:\n  metacam analyze {results}", flush=True)
