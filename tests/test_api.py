"""The public front (DESIGN §3) and the layering rules (STYLE.md)."""

import importlib
import subprocess
import sys
from pathlib import Path

import metacam

PACKAGE = Path(metacam.__file__).parent


def test_public_names_resolve_to_the_documented_objects():
    for name in ("load_model", "member_cams", "metacam_map", "impute", "road", "adaptive_threshold"):
        assert callable(getattr(metacam, name)), name
    # importing a submodule must not shadow a public function of the same package
    importlib.import_module("metacam.evaluation.imputation")

    assert metacam.impute.__module__ == "metacam.evaluation.imputation" and callable(metacam.impute)
    builtins = [m.name for m in metacam.MEMBERS.values() if not m.plugin]  # plug-ins join when named
    assert len(builtins) == 16 and {"kpcacam", "fem", "shapleycam", "finercam"} <= set(builtins)  # 12 + newer
    assert set(metacam.__all__) >= {"load_model", "member_cams", "metacam_map", "impute", "road",
                                    "adaptive_threshold", "Probe", "map_metric", "model_metric", "Evaluator"}
    from metacam.evaluation.engine import Evaluator
    from metacam.evaluation.registry import METRICS, map_metric, model_metric
    from metacam.evaluation.roadscore import Probe

    assert (metacam.Probe, metacam.map_metric, metacam.model_metric, metacam.Evaluator, metacam.METRICS) == (
        Probe, map_metric, model_metric, Evaluator, METRICS)
    assert [m.name for m in METRICS.values() if not m.plugin] == ["road", "deletion", "sparseness", "complexity"]


def test_the_metric_registry_and_the_schema_import_without_torch():
    """The analysis reads the metric table and the schema without torch."""
    code = ("import sys, metacam.evaluation.registry as r, metacam.schema as s\n"
            "print('torch' in sys.modules, [m.name for m in r.METRICS.values()], s.metric_columns(r.entries(r.builtins()))[-2:])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False ['road', 'deletion', 'sparseness', 'complexity'] ['sparseness', 'complexity']"


def test_the_library_never_imports_hydra_omegaconf_or_submitit():
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        for line in path.read_text().splitlines()
        if line.lstrip().startswith(("import ", "from "))
        and any(word in line for word in ("hydra", "omegaconf", "submitit"))
    ]
    assert offenders == []
    modules = [
        f"metacam.{p.relative_to(PACKAGE).with_suffix('').as_posix().replace('/', '.')}"
        for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf', 'submitit')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_importing_metacam_and_its_schema_is_light():
    code = "import metacam, metacam.schema, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_public_functions_survive_importing_every_submodule():
    """A submodule named like a public function would replace it on the package once
    imported (metacam.road the module vs metacam.road the function)."""
    code = (
        "import importlib, pkgutil, metacam\n"
        "for info in pkgutil.walk_packages(metacam.__path__, 'metacam.'): importlib.import_module(info.name)\n"
        "bad = [n for n in metacam.__all__ if n != '__version__' and type(getattr(metacam, n)).__name__ == 'module']\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
