"""`imagefolder`: your own images in torchvision's ImageFolder layout, and the generic layout every folder dataset
(cifar10, cifar100, caltech256, cub200, stanford_dogs) also accepts. One home for both.

Layouts under `dataset.root`:

    <root>/train/<class>/<image> and <root>/test/<class>/<image>   the two splits as given
    <root>/<class>/<image>                                          (imagefolder only) one set, split seeded and
                                                                    stratified into train and test
                                                                    (`options.test_fraction`)

Class names are the class folders' names, sorted (torchvision's convention); test's folders must be among
train's. An image is any file whose extension a PIL plugin opens (`image_extensions`: .jpg, .png, .webp, .bmp,
.gif, .tif, ...); other files are ignored, and said so in one warning. Every image is decoded once when the
folder is read (a JPEG at reduced size: PIL's draft mode), so a file PIL cannot read stops the run before
training, listed with the others in one DataError; with `options.skip_unreadable` they are left out, counted
and listed in a warning. Grey, palette, RGBA and CMYK images become RGB as torchvision's loader makes them
(`Image.convert("RGB")`: an alpha channel is dropped), and every image is resized to the model's square input
(bilinear, aspect ratio not kept: a non-square image is stretched, and the warning says how many are).
"""
from __future__ import annotations

import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from rft_ray.config import DatasetSpec
from rft_ray.config.dataset_options import ImageFolderOptions
from rft_ray.data.base import DataError, ImageSet, register_dataset
from rft_ray.data.layout import dataset_root, encoded_files, found, layout_error, scan_image_folder

FOLDER_LAYOUT = "<root>/train/<class>/<images> and <root>/test/<class>/<images>"
SINGLE_LAYOUT = "<root>/<class>/<images> (split seeded: options.test_fraction)"
_SHOWN = 5  # files named in a message


class DataWarning(UserWarning):
    """Something about the data a run should know (files ignored or left out, images stretched)."""


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """The file extensions PIL can open here (its registered plugins; stubs that need outside handlers left out)."""
    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN and not (
        isinstance(Image.OPEN[fmt][0], type) and issubclass(Image.OPEN[fmt][0], ImageFile.StubImageFile)))


def _probe(path: str, size: int) -> tuple[int, int] | str:
    """The image's native (width, height), or why PIL cannot read it."""
    try:
        with Image.open(path) as image:
            native = image.size
            image.draft("RGB", (size, size))  # JPEG: decode at the smallest scale >= size
            image.load()
            return native
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        return f"{type(err).__name__}: {err}"


def checked_images(files: list[str], labels: np.ndarray, dataset: str, size: int, skip_unreadable: bool
                   ) -> tuple[list[str], np.ndarray]:
    """Decode every file once (threads: PIL decodes without the GIL): files PIL cannot read are one DataError
    listing them, or, with `skip_unreadable`, left out with a warning; non-square images get a warning."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        probes = list(pool.map(lambda path: _probe(path, size), files))
    bad = [(path, why) for path, why in zip(files, probes) if isinstance(why, str)]
    listed = "; ".join(f"{path} ({why})" for path, why in bad[:_SHOWN]) + (" ..." if len(bad) > _SHOWN else "")
    if bad and not skip_unreadable:
        option = ", or set dataset.options.skip_unreadable: true to leave them out" if dataset == "imagefolder" else ""
        raise DataError(f"dataset {dataset!r}: {len(bad)} of {len(files)} image files cannot be read: {listed}. "
                        f"Remove or replace them{option}")
    if bad:
        warnings.warn(f"dataset {dataset!r}: left out {len(bad)} of {len(files)} image files that cannot be read "
                      f"(dataset.options.skip_unreadable): {listed}", DataWarning, stacklevel=2)
    sizes = Counter(p for p in probes if not isinstance(p, str))
    stretched = sum(n for (w, h), n in sizes.items() if w != h)
    if stretched:
        shapes = ", ".join(f"{w}x{h}" for (w, h), _ in sizes.most_common() if w != h)
        warnings.warn(f"dataset {dataset!r}: {stretched} of {sum(sizes.values())} images are not square ({shapes}); "
                      f"each image is resized to {size}x{size} without keeping its aspect ratio (stretched, "
                      "not cropped)", DataWarning, stacklevel=2)
    keep = [i for i, p in enumerate(probes) if not isinstance(p, str)]
    return [files[i] for i in keep], np.asarray(labels)[keep]


def read_class_folders(folder: Path, dataset: str, expected: str, size: int, skip_unreadable: bool,
                       class_names: list[str] | None = None) -> tuple[ImageSet, list[str]]:
    """`folder/<class>/<image>` as (images, class names), every image checked (`checked_images`); with
    `class_names` (a test split, an OOD set) its class folders must be among them and are labelled so."""
    ignored: list[str] = []
    files, labels, names = scan_image_folder(folder, dataset, expected, class_names=class_names,
                                             extensions=image_extensions(), ignored=ignored)
    if ignored:
        kinds = ", ".join(sorted({Path(p).suffix.lower() or "(no extension)" for p in ignored}))
        warnings.warn(f"dataset {dataset!r}: ignored {len(ignored)} file(s) in {folder} that are not images PIL "
                      f"opens ({kinds}), e.g. {ignored[0]}", DataWarning, stacklevel=2)
    files, labels = checked_images(files, labels, dataset, size, skip_unreadable)
    return encoded_files(files, labels, size), names


def has_folder_splits(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "test").is_dir()


def load_folder_splits(root: Path, dataset: str, size: int, skip_unreadable: bool = False
                       ) -> tuple[ImageSet, ImageSet, list[str]]:
    """The generic layout: root/train/<class>/* and root/test/<class>/* (class names: train's folder names)."""
    train, names = read_class_folders(root / "train", dataset, FOLDER_LAYOUT, size, skip_unreadable)
    test, _ = read_class_folders(root / "test", dataset, FOLDER_LAYOUT, size, skip_unreadable, class_names=names)
    return train, test, names


def generic_splits(root: Path, dataset: str, size: int) -> tuple[ImageSet, ImageSet, dict, list[str]] | None:
    """A loader's result (train, test, no natural OOD, class names) when `root` has the generic layout, else
    None: every folder-based dataset accepts it before its own official layout."""
    if not has_folder_splits(root):
        return None
    train, test, names = load_folder_splits(root, dataset, size)
    return train, test, {}, names


@register_dataset("imagefolder", ImageFolderOptions)  # no known sizes: counted when the folder is read
def load_imagefolder(spec: DatasetSpec, options: ImageFolderOptions, size: int):
    """Your own images: root/{train,test}/<class>/* or root/<class>/* (seeded test split), any format PIL reads."""
    expected = f"{FOLDER_LAYOUT}, or {SINGLE_LAYOUT}"
    root = dataset_root(spec, expected)
    if has_folder_splits(root):
        train, test, names = load_folder_splits(root, spec.name, size, options.skip_unreadable)
        return train, test, {}, names
    for split, other in (("train", "test"), ("test", "train")):
        if (root / split).is_dir():
            raise layout_error(spec.name, root, expected, f"it has {split}/ but no {other}/ folder ({found(root)}); "
                               f"add {other}/<class>/ folders, or put the class folders directly in {root} for a "
                               "seeded split")
    train, names = read_class_folders(root, spec.name, expected, size, options.skip_unreadable)
    return train, None, {}, names
