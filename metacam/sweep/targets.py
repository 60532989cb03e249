"""Which classes a study explains for each image: ``data.target``.

* ``top1`` (the default): each image's most probable class;
* ``topN`` (``top3``): the N most probable classes, each scored as its own unit;
* ``label``: the class in the labels CSV;
* a class index, or a list of class indices (each its own unit).

Every unit records ``target_rank``: 1 for the model's most probable class, 2 for the
second, and so on (for labels and explicit classes, the rank the model gives them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor

from metacam.errors import MetaCAMError

_TOP = re.compile(r"^top(\d+)$")


@dataclass(frozen=True)
class TargetRule:
    """A parsed ``data.target``: kind ``top`` (count = N), ``label`` or ``classes``."""

    kind: str
    count: int = 1
    classes: tuple[int, ...] = ()

    @classmethod
    def parse(cls, target: object) -> TargetRule:
        if target is None:
            return cls("top", 1)
        if isinstance(target, bool):
            raise MetaCAMError(f"data target {target!r}: use top1, topN, label, a class index or a list")
        if isinstance(target, int):
            return cls._classes([target])
        if isinstance(target, list | tuple):
            if not target:
                raise MetaCAMError("data target is an empty list; give class indices, or top1")
            return cls._classes(list(target))
        text = str(target).strip().lower()
        if text == "label":
            return cls("label")
        match = _TOP.match(text)
        if match:
            count = int(match.group(1))
            if count < 1:
                raise MetaCAMError(f"data target {text}: N must be at least 1 (top1 is each image's top class)")
            return cls("top", count)
        if text.lstrip("-").isdigit():
            return cls._classes([int(text)])
        raise MetaCAMError(f"data target {target!r}: use top1, topN (e.g. top3), label, a class index or a list")

    @classmethod
    def _classes(cls, values: list) -> TargetRule:
        try:
            classes = tuple(int(v) for v in values)
        except (TypeError, ValueError):
            raise MetaCAMError(f"data target {values!r}: class indices must be integers") from None
        if any(c < 0 for c in classes) or len(set(classes)) != len(classes):
            raise MetaCAMError(f"data target {list(classes)}: give distinct class indices >= 0")
        return cls("classes", len(classes), classes)

    def text(self) -> str:
        """A stable description (part of unit names and of the study id)."""
        if self.kind == "top":
            return f"top{self.count}"
        if self.kind == "label":
            return "label"
        return "classes:" + ",".join(str(c) for c in self.classes)

    def check_classes(self, num_classes: int) -> None:
        """One-line error if the rule asks for more classes than the model has."""
        if self.kind == "top" and self.count > num_classes:
            raise MetaCAMError(f"data target top{self.count}: the model has only {num_classes} classes")
        if self.kind == "classes" and max(self.classes) >= num_classes:
            raise MetaCAMError(
                f"data target class {max(self.classes)} is outside 0..{num_classes - 1} for this model"
            )

    def targets(self, logits: Tensor, label: int | None) -> list[tuple[int, int]]:
        """(class, rank) pairs for one image. logits: (classes,); rank 1 = most probable."""
        order = torch.argsort(logits.float(), descending=True, stable=True)
        if self.kind == "top":
            return [(int(order[r]), r + 1) for r in range(self.count)]
        classes = (label,) if self.kind == "label" else self.classes
        rank_of = torch.empty_like(order)
        rank_of[order] = torch.arange(1, order.numel() + 1, device=order.device)
        return [(int(c), int(rank_of[int(c)])) for c in classes if c is not None]
