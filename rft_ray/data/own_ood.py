"""Your own OOD test sets (`dataset.ood`): named image folders or Parquet files, for any dataset.

Each is an extra OOD domain beside the corruption domains (or a dataset's natural domains), evaluated like
them: a seeded, class-stratified `evaluation.ood_examples` of it, its accuracy stored as `ood_acc/<name>` and
pooled into `test_ood_accuracy`. Its labels are the training classes, matched by name:

- a folder `<path>/<class>/<images>` is read as `imagefolder` reads one (every format PIL opens, each image
  decoded once to check it, unreadable files one error, or left out when the dataset's options say
  `skip_unreadable`); its class folders must be among the training classes (any subset of them);
- a Parquet file (`.parquet`, local or a URI) is read as the `parquet` dataset reads one (`image` and `label`
  columns); its class names (schema metadata `class_names`, a Hugging Face ClassLabel, else "0", "1", ...) must
  be among the training classes.

Relative paths are relative to the folder the run starts in (a sweep makes them absolute before its trials run).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rft_ray.config import DatasetSpec
from rft_ray.data.base import DataError, EncodedImageSet, ImageSet
from rft_ray.data.imagefolder import read_class_folders
from rft_ray.data.layout import found, layout_error, short
from rft_ray.data.parquet import read_parquet_images, resolve_source
from rft_ray.results.files import is_uri

EXPECTED = "an image folder <path>/<class>/<images> or a Parquet file with image and label columns"


def is_parquet(source: str) -> bool:
    return source.rstrip("/").lower().endswith(".parquet")


def own_ood_sets(spec: DatasetSpec, class_names: list[str], size: int) -> dict[str, ImageSet]:
    """The run's own OOD sets, labelled in the training classes (module docstring)."""
    skip = bool((spec.options or {}).get("skip_unreadable", False))
    sets = {}
    for name, source in spec.ood.items():
        where = f"dataset.ood.{name}"
        if is_parquet(source) or is_uri(source):
            sets[name] = _parquet_set(spec.name, resolve_source(source, None), where, class_names, size)
            continue
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise layout_error(spec.name, folder, f"{where} to be {EXPECTED}", found(folder))
        sets[name], _ = read_class_folders(folder, spec.name, f"{EXPECTED} ({where})", size, skip, class_names)
    return sets


def _parquet_set(dataset: str, source: str, where: str, class_names: list[str], size: int) -> EncodedImageSet:
    data = read_parquet_images(source, dataset, where)
    index_of = {n: i for i, n in enumerate(class_names)}
    unknown = [n for n in data.class_names if n not in index_of]
    if unknown:
        raise DataError(f"dataset {dataset!r}: {where} ({source}) names classes that are not training classes: "
                        f"{short(unknown)}; the training classes are {short(class_names)} (an OOD set's classes "
                        "must be among them, named alike)")
    relabel = np.asarray([index_of[n] for n in data.class_names], dtype=np.int64)
    return EncodedImageSet(data.items, relabel[data.labels], size, names=data.names)
