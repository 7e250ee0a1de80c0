"""Dataset registry: every dataset yields train, validation, test and named OOD splits plus class names.

Build through `create_bundle(spec, image_size)`; register new datasets with `@register_dataset`.
"""
from __future__ import annotations

import numpy as np

from rft_ray.data.base import (
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
    stratified_subset,
    stratified_split,
)
from rft_ray.data.corruptions import corruption_names, create_corruption
from rft_ray.config import DatasetSpec, SpecError

# Importing the loader modules registers their datasets, in this order (error messages list them so).
from rft_ray.data import digits as _digits  # noqa: E402,F401
from rft_ray.data import parquet as _parquet  # noqa: E402,F401
from rft_ray.data import imagefolder as _imagefolder  # noqa: E402,F401
from rft_ray.data import cifar as _cifar  # noqa: E402,F401
from rft_ray.data import caltech256 as _caltech256  # noqa: E402,F401
from rft_ray.data import cub200 as _cub200  # noqa: E402,F401
from rft_ray.data import stanford_dogs as _stanford_dogs  # noqa: E402,F401
from rft_ray.data import domainnet as _domainnet  # noqa: E402,F401
from rft_ray.data.own_ood import own_ood_sets  # noqa: E402

__all__ = [
    "ArrayImageSet", "DataBundle", "DataError", "EncodedImageSet", "ImageSet", "create_bundle",
    "corruption_names", "dataset_config", "dataset_entry", "dataset_names", "register_dataset",
]


def create_bundle(spec: DatasetSpec, image_size: int, cache: bool = False) -> DataBundle:
    """The dataset's splits at `image_size`, decoded lazily. With `cache` (what training runs use; off when
    RFT_DATA_CACHE=off) the splits are decoded once per node and memory-mapped by every later trial."""
    from rft_ray.data import cache as data_cache

    entry = dataset_entry(spec.name)
    options = dataset_config(spec.name, spec.options)
    # Fail on a bad corruption name before reading any data.
    corruptions = {name: create_corruption(name, spec.severity) for name in spec.corruptions}
    if not cache or not data_cache.enabled():
        train, val, test, natural_ood, class_names = _splits(spec, entry, options, image_size)
    else:
        train, val, test, natural_ood, class_names = data_cache.cached_splits(
            spec, image_size, lambda: _splits(spec, entry, options, image_size))
    # `natural_ood` holds the dataset's own domains (DomainNet's) and the run's own OOD sets (`dataset.ood`).
    ood = {name: images for name, images in natural_ood.items() if name not in spec.ood} if entry.natural_ood else {
        name: TransformedImageSet(test, fn) for name, fn in corruptions.items()}
    ood.update({name: natural_ood[name] for name in spec.ood})
    # The same corruptions on the validation split: OOD validation without touching a test image.
    val_ood = {} if entry.natural_ood else {name: TransformedImageSet(val, fn) for name, fn in corruptions.items()}
    return DataBundle(train=train, val=val, test=test, ood=ood, class_names=list(class_names), image_size=image_size,
                      val_ood=val_ood)


def _splits(spec: DatasetSpec, entry, options, image_size: int):
    """(train, val, test, OOD sets, class names): the loader's output, split and checked; the OOD sets are the
    dataset's natural domains and the run's own sets (`dataset.ood`), not the corruptions."""
    train, test, natural_ood, class_names = entry.loader(spec, options, image_size)
    if test is None:
        fraction = getattr(options, "test_fraction", 0.2)
        keep, held = stratified_split(train.labels, fraction, spec.split_seed, "test")
        train, test = train.subset(keep), train.subset(held)
    _check_classes(spec.name, "train", train, class_names)
    if spec.train_limit is not None:
        train = stratified_subset(train, spec.train_limit, spec.split_seed, "train_limit")
    keep, held = stratified_split(train.labels, spec.val_fraction, spec.split_seed, "val")
    train, val = train.subset(keep), train.subset(held)
    if len(train) == 0 or len(test) == 0:
        raise DataError(f"dataset {spec.name!r} has {len(train)} training and {len(test)} test images after "
                        "splitting; both must be non-empty")
    natural = dict(natural_ood) if entry.natural_ood else {}
    clash = sorted(set(natural) & set(spec.ood))
    if clash:
        raise SpecError(f"{', '.join(map(repr, clash))} is also a domain of dataset {spec.name!r}; give your own OOD "
                        "set another name", "dataset.ood")
    return train, val, test, {**natural, **own_ood_sets(spec, class_names, image_size)}, class_names


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
