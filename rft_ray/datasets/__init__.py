"""Dataset registry: every dataset yields train, validation, test and named OOD splits plus class names.

Build through `create_bundle(spec, image_size)`; register new datasets with `@register_dataset`.
"""
from __future__ import annotations

import numpy as np

from rft_ray.datasets.base import (
    ArrayImageSet,
    DataBundle,
    DataError,
    EncodedImageSet,
    ImageSet,
    TransformedImageSet,
    dataset_config,
    dataset_entry,
    dataset_names,
    register_dataset,
    seeded_permutation,
    seeded_subset,
    stratified_split,
)
from rft_ray.datasets.corruptions import corruption_names, create_corruption
from rft_ray.spec import DatasetSpec

# Importing the modules registers their datasets.
from rft_ray.datasets import digits as _digits  # noqa: E402,F401
from rft_ray.datasets import sources as _sources  # noqa: E402,F401

__all__ = [
    "ArrayImageSet", "DataBundle", "DataError", "EncodedImageSet", "ImageSet", "create_bundle",
    "corruption_names", "dataset_config", "dataset_names", "register_dataset",
]


def create_bundle(spec: DatasetSpec, image_size: int) -> DataBundle:
    entry = dataset_entry(spec.name)
    options = dataset_config(spec.name, spec.options)
    # Fail on a bad corruption name before reading any data.
    corruptions = {name: create_corruption(name, spec.severity) for name in spec.corruptions}
    train, test, natural_ood, class_names = entry.loader(spec, options, image_size)
    if test is None:
        fraction = getattr(options, "test_fraction", 0.2)
        keep, held = stratified_split(train.labels, fraction, spec.split_seed, "test")
        train, test = train.subset(keep), train.subset(held)
    _check_classes(spec.name, "train", train, class_names)
    if spec.train_limit is not None:
        train = seeded_subset(train, spec.train_limit, spec.split_seed, "train_limit")
    keep, held = stratified_split(train.labels, spec.val_fraction, spec.split_seed, "val")
    train, val = train.subset(keep), train.subset(held)
    if entry.natural_ood:
        ood = dict(natural_ood)
    else:
        ood = {name: TransformedImageSet(test, fn) for name, fn in corruptions.items()}
    if len(train) == 0 or len(test) == 0:
        raise DataError(f"dataset {spec.name!r} has {len(train)} training and {len(test)} test images after "
                        "splitting; both must be non-empty")
    return DataBundle(train=train, val=val, test=test, ood=ood, class_names=list(class_names), image_size=image_size)


def _check_classes(name: str, split: str, images: ImageSet, class_names: list[str]) -> None:
    if len(class_names) < 2:
        raise DataError(f"dataset {name!r} has {len(class_names)} class(es); classification needs at least 2")
    labels = np.asarray(images.labels)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise DataError(f"dataset {name!r} {split} split has labels outside 0..{len(class_names) - 1}")
    counts = np.bincount(labels, minlength=len(class_names))
    empty = [class_names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        shown = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
        raise DataError(f"dataset {name!r} {split} split has no images of {len(empty)} class(es): {shown}")
