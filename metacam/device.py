"""Choosing the torch device from a user's ``--device`` value."""

from __future__ import annotations

import re

import torch

from metacam.errors import MetaCAMError

_ACCEPTED = "auto, cpu, cuda, cuda:N"
_SPEC = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


def resolve_device(spec: str | torch.device | None = None) -> torch.device:
    """The device named by ``spec``.

    ``None`` or ``"auto"``: ``cuda`` when torch sees a CUDA device, else ``cpu``.
    ``"cpu"``, ``"cuda"`` and ``"cuda:N"`` are taken literally but checked, so a
    missing GPU is reported here, in one line, rather than deep inside a forward
    pass. Raises :class:`MetaCAMError` for anything else.
    """
    if spec is None:
        spec = "auto"
    text = str(spec).strip().lower()
    match = _SPEC.match(text)
    if match is None or (match.group(1) != "cuda" and match.group(2) is not None):
        raise MetaCAMError(f"--device {spec!s}: not a device; use one of {_ACCEPTED}")
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise MetaCAMError(
            f"--device {text}: no CUDA device is visible to torch; use --device cpu or auto"
        )
    if index is not None and int(index) >= torch.cuda.device_count():
        raise MetaCAMError(
            f"--device {text}: torch sees {torch.cuda.device_count()} CUDA device(s), "
            f"numbered from 0; use --device cuda or auto"
        )
    return torch.device(text)
