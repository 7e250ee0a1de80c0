"""Dataset loaders (rft_ray.data) on tiny generated trees, the shared real Parquet data, and corruptions."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from rft_ray.config import DatasetSpec, SpecError, build
from rft_ray.data import DataError, create_bundle, dataset_names
from rft_ray.data.base import EncodedImageSet, SubsetImageSet, TransformedImageSet
from rft_ray.data.corruptions import corruption_names, create_corruption

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SIZE = 16
CLASSES = ["ant", "bee", "cat"]


# ---------------------------------------------------------------------------------------------------
# Helpers


def write_image(path: Path, rng: np.random.Generator, side: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def image_bytes(rng: np.random.Generator, fmt: str = "PNG", side: int = 8) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def class_tree(folder: Path, classes: list[str], count: int, seed: int = 0, ext: str = ".png") -> None:
    rng = np.random.default_rng(seed)
    for name in classes:
        for i in range(count):
            write_image(folder / name / f"{name}_{i:03d}{ext}", rng)


def folder_splits(root: Path, classes: list[str] = CLASSES, train: int = 5, test: int = 2) -> Path:
    class_tree(root / "train", classes, train, seed=1)
    class_tree(root / "test", classes, test, seed=2, ext=".jpg")
    return root


def bundle(name: str, root: Path | str | None = None, size: int = SIZE, **kwargs):
    options = kwargs.pop("options", {})
    return create_bundle(DatasetSpec(name=name, root=None if root is None else str(root), options=options, **kwargs),
                         size)


def origins(images) -> list[str]:
    """The file name (or Parquet row) behind every image of a split, through subsets."""
    if isinstance(images, SubsetImageSet):
        base = origins(images.base)
        return [base[i] for i in images.indices]
    if isinstance(images, TransformedImageSet):
        return origins(images.base)
    assert isinstance(images, EncodedImageSet) and images.names is not None
    return list(images.names)


def check_bundle(b, class_names: list[str], total_train: int | None = None, test: int | None = None) -> None:
    assert b.class_names == class_names
    if total_train is not None:
        assert len(b.train) + len(b.val) == total_train
    if test is not None:
        assert len(b.test) == test
    assert len(b.train) > 0 and len(b.test) > 0
    for split in (b.train, b.val, b.test, *b.ood.values()):  # val and OOD may be empty (val_fraction 0, no OOD)
        labels = np.asarray(split.labels)
        assert len(labels) == 0 or labels.min() >= 0 and labels.max() < len(class_names)
    image, label = b.test[0]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, SIZE, SIZE)
    assert isinstance(label, int)
    # every class is in train, and the train images decode
    assert set(np.asarray(b.train.labels)) == set(range(len(class_names)))
    images, labels = b.train.materialize()
    assert images.shape == (len(b.train), 3, SIZE, SIZE) and images.dtype == torch.uint8


def assert_error(exc_info, *needles: str) -> None:
    message = str(exc_info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in error message: {message}"


def write_parquet(path: Path, labels: list[int], *, class_names: list[str] | None = None,
                  huggingface: dict | None = None, image_column: str = "image", label_column: str = "label",
                  plain_binary: bool = False, corrupt_rows: tuple[int, ...] = (), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    data = [b"not an image at all" if i in corrupt_rows else image_bytes(rng) for i in range(len(labels))]
    if plain_binary:
        images = pa.array(data, pa.binary())
    else:
        images = pa.StructArray.from_arrays([pa.array(data, pa.binary()),
                                             pa.array([f"img_{i}.png" for i in range(len(labels))])],
                                            names=["bytes", "path"])
    table = pa.table({image_column: images, label_column: pa.array(labels, pa.int64())})
    metadata = {}
    if class_names is not None:
        metadata[b"class_names"] = json.dumps(class_names).encode()
    if huggingface is not None:
        metadata[b"huggingface"] = json.dumps(huggingface).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(metadata or None), path)
    return path


def balanced(classes: int, per_class: int) -> list[int]:
    return [c for c in range(classes) for _ in range(per_class)]


def test_registry_lists_every_dataset():
    assert {"cifar10", "cifar100", "caltech256", "cub200", "stanford_dogs", "domainnet", "parquet"} <= set(dataset_names())


# ---------------------------------------------------------------------------------------------------
# The generic image-folder layout, shared by the folder datasets


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "caltech256", "cub200", "stanford_dogs"])
def test_generic_folder_layout(tmp_path, name):
    root = folder_splits(tmp_path)
    b = bundle(name, root, corruptions=["gaussian_noise", "contrast"])
    check_bundle(b, CLASSES, total_train=15, test=6)
    assert sorted(b.ood) == ["contrast", "gaussian_noise"]
    assert all(len(d) == len(b.test) for d in b.ood.values())
    # the official test folder is the test split
    assert all("/test/" in o for o in origins(b.test))
    assert all("/train/" in o for o in origins(b.train) + origins(b.val))
    corrupted = b.ood["gaussian_noise"][0][0]
    assert corrupted.shape == (3, SIZE, SIZE) and not torch.equal(corrupted, b.test[0][0])


@pytest.mark.parametrize("name", ["cifar10", "caltech256", "cub200", "stanford_dogs", "domainnet"])
def test_missing_root_is_explained(tmp_path, name):
    with pytest.raises(DataError) as err:
        bundle(name, None)
    assert_error(err, "dataset.root")
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        bundle(name, missing)
    assert_error(err, str(missing))


def test_empty_class_folder_is_named(tmp_path):
    root = folder_splits(tmp_path)
    empty = root / "test" / "bee"
    for f in empty.iterdir():
        f.unlink()
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(DataError) as err:
        bundle("caltech256", root)
    assert_error(err, str(empty), "*.jpg", "notes.txt")


def test_test_folder_with_unknown_class(tmp_path):
    root = folder_splits(tmp_path)
    class_tree(root / "test", ["dog"], 1)
    with pytest.raises(DataError) as err:
        bundle("cub200", root)
    assert_error(err, str(root / "test"), "dog")


def test_corrupt_image_names_the_file(tmp_path):
    """The generic layout is read by imagefolder's code: a file PIL cannot read stops the load, named."""
    root = folder_splits(tmp_path)
    bad = root / "train" / "bee" / "broken.png"
    bad.write_bytes(b"\x89PNG this is not really a png")
    with pytest.raises(DataError) as err:
        bundle("stanford_dogs", root, val_fraction=0.0)
    assert_error(err, str(bad), "1 of 16 image files cannot be read")


def test_an_image_that_breaks_after_loading_names_the_file(tmp_path):
    root = folder_splits(tmp_path)
    b = bundle("stanford_dogs", root, val_fraction=0.0)
    index = origins(b.train).index(str(root / "train" / "bee" / "bee_001.png"))
    (root / "train" / "bee" / "bee_001.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(DataError) as err:
        b.train[index]
    assert_error(err, "bee_001.png")


# ---------------------------------------------------------------------------------------------------
# CIFAR


def test_cifar_offline_without_files_says_what_to_do(tmp_path):
    (tmp_path / "something_else").mkdir()
    with pytest.raises(DataError) as err:
        bundle("cifar10", tmp_path)
    assert_error(err, str(tmp_path), "cifar-10-batches-py", "dataset.download: true", "parquet", "something_else")
    with pytest.raises(DataError) as err:
        bundle("cifar100", tmp_path)
    assert_error(err, "cifar-100-python", "train/<class>")


def test_cifar_classes_selects_and_relabels(tmp_path):
    root = folder_splits(tmp_path, classes=["apple", "bear", "cloud", "dolphin"], train=4, test=2)
    b = bundle("cifar100", root, options={"classes": ["dolphin", "apple"]})
    check_bundle(b, ["dolphin", "apple"], total_train=8, test=4)
    for images in (b.train, b.val, b.test):
        for origin, label in zip(origins(images), images.labels):
            assert Path(origin).parent.name == ["dolphin", "apple"][label]


def test_unknown_class_lists_valid_ones(tmp_path):
    root = folder_splits(tmp_path)
    with pytest.raises(SpecError) as err:
        bundle("cifar10", root, options={"classes": ["ant", "zebra"]})
    assert_error(err, "dataset.options.classes", "zebra", "ant, bee, cat")


def test_bad_option_types_are_spec_errors(tmp_path):
    with pytest.raises(SpecError) as err:
        bundle("cifar10", tmp_path, options={"classes": "ant"})
    assert_error(err, "dataset.options.classes")
    with pytest.raises(SpecError) as err:
        bundle("caltech256", tmp_path, options={"include_cluter": True})
    assert_error(err, "include_clutter")


# ---------------------------------------------------------------------------------------------------
# Caltech-256


def caltech_tree(root: Path) -> Path:
    categories = root / "256_ObjectCategories"
    rng = np.random.default_rng(3)
    for folder in ("001.ak47", "002.american-flag", "003.backpack", "257.clutter"):
        for i in range(5):
            write_image(categories / folder / f"{folder[:3]}_{i:04d}.jpg", rng)
    write_image(categories / "002.american-flag" / "upper.JPG", rng)
    write_image(categories / "003.backpack" / "extra.png", rng)
    (categories / "001.ak47" / ".DS_Store").write_bytes(b"\x00\x01junk")
    (categories / "001.ak47" / "readme.txt").write_text("skip me")
    (categories / ".DS_Store").write_bytes(b"junk")
    return root


def test_caltech256_official_layout(tmp_path):
    root = caltech_tree(tmp_path)
    b = bundle("caltech256", root, val_fraction=0.0)
    # 5 + 6 + 6 images (clutter skipped); round(20%) of each class, 1 image, held out as test
    check_bundle(b, ["ak47", "american-flag", "backpack"], total_train=17 - 3, test=3)
    files = origins(b.train) + origins(b.test)
    assert not any("clutter" in f or f.endswith((".txt", ".DS_Store")) for f in files)
    assert any(f.endswith("upper.JPG") for f in files) and any(f.endswith("extra.png") for f in files)

    with_clutter = bundle("caltech256", root / "256_ObjectCategories", options={"include_clutter": True})
    assert with_clutter.class_names == ["ak47", "american-flag", "backpack", "clutter"]


def test_caltech256_split_is_seeded(tmp_path):
    root = caltech_tree(tmp_path)
    options = {"test_fraction": 0.4}
    first = bundle("caltech256", root, split_seed=0, options=options)
    again = bundle("caltech256", root, split_seed=0, options=options)
    other = bundle("caltech256", root, split_seed=1, options=options)
    assert len(first.test) == 2 + 2 + 2
    assert np.array_equal(first.test.indices, again.test.indices)
    assert origins(first.val) == origins(again.val)
    assert not np.array_equal(first.test.indices, other.test.indices)
    assert set(origins(first.test)).isdisjoint(origins(first.train) + origins(first.val))


def test_caltech256_wrong_layout(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "readme.md").write_text("hi")
    with pytest.raises(DataError) as err:
        bundle("caltech256", tmp_path)
    assert_error(err, str(tmp_path), "256_ObjectCategories/<NNN.name>", "photos/", "readme.md")


# ---------------------------------------------------------------------------------------------------
# CUB-200-2011


def cub_tree(root: Path) -> tuple[Path, set[str]]:
    base = root / "CUB_200_2011"
    rng = np.random.default_rng(4)
    folders = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    images, labels, split, test_files = [], [], [], set()
    image_id = 0
    for cid, folder in enumerate(folders, 1):
        for i in range(4):
            image_id += 1
            rel = f"{folder}/{folder[4:]}_{i:04d}.jpg"
            write_image(base / "images" / rel, rng)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {cid}")
            is_train = int(i % 4 != 1)  # one test image per class: the second
            split.append(f"{image_id} {is_train}")
            if not is_train:
                test_files.add(str(base / "images" / rel))
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (base / "classes.txt").write_text("\n".join(f"{i} {f}" for i, f in enumerate(folders, 1)) + "\n")
    return root, test_files


def test_cub200_official_split(tmp_path):
    root, test_files = cub_tree(tmp_path)
    for where in (root, root / "CUB_200_2011"):
        b = bundle("cub200", where, val_fraction=0.0)
        check_bundle(b, ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross"], total_train=9, test=3)
        assert set(origins(b.test)) == test_files
        assert not set(origins(b.train)) & test_files
        for origin, label in zip(origins(b.test), b.test.labels):
            assert Path(origin).parent.name.startswith(f"00{label + 1}.")


def test_cub200_missing_split_file(tmp_path):
    root, _ = cub_tree(tmp_path)
    (root / "CUB_200_2011" / "train_test_split.txt").unlink()
    with pytest.raises(DataError) as err:
        bundle("cub200", root)
    assert_error(err, str(root / "CUB_200_2011"), "train_test_split.txt", "images.txt", "classes.txt")


def test_cub200_missing_image(tmp_path):
    root, test_files = cub_tree(tmp_path)
    gone = sorted(test_files)[0]
    Path(gone).unlink()
    with pytest.raises(DataError) as err:
        bundle("cub200", root)
    assert_error(err, gone, "images.txt")


# ---------------------------------------------------------------------------------------------------
# Stanford Dogs


def dogs_tree(root: Path) -> tuple[Path, list[str]]:
    from scipy.io import savemat

    rng = np.random.default_rng(5)
    folders = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02100236-German_short-haired_pointer"]
    train, test = [], []
    for folder in folders:
        for i in range(4):
            rel = f"{folder}/{folder.split('-')[0]}_{i}.jpg"
            write_image(root / "Images" / rel, rng)
            (test if i == 0 else train).append(rel)
    write_image(root / "Images" / folders[0] / "unlisted.jpg", rng)  # in no list: not used

    def cell(entries):
        out = np.empty((len(entries), 1), dtype=object)
        for i, e in enumerate(entries):
            out[i, 0] = np.array([e])
        return out

    savemat(str(root / "train_list.mat"), {"file_list": cell(train)})
    savemat(str(root / "test_list.mat"), {"file_list": cell(test)})
    return root, test


def test_stanford_dogs_official_split(tmp_path):
    root, test = dogs_tree(tmp_path)
    b = bundle("stanford_dogs", root, val_fraction=0.0)
    check_bundle(b, ["Chihuahua", "Japanese_spaniel", "German_short-haired_pointer"], total_train=9, test=3)
    assert sorted(origins(b.test)) == sorted(str(root / "Images" / t) for t in test)
    assert not any(o.endswith("unlisted.jpg") for o in origins(b.train))


def test_stanford_dogs_missing_list(tmp_path):
    root, _ = dogs_tree(tmp_path)
    (root / "test_list.mat").unlink()
    with pytest.raises(DataError) as err:
        bundle("stanford_dogs", root)
    assert_error(err, str(root / "test_list.mat"), "Images/<wnid-Breed_Name>", "train_list.mat")


# ---------------------------------------------------------------------------------------------------
# DomainNet

DN_CLASSES = ["aircraft_carrier", "apple", "zebra"]


def domain_folder(root: Path, domain: str, split_files: bool, per_class: int = 5, classes=DN_CLASSES) -> None:
    rng = np.random.default_rng(len(domain))
    lines = {"train": [], "test": []}
    for label, name in enumerate(classes):
        for i in range(per_class):
            rel = f"{domain}/{name}/{domain}_{label:03d}_{i:06d}.jpg"
            write_image(root / rel, rng)
            lines["test" if i < 2 else "train"].append(f"{rel} {label}")
    if split_files:
        for split, rows in lines.items():
            (root / f"{domain}_{split}.txt").write_text("\n".join(rows) + "\n")


def test_domainnet_folders_with_and_without_split_files(tmp_path):
    domain_folder(tmp_path, "real", split_files=True)
    domain_folder(tmp_path, "clipart", split_files=True)
    domain_folder(tmp_path, "sketch", split_files=False)
    b = bundle("domainnet", tmp_path, val_fraction=0.0, corruptions=["contrast"])
    check_bundle(b, DN_CLASSES, total_train=9, test=6)
    assert sorted(b.ood) == ["clipart", "sketch"]  # other domains; no corruptions for natural-OOD data
    assert all("/real/" in o for o in origins(b.train) + origins(b.test))
    assert sorted(origins(b.ood["clipart"])) == sorted(
        str(tmp_path / line.split()[0]) for line in (tmp_path / "clipart_test.txt").read_text().split("\n") if line)
    assert len(b.ood["sketch"]) == 3  # seeded 20% of 5 per class
    assert all("/sketch/" in o for o in origins(b.ood["sketch"]))
    image, _ = b.ood["sketch"][0]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.uint8

    again = bundle("domainnet", tmp_path, val_fraction=0.0)
    other = bundle("domainnet", tmp_path, val_fraction=0.0, split_seed=7)
    assert origins(again.ood["sketch"]) == origins(b.ood["sketch"])
    assert origins(other.ood["sketch"]) != origins(b.ood["sketch"])

    sketch = bundle("domainnet", tmp_path, options={"domain": "sketch", "ood_domains": ["real"]})
    assert list(sketch.ood) == ["real"]
    assert all("/sketch/" in o for o in origins(sketch.train) + origins(sketch.test))


def test_domainnet_parquet_layout(tmp_path):
    for domain, seed in (("real", 0), ("quickdraw", 1), ("painting", 2)):
        write_parquet(tmp_path / domain / "train.parquet", balanced(3, 4), class_names=DN_CLASSES, seed=seed)
        write_parquet(tmp_path / domain / "test.parquet", balanced(3, 2), class_names=DN_CLASSES, seed=seed + 10)
    b = bundle("domainnet", tmp_path, options={"domain": "quickdraw"})
    check_bundle(b, DN_CLASSES, total_train=12, test=6)
    assert list(b.ood) == ["painting", "real"]
    assert all(len(d) == 6 for d in b.ood.values())
    assert all("real/test.parquet" in o for o in origins(b.ood["real"]))


def test_domainnet_errors(tmp_path):
    domain_folder(tmp_path, "real", split_files=True)
    domain_folder(tmp_path, "clipart", split_files=False, classes=["aircraft_carrier", "apple", "yak"])
    with pytest.raises(DataError) as err:
        bundle("domainnet", tmp_path)
    assert_error(err, "clipart", "yak", "zebra")
    with pytest.raises(DataError) as err:
        bundle("domainnet", tmp_path, options={"domain": "painting"})
    assert_error(err, str(tmp_path / "painting"), "<root>/<domain>/<class>/*.jpg", "clipart, real")
    with pytest.raises(DataError) as err:
        bundle("domainnet", tmp_path, options={"ood_domains": ["sketch"]})
    assert_error(err, str(tmp_path / "sketch"), "ood_domains")
    with pytest.raises(SpecError) as err:
        bundle("domainnet", tmp_path, options={"ood_domains": ["photo"]})
    assert_error(err, "dataset.options.ood_domains[0]", "photo", "'sketch'")
    with pytest.raises(SpecError) as err:
        bundle("domainnet", tmp_path, options={"domain": "photo"})
    assert_error(err, "dataset.options.domain")


# ---------------------------------------------------------------------------------------------------
# Parquet


def test_parquet_train_and_test_files(tmp_path):
    names = ["cat", "dog", "owl"]
    write_parquet(tmp_path / "train.parquet", balanced(3, 6), class_names=names)
    write_parquet(tmp_path / "test.parquet", balanced(3, 2), class_names=names, seed=1)
    b = bundle("parquet", tmp_path, options={"train": "train.parquet", "test": "test.parquet"})
    check_bundle(b, names, total_train=18, test=6)
    assert sorted(b.ood) == ["contrast", "gaussian_blur", "gaussian_noise", "jpeg"]
    assert origins(b.test)[0].startswith(str(tmp_path / "test.parquet") + " row 0")


def test_parquet_seeded_split_classes_and_relative_paths(tmp_path, monkeypatch):
    write_parquet(tmp_path / "data" / "all.parquet", balanced(4, 10), class_names=["a", "b", "c", "d"])
    monkeypatch.chdir(tmp_path)
    first = bundle("parquet", options={"train": "data/all.parquet", "classes": ["d", "b"]})
    check_bundle(first, ["d", "b"], total_train=16, test=4)
    for images in (first.train, first.val, first.test):
        for origin, label in zip(origins(images), images.labels):
            row = int(origin.split(" row ")[1].split()[0])
            assert row // 10 == [3, 1][label]
    again = bundle("parquet", options={"train": "data/all.parquet", "classes": ["d", "b"]})
    other = bundle("parquet", split_seed=3, options={"train": "data/all.parquet", "classes": ["d", "b"]})
    assert origins(first.test) == origins(again.test) and origins(first.val) == origins(again.val)
    assert origins(first.test) != origins(other.test)


def test_parquet_class_names_from_huggingface_or_numbers(tmp_path):
    hf = {"info": {"features": {"img": {"_type": "Image"},
                                "fine_label": {"names": ["x", "y"], "_type": "ClassLabel"}}}}
    path = write_parquet(tmp_path / "hf.parquet", balanced(2, 5), huggingface=hf, image_column="img",
                         label_column="fine_label")
    b = bundle("parquet", options={"train": str(path), "image_column": "img", "label_column": "fine_label"})
    check_bundle(b, ["x", "y"], total_train=8, test=2)
    plain = write_parquet(tmp_path / "plain.parquet", balanced(3, 5), plain_binary=True)
    b = bundle("parquet", options={"train": plain.as_uri()})
    check_bundle(b, ["0", "1", "2"], total_train=12, test=3)


def test_parquet_errors(tmp_path):
    path = write_parquet(tmp_path / "t.parquet", balanced(2, 5), class_names=["a", "b"])
    with pytest.raises(SpecError) as err:
        bundle("parquet", tmp_path)
    assert_error(err, "dataset.options.train")
    with pytest.raises(DataError) as err:
        bundle("parquet", options={"train": str(path), "image_column": "img"})
    assert_error(err, str(path), "no column 'img'", "image (struct", "label (int64)")
    with pytest.raises(DataError) as err:
        bundle("parquet", options={"train": str(path), "label_column": "image"})
    assert_error(err, str(path), "label column 'image'", "not an integer")
    pq.write_table(pa.table({"image": pa.array(["a", "b"]), "label": pa.array([0, 1])}), tmp_path / "str.parquet")
    with pytest.raises(DataError) as err:
        bundle("parquet", tmp_path, options={"train": "str.parquet"})
    assert_error(err, str(tmp_path / "str.parquet"), "image column 'image'", "struct<bytes, path> or binary")
    with pytest.raises(DataError) as err:
        bundle("parquet", options={"train": str(tmp_path / "missing.parquet")})
    assert_error(err, str(tmp_path / "missing.parquet"), "does not exist", "t.parquet")
    with pytest.raises(DataError) as err:
        bundle("parquet", options={"train": str(tmp_path)})
    assert_error(err, str(tmp_path), "not at their folder", "t.parquet")
    (tmp_path / "fake.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(DataError) as err:
        bundle("parquet", options={"train": str(tmp_path / "fake.parquet")})
    assert_error(err, str(tmp_path / "fake.parquet"), "not a readable Parquet file")
    with pytest.raises(SpecError) as err:
        bundle("parquet", options={"train": str(path), "classes": ["a", "q"]})
    assert_error(err, "dataset.options.classes", "'q'", "a, b")


def test_parquet_corrupt_image_names_file_and_row(tmp_path):
    path = write_parquet(tmp_path / "c.parquet", balanced(2, 5), class_names=["a", "b"], corrupt_rows=(7,))
    b = bundle("parquet", options={"train": str(path), "test_fraction": 0.4}, val_fraction=0.0)
    for images in (b.train, b.test):
        rows = [o for o in origins(images)]
        if any(" row 7 " in r for r in rows):
            index = next(i for i, r in enumerate(rows) if " row 7 " in r)
            with pytest.raises(DataError) as err:
                images[index]
            assert_error(err, str(path), "row 7", "img_7.png")
            break
    else:
        pytest.fail("row 7 is in no split")


# ---------------------------------------------------------------------------------------------------
# The real shared data (skipped when absent)


def shared(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"shared real data {path} is absent (see ../shared/data/README.md)")
    return path


def test_real_cifar10_test_parquet_with_classes():
    path = shared("cifar10/test.parquet")
    b = bundle("parquet", options={"train": str(path), "classes": ["ship", "cat"]})
    assert b.class_names == ["ship", "cat"]
    assert len(b.train) + len(b.val) + len(b.test) == 2000
    assert len(b.test) == 400 and np.bincount(b.test.labels).tolist() == [200, 200]
    for i in (0, len(b.test) - 1):
        image, label = b.test[i]
        assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.uint8
        assert f"test/{['ship', 'cat'][label]}/" in origins(b.test)[i]
    assert b.ood["gaussian_noise"][0][0].shape == (3, SIZE, SIZE)


def test_real_cifar100_10cls_seeded_split():
    path = shared("cifar100-10cls/all.parquet")
    b = bundle("parquet", path.parent, options={"train": path.name})
    assert b.class_names == ["apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
                             "bicycle", "bottle"]
    assert len(b.train) + len(b.val) + len(b.test) == 1834
    assert set(np.unique(b.test.labels)) == set(range(10))
    assert 0.18 < len(b.test) / 1834 < 0.22
    image, _ = b.test[0]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.uint8
    again = bundle("parquet", path.parent, options={"train": path.name})
    assert np.array_equal(b.test.indices, again.test.indices)


# ---------------------------------------------------------------------------------------------------
# Corruptions


def sample_image(seed: int = 0, side: int = 32) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(30, 220, side)
    base = (ramp[None, :, None] + ramp[:, None, None]) / 2 + rng.normal(0, 20, size=(side, side, 3))
    return torch.from_numpy(np.clip(base, 0, 255).astype(np.uint8)).permute(2, 0, 1).contiguous()


@pytest.mark.parametrize("name", corruption_names())
def test_corruption(name):
    image = sample_image()
    mild, severe = create_corruption(name, 1), create_corruption(name, 5)
    out = mild(image, 3)
    assert out.dtype == torch.uint8 and out.shape == image.shape
    assert torch.equal(out, mild(image.clone(), 3))  # deterministic per index
    assert not torch.equal(out, image)

    def distance(x):
        return (x.float() - image.float()).abs().mean().item()

    if name not in NOT_ORDERED_BY_DISTANCE:
        assert distance(severe(image, 3)) > distance(out)


# CIFAR-10-C's own parameters for these do not grow the pixel distance with severity (elastic: the affine jitter
# shrinks as the field grows; glass: the stronger blur smooths the swaps; frost: less image kept at 4 than 3);
# tests/test_corruptions.py checks that their five severities differ instead.
NOT_ORDERED_BY_DISTANCE = {"elastic_transform", "frost", "glass_blur"}


def test_noise_depends_on_index():
    image = sample_image()
    noise = create_corruption("gaussian_noise", 3)
    assert not torch.equal(noise(image, 0), noise(image, 1))


def test_unknown_corruption_fails_before_reading_data(tmp_path):
    with pytest.raises(SpecError) as err:
        bundle("caltech256", tmp_path / "nowhere", corruptions=["gausian_noise"])
    assert_error(err, "gaussian_noise")


def test_negative_split_seed_is_a_spec_error():
    with pytest.raises(SpecError) as err:  # a spec from a file, a dict or flags: ranges are the builder's
        build(DatasetSpec, {"name": "digits", "split_seed": -1}, "dataset")
    assert_error(err, "split_seed")
