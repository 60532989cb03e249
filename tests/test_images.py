"""Tests of metacam.images: file, folder and sample loading, problems, conversion, ids."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metacam.errors import MetaCAMError
from metacam.images import (
    DEFAULT_SAMPLES,
    PHOTO_NAMES,
    SAMPLE_NAMES,
    load_image,
    load_images,
    to_tensor,
)


def _save(path: Path, pixels: np.ndarray, **kwargs) -> Path:
    Image.fromarray(pixels).save(path, **kwargs)
    return path


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_bad_inputs_each_give_one_problem_and_good_images_still_load(tmp_path: Path) -> None:
    good = _save(tmp_path / "good.png", _noise(32, 48))
    missing = tmp_path / "missing.jpg"
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    text = tmp_path / "notes.png"
    text.write_text("this is not a PNG")
    full = _save(tmp_path / "full.jpg", _noise(64, 64), quality=90)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    tiny = _save(tmp_path / "tiny.png", _noise(8, 8))
    specs = [good, missing, empty, text, truncated, tiny, "sample:dog", "sample:coffee"]

    images, problems = load_images(specs)

    assert [im.source for im in images] == [str(good), "sample:coffee"]
    assert images[0].image.size == (48, 32)
    bad = [missing, empty, text, truncated, tiny, "sample:dog"]
    assert [p.source for p in problems] == [str(s) for s in bad]
    for problem in problems:
        assert problem.source in problem.reason
        assert "\n" not in problem.reason
    reasons = {Path(p.source).name: p.reason for p in problems}
    assert "no such file" in reasons["missing.jpg"]
    assert "no image files" in reasons["empty_folder"]
    assert "not an image" in reasons["notes.png"]
    assert "truncated" in reasons["truncated.jpg"]
    assert reasons["tiny.png"].endswith("image is 8×8 pixels; MetaCAM needs at least 16×16")
    assert reasons["sample:dog"].endswith(", ".join(SAMPLE_NAMES))


def test_min_size_is_a_parameter(tmp_path: Path) -> None:
    path = _save(tmp_path / "small.png", _noise(10, 12))
    assert load_images([path], min_size=8)[1] == []
    (problem,) = load_images([path], min_size=11)[1]
    assert "image is 12×10 pixels" in problem.reason


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 40 wide x 20 high: left half red, right half blue. Orientation 6 means
    # "rotate 90° clockwise to display", so red ends up on top of a 20 x 40 image.
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)

    loaded = load_image(path).image
    assert loaded.size == (20, 40)
    top = np.asarray(loaded)[:15].reshape(-1, 3).mean(0)
    bottom = np.asarray(loaded)[25:].reshape(-1, 3).mean(0)
    assert top[0] > 240 and top[2] < 15
    assert bottom[2] > 240 and bottom[0] < 15


def test_modes_convert_to_rgb(tmp_path: Path) -> None:
    gray = np.arange(20 * 30, dtype=np.uint8).reshape(20, 30)
    rgba = np.dstack([_noise(20, 30), np.full((20, 30), 7, np.uint8)])
    wide = np.array([[0, 257 * 128, 65535] * 10] * 20, dtype=np.uint16)
    paths = [
        _save(tmp_path / "gray.png", gray),
        _save(tmp_path / "rgba.png", rgba),
        _save(tmp_path / "wide.png", wide),
    ]
    Image.fromarray(_noise(20, 30)).convert("P").save(tmp_path / "palette.png")
    paths.append(tmp_path / "palette.png")

    images, problems = load_images(paths)

    assert problems == []
    assert all(im.image.mode == "RGB" for im in images)
    got = {Path(im.source).stem: np.asarray(im.image) for im in images}
    assert np.array_equal(got["gray"], np.repeat(gray[..., None], 3, axis=2))
    assert np.array_equal(got["rgba"], rgba[..., :3])  # alpha dropped, colours kept
    assert Image.open(paths[2]).mode.startswith("I")  # really a 16-bit file
    assert got["wide"][0, :3, 0].tolist() == [0, 128, 255]  # 0..65535 -> 0..255
    palette = np.asarray(Image.open(tmp_path / "palette.png").convert("RGB"))
    assert np.array_equal(got["palette"], palette)


def test_image_id_is_stable_and_content_based(tmp_path: Path) -> None:
    pixels = _noise(20, 20, seed=1)
    first = _save(tmp_path / "photo.png", pixels)
    copy = _save(tmp_path / "copy.png", pixels)
    other = _save(tmp_path / "other.png", _noise(20, 20, seed=2))

    ids = [im.image_id for im in load_images([first, copy, other, first])[0]]
    again = [im.image_id for im in load_images([first, copy, other, first])[0]]

    digest = hashlib.sha1(pixels.tobytes()).hexdigest()[:8]
    assert ids == again
    assert ids[0] == f"photo-{digest}" == ids[3]  # duplicates are kept
    assert ids[1] == f"copy-{digest}"
    assert ids[2].startswith("other-") and not ids[2].endswith(digest)


def test_folder_lists_image_files_sorted_non_recursive(tmp_path: Path) -> None:
    for name in ["b.png", "a.JPG", "c.tiff", "d.webp", "e.bmp", ".hidden.png"]:
        fmt = {".JPG": "JPEG", ".tiff": "TIFF", ".webp": "WEBP", ".bmp": "BMP"}
        _save(tmp_path / name, _noise(16, 16), format=fmt.get(Path(name).suffix, "PNG"))
    (tmp_path / "notes.txt").write_text("skip me")
    (tmp_path / "sub").mkdir()
    _save(tmp_path / "sub" / "deeper.png", _noise(16, 16))

    images, problems = load_images([tmp_path])

    assert problems == []
    assert [Path(im.source).name for im in images] == [
        "a.JPG",
        "b.png",
        "c.tiff",
        "d.webp",
        "e.bmp",
    ]
    assert images[0].source == str(tmp_path / "a.JPG")


def test_samples() -> None:
    images, problems = load_images(["samples", "sample:coffee", "sample:cat"])
    assert problems == []
    expected = [f"sample:{n}" for n in ("coffee", "chelsea", "astronaut", "rocket", "coffee", "cat")]
    assert [im.source for im in images] == expected
    ids = {im.source: im.image_id for im in images}
    assert ids["sample:coffee"].startswith("coffee-")
    # skimage's cat() is chelsea(): same pixels, same hash, different names.
    assert ids["sample:cat"].split("-")[1] == ids["sample:chelsea"].split("-")[1]
    assert images[0].image.size == (600, 400)


def test_photos_are_every_distinct_bundled_photograph() -> None:
    images, problems = load_images(["photos"])
    assert problems == []
    assert [im.source for im in images] == [f"sample:{n}" for n in PHOTO_NAMES]
    assert "cat" not in PHOTO_NAMES and set(DEFAULT_SAMPLES) < set(PHOTO_NAMES)
    hashes = [im.image_id.split("-")[1] for im in images]
    assert len(set(hashes)) == len(hashes)  # no duplicate pixels
    sizes = {im.source: im.image.size for im in images}
    assert sizes["sample:grace_hopper"] == (512, 600) and sizes["sample:motorcycle"] == (741, 500)
    assert all(im.image.mode == "RGB" for im in images)  # the grayscale camera man converted
    assert all(im.image.mode == "RGB" for im in images)


def test_load_image_raises_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(MetaCAMError, match="no such file or folder"):
        load_image(tmp_path / "nope.png")
    _save(tmp_path / "one.png", _noise(16, 16))
    _save(tmp_path / "two.png", _noise(16, 16))
    with pytest.raises(MetaCAMError, match="expected one image, found 2"):
        load_image(tmp_path)
    assert load_image("sample:rocket").image_id.startswith("rocket-")


def test_to_tensor_resizes_the_whole_image_without_crop(tmp_path: Path) -> None:
    # A wide image: black left third, white right third. A centre crop would lose
    # both; a whole-image resize keeps black in column 0 and white in the last one.
    pixels = np.full((100, 300, 3), 128, np.uint8)
    pixels[:, :100] = 0
    pixels[:, 200:] = 255
    image = Image.fromarray(pixels)
    path = _save(tmp_path / "wide.png", pixels)

    batch = to_tensor([image, path], (64, 32))

    assert batch.shape == (2, 3, 64, 32) and batch.dtype == torch.float32
    assert torch.equal(batch[0], batch[1])
    assert torch.all(batch[:, :, :, 0] == 0) and torch.all(batch[:, :, :, -1] == 1)
    assert torch.all(batch[:, :, :, 16] == 128 / 255)
    assert to_tensor(image, (8, 8)).shape == (1, 3, 8, 8)
