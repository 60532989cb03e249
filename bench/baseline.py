"""An earlier revision of metacam, importable beside this one: before/after in one run.

A benchmark that must show "no regression against version 0.2" times the new code in
its own process and the old code in a subprocess on the same machine, in the same run:

    from baseline import run_python
    old = run_python("print(json.dumps(measure()))", rev=BASELINE)  # JSON from the old tree

:func:`checkout` extracts ``git archive REV`` once into a cache folder and lays it out
as the package installs (``metacam/`` with ``analysis/``, ``experiments/`` and ``conf/``
as its subpackages ``metacam.analysis``, ...), so a Python process with that folder
first on ``PYTHONPATH`` imports the old code: setuptools' editable finder for this
checkout sits behind ``sys.path`` on ``sys.meta_path``, so it does not shadow it. The
old tree's own ``bench/`` folder is on the path too, for its helpers.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE = "d83b019"
"""Version 0.2.0 as it stood at the end of its round (the last commit of 2026-11-30)."""

# installed subpackage -> folder in the source tree (pyproject.toml's package-dir)
_SUBPACKAGES = {"analysis": "analysis", "experiments": "experiments", "conf": "conf"}


def _sha(rev: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        raise SystemExit(f"baseline revision {rev!r} is not in this clone's history "
                         f"(git fetch it, or pass another --baseline)") from None
    return out.stdout.strip()


def checkout(rev: str = BASELINE) -> Path:
    """The importable tree of ``rev`` (cached under ~/.cache/metacam-bench/<sha>/): a
    folder to put first on PYTHONPATH."""
    sha = _sha(rev)
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "metacam-bench" / sha
    site = root / "site"
    if (root / ".complete").exists():
        return site
    shutil.rmtree(root, ignore_errors=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", sha],
                             capture_output=True, check=True).stdout
    source = root / "source"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(source, filter="data")
    shutil.copytree(source / "metacam", site / "metacam")
    for package, folder in _SUBPACKAGES.items():
        if (source / folder).is_dir():
            shutil.copytree(source / folder, site / "metacam" / package)
    if (source / "bench").is_dir():
        shutil.copytree(source / "bench", site / "bench")
    (root / ".complete").write_text(sha)
    return site


def run_python(code: str, rev: str = BASELINE, *, env: dict[str, str] | None = None,
               timeout: float | None = None) -> str:
    """Run ``code`` with the old tree first on the path; its stdout (stderr passes through).

    Raises SystemExit naming the revision if the code fails.
    """
    site = checkout(rev)
    environment = {**os.environ, **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join([str(site), str(site / "bench"),
                                                 environment.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # cwd outside any checkout: ``python -c`` puts the working folder first on sys.path
    done = subprocess.run([sys.executable, "-c", code], env=environment, stdout=subprocess.PIPE,
                          text=True, timeout=timeout, check=False, cwd=site.parent)
    if done.returncode != 0:
        raise SystemExit(f"the baseline ({rev}) failed with exit status {done.returncode}")
    return done.stdout


def run_json(code: str, rev: str = BASELINE, **kwargs) -> object:
    """:func:`run_python` whose last stdout line is JSON."""
    lines = run_python(code, rev, **kwargs).strip().splitlines()
    return json.loads(lines[-1])


def imported_from(rev: str = BASELINE) -> str:
    """Where the old tree's ``metacam`` and ``metacam.analysis`` import from (a self-check)."""
    return run_python("import metacam, metacam.analysis; print(metacam.__file__, metacam.analysis.__file__)",
                      rev).strip()


if __name__ == "__main__":
    print(imported_from(sys.argv[1] if len(sys.argv) > 1 else BASELINE))
