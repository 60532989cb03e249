"""Choosing the torch device from a user's ``--device`` value, and naming it in results."""

from __future__ import annotations

import platform
import re
from pathlib import Path

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


def device_name(device: torch.device) -> str:
    """``cuda:0: NVIDIA H200`` or ``cpu: AMD EPYC`` (the CPU model from /proc/cpuinfo)."""
    if device.type == "cuda":
        return f"{device}: {torch.cuda.get_device_name(device)}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {model}"
