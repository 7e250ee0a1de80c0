"""Stanford Dogs: the official Images/ tree with train_list.mat and test_list.mat, or the generic
image-folder layout."""
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
    require_files,
)


def _mat_file_list(path: Path, dataset: str, expected: str) -> list[str]:
    if not path.is_file():
        raise layout_error(dataset, path, expected, found(path))
    from scipy.io import loadmat

    try:
        content = loadmat(str(path))
    except Exception as err:  # scipy raises ValueError, TypeError, MatReadError ...
        raise DataError(f"dataset {dataset!r}: cannot read {path} as a MATLAB file: {err}") from err
    if "file_list" not in content:
        keys = ", ".join(k for k in content if not k.startswith("__"))
        raise DataError(f"dataset {dataset!r}: {path} has no 'file_list' (expected the official Stanford Dogs "
                        f"list of '<wnid-Breed>/<file>.jpg'); it holds: {keys or 'nothing'}")
    entries = []
    for entry in np.asarray(content["file_list"], dtype=object).ravel():
        value = entry
        while isinstance(value, np.ndarray):
            value = value.ravel()[0] if value.size else ""
        entries.append(str(value))
    return entries


@register_dataset("stanford_dogs", sizes=fixed_sizes(12_000, 8_580))  # the official split
def load_stanford_dogs(spec: DatasetSpec, options: Any, size: int):
    """Stanford Dogs, official split: root/Images/<wnid-Breed>/*.jpg with train_list.mat, test_list.mat."""
    expected = ("<root>/Images/<wnid-Breed_Name>/*.jpg with <root>/train_list.mat and <root>/test_list.mat "
                f"(the official images.tar and lists.tar), or {FOLDER_LAYOUT}")
    root = dataset_root(spec, expected)
    if (generic := generic_splits(root, spec.name, size)) is not None:
        return generic
    images = root / "Images"
    if not images.is_dir():
        raise layout_error(spec.name, root, expected, f"there is no Images/ folder ({found(root)})")
    lists = [_mat_file_list(root / f"{split}_list.mat", spec.name, expected) for split in ("train", "test")]
    folders = sorted({entry.split("/")[0] for entries in lists for entry in entries})
    malformed = [e for entries in lists for e in entries if "/" not in e or "-" not in e.split("/")[0]]
    if malformed:
        raise DataError(f"dataset {spec.name!r}: the file lists in {root} should name images as "
                        f"'<wnid-Breed_Name>/<file>.jpg', but hold e.g. {malformed[0]!r}")
    label_of = {folder: i for i, folder in enumerate(folders)}
    names = [folder.split("-", 1)[1] for folder in folders]
    sets = []
    for split, entries in zip(("train", "test"), lists):
        paths = [inside(images, e, root / f"{split}_list.mat", spec.name) for e in entries]
        require_files(paths, str(root / f"{split}_list.mat"), spec.name)
        sets.append(encoded_files(paths, [label_of[e.split("/")[0]] for e in entries], size))
    return sets[0], sets[1], {}, names
