"""`imagefolder`: your own images, as a new user brings them (rft_ray.data.imagefolder).

The fixture is the folder the issue tried: four classes of PNGs of mixed sizes, one grey and one RGBA image,
a .webp and a .bmp, a text file, and (where a test adds it) a corrupt PNG; built here, never committed.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rft_ray.config import DatasetSpec
from rft_ray.data import DataError, create_bundle
from rft_ray.data.imagefolder import DataWarning
from rft_ray.specs import run_spec

CLASSES = ["apple", "banana", "cherry", "date"]  # sorted, as the folders are named
SIZE = 16


def _save(path: Path, rng: np.random.Generator, size: tuple[int, int], mode: str = "RGB", fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode=mode).save(path, format=fmt)


def own_images(folder: Path, per_class: int = 6, seed: int = 0) -> dict[str, Path]:
    """folder/<class>/*: PNGs 64x64 and 48x48, one 80x60, one grey, one RGBA, one .webp and one .bmp, plus a
    README.txt. Returns the special files by kind."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            _save(folder / name / f"{name}_{i}.png", rng, (64, 64) if i % 2 else (48, 48))
    special = {"wide": folder / "apple" / "wide.png", "grey": folder / "banana" / "grey.png",
               "rgba": folder / "cherry" / "rgba.png", "webp": folder / "date" / "photo.webp",
               "bmp": folder / "date" / "scan.BMP"}
    _save(special["wide"], rng, (80, 60))
    _save(special["grey"], rng, (64, 64), mode="L")
    _save(special["rgba"], rng, (64, 64), mode="RGBA")
    _save(special["webp"], rng, (64, 64), fmt="WEBP")
    _save(special["bmp"], rng, (64, 64), fmt="BMP")
    (folder / "apple" / "README.txt").write_text("not an image")
    return special


def load(root: Path, **options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = create_bundle(DatasetSpec(name="imagefolder", root=str(root), options=options, val_fraction=0.0,
                                           corruptions=["contrast"]), SIZE)
    return bundle, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def names(images) -> list[str]:
    base, index = images, None
    while hasattr(base, "base"):
        index = base.indices if index is None else base.indices[index]
        base = base.base
    return [base.names[i] for i in (index if index is not None else range(len(base)))]


def test_one_folder_per_class_gets_a_seeded_stratified_test_split(tmp_path):
    special = own_images(tmp_path / "mydata")
    b, said = load(tmp_path / "mydata", test_fraction=0.25)
    assert b.class_names == CLASSES  # the folders' names, sorted
    assert len(b.train) + len(b.test) == 4 * 6 + 5  # every image, .webp and .BMP included; the .txt not
    assert sorted(set(b.test.labels.tolist())) == [0, 1, 2, 3]  # stratified: each class in test
    every = names(b.train) + names(b.test)
    assert {str(p) for p in special.values()} <= set(every)
    again, _ = load(tmp_path / "mydata", test_fraction=0.25)
    assert names(again.test) == names(b.test)  # seeded
    # grey and RGBA become 3 channels at the model's size, like every other image
    for kind in ("grey", "rgba", "webp", "bmp", "wide"):
        split = b.train if str(special[kind]) in names(b.train) else b.test
        image, label = split[names(split).index(str(special[kind]))]
        assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.uint8
        assert CLASSES[label] == special[kind].parent.name
    grey = b.train if str(special["grey"]) in names(b.train) else b.test
    pixels = grey[names(grey).index(str(special["grey"]))][0]
    assert torch.equal(pixels[0], pixels[1]) and torch.equal(pixels[1], pixels[2])  # grey repeated, as RGB
    assert any("ignored 1 file(s)" in s and "README.txt" in s and ".txt" in s for s in said)
    assert any("1 of 29 images are not square (80x60)" in s and "stretched" in s for s in said)


def test_train_and_test_folders_are_the_splits(tmp_path):
    own_images(tmp_path / "mydata" / "train")
    own_images(tmp_path / "mydata" / "test", per_class=2, seed=1)
    b, _ = load(tmp_path / "mydata")
    assert b.class_names == CLASSES and len(b.train) == 29 and len(b.test) == 4 * 2 + 5
    assert all("/test/" in n for n in names(b.test)) and all("/train/" in n for n in names(b.train))
    assert list(b.ood) == ["contrast"] and len(b.ood["contrast"]) == len(b.test)


def test_unreadable_files_are_one_error_listing_them_or_skipped_by_option(tmp_path):
    own_images(tmp_path / "mydata")
    corrupt = [tmp_path / "mydata" / "banana" / "broken.png", tmp_path / "mydata" / "date" / "cut.jpg"]
    corrupt[0].write_bytes(b"\x89PNG\r\n\x1a\n not a png at all")
    good = tmp_path / "mydata" / "date" / "date_0.png"
    corrupt[1].write_bytes(good.read_bytes()[:60])  # truncated
    with pytest.raises(DataError) as err:
        load(tmp_path / "mydata")
    message = str(err.value)
    assert "2 of 31 image files cannot be read" in message and "skip_unreadable" in message
    assert all(str(path) in message for path in corrupt) and "\n" not in message
    b, said = load(tmp_path / "mydata", skip_unreadable=True)
    assert len(b.train) + len(b.test) == 29
    assert not {str(p) for p in corrupt} & set(names(b.train) + names(b.test))
    assert any("left out 2 of 31 image files" in s and str(corrupt[0]) in s for s in said)


@pytest.mark.parametrize("make, needle", [
    (lambda root: own_images(root / "train"), "it has train/ but no test/ folder"),
    (lambda root: (root / "apple").mkdir(parents=True), "this class folder has none"),
])
def test_a_wrong_layout_says_what_is_expected(tmp_path, make, needle):
    root = tmp_path / "mydata"
    make(root)
    with pytest.raises(DataError) as err:
        load(root)
    assert needle in str(err.value) and "<root>/<class>/<images>" in str(err.value)


def test_the_folder_names_the_dataset_in_run_ids_and_the_generic_layout_shares_the_reader(tmp_path):
    spec = run_spec({"dataset": {"name": "imagefolder", "root": str(tmp_path / "my data")}})
    assert spec.dataset.title == "my_data" and spec.run_id.startswith("lora-my_data-rft_vit_cifar_patch8_32-lr")
    assert run_spec({"dataset": {"name": "imagefolder", "root": "x", "label": "fruit"}}).dataset.title == "fruit"
    own_images(tmp_path / "c" / "train")
    own_images(tmp_path / "c" / "test", per_class=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        cifar = create_bundle(DatasetSpec(name="cifar10", root=str(tmp_path / "c"), val_fraction=0.0), SIZE)
    assert cifar.class_names == CLASSES and len(cifar.train) == 29  # .webp and .bmp read there too


# ---------------------------------------------------------------------------------------------------
# Your own OOD sets (`dataset.ood`)


def _digit_parquet(path: Path, labels: list[int], names: list[str]) -> Path:
    import io
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(3)
    images = []
    for _ in labels:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
    table = pa.table({"image": images, "label": labels})
    pq.write_table(table.replace_schema_metadata({"class_names": json.dumps(names)}), path)
    return path


def test_own_ood_sets_are_domains_beside_the_corruptions_labelled_by_class_name(tmp_path):
    """Digits (classes '0'..'9') with a folder of three classes and a Parquet file whose own label order differs:
    both are OOD domains next to the corruption, their labels the training classes of the same names."""
    rng = np.random.default_rng(0)
    for digit in ("3", "7", "9"):
        for i in range(2):
            _save(tmp_path / "scans" / digit / f"{i}.png", rng, (20, 20))
    parquet = _digit_parquet(tmp_path / "phone.parquet", [0, 1, 1], ["8", "2"])  # its label 0 is the class "8"
    spec = DatasetSpec(name="digits", corruptions=["contrast"],
                       ood={"scans": str(tmp_path / "scans"), "phone": str(parquet)})
    b = create_bundle(spec, SIZE)
    assert list(b.ood) == ["contrast", "scans", "phone"]
    assert sorted(b.ood["scans"].labels.tolist()) == [3, 3, 7, 7, 9, 9]
    assert b.ood["phone"].labels.tolist() == [8, 2, 2]
    assert b.ood["scans"][0][0].shape == (3, SIZE, SIZE)


def test_own_ood_sets_that_do_not_fit_are_refused_by_name(tmp_path):
    from rft_ray.config import SpecError

    with pytest.raises(SpecError, match=r"dataset.ood.contrast: 'contrast' is also one of dataset.corruptions"):
        run_spec({"dataset": {"corruptions": ["contrast"], "ood": {"contrast": "x"}}})
    with pytest.raises(SpecError, match=r"dataset.ood: a domain name uses"):
        run_spec({"dataset": {"ood": {"my scans": "x"}}})
    rng = np.random.default_rng(0)
    _save(tmp_path / "scans" / "seven" / "0.png", rng, (8, 8))
    with pytest.raises(DataError, match=r"class folder\(s\) not among them: seven"):
        create_bundle(DatasetSpec(name="digits", ood={"scans": str(tmp_path / "scans")}), SIZE)
    parquet = _digit_parquet(tmp_path / "p.parquet", [0], ["eight"])
    with pytest.raises(DataError, match=r"dataset.ood.p .*names classes that are not training classes: \[eight\]"):
        create_bundle(DatasetSpec(name="digits", ood={"p": str(parquet)}), SIZE)
    with pytest.raises(DataError, match=r"nowhere"):
        create_bundle(DatasetSpec(name="digits", ood={"gone": str(tmp_path / "nowhere")}), SIZE)
