"""CUB-200-2011 birds: the official archive's list files and split, or the generic image-folder layout."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rft_ray.config import DatasetSpec
from rft_ray.data.base import DataError, fixed_sizes, register_dataset
from rft_ray.data.imagefolder import FOLDER_LAYOUT, generic_splits
from rft_ray.data.layout import (
    dataset_root,
    encoded_files,
    found,
    inside,
    layout_error,
    read_table_file,
    require_files,
    strip_number,
)

FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt", "images/")


def _int(text: str, path: Path, dataset: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"dataset {dataset!r}: {path} should hold whole numbers, but has {text.strip()[:40]!r}") from None


def _class_names(base: Path, dataset: str) -> list[str]:
    classes = read_table_file(base / "classes.txt", dataset, 2, "'<class id> <NNN.name>'")
    class_ids = {_int(cid, base / "classes.txt", dataset): strip_number(name.strip()) for cid, name in classes}
    if sorted(class_ids) != list(range(1, len(class_ids) + 1)):
        raise DataError(f"dataset {dataset!r}: the class ids in {base / 'classes.txt'} must be 1..N")
    return [class_ids[i] for i in range(1, len(class_ids) + 1)]


def _listings(base: Path, dataset: str, classes: int) -> tuple[dict[str, str], dict[str, int], dict[str, int]]:
    """Image id -> (relative path, class id, 1 train | 0 test), every id of images.txt in every listing."""
    images = {iid: rel.strip() for iid, rel in
              read_table_file(base / "images.txt", dataset, 2, "'<image id> <class folder>/<file>'")}
    labels = {iid: _int(c, base / "image_class_labels.txt", dataset) for iid, c in
              read_table_file(base / "image_class_labels.txt", dataset, 2, "'<image id> <class id>'")}
    split = {iid: _int(s, base / "train_test_split.txt", dataset) for iid, s in
             read_table_file(base / "train_test_split.txt", dataset, 2, "'<image id> <1 train | 0 test>'")}
    for listing, table in (("image_class_labels.txt", labels), ("train_test_split.txt", split)):
        absent = [iid for iid in images if iid not in table]
        if absent:
            raise DataError(f"dataset {dataset!r}: {len(absent)} image id(s) of {base / 'images.txt'} are "
                            f"missing from {base / listing}, e.g. {', '.join(absent[:3])}")
    bad = [iid for iid in images if not 1 <= labels[iid] <= classes]
    if bad:
        raise DataError(f"dataset {dataset!r}: image {bad[0]} in {base / 'image_class_labels.txt'} has class "
                        f"{labels[bad[0]]}, outside the {classes} classes of classes.txt")
    return images, labels, split


@register_dataset("cub200", natural_ood=False, sizes=fixed_sizes(5_994, 5_794))  # the official split
def load_cub200(spec: DatasetSpec, options: Any, size: int):
    """CUB-200-2011 birds with the official split: root/CUB_200_2011/{images.txt, ..., images/} or {train,test}/."""
    expected = (f"<root>/CUB_200_2011/ (or root being it) holding {', '.join(FILES)} (the official archive), "
                f"or {FOLDER_LAYOUT}")
    root = dataset_root(spec, expected)
    if (generic := generic_splits(root, spec.name, size)) is not None:
        return generic
    base = root / "CUB_200_2011" if (root / "CUB_200_2011").is_dir() else root
    missing = [f for f in FILES if not (base / f).exists()]
    if missing:
        raise layout_error(spec.name, base, expected, f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                           f"missing ({found(base)})")
    names = _class_names(base, spec.name)
    images, labels, split = _listings(base, spec.name, len(names))
    order = sorted(images, key=int)
    paths = [inside(base / "images", images[i], base / "images.txt", spec.name) for i in order]
    require_files(paths, str(base / "images.txt"), spec.name)
    all_labels = np.asarray([labels[i] - 1 for i in order], dtype=np.int64)
    is_train = np.asarray([split[i] == 1 for i in order])
    sets = []
    for keep in (is_train, ~is_train):
        rows = np.flatnonzero(keep)
        sets.append(encoded_files([paths[r] for r in rows], all_labels[rows], size))
    return sets[0], sets[1], {}, names
