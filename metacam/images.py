"""Loading images from files, folders and the bundled sample photographs.

One bad file never stops a run: :func:`load_images` returns the images it could
read and, separately, one :class:`ImageProblem` per input it could not.
:func:`to_tensor` turns images into the resized ``(B, 3, H, W)`` tensor in
[0, 1] that models preprocess and figures display.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from metacam.errors import MetaCAMError


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data  # deferred: importing skimage costs a second

        if name == "motorcycle":
            return skimage.data.stereo_motorcycle()[0]  # the left view
        return getattr(skimage.data, name)()

    return load


def _matplotlib(file: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from matplotlib import cbook

        path = cbook.get_sample_data(file, asfileobj=False)
        with Image.open(str(path)) as image:
            return np.asarray(to_rgb(image))

    return load


# Real photographs that ship with installed packages (offline), by name. skimage's
# cat() is pixel-identical to chelsea(): both load, with the same content hash.
_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "coffee": _skimage("coffee"),
    "chelsea": _skimage("chelsea"),
    "astronaut": _skimage("astronaut"),
    "rocket": _skimage("rocket"),
    "cat": _skimage("cat"),
    "motorcycle": _skimage("motorcycle"),
    "camera": _skimage("camera"),  # grayscale
    "grace_hopper": _matplotlib("grace_hopper.jpg"),
    "gift_box": _matplotlib("Minduka_Present_Blue_Pack.png"),  # 128 x 128
}
SAMPLE_NAMES: tuple[str, ...] = tuple(_PHOTOS)
DEFAULT_SAMPLES: tuple[str, ...] = ("coffee", "chelsea", "astronaut", "rocket")
"""``samples``: the four distinct scikit-image photos of the default sweep."""
PHOTO_NAMES: tuple[str, ...] = tuple(name for name in _PHOTOS if name != "cat")
"""``photos``: every distinct bundled photograph (cat duplicates chelsea)."""
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
)
_SAMPLE_PREFIX = "sample:"
_SETS = {"samples": DEFAULT_SAMPLES, "photos": PHOTO_NAMES}


@dataclass
class LoadedImage:
    """An image ready for a model.

    ``image_id`` is ``<file stem or sample name>-<8 hex of sha1(RGB pixels)>``:
    the same pixels under the same name always get the same id, wherever the
    file lives. ``source`` is the path as given, or ``"sample:NAME"``.
    ``image`` is RGB with the EXIF orientation already applied.
    """

    image_id: str
    source: str
    image: Image.Image

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return self.image.size


@dataclass
class ImageProblem:
    """An input that gave no image, and why (one line that names the input)."""

    source: str
    reason: str

    def __str__(self) -> str:
        return self.reason


# What :func:`to_tensor` accepts as one image.
ImageLike = Image.Image | str | Path | LoadedImage


def load_images(
    specs: Iterable[str | Path], *, min_size: int = 16
) -> tuple[list[LoadedImage], list[ImageProblem]]:
    """Load every image named by ``specs``; report unreadable ones instead of raising.

    Each spec is one of:

    - a path to an image file;
    - a folder: its image files (extensions in :data:`IMAGE_EXTENSIONS`, any case),
      sorted by name, not recursive; hidden files (``.name``) are skipped;
    - ``"sample:NAME"``, ``NAME`` in :data:`SAMPLE_NAMES`;
    - ``"samples"``: the four default photos; ``"photos"``: every distinct bundled
      photograph (unless a path of that name exists, which wins).

    Returns ``(images, problems)`` in input order. Problems are: a missing path,
    a folder without images, a file that is not an image or does not decode
    completely (truncated), an image smaller than ``min_size`` pixels on a side,
    an unknown sample name. Duplicates (same ``image_id``) are kept.
    """
    images: list[LoadedImage] = []
    problems: list[ImageProblem] = []
    for spec in specs:
        for result in _load_spec(spec, min_size):
            if isinstance(result, LoadedImage):
                images.append(result)
            else:
                problems.append(result)
    return images, problems


def expand_specs(specs: Iterable[str | Path]) -> list[str]:
    """Specs with folders replaced by their image files and ``samples`` / ``photos`` by
    their ``sample:NAME`` entries; files, sample names and missing paths pass through.

    Lets a large image set be split into units and shards before any decoding;
    :func:`load_images` on each entry then gives the image or its problem.
    A folder without images stays as one entry (its problem is reported on load).
    """
    entries: list[str] = []
    for spec in specs:
        text = str(spec)
        path = Path(text)
        if text in _SETS and not path.exists():
            entries.extend(_SAMPLE_PREFIX + name for name in _SETS[text])
        elif path.is_dir() and image_files(path):
            entries.extend(str(file) for file in image_files(path))
        else:
            entries.append(text)
    return entries


def is_image_set(spec: str) -> bool:
    """True if ``spec`` names a set of bundled photos (``samples``, ``photos``) and no path."""
    return spec in _SETS and not Path(spec).exists()


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (extensions in :data:`IMAGE_EXTENSIONS`, any case;
    hidden files skipped), sorted by name."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return sorted(files, key=lambda p: p.name)


def load_image(spec: str | Path, *, min_size: int = 16) -> LoadedImage:
    """Load exactly one image (a file or ``sample:NAME``); raise :class:`MetaCAMError` if not."""
    images, problems = load_images([spec], min_size=min_size)
    if problems:
        raise MetaCAMError(problems[0].reason)
    if len(images) != 1:
        raise MetaCAMError(f"{spec}: expected one image, found {len(images)}")
    return images[0]


def to_tensor(images: ImageLike | Sequence[ImageLike], size: tuple[int, int]) -> torch.Tensor:
    """Resize whole images to ``size = (H, W)`` and stack them: ``(B, 3, H, W)`` float32 in [0, 1].

    No crop, so a saliency map covers the whole photo; the aspect ratio is not
    kept. Bicubic resampling with antialiasing (PIL's, as torchvision uses for
    PIL input); the result is rounded to 8 bits, so values are multiples of 1/255.
    ``images`` are PIL images, :class:`LoadedImage` s or paths (loaded with
    :func:`load_image`, EXIF orientation applied); a single one gives ``B = 1``.
    Returns a CPU tensor.
    """
    if isinstance(images, (Image.Image, str, Path, LoadedImage)):
        images = [images]
    height, width = size
    arrays = []
    for item in images:
        rgb = _as_rgb(item)
        if rgb.size != (width, height):
            rgb = rgb.resize((width, height), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(rgb, dtype=np.uint8))
    if not arrays:
        raise MetaCAMError("no images to preprocess")
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return batch.to(torch.float32).div_(255.0)


def sample_image(name: str) -> LoadedImage:
    """One of the bundled photographs, by name (see :data:`SAMPLE_NAMES`)."""
    if name not in _PHOTOS:
        raise MetaCAMError(_unknown_sample(name))
    image = to_rgb(Image.fromarray(_PHOTOS[name]()))
    return LoadedImage(_image_id(name, image), _SAMPLE_PREFIX + name, image)


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB: EXIF orientation applied, alpha dropped, 16-bit scaled.

    Grayscale, palette, CMYK and RGBA convert as PIL does (alpha is dropped, as
    torchvision's loader does). 16- and 32-bit integer grayscale is mapped linearly
    from 0..65535 to 0..255 (PIL's own conversion would clip it at 255).
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        values = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # avoids PIL's palette-transparency warning
    return image if image.mode == "RGB" else image.convert("RGB")


# --- internals ---------------------------------------------------------------


def _load_spec(spec: str | Path, min_size: int) -> list[LoadedImage | ImageProblem]:
    text = str(spec)
    if isinstance(spec, str) and not Path(spec).exists():
        if spec in _SETS:
            return [sample_image(name) for name in _SETS[spec]]
        if spec.startswith(_SAMPLE_PREFIX):
            name = spec[len(_SAMPLE_PREFIX) :]
            if name not in SAMPLE_NAMES:
                return [ImageProblem(text, _unknown_sample(name))]
            return [sample_image(name)]
    path = Path(spec)
    if path.is_dir():
        files = image_files(path)
        if not files:
            extensions = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
            return [ImageProblem(text, f"{text}: folder has no image files ({extensions})")]
        return [_load_file(file, str(file), min_size) for file in files]
    if not path.exists():
        return [ImageProblem(text, f"{text}: no such file or folder")]
    return [_load_file(path, text, min_size)]


def _load_file(path: Path, source: str, min_size: int) -> LoadedImage | ImageProblem:
    try:
        with Image.open(path) as opened:
            opened.load()  # decode fully now: truncation shows only on a full decode
            image = to_rgb(opened)
    except UnidentifiedImageError:
        return ImageProblem(source, f"{source}: not an image file (or a format PIL cannot read)")
    except Image.DecompressionBombError as error:
        return ImageProblem(source, f"{source}: image is too large to load safely ({error})")
    except Exception as error:  # PIL's decoders raise many types; one bad file must not stop a run
        return ImageProblem(source, f"{source}: cannot read image ({_one_line(error)})")
    width, height = image.size
    if width < min_size or height < min_size:
        return ImageProblem(
            source,
            f"{source}: image is {width}×{height} pixels; "
            f"MetaCAM needs at least {min_size}×{min_size}",
        )
    return LoadedImage(_image_id(path.stem, image), source, image)


def _as_rgb(item: ImageLike) -> Image.Image:
    if isinstance(item, LoadedImage):
        return item.image
    if isinstance(item, Image.Image):
        return to_rgb(item)
    return load_image(item).image


def _image_id(stem: str, image: Image.Image) -> str:
    digest = hashlib.sha1(image.tobytes()).hexdigest()[:8]
    return f"{stem}-{digest}"


def _unknown_sample(name: str) -> str:
    return f"sample:{name}: unknown sample image; choose from {', '.join(SAMPLE_NAMES)}"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
