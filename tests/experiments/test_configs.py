"""Config tests through Hydra's compose API: 2^G jobs for G groups, every option composes,
the schema refuses typos, study ids, and user config folders."""

from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class
from omegaconf import OmegaConf

from metacam.cams import MemberOptions
from metacam.errors import MetaCAMError
from metacam.experiments.plan import CONF_DIR, job_spec, plan_sweep
from metacam.groups import default_groups
from metacam.sweep import all_experiments, experiments_of, study_id, validate
from tests.datasets import IMAGENET_TREE, imagefolder, imagenet_val
from tests.experiments.conftest import FAST, composed


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
    groups = default_groups()
    seen = {}
    for job in jobs:
        with composed(job) as cfg:
            spec = job_spec(cfg)
        resolved = validate(spec)
        (combo, *rest) = experiments_of(resolved.groups, resolved.combo_id)
        seen[combo.combo_id] = combo
        # the group flags are exactly the bits of combo_id, bit 0 = gradcam
        assert combo.flags == tuple(bool(combo.combo_id >> i & 1) for i in range(6))
        on = [g for g, flag in zip(groups, combo.flags, strict=True) if flag]
        assert list(combo.members) == [m for g in on for m in groups[g]]
        singles = [e.method for e in rest if e.kind == "single"]
        assert singles == (list(groups[on[0]]) if len(on) == 1 else [])
        assert [e.method for e in rest if e.kind == "control"] == (
            ["shuffled", "smooth_noise"] if combo.combo_id == 63 else [])
    assert sorted(seen) == list(range(64))
    assert seen[0].method == "none" and seen[63].method == "+".join(groups)


@pytest.mark.parametrize("count", [1, 3, 7, 10])
def test_the_number_of_jobs_follows_the_groups_config(tmp_path, count):
    """Any number of groups: the sweeper makes 2^G jobs; combo_id is the bitmask."""
    members = [m for ms in default_groups().values() for m in ms][:count]
    groups = tmp_path / "groups"
    groups.mkdir()
    (groups / "mine.yaml").write_text("".join(f"g{i}: [{m}]\n" for i, m in enumerate(members)))
    jobs = sweep_jobs([f"hydra.searchpath=[file://{tmp_path}]", "groups=mine"])
    assert len(jobs) == 2**count
    with composed([f"hydra.searchpath=[file://{tmp_path}]", "groups=mine"]) as cfg:
        resolved = validate(job_spec(cfg))
    assert resolved.groups.names == tuple(f"g{i}" for i in range(count))
    experiments = all_experiments(resolved.groups)
    assert len([e for e in experiments if e.kind == "metacam"]) == 2**count
    assert len([e for e in experiments if e.kind == "single"]) == count


def test_all_jobs_of_one_study_share_its_id_whatever_the_model_or_shard():
    ids = set()
    for overrides in ([], ["combo_id=5"], ["model=efficientnet_lite1"], ["data.shard_count=4", "data.shard_index=3"],
                      ["members.batch_size=64", "members.ablation_batch=32", "road.batch_size=16"]):
        with composed(overrides) as cfg:
            spec = job_spec(cfg)
        ids.add((spec.sweep_id, spec.results_dir))
    assert len(ids) == 1
    (sweep_id, _), = ids
    for other in (["threshold=fine"], ["road=paper"], ["data.target=top2"], ["heldout.percentiles=[25,75]"],
                  ["seed=1"], ["groups.random=[gradcam]", "groups.gradcam=[hirescam]"],
                  ["members.fullgrad_bn_subclasses=false"], ["metrics=[tests.metric_plugins:mean_relevance]"]):
        with composed(other) as cfg:
            assert job_spec(cfg).sweep_id != sweep_id, other  # defines another study


def test_study_id_is_a_function_of_the_spec_only():
    with composed() as cfg:
        spec = job_spec(cfg)
    assert spec.sweep_id == study_id(spec) and spec.sweep_id.startswith("study-")


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def required(group: str, option: str, tmp_path: Path) -> list[str]:
    """Values for the ??? fields of template options."""
    if (group, option) == ("model", "custom"):
        return ["model.name=resnet18", "model.layer=layer4", "model.num_classes=10"]
    if (group, option) == ("data", "folder"):
        return ["data.images=[sample:coffee]"]
    if (group, option) == ("data", "imagefolder"):
        return [f"data.root={imagefolder(tmp_path / 'tree', IMAGENET_TREE)}"]
    if (group, option) == ("data", "imagenet_val"):
        root, labels = imagenet_val(tmp_path / "val")
        return [f"data.root={root}", f"data.labels={labels}"]
    return []


@pytest.mark.parametrize(
    ("group", "option"),
    [(group, option) for group in ("model", "data", "groups", "road", "threshold") for option in options(group)],
)
def test_every_option_composes_and_validates(group, option, tmp_path):
    with composed([f"{group}={option}", *required(group, option, tmp_path)]) as cfg:
        spec = job_spec(cfg)
    validate(spec)
    if group == "model":
        assert spec.model.name == cfg.model.name
    if group == "threshold":
        from metacam.config import DEFAULT_KS, FINE_KS

        expected = {"deciles": list(DEFAULT_KS), "fine": list(FINE_KS), "plain": [100.0]}[option]
        assert [float(k) for k in spec.threshold.ks] == expected  # the grid each option names
    if group == "road":
        assert spec.road.ties == {"default": "random", "paper": "inclusive"}[option]


def test_defaults_come_from_the_library_dataclasses():
    """One place per default: the composed config equals the dataclasses' defaults."""
    from metacam.config import DEFAULT_KS, DataConfig, HeldoutConfig, RoadConfig, ThresholdConfig
    from metacam.evaluation.deletion import DeletionConfig

    with composed() as cfg:
        spec = job_spec(cfg)
    assert spec.road == RoadConfig() and spec.heldout == HeldoutConfig()
    assert spec.deletion == DeletionConfig() and spec.data == DataConfig()
    assert spec.groups == {g: list(m) for g, m in default_groups().items()}
    assert spec.threshold == ThresholdConfig() and spec.members == MemberOptions() and spec.metrics == []
    assert spec.threshold.ks == list(DEFAULT_KS) == [10.0 * i for i in range(1, 11)]  # the one k grid default


def test_member_options_are_one_config_node():
    """members.* reaches the job as one MemberOptions (batch sizes, AblationCAM's chunk, FullGrad's variant)."""
    with composed(["members.batch_size=16", "members.ablation_batch=32", "members.fullgrad_bn_subclasses=false"]) as cfg:
        spec = job_spec(cfg)
    assert spec.members == MemberOptions(batch_size=16, ablation_batch=32, fullgrad_bn_subclasses=False)


@pytest.mark.parametrize(
    ("override", "message"),
    [("road.tiess=random", "tiess"), ("road.noise=abc", "noise"), ("model.nam=x", "nam")],
)
def test_the_schema_refuses_unknown_keys_and_wrong_types(override, message):
    with pytest.raises(MetaCAMError, match=message):
        plan_sweep([*FAST, override])


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


def test_site_settings_come_from_a_config_dir(tmp_path):
    """A site's cluster settings live in the user's own folder: --config-dir DIR with local/NAME.yaml."""
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "site.yaml").write_text(
        "# @package _global_\nout_dir: /shared/metacam\nhydra:\n  launcher:\n    partition: gpu\n")
    with composed(["launcher=submitit_slurm", "local=site"], hydra_config=True, config_dirs=[str(tmp_path)]) as cfg:
        assert cfg.hydra.launcher.partition == "gpu"
        assert job_spec(cfg).results_dir.startswith("/shared/metacam/sweeps/")


def test_installed_configs_are_package_data():
    """conf/ ships inside the package (metacam.conf), so an installed sweep finds it anywhere."""
    assert (CONF_DIR / "sweep.yaml").is_file() and (CONF_DIR / "groups" / "default.yaml").is_file()
    assert Path(CONF_DIR).name == "conf"
