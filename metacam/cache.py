"""A shared on-disk cache of member CAM maps.

Each map is computed once per (model, layer, image, target, member) and reused
by every experiment that needs it, across processes and jobs on a shared
filesystem. Entries are written whole or not at all (a unique temporary name,
then ``os.replace``), so concurrent jobs computing the same entry both succeed
and readers never see a partial file. An entry that fails to load, whose
recorded key differs, or whose values are not a finite map in [0, 1] counts as
missing: it is recomputed and overwritten.
"""

import hashlib
import json
import time
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from metacam.atomic import write_atomically


@dataclass(frozen=True)
class EntryKey:
    """What a cached map depends on. ``model`` identifies weights (name plus checkpoint
    hash or seed); ``options`` holds member options that change the map (e.g. RandomCAM's seed)."""

    model: str
    layer: str
    image_id: str
    target: int
    member: str
    input_size: tuple[int, int]
    options: str = ""
    version: str = "1"  # the member's fingerprint (metacam version, or a plug-in's source hash)

    def text(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True, default=list)

    def relative_path(self) -> Path:
        digest = hashlib.sha1(self.text().encode()).hexdigest()[:10]
        safe_model = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.model)
        return (
            Path(safe_model)
            / self.layer
            / self.image_id
            / f"t{self.target}"
            / f"{self.member}-{digest}.npz"
        )


class MemberCache:
    """Member maps on disk under ``root``; ``root=None`` disables caching (always compute)."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root is not None else None
        self.hits = 0
        self.misses = 0
        self.corrupt = 0

    def path(self, key: EntryKey) -> Path:
        assert self.root is not None
        return self.root / key.relative_path()

    def load(self, key: EntryKey) -> np.ndarray | None:
        """The cached (H, W) float32 map, or None if absent or unusable."""
        if self.root is None:
            return None
        path = self.path(key)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as entry:
                recorded = str(entry["key"])
                saliency = np.array(entry["map"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            return self._discard(path, f"unreadable ({type(error).__name__})")
        if recorded != key.text():
            return self._discard(path, "its recorded key differs")
        if saliency.shape != tuple(key.input_size) or not np.isfinite(saliency).all():
            return self._discard(path, "wrong shape or non-finite values")
        if saliency.min() < 0 or saliency.max() > 1:
            return self._discard(path, "values outside [0, 1]")
        return saliency

    def _discard(self, path: Path, why: str) -> np.ndarray | None:
        """Count and report an unusable entry; None means 'recompute it'."""
        self.corrupt += 1
        warnings.warn(
            f"member cache: {path} is {why}; recomputing it", RuntimeWarning, stacklevel=3
        )
        return None

    def store(self, key: EntryKey, saliency: np.ndarray, *, stale_before: float | None = None) -> None:
        """Write one entry atomically; concurrent writers of the same key are harmless.
        stale_before: when its computation started; a killed writer's older temporary
        files of the same entry are then removed."""
        if self.root is None:
            return
        write_atomically(
            self.path(key),
            lambda partial: np.savez(
                partial, map=saliency.astype(np.float32), key=np.array(key.text())
            ),
            stale_before=stale_before,
        )

    def get_or_compute(
        self,
        keys: Sequence[Sequence[EntryKey]],
        compute: Callable[[list[int], list[str]], tuple[dict[str, Tensor], dict[str, str]]],
        device: torch.device,
    ) -> tuple[dict[str, Tensor], dict[tuple[int, str], str]]:
        """Maps for a batch: ``keys[b][j]`` is image b's entry for member j.

        Missing members are computed together for the images that miss them:
        ``compute(image_indices, members)`` returns (member -> (len(indices), H, W),
        member -> reason for members that failed on those images). Failed maps are
        not stored. Returns (member -> (B, H, W) on ``device``, zeros where a member
        failed; (b, member) -> reason).
        """
        members = [key.member for key in keys[0]]
        found: dict[tuple[int, str], np.ndarray] = {}
        missing: dict[int, list[str]] = {}
        for b, row in enumerate(keys):
            for key in row:
                cached = self.load(key)
                if cached is None:
                    missing.setdefault(b, []).append(key.member)
                else:
                    found[b, key.member] = cached
        self.hits += len(found)
        # One compute call per distinct set of missing members (usually one call).
        by_set: dict[tuple[str, ...], list[int]] = {}
        for b, names in missing.items():
            by_set.setdefault(tuple(names), []).append(b)
        computed: dict[tuple[int, str], Tensor] = {}
        failures: dict[tuple[int, str], str] = {}
        for member_set, indices in by_set.items():
            started = time.time()
            maps, failed = compute(indices, list(member_set))
            for j, b in enumerate(indices):
                for name in member_set:
                    if name in failed:
                        failures[b, name] = failed[name]
                        continue
                    computed[b, name] = maps[name][j]
                    key = next(k for k in keys[b] if k.member == name)
                    self.store(key, maps[name][j].detach().cpu().numpy(), stale_before=started)
            self.misses += len(indices) * len(member_set)
        size = tuple(keys[0][0].input_size)
        out = {}
        for name in members:
            per_image = []
            for b in range(len(keys)):
                if (b, name) in computed:
                    per_image.append(computed[b, name].to(device))
                elif (b, name) in found:
                    per_image.append(torch.from_numpy(found[b, name]).to(device))
                else:
                    per_image.append(torch.zeros(size, device=device))
            out[name] = torch.stack(per_image)
        return out, failures
