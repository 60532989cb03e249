"""One job of the ablation as plain functions (Hydra lives in metacam.experiments).

By concern: :mod:`~metacam.sweep.spec` (what a job is, and its validation),
:mod:`~metacam.sweep.targets` (which classes), :mod:`~metacam.sweep.design` (the
experiments, units, paths and the study id), :mod:`~metacam.sweep.controls` (the
null controls' registry), :mod:`~metacam.sweep.scoring` (scoring one unit through the
evaluation engine), :mod:`~metacam.sweep.rows` (row assembly and files) and
:mod:`~metacam.sweep.runner` (running and resuming).
"""

from metacam.sweep.design import (
    Experiment,
    all_experiments,
    experiments_of,
    manifest,
    model_key,
    shard_units,
    study_id,
    study_units,
)
from metacam.sweep.runner import JobReport, load_bundle, prepare, run_job, write_manifest
from metacam.sweep.spec import Job, JobSpec, StudyConfig, build, validate
from metacam.sweep.targets import TargetRule

__all__ = [
    "Experiment",
    "Job",
    "JobReport",
    "JobSpec",
    "StudyConfig",
    "TargetRule",
    "all_experiments",
    "build",
    "experiments_of",
    "load_bundle",
    "prepare",
    "manifest",
    "model_key",
    "run_job",
    "shard_units",
    "study_id",
    "study_units",
    "validate",
    "write_manifest",
]
