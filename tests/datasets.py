"""Small dataset trees built from the bundled photographs, for the layout tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from metacam.images import sample_image

SIDE = 48  # small files: the tests decode them at 64 x 64 (tiny_random) at most


def photo(name: str, offset: int = 0) -> Image.Image:
    """A SIDE x SIDE crop of a bundled photograph (``offset`` moves the window: distinct pixels)."""
    pixels = np.asarray(sample_image(name).image)
    top = 40 + 7 * offset
    return Image.fromarray(pixels[top : top + 4 * SIDE : 4, 40 + 5 * offset : 40 + 5 * offset + 4 * SIDE : 4])


def imagefolder(root: Path, classes: dict[str, list[tuple[str, str]]]) -> Path:
    """``root/<class>/<file>`` for ``classes``: class folder -> [(file name, photo name)]."""
    for folder, files in classes.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i, (file, name) in enumerate(files):
            photo(name, i).save(root / folder / file)
    return root


# Class folders named by a class index, an ImageNet WordNet id and a category name; two
# folders hold a file of the same name (photo.png), which keeps its own class.
IMAGENET_TREE = {
    "285": [("photo.png", "chelsea"), ("b.jpg", "cat")],
    "n07920052": [("photo.png", "coffee"), ("d.png", "coffee")],
    "coffee mug": [("e.png", "rocket")],
}
IMAGENET_CLASSES = {"285": 285, "n07920052": 967, "coffee mug": 504}  # espresso = 967, coffee mug = 504

LOC_VAL_SOLUTION = (
    "ImageId,PredictionString\n"
    "ILSVRC2012_val_00000001,n01751748 10 20 30 40 n01751748 1 2 3 4\n"
    "ILSVRC2012_val_00000002,n07920052 0 0 47 47\n"
    "ILSVRC2012_val_00000003,n02124075 5 5 40 40\n"
)
LOC_VAL_CLASSES = {"ILSVRC2012_val_00000001.JPEG": 65, "ILSVRC2012_val_00000002.JPEG": 967,
                   "ILSVRC2012_val_00000003.JPEG": 285}


def imagenet_val(root: Path) -> tuple[Path, Path]:
    """A flat ILSVRC2012-style validation folder of three images and its LOC_val_solution.csv."""
    root.mkdir(parents=True)
    for i, name in enumerate(("rocket", "coffee", "chelsea")):
        photo(name, i).convert("RGB").save(root / f"ILSVRC2012_val_{i + 1:08d}.JPEG", format="JPEG")
    labels = root.parent / "LOC_val_solution.csv"
    labels.write_text(LOC_VAL_SOLUTION)
    return root, labels
