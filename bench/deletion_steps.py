"""How coarse may deletion/insertion AUC be? AUCs at S steps against 64 steps, on real maps.

EfficientNet-Lite0 with real weights, the four sample photos, every member's map and the
MetaCAM map, plain (k = 100) and thresholded at k = 30. Prints, per S, the max and mean
absolute AUC difference from S = 64, and whether the ranking of the maps by AUC changes.
Run: python bench/deletion_steps.py
"""

from __future__ import annotations

import sys

import torch
from scipy import stats

from metacam.cams import compute_members
from metacam.ensemble import metacam_map, top_k_mask
from metacam.evaluation.deletion import DeletionConfig, deletion_insertion
from metacam.images import load_images
from metacam.models import load_model


def main() -> int:
    bundle = load_model("efficientnet_lite0", "cpu")
    images, _ = load_images(["samples"])
    x = bundle.preprocess(images)
    members = compute_members(bundle.net, x, bundle.target_layer, image_ids=[i.image_id for i in images])
    maps = dict(members.maps)
    maps["metacam"] = metacam_map({k: v for k, v in members.maps.items() if k != "randomcam"}, 100)
    plain = torch.stack(list(maps.values()), dim=1)  # (B, M, H, W)
    stacked = torch.cat([plain, top_k_mask(plain, 30)], dim=1)
    seeds = list(range(len(images)))
    reference = deletion_insertion(bundle.net, x, stacked, members.targets, config=DeletionConfig(steps=64),
                                   seeds=seeds)
    print(f"{stacked.shape[1]} maps x {len(images)} images; AUC difference from 64 steps")
    for steps in (4, 5, 8, 16, 32):
        got = deletion_insertion(bundle.net, x, stacked, members.targets, config=DeletionConfig(steps=steps),
                                 seeds=seeds)
        for name in ("deletion_auc", "insertion_auc"):
            diff = (getattr(got, name) - getattr(reference, name)).abs()
            rho = stats.spearmanr(getattr(got, name).flatten(), getattr(reference, name).flatten()).statistic
            print(f"  S={steps:2d} {name:13s} max {diff.max():.4f} mean {diff.mean():.4f}  "
                  f"Spearman with S=64 {rho:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
