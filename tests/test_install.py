"""A plain, non-editable `pip install .` works from any directory and installs only `metacam`."""

import os
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with a non-editable install of this checkout (built from a copy).

    The dependencies (torch, ...) are not downloaded again: a .pth line appends this
    environment's site-packages to the new venv's path. A bare path in a .pth is not
    processed for .pth files itself, so this environment's *editable* metacam finder
    stays inactive and `import metacam` finds only the non-editable copy.
    """
    root = tmp_path_factory.mktemp("install")
    env = root / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "_metacam_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    source = root / "source"  # a copy of the working tree: pip builds in place
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "outputs", "multirun", "metacam-out", "*.egg-info", "__pycache__", "build"))
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", str(source)],  # setuptools from the registry
        capture_output=True, text=True, check=False,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    return env


def run(env: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(env / "bin" / args[0]), *args[1:]], cwd=cwd, capture_output=True, text=True,
                          check=False, env=environment)


@pytest.mark.slow
def test_non_editable_install_runs_a_sweep_and_analyze_from_anywhere(installed, tmp_path):
    where = run(installed, "python", "-c", "import metacam, metacam.conf; print(metacam.__file__); "
                "print(metacam.conf.__file__)", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert all("site-packages" in line for line in where.stdout.split())  # not the checkout
    for name in ("analysis", "experiments", "conf"):
        missing = run(installed, "python", "-c", f"import {name}", cwd=tmp_path)
        assert missing.returncode != 0 and "ModuleNotFoundError" in missing.stderr, name

    sweep = run(installed, "metacam", "sweep", "model=tiny_random", "groups=two_groups", "combo_id=1,3",
                "data.images=[sample:coffee]", "threshold.ks=[50,100]", "road.percentiles=[50]",
                "heldout.percentiles=[30,70]", "deletion.steps=4", f"out_dir={tmp_path / 'out'}", cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    (results,) = (tmp_path / "out" / "sweeps").glob("*/results")
    analysis = run(installed, "metacam", "analyze", str(results), cwd=tmp_path)
    assert analysis.returncode == 0, analysis.stderr[-3000:]
    report = (results / "analysis" / "report.md").read_text()
    assert "gradcam" in report and "eigen" in report
    status = run(installed, "metacam", "status", str(results), cwd=tmp_path)
    assert status.returncode == 1 and "missing" in status.stdout  # only 2 of the 4 combinations ran

    explain = run(installed, "metacam", "explain", "sample:coffee", "--groups", "gradcam", "--k", "50",
                  "--percentiles", "50", "--no-road", "--out", str(tmp_path / "explain"), cwd=tmp_path)
    assert explain.returncode == 0, explain.stderr[-2000:]
    assert (tmp_path / "explain" / "scores.csv").is_file()



def test_every_package_folder_is_declared_for_installation():
    """The explicit package list (package-dir mapping) must name every folder with an
    __init__.py, or a non-editable install silently lacks it."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    found = set()
    for package, folder in config["package-dir"].items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder)
            found.add(".".join([package, *relative.parts]))
    assert found == declared
