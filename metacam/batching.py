"""Batched loops that survive CUDA out-of-memory errors by halving their batch.

Every memory-bound step (ScoreCAM's masked images, AblationCAM's ablated copies,
ROAD's forward passes, the imputation) runs its chunks through :class:`Batches`:
on ``torch.cuda.OutOfMemoryError`` the failed chunk is retried at half the size,
logged, down to one item; only an error at size 1 gives up, as
:class:`OutOfMemory` (a MetaCAMError the sweep records as the unit's ``status``).
A halved size is kept for the rest of the loop (memory rarely frees up mid-job).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from metacam.errors import MetaCAMError

log = logging.getLogger("metacam")


class OutOfMemory(MetaCAMError):
    """Out of device memory even at batch size 1 in ``step``."""

    def __init__(self, step: str) -> None:
        super().__init__(f"out of memory in {step} at batch 1")
        self.step = step


class Batches:
    """Chunks of ``[0, total)`` of at most ``size`` items; the size halves on OOM.

    step: the name used in log lines and errors ("ScoreCAM", "ROAD forward", ...).
    """

    def __init__(self, size: int, step: str) -> None:
        if size < 1:
            raise MetaCAMError(f"{step}: batch size {size} must be at least 1")
        self.size = int(size)
        self.step = step
        self.halvings = 0

    def run(self, total: int, work: Callable[[int, int], None]) -> None:
        """Call ``work(start, stop)`` for consecutive chunks covering ``[0, total)``.

        ``work`` must be safe to repeat for a chunk (it writes its results by index),
        since a chunk that ran out of memory is run again, smaller.
        """
        start = 0
        while start < total:
            stop = min(start + self.size, total)
            try:
                work(start, stop)
            except torch.cuda.OutOfMemoryError:
                if self.size == 1:
                    raise OutOfMemory(self.step) from None
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.size = max(1, self.size // 2)
                self.halvings += 1
                log.warning("%s: out of memory at batch %d; retrying at batch %d",
                            self.step, stop - start, self.size)
                continue
            start = stop
