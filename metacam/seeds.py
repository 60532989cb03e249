"""Named, per-image random streams: every random step of MetaCAM draws from its own.

A stream seed is a hash of (run seed, stream name, image id), so

* an image gets the same draw in every job, batch and rerun (its id, not its batch
  slot, decides), which makes results resumable and cacheable;
* different random steps are independent: RandomCAM's channel weights, ROAD's tie
  permutation and its noise, the held-out re-scoring's permutation and noise and the
  smooth-noise control each have a stream of their own (:data:`STREAMS`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

STREAMS = {
    "road.permutation": "ROAD's tie-breaking permutation of the pixels (in-sample draw)",
    "road.noise": "ROAD's imputation noise field (in-sample draw)",
    "heldout.permutation": "the held-out re-scoring's tie permutation",
    "heldout.noise": "the held-out re-scoring's noise field",
    "deletion.permutation": "deletion/insertion AUC's tie permutation",
    "member.<name>": "a seeded member's draw (RandomCAM's channel weights)",
    "metric.noise": "the noise field of Probe.impute (plug-in metrics' ROAD imputation)",
    "control.smooth_noise": "the smooth-noise control map",
    "control.shuffled": "the pixel permutation of the shuffled control (one-image studies)",
    "data.sample": "which images data.sample draws (per image path, with data.sample_seed)",
}


def stream_seed(seed: int, stream: str, image_id: str) -> int:
    """A 63-bit seed for ``stream`` of image ``image_id`` in a run seeded with ``seed``."""
    digest = hashlib.sha256(f"{seed}:{stream}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generator(seed: int, stream: str, image_id: str) -> torch.Generator:
    """A CPU ``torch.Generator`` for one image's stream (CPU draws are the same on every device)."""
    return torch.Generator().manual_seed(stream_seed(seed, stream, image_id))


def default_ids(batch: int) -> tuple[str, ...]:
    """Image ids for API callers who give none: the batch positions ``"0", "1", ...``."""
    return tuple(str(b) for b in range(batch))


def check_ids(image_ids: Sequence[str] | None, batch: int) -> tuple[str, ...]:
    """``image_ids`` as a tuple of ``batch`` strings (positions when None)."""
    if image_ids is None:
        return default_ids(batch)
    ids = tuple(str(i) for i in image_ids)
    if len(ids) != batch:
        from metacam.errors import MetaCAMError

        raise MetaCAMError(f"got {len(ids)} image ids for {batch} images; give one per image")
    return ids
