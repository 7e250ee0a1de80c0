"""CIFAR-10 and CIFAR-100: torchvision's files (or a download), or the generic image-folder layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rft_ray.config import DatasetSpec
from rft_ray.config.dataset_options import CifarOptions
from rft_ray.data.base import ArrayImageSet, DataError, KnownSizes, register_dataset
from rft_ray.data.imagefolder import FOLDER_LAYOUT, has_folder_splits, load_folder_splits
from rft_ray.data.layout import (
    class_map,
    found,
    keep_classes,
)

TRAIN_IMAGES, TEST_IMAGES = 50_000, 10_000  # both CIFARs, equal images per class


def _torchvision_splits(spec: DatasetSpec, root: Path, size: int, hundred: bool):
    """(train, test, class names) from torchvision's files under `root`, downloading when allowed."""
    base_folder = "cifar-100-python" if hundred else "cifar-10-batches-py"
    title = "CIFAR-100" if hundred else "CIFAR-10"
    if not spec.download and not (root / base_folder).is_dir():
        raise DataError(
            f"dataset {spec.name!r}: no {title} data at {root}: expected {root / base_folder}/ (torchvision's "
            f"format) or the image-folder layout {FOLDER_LAYOUT}, but {found(root)}. Set `dataset.download: "
            f"true` on a machine with a network to let torchvision fetch it, point `dataset.root` at a folder "
            f"holding {base_folder}/, or use the 'parquet' dataset for Hugging Face Parquet exports "
            f"(dataset.options.train: <folder>/train.parquet).")
    from torchvision import datasets as tv

    cls = tv.CIFAR100 if hundred else tv.CIFAR10
    sets = []
    for is_train in (True, False):
        try:
            data = cls(str(root), train=is_train, download=spec.download)
        except Exception as err:  # torchvision raises RuntimeError, URLError, OSError, ...
            action = "downloading or reading" if spec.download else "reading"
            raise DataError(f"dataset {spec.name!r}: {action} {title} at {root / base_folder} failed: {err}. "
                            f"Expected torchvision's {title} files there ({found(root / base_folder)}); "
                            "downloading needs a network.") from err
        sets.append(data)
    train, test = (ArrayImageSet(np.asarray(s.data, dtype=np.uint8), s.targets, size) for s in sets)
    return train, test, list(sets[0].classes)


def _load_cifar(spec: DatasetSpec, options: CifarOptions, size: int, hundred: bool):
    base_folder = "cifar-100-python" if hundred else "cifar-10-batches-py"
    title = "CIFAR-100" if hundred else "CIFAR-10"
    expected = (f"{base_folder}/ (torchvision's {title} format) or the image-folder layout {FOLDER_LAYOUT}")
    if spec.root is None:
        raise DataError(f"dataset {spec.name!r}: `dataset.root` must be set: point it at the folder holding "
                        f"{expected} (with `dataset.download: true` and a network, torchvision downloads "
                        f"{title} into it), or use the 'parquet' dataset for Hugging Face Parquet exports.")
    root = Path(spec.root).expanduser()
    if has_folder_splits(root):
        train, test, names = load_folder_splits(root, spec.name, size)
    else:
        train, test, names = _torchvision_splits(spec, root, size, hundred)
    mapping, names = class_map(names, options.classes)
    return keep_classes(train, mapping), keep_classes(test, mapping), {}, names


def _sizes(classes: int):
    def sizes(spec: DatasetSpec, options: CifarOptions) -> KnownSizes:
        if not options.classes:
            return KnownSizes(TRAIN_IMAGES, TEST_IMAGES)
        share = len(options.classes) / classes  # balanced: a share of the classes is that share of the images
        return KnownSizes(int(round(TRAIN_IMAGES * share)), int(round(TEST_IMAGES * share)))

    return sizes


@register_dataset("cifar10", CifarOptions, sizes=_sizes(10))
def load_cifar10(spec: DatasetSpec, options: CifarOptions, size: int):
    """CIFAR-10 via torchvision (root/cifar-10-batches-py, or download) or root/{train,test}/<class>/ images."""
    return _load_cifar(spec, options, size, hundred=False)


@register_dataset("cifar100", CifarOptions, sizes=_sizes(100))
def load_cifar100(spec: DatasetSpec, options: CifarOptions, size: int):
    """CIFAR-100 via torchvision (root/cifar-100-python, or download) or root/{train,test}/<class>/ images."""
    return _load_cifar(spec, options, size, hundred=True)
