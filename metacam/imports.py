"""Importing a user's object named ``package.module:name`` (or ``path/to/file.py:name``):
a model factory (``--model``) or a plug-in member. One implementation, one-line errors."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from pathlib import Path
from typing import Any

from metacam.errors import MetaCAMError


def import_object(spec: str, what: str) -> Any:
    """The object named ``package.module:attr`` (or ``path/to/file.py:attr``).

    ``what`` names the kind of thing in the one-line errors (``plug-in``, ``model``).
    """
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise MetaCAMError(f"{what} {spec}: expected 'package.module:name' or 'file.py:name'")
    try:
        if module_name.endswith(".py"):
            module = _import_file(module_name, what)
        else:
            module = importlib.import_module(module_name)
    except MetaCAMError:
        raise
    except Exception as error:
        raise MetaCAMError(
            f"{what} {spec}: cannot import {module_name} ({type(error).__name__}: "
            f"{_one_line(error)}); is it installed or on PYTHONPATH?"
        ) from error
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise MetaCAMError(f"{what} {spec}: {module_name} has no attribute {attr!r}")
    if not callable(target):
        raise MetaCAMError(f"{what} {spec}: {attr} is not callable")
    return target


def _import_file(path_text: str, what: str) -> Any:
    path = Path(path_text)
    if not path.is_file():
        raise MetaCAMError(f"{what} file {path}: no such file")
    module_name = f"metacam_user_{path.stem}_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise MetaCAMError(f"{what} file {path}: cannot import it as Python")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
