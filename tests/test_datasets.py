"""metacam.datasets: the layouts, labels by index / WordNet id / category name, sampling,
and every data error as one line."""

from __future__ import annotations

from collections import Counter

import pytest
from torchvision.models import ResNet50_Weights

from metacam.config import DataConfig
from metacam.datasets import (
    image_set,
    imagenet_synsets,
    read_labels,
    resolve_labels,
    sample_indices,
)
from metacam.errors import MetaCAMError
from tests.datasets import (
    IMAGENET_CLASSES,
    IMAGENET_TREE,
    LOC_VAL_CLASSES,
    imagefolder,
    imagenet_val,
    photo,
)

IMAGENET = list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])  # what the ImageNet models name
TEN = [f"class {i}" for i in range(10)]  # tiny_random's categories


def test_imagefolder_labels_from_index_wordnet_id_and_category_name_folders(tmp_path):
    root = imagefolder(tmp_path / "val", IMAGENET_TREE)
    images = image_set(DataConfig(layout="imagefolder", images=[], root=str(root)))
    assert images.keys == ("285/b.jpg", "285/photo.png", "coffee mug/e.png", "n07920052/d.png",
                           "n07920052/photo.png")
    assert images.entries == tuple(str(root / key) for key in images.keys)
    assert images.total == 5 and images.origin == "class folder"
    labels = resolve_labels(images, IMAGENET, "efficientnet_lite0")
    assert labels == {str(root / key): IMAGENET_CLASSES[key.split("/")[0]] for key in images.keys}
    # two files named photo.png in two class folders keep their own classes
    assert labels[str(root / "285" / "photo.png")] == 285 and labels[str(root / "n07920052" / "photo.png")] == 967


def test_imagefolder_takes_nested_images_and_skips_hidden_files(tmp_path):
    root = imagefolder(tmp_path / "train", {"3": [("a.png", "coffee")], "7": [("b.png", "rocket")]})
    (root / "3" / "deeper").mkdir()
    photo("astronaut").save(root / "3" / "deeper" / "c.png")
    photo("astronaut").save(root / "3" / ".hidden.png")
    (root / "3" / "notes.txt").write_text("not an image")
    images = image_set(DataConfig(layout="imagefolder", images=[], root=str(root)))
    assert images.keys == ("3/a.png", "3/deeper/c.png", "7/b.png")
    assert resolve_labels(images, TEN, "tiny") == {str(root / k): int(k[0]) for k in images.keys}


def test_imagenet_val_with_loc_val_solution(tmp_path):
    root, labels = imagenet_val(tmp_path / "val")
    images = image_set(DataConfig(layout="imagenet_val", images=[], root=str(root), labels=str(labels)))
    assert images.keys == tuple(sorted(LOC_VAL_CLASSES))
    assert images.labels == ("n01751748", "n07920052", "n02124075")  # first token of PredictionString
    assert resolve_labels(images, IMAGENET, "lite0") == {str(root / k): v for k, v in LOC_VAL_CLASSES.items()}


def test_a_labels_csv_accepts_indices_wordnet_ids_and_category_names(tmp_path):
    (tmp_path / "photos").mkdir()
    for i, name in enumerate(("coffee", "chelsea", "rocket")):
        photo(name).save(tmp_path / "photos" / f"img{i}.png")
    labels = tmp_path / "labels.csv"
    labels.write_text("file,synset\nimg0.png,967\nimg1,n02124075\nimg2.png,Coffee_Mug\n")
    images = image_set(DataConfig(images=[str(tmp_path / "photos")], labels=str(labels)), need_labels=True)
    resolved = resolve_labels(images, IMAGENET, "lite0")
    assert [resolved[e] for e in images.entries] == [967, 285, 504]


def test_synset_list_is_timms_offline_list():
    synsets = imagenet_synsets()
    assert len(synsets) == 1000 and synsets["n01440764"] == 0 and synsets["n15075141"] == 999
    assert IMAGENET[synsets["n02124075"]] == "Egyptian cat"


# --- sampling -------------------------------------------------------------------------


def test_sampling_is_reproducible_stratified_and_in_listing_order():
    keys = [f"c{c}/img{i:02d}.png" for c, size in enumerate((6, 6, 3)) for i in range(size)]
    strata = [key.split("/")[0] for key in keys]
    first = sample_indices(keys, strata, 5, seed=0)
    assert first == sample_indices(keys, strata, 5, seed=0) and first == sorted(first)
    assert Counter(strata[i] for i in first) == {"c0": 2, "c1": 2, "c2": 1}  # 5 x 6/15, 6/15, 3/15
    others = {tuple(sample_indices(keys, strata, 5, seed=s)) for s in range(1, 6)}
    assert len(others | {tuple(first)}) > 2  # the seed matters
    for seed in range(5):  # floor or ceil of the proportional share, always
        counts = Counter(strata[i] for i in sample_indices(keys, strata, 7, seed))
        assert counts["c0"] in (2, 3) and counts["c1"] in (2, 3) and counts["c2"] in (1, 2) and sum(counts.values()) == 7


def test_one_image_per_class_from_a_50000_image_imagenet_like_listing():
    keys = [f"n{c:08d}/ILSVRC2012_val_{c * 50 + i:08d}.JPEG" for c in range(1000) for i in range(50)]
    strata = [key[:9] for key in keys]
    chosen = sample_indices(keys, strata, 1000, seed=0)
    assert len(chosen) == 1000 and Counter(strata[i] for i in chosen) == dict.fromkeys(set(strata), 1)


def test_an_images_draw_depends_on_its_name_and_the_seed_only():
    keys = [f"k{i}" for i in range(40)]
    strata = ["a"] * 20 + ["b"] * 20
    before = [keys[i] for i in sample_indices(keys, strata, 10, seed=3)]
    grown = [*keys[:20], "k_new_a", *keys[20:], "k_new_b"]  # one image more in each class
    after = [grown[i] for i in sample_indices(grown, ["a"] * 21 + ["b"] * 21, 10, seed=3)]
    assert set(after) - {"k_new_a", "k_new_b"} <= set(before) and len(set(before) & set(after)) >= 8


def test_sample_of_an_imagefolder_and_the_chosen_digest(tmp_path):
    tree = {str(c): [(f"{i}.png", "coffee") for i in range(4)] for c in range(3)}
    root = imagefolder(tmp_path / "val", tree)
    data = DataConfig(layout="imagefolder", images=[], root=str(root), sample=6, sample_seed=1)
    images = image_set(data)
    assert len(images.entries) == 6 and images.total == 12
    assert Counter(images.labels) == {"0": 2, "1": 2, "2": 2}
    assert images.digest() == image_set(data).digest()
    data.sample_seed = 2
    assert image_set(data).digest() != images.digest()
    moved = imagefolder(tmp_path / "elsewhere", tree)  # same data under another root: same choice
    assert image_set(DataConfig(layout="imagefolder", images=[], root=str(moved), sample=6,
                                sample_seed=1)).digest() == images.digest()


# --- errors: one line each, naming the input ------------------------------------------------


def error_of(call) -> str:
    with pytest.raises(MetaCAMError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_files_layout_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    assert error_of(lambda: image_set(DataConfig(images=["/no/such/folder"]))) == (
        "data images: /no/such/folder: no such file or folder")
    assert "folder has no image files" in error_of(lambda: image_set(DataConfig(images=[str(tmp_path / "empty")])))
    assert "unknown sample image" in error_of(lambda: image_set(DataConfig(images=["sample:dog"])))
    assert "data images is empty" in error_of(lambda: image_set(DataConfig(images=[])))
    assert "is for data=imagefolder" in error_of(lambda: image_set(DataConfig(root=str(tmp_path))))
    assert "not a layout" in error_of(lambda: image_set(DataConfig(layout="coco")))


def test_dataset_layout_errors(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    photo("coffee").save(flat / "a.png")
    empty_class = imagefolder(tmp_path / "tree", {"3": [("a.png", "coffee")]})
    (empty_class / "7").mkdir()
    folder = DataConfig(layout="imagefolder", images=[])
    assert "needs data.root" in error_of(lambda: image_set(folder))
    folder.root = str(tmp_path / "nowhere")
    assert error_of(lambda: image_set(folder)) == f"data root {tmp_path / 'nowhere'}: no such folder"
    folder.root = str(flat / "a.png")
    assert "not a folder" in error_of(lambda: image_set(folder))
    folder.root = str(flat)
    assert "has no class folders" in error_of(lambda: image_set(folder))
    folder.root = str(empty_class)
    assert "class folder '7' has no image files" in error_of(lambda: image_set(folder))
    folder.root, folder.labels = str(flat), "labels.csv"
    assert "takes its labels from the class folders" in error_of(lambda: image_set(folder))
    val = DataConfig(layout="imagenet_val", images=[], root=str(flat))
    assert "needs data.labels" in error_of(lambda: image_set(val))
    val.labels = str(tmp_path / "missing.csv")
    assert error_of(lambda: image_set(val)) == f"labels file {tmp_path / 'missing.csv'}: no such file"
    (tmp_path / "empty").mkdir()
    val.root = str(tmp_path / "empty")
    assert "folder has no image files" in error_of(lambda: image_set(val))
    assert "are for data=folder" in error_of(lambda: image_set(DataConfig(layout="imagenet_val", root=str(flat))))


def test_sample_errors(tmp_path):
    root = imagefolder(tmp_path / "val", {"0": [("a.png", "coffee"), ("b.png", "rocket")]})
    data = DataConfig(layout="imagefolder", images=[], root=str(root), sample=3)
    assert error_of(lambda: image_set(data)) == (
        f"data sample 3 is larger than the 2 image(s) of data.root {root}; give at most 2 (or data.sample=null for all)")
    data.sample = 0
    assert "at least 1" in error_of(lambda: image_set(data))


@pytest.mark.parametrize(
    ("folder", "categories", "message"),
    [
        ("5000", TEN, "is outside the classes 0..9 of tiny"),
        ("n02124075", TEN, "is a WordNet id, but tiny has 10 classes, not ImageNet's 1000"),
        ("n99999999", IMAGENET, "is not one of ImageNet-1k's WordNet ids"),
        ("unicorn", IMAGENET, "maps to no class of tiny: not a class index (0..999)"),
        ("crane", ["crane", "heron", "crane"], "names 2 classes of tiny (0, 2)"),
    ],
)
def test_a_class_folder_that_maps_to_no_class_is_one_line(tmp_path, folder, categories, message):
    root = imagefolder(tmp_path / "val", {folder: [("a.png", "coffee")]})
    images = image_set(DataConfig(layout="imagefolder", images=[], root=str(root)))
    text = error_of(lambda: resolve_labels(images, categories, "tiny"))
    assert text.startswith(f"class folder '{folder}' ({root / folder}) ") and message in text


def test_a_csv_label_outside_the_classes_names_the_file_and_image(tmp_path):
    (tmp_path / "photos").mkdir()
    photo("coffee").save(tmp_path / "photos" / "a.png")
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label\na.png,5000\n")
    images = image_set(DataConfig(images=[str(tmp_path / "photos")], labels=str(labels)))
    key = str(tmp_path / "photos" / "a.png")
    assert error_of(lambda: resolve_labels(images, TEN, "tiny")) == (
        f"labels file {labels}: label '5000' of {key} is outside the classes 0..9 of tiny")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image\n", "needs a header row and two columns"),
        ("image,label\na.png,\n", "line 2 has no image or no label"),
        ("image,label\na.png,1\na.png,2\n", "image a.png has two labels, 1 and 2"),
    ],
)
def test_bad_labels_files(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    assert message in error_of(lambda: read_labels(str(path)))


def test_target_label_needs_a_label_for_every_chosen_image(tmp_path):
    (tmp_path / "photos").mkdir()
    for name in ("a", "b", "c"):
        photo("coffee").save(tmp_path / "photos" / f"{name}.png")
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label\na.png,1\n")
    data = DataConfig(images=[str(tmp_path / "photos")], labels=str(labels))
    assert image_set(data).labels == ("1", None, None)  # fine for top1: the label column is null
    assert error_of(lambda: image_set(data, need_labels=True)) == (
        f"labels file {labels} has no label for b.png and 1 more; add them or use data.target=top1")
