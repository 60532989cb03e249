"""Image sets by layout: which images a study explains, in which order, with which labels.

``DataConfig.layout`` says how the images lie on disk:

* ``files``: ``data.images``, a list of files, folders (their image files, not
  recursive), ``sample:NAME``, ``samples`` or ``photos``; labels from an optional
  ``data.labels`` CSV, matched by file name (or name without extension);
* ``imagefolder``: torchvision's ``ImageFolder``, ``root/<class>/<image>`` (images may
  nest below their class folder); the label is the class folder's name;
* ``imagenet_val``: ILSVRC2012's flat validation folder, ``root/<image>``, labelled by
  ``data.labels`` (``LOC_val_solution.csv`` or any CSV of image name and label).

A label as written (a folder name, a CSV cell) may be a class index (``285``), an
ImageNet WordNet id (``n02124075``, mapped through the synset list that ships with
timm: line i is class i) or one of the model's category names (``Egyptian cat``);
:func:`resolve_labels` maps them to the model's class indices, or says in one line
which label maps to no class. :func:`image_set` lists a layout and draws
``data.sample`` images from it, stratified by label (:func:`sample_indices`).

Everything wrong with the data as a whole (a path that does not exist, a folder with
no images, a class folder with none, a sample larger than the set, an unreadable
labels file) is a :class:`~metacam.errors.MetaCAMError` here, before any job; a file
that is there but cannot be decoded is not: it gets ``status`` rows in the sweep.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import importlib.util
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from metacam.config import LAYOUTS, DataConfig
from metacam.errors import MetaCAMError
from metacam.images import IMAGE_EXTENSIONS, SAMPLE_NAMES, expand_specs, image_files, is_image_set
from metacam.seeds import stream_seed

SAMPLE_STREAM = "data.sample"  # the seed stream of data.sample (see metacam.seeds)
IMAGE_COLUMNS = ("image", "imageid", "file", "filename", "path")  # a labels CSV's image column, lower case
LABEL_COLUMNS = ("label", "predictionstring", "class", "synset", "wnid")  # ... and its label column
_WNID = re.compile(r"^n\d{8}$")
_INDEX = re.compile(r"^\d+$")
_EXTENSIONS = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))


@dataclass(frozen=True)
class ImageSet:
    """The images of a study, in study order, after sampling.

    entries: what :func:`metacam.images.load_images` reads (paths as found, ``sample:NAME``).
    keys: each entry's stable name: its path relative to ``root`` (``imagefolder``,
        ``imagenet_val``) or the entry itself (``files``); what sampling hashes and the
        study id digests, so the same data under another root is the same study.
    labels: each entry's label as written (class folder name, CSV cell), None where it
        has none; all None when the layout has no labels.
    origin: where the labels come from, for messages (``class folder`` or ``labels file X``).
    total: images in the whole set, before sampling.
    """

    entries: tuple[str, ...]
    keys: tuple[str, ...]
    labels: tuple[str | None, ...]
    origin: str
    total: int

    @property
    def has_labels(self) -> bool:
        return any(label is not None for label in self.labels)

    def digest(self) -> str:
        """A short hash of the chosen images (their keys, in order): part of the study id."""
        return hashlib.sha1("\n".join(self.keys).encode()).hexdigest()[:16]

    def describe(self, index: int) -> str:
        """Where the label of entry ``index`` comes from, for a one-line message."""
        label = self.labels[index]
        if self.origin == "class folder":
            return f"class folder '{label}' ({Path(self.entries[index]).parent})"
        return f"{self.origin}: label '{label}' of {self.keys[index]}"


def image_set(data: DataConfig, *, need_labels: bool = False) -> ImageSet:
    """The study's images (all, or ``data.sample`` of them) in study order.

    need_labels: every image must have a label (``data.target=label``).
    Raises MetaCAMError (one line, naming the input) for a bad layout, a path that does
    not exist, a folder without images, an unreadable labels file, an image without a
    label when ``need_labels``, a sample larger than the set.
    """
    if data.layout not in LAYOUTS:
        raise MetaCAMError(f"data layout {data.layout!r} is not a layout; use one of {', '.join(LAYOUTS)} "
                           "(data=folder, data=imagefolder, data=imagenet_val)")
    if data.sample is not None and (isinstance(data.sample, bool) or not isinstance(data.sample, int)
                                    or data.sample < 1):
        raise MetaCAMError(f"data sample {data.sample!r} must be a number of images of at least 1 (or null: all)")
    stamps = (_stamp(data.root), _stamp(data.labels), *(_stamp(spec) for spec in data.images))
    images = _chosen(data.layout, tuple(data.images), data.root, data.labels, data.sample, data.sample_seed, stamps)
    if need_labels:
        missing = [i for i, label in enumerate(images.labels) if label is None]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise MetaCAMError(f"labels file {data.labels} has no label for {Path(images.keys[missing[0]]).name}"
                               f"{more}; add them or use data.target=top1")
    return images


@functools.lru_cache(maxsize=8)
def _chosen(layout: str, images: tuple[str, ...], root: str | None, labels: str | None, sample: int | None,
            seed: int, stamps: tuple[int, ...]) -> ImageSet:
    """The listing of a layout, sampled; cached (every job of a local sweep asks) until the
    root folder, the labels file or a folder of data.images changes (``stamps``)."""
    entries, keys, found, origin = _listing(layout, images, root, labels)
    total = len(entries)
    if sample is not None:
        if sample > total:
            where = "data.images" if layout == "files" else f"data.root {root}"
            raise MetaCAMError(f"data sample {sample} is larger than the {total} image(s) of {where}; "
                               f"give at most {total} (or data.sample=null for all)")
        chosen = sample_indices(keys, found, sample, seed)
        entries = tuple(entries[i] for i in chosen)
        keys = tuple(keys[i] for i in chosen)
        found = tuple(found[i] for i in chosen)
    return ImageSet(entries, keys, found, origin, total)


def sample_indices(keys: Sequence[str], strata: Sequence[str | None], n: int, seed: int) -> list[int]:
    """Indices of a reproducible sample of ``n`` of ``keys``, stratified by ``strata``, in input order.

    Each stratum (a label; None is one stratum of its own) gets its proportional share of
    ``n`` rounded down, and the strata with the largest remainders one more (ties in a
    seeded order), so every class is represented as evenly as ``n`` allows (1,000 of
    ImageNet's 50,000 validation images: one per class). Within a stratum the images
    with the smallest seeded hashes of their key (stream :data:`SAMPLE_STREAM`) are
    taken: an image's draw depends on its own name and the seed only, not on the
    platform, numpy's generator or the other images.
    """
    if not 0 <= n <= len(keys):
        raise MetaCAMError(f"cannot sample {n} of {len(keys)} images")
    groups: dict[str | None, list[int]] = {}
    for i, stratum in enumerate(strata):
        groups.setdefault(stratum, []).append(i)
    total = len(keys)
    exact = {stratum: n * len(members) / total for stratum, members in groups.items()}
    quota = {stratum: int(share) for stratum, share in exact.items()}
    order = sorted(groups, key=lambda s: (-(exact[s] - quota[s]), stream_seed(seed, SAMPLE_STREAM, f"stratum:{s}")))
    for stratum in order[: n - sum(quota.values())]:
        quota[stratum] += 1
    chosen: list[int] = []
    for stratum, members in groups.items():
        ranked = sorted(members, key=lambda i: stream_seed(seed, SAMPLE_STREAM, keys[i]))
        chosen.extend(ranked[: quota[stratum]])
    return sorted(chosen)


# --- labels: what a label as written means for a model -------------------------------


def read_labels(path: str) -> dict[str, str]:
    """image name -> label as written, from a CSV with a header row.

    The image column is the first of :data:`IMAGE_COLUMNS` present (case-insensitive),
    else the first column; the label column the first of :data:`LABEL_COLUMNS`, else
    the second; of a label cell only its first token counts (LOC_val_solution.csv's
    PredictionString is ``n01751748 x0 y0 x1 y1 ...``).
    """
    try:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise MetaCAMError(f"labels file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise MetaCAMError(f"labels file {path}: cannot read it ({error})") from None
    if not rows or len(rows[0]) < 2:
        raise MetaCAMError(f"labels file {path}: needs a header row and two columns, image and label "
                           "(e.g. image,label or LOC_val_solution.csv's ImageId,PredictionString)")
    header = [name.strip().lower() for name in rows[0]]
    image = next((header.index(c) for c in IMAGE_COLUMNS if c in header), 0)
    label = next((header.index(c) for c in LABEL_COLUMNS if c in header), 1 if image != 1 else 0)
    labels: dict[str, str] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(image, label) or not row[image].strip() or not row[label].split():
            raise MetaCAMError(f"labels file {path}: line {number} has no image or no label")
        name, value = row[image].strip(), row[label].split()[0]
        if labels.setdefault(name, value) != value:
            raise MetaCAMError(f"labels file {path}: image {name} has two labels, {labels[name]} and {value}")
    return labels


def resolve_labels(images: ImageSet, categories: Sequence[str], model: str) -> dict[str, int]:
    """entry -> class index of the model for every labelled image of ``images``.

    A label is a class index (0..classes-1), a WordNet id (one of the model's category
    names, or for a 1,000-class model ImageNet's synset list) or a category name
    (case-insensitive, ``_`` for space). Raises MetaCAMError naming the first label that
    maps to no class, or to several, or lies outside the model's classes.
    """
    mapping = _ClassNames(categories, model)
    found: dict[str | None, int] = {}
    resolved: dict[str, int] = {}
    for i, (entry, label) in enumerate(zip(images.entries, images.labels, strict=True)):
        if label is None:
            continue
        if label not in found:
            index, problem = mapping.index(label)
            if problem:
                raise MetaCAMError(f"{images.describe(i)} {problem}")
            found[label] = index
        resolved[entry] = found[label]
    return resolved


class _ClassNames:
    """A model's classes by index, WordNet id and category name."""

    def __init__(self, categories: Sequence[str], model: str) -> None:
        self.count = len(categories)
        self.model = model
        self.exact: dict[str, list[int]] = {}
        self.loose: dict[str, list[int]] = {}
        for i, name in enumerate(categories):
            self.exact.setdefault(name, []).append(i)
            self.loose.setdefault(_loose(name), []).append(i)

    def index(self, label: str) -> tuple[int, str]:
        """(class, "") or (-1, why it maps to no class)."""
        text = label.strip()
        if _INDEX.match(text):
            index = int(text)
            if index < self.count:
                return index, ""
            return -1, f"is outside the classes 0..{self.count - 1} of {self.model}"
        for table, key in ((self.exact, text), (self.loose, _loose(text))):
            hits = table.get(key, [])
            if len(hits) == 1:
                return hits[0], ""
            if len(hits) > 1:
                return -1, (f"names {len(hits)} classes of {self.model} ({', '.join(map(str, hits))}); "
                            "give the class index or the WordNet id instead")
        if _WNID.match(text):
            if self.count != len(imagenet_synsets()):
                return -1, (f"is a WordNet id, but {self.model} has {self.count} classes, not ImageNet's "
                            f"{len(imagenet_synsets())}; give class indices or its category names")
            synset = imagenet_synsets().get(text)
            if synset is None:
                return -1, "is not one of ImageNet-1k's WordNet ids (timm's imagenet_synsets.txt)"
            return synset, ""
        return -1, (f"maps to no class of {self.model}: not a class index (0..{self.count - 1}), an "
                    f"ImageNet WordNet id or one of its {self.count} category names")


def _loose(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


@functools.cache
def imagenet_synsets() -> dict[str, int]:
    """ImageNet-1k's WordNet ids -> class index, from timm's offline list (line i is class i)."""
    spec = importlib.util.find_spec("timm")  # found without importing timm (a second of start-up)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / "data" / "_info" / "imagenet_synsets.txt"
        if path.is_file():
            ids = path.read_text().split()
            return {wnid: i for i, wnid in enumerate(ids)}
    raise MetaCAMError("timm's ImageNet synset list (timm/data/_info/imagenet_synsets.txt) was not found; "
                       "reinstall timm or give class indices")


# --- listing each layout -------------------------------------------------------------------

_Listing = tuple[tuple[str, ...], tuple[str, ...], tuple[str | None, ...], str]


def _stamp(path: str | None) -> int:
    """A change stamp of a file or folder (its mtime; 0 for none, -1 for a missing path): a
    cached listing is redone when it changes (a file added to a class folder changes only
    that folder's: a process that lists a class tree keeps its first listing)."""
    try:
        return os.stat(path).st_mtime_ns if path else 0
    except OSError:
        return -1


def _listing(layout: str, images: tuple[str, ...], root: str | None, labels: str | None) -> _Listing:
    """(entries, keys, labels, origin) of a whole layout."""
    if layout == "files":
        if root is not None:
            raise MetaCAMError(f"data root {root} is for data=imagefolder or data=imagenet_val; "
                               "data=folder takes data.images=[...]")
        entries = _files(images)
        table = read_labels(labels) if labels else {}
        found = tuple(_lookup(table, entry, entry) for entry in entries)
        return entries, entries, found, f"labels file {labels}"
    if images:
        raise MetaCAMError(f"data images {list(images)} are for data=folder; data={layout} reads data.root")
    folder = _root(root, layout)
    if layout == "imagefolder":
        if labels:
            raise MetaCAMError(f"data=imagefolder takes its labels from the class folders; leave data.labels "
                               f"unset (or use data=imagenet_val with {labels})")
        return _imagefolder(folder)
    if not labels:
        raise MetaCAMError("data=imagenet_val needs data.labels, a CSV of image and label "
                           "(e.g. ILSVRC2012's LOC_val_solution.csv)")
    files = image_files(folder)
    if not files:
        raise MetaCAMError(f"data root {folder}: folder has no image files ({_EXTENSIONS})")
    table = read_labels(labels)
    entries = tuple(str(file) for file in files)
    keys = tuple(file.name for file in files)
    return entries, keys, tuple(_lookup(table, key, key) for key in keys), f"labels file {labels}"


def _files(specs: tuple[str, ...]) -> tuple[str, ...]:
    """data.images expanded; a spec that names nothing, or a folder without images, is an error."""
    if not specs:
        raise MetaCAMError("data images is empty; give files, folders or sample names")
    for spec in specs:
        path = Path(spec)
        if path.exists():
            if path.is_dir() and not image_files(path):
                raise MetaCAMError(f"data images: {spec}: folder has no image files ({_EXTENSIONS})")
        elif spec.startswith("sample:"):
            if spec[len("sample:"):] not in SAMPLE_NAMES:
                raise MetaCAMError(f"data images: {spec}: unknown sample image; choose from {', '.join(SAMPLE_NAMES)}")
        elif not is_image_set(spec):
            raise MetaCAMError(f"data images: {spec}: no such file or folder")
    return tuple(expand_specs(specs))


def _root(root: str | None, layout: str) -> Path:
    if not root:
        raise MetaCAMError(f"data={layout} needs data.root, the dataset's folder")
    folder = Path(root)
    if not folder.exists():
        raise MetaCAMError(f"data root {root}: no such folder")
    if not folder.is_dir():
        raise MetaCAMError(f"data root {root}: not a folder")
    return folder


def _imagefolder(root: Path) -> _Listing:
    """Class folders, sorted by name; each one's image files (recursively), sorted by path."""
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise MetaCAMError(f"data root {root} has no class folders (data=imagefolder reads ROOT/<class>/<image>); "
                           f"for a flat folder use data=folder data.images=[{root}] or data=imagenet_val")
    entries: list[str] = []
    keys: list[str] = []
    labels: list[str] = []
    for name in classes:
        files = _walk_images(root / name)
        if not files:
            raise MetaCAMError(f"data root {root}: class folder '{name}' has no image files ({_EXTENSIONS}); "
                               "remove it or add its images")
        for relative in files:
            entries.append(str(root / name / relative))
            keys.append(f"{name}/{relative}")
            labels.append(name)
    return tuple(entries), tuple(keys), tuple(labels), "class folder"


def _walk_images(folder: Path) -> list[str]:
    """Image files under ``folder`` at any depth (symbolic links followed), as sorted relative
    POSIX paths; hidden files and folders skipped."""
    found: list[str] = []
    for here, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        base = Path(here).relative_to(folder)
        found.extend((base / f).as_posix() for f in files
                     if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS)
    return sorted(found)


def _lookup(table: dict[str, str], key: str, entry: str) -> str | None:
    """The label of an image in a labels table: by its key, file name or name without extension."""
    if not table:
        return None
    path = Path(entry)
    for candidate in (key, path.name, path.stem):
        if candidate in table:
            return table[candidate]
    return None
