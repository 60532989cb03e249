"""Config tests through Hydra's compose API: the sweep is 64 jobs, every option composes."""

from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class
from omegaconf import OmegaConf

from metacam.experiments.sweep import CONF_DIR, job_spec, sweep_size
from metacam.groups import DEFAULT_GROUPS, combo_flags
from metacam.sweep import experiments_of, validate
from tests.experiments.conftest import composed


def sweep_jobs(overrides: list[str] = ()) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of sweep.yaml's sweeper params (and overrides)."""
    with composed(list(overrides), hydra_config=True) as cfg:
        params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    parsed = OverridesParser.create().parse_overrides(params + list(overrides))
    (batch,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return batch


def test_sweep_expands_to_64_distinct_jobs_with_combo_ids_0_to_63():
    jobs = sweep_jobs()
    assert len(jobs) == 64
    seen = {}
    for job in jobs:
        with composed(job) as cfg:
            spec = job_spec(cfg)
        (combo, *singles) = experiments_of(spec.combo, spec.groups)
        seen[combo.combo_id] = combo
        # the group flags are exactly the bits of combo_id, bit 0 = gradcam
        assert combo.flags == combo_flags(combo.combo_id)
        assert spec.combo == combo.flags
        on = [g for g, flag in combo.flags.items() if flag]
        assert combo.members == [m for g in on for m in DEFAULT_GROUPS[g]]
        assert [s.method for s in singles] == (list(DEFAULT_GROUPS[on[0]]) if len(on) == 1 else [])
    assert sorted(seen) == list(range(64))
    assert seen[0].method == "none" and seen[63].method == "+".join(DEFAULT_GROUPS)


def test_all_jobs_of_one_sweep_share_its_id_and_results_folder():
    ids = set()
    for job in sweep_jobs()[:5]:
        with composed(job) as cfg:
            spec = job_spec(cfg)
        ids.add((spec.sweep_id, spec.results_dir))
    assert len(ids) == 1
    with composed(["threshold=fine"]) as cfg:
        assert job_spec(cfg).sweep_id not in {i for i, _ in ids}  # another grid, another dataset


def test_sweep_size_counts_combinations_and_baselines():
    with composed() as cfg:
        assert sweep_size(job_spec(cfg)) == (64, 64 + 12)


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


REQUIRED = {  # values for the ??? fields of template options
    ("model", "custom"): ["model.name=resnet18", "model.layer=layer4", "model.num_classes=10"],
    ("data", "folder"): ["data.images=[sample:coffee]"],
}


@pytest.mark.parametrize(
    ("group", "option"),
    [(group, option) for group in ("model", "data", "groups", "road", "threshold") for option in options(group)],
)
def test_every_option_composes_and_validates(group, option):
    with composed([f"{group}={option}", *REQUIRED.get((group, option), [])]) as cfg:
        spec = job_spec(cfg)
    validate(spec)
    if group == "model":
        assert spec.model.name == cfg.model.name
    if group == "threshold":
        assert spec.ks == [float(k) for k in cfg.threshold.ks] and spec.ks[-1] == 100


def instantiate_launcher(node):
    """Build the launcher object from its config, as Hydra's plugin loader does
    (hydra.utils.instantiate refuses Hydra's internal targets by policy)."""
    params = OmegaConf.to_container(node, resolve=False)
    return get_class(params.pop("_target_"))(**params)


@pytest.mark.parametrize("option", options("launcher"))
def test_every_launcher_composes_and_instantiates(option):
    with composed([f"launcher={option}"], hydra_config=True) as cfg:
        launcher = instantiate_launcher(cfg.hydra.launcher)
        expected = {"local": "BasicLauncher", "submitit_local": "LocalLauncher", "submitit_slurm": "SlurmLauncher"}
        assert type(launcher).__name__ == expected[option]
        if option == "submitit_slurm":
            assert cfg.hydra.launcher.max_num_timeout == 3  # requeue on preemption is on
            assert cfg.hydra.launcher.array_parallelism == 64


def test_hydra_launcher_override_also_works():
    """DESIGN §3: `hydra/launcher=submitit_slurm` alone sends the same sweep to SLURM."""
    with composed(["hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug"], hydra_config=True) as cfg:
        assert type(instantiate_launcher(cfg.hydra.launcher)).__name__ == "SlurmLauncher"


def test_site_settings_in_conf_local_are_picked_with_local_option():
    """conf/local/NAME.yaml (git-ignored) holds a site's cluster settings."""
    local = CONF_DIR / "local"
    created = not local.exists()
    local.mkdir(exist_ok=True)
    site = local / "pytest_site.yaml"
    site.write_text("# @package _global_\nout_dir: /shared/metacam\nhydra:\n  launcher:\n    partition: gpu\n")
    try:
        with composed(["launcher=submitit_slurm", "local=pytest_site"], hydra_config=True) as cfg:
            assert cfg.hydra.launcher.partition == "gpu"
            assert job_spec(cfg).results_dir.startswith("/shared/metacam/sweeps/")
    finally:
        site.unlink()
        if created:
            local.rmdir()
    assert "/conf/local/" in (Path(CONF_DIR).parent / ".gitignore").read_text()
