"""Caltech-256: the official 256_ObjectCategories tree (no official split: a seeded test split), or the
generic image-folder layout."""
from __future__ import annotations

from rft_ray.config import DatasetSpec
from rft_ray.config.dataset_options import Caltech256Options
from rft_ray.data.base import KnownSizes, register_dataset
from rft_ray.data.imagefolder import FOLDER_LAYOUT, generic_splits
from rft_ray.data.layout import (
    NUMBERED,
    dataset_root,
    encoded_files,
    found,
    layout_error,
    scan_image_folder,
    strip_number,
)

IMAGES, CLUTTER_IMAGES = 30_607, 827  # the official release; 257.clutter holds 827 of them


def known_sizes(spec: DatasetSpec, options: Caltech256Options) -> KnownSizes:
    return KnownSizes(IMAGES if options.include_clutter else IMAGES - CLUTTER_IMAGES, None)


@register_dataset("caltech256", Caltech256Options, sizes=known_sizes)
def load_caltech256(spec: DatasetSpec, options: Caltech256Options, size: int):
    """Caltech-256: root/256_ObjectCategories/<NNN.name>/*.jpg (seeded test split) or root/{train,test}/<class>/."""
    expected = (f"<root>/256_ObjectCategories/<NNN.name>/*.jpg (the official tarball; root may also be "
                f"256_ObjectCategories itself) or {FOLDER_LAYOUT}")
    root = dataset_root(spec, expected)
    if (generic := generic_splits(root, spec.name, size)) is not None:
        return generic
    categories = root / "256_ObjectCategories"
    if not categories.is_dir():
        numbered = [p for p in root.iterdir() if p.is_dir() and NUMBERED.match(p.name)]
        if root.name != "256_ObjectCategories" and not numbered:
            raise layout_error(spec.name, root, expected, found(root))
        categories = root
    skip = () if options.include_clutter else ("257.clutter",)
    files, labels, names = scan_image_folder(categories, spec.name, expected, class_name=strip_number, skip=skip)
    return encoded_files(files, labels, size), None, {}, names
