"""Parquet image files (Hugging Face `datasets` exports), local or at a URI: the `parquet` dataset, and the
reader DomainNet's Parquet layout shares."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rft_ray.config import DatasetSpec, SpecError
from rft_ray.config.dataset_options import ParquetOptions
from rft_ray.data.base import DataError, EncodedImageSet, register_dataset
from rft_ray.data.layout import class_map, found, layout_error, short
from rft_ray.results.files import filesystem_for, is_uri


def resolve_source(source: str, base: str | None) -> str:
    """A path or URI; relative paths are relative to `base` (dataset.root) when set, else the current dir."""
    if is_uri(source):
        return source
    path = Path(source).expanduser()
    if not path.is_absolute():
        if base is not None and is_uri(base):
            return base.rstrip("/") + "/" + source
        path = (Path(base).expanduser() if base is not None else Path.cwd()) / path
    return str(path.absolute())


@dataclass
class ParquetImages:
    items: list[bytes]
    labels: np.ndarray
    class_names: list[str]
    names: list[str]


def read_parquet_images(source: str, dataset: str, field: str, image_column: str = "image",
                        label_column: str = "label", wanted: list[str] | None = None) -> ParquetImages:
    """Read a Hugging Face-style image Parquet file (local path or URI) into encoded images and labels.

    `field` names the setting the file came from (for error messages).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    expected = (f"a Parquet file with an image column {image_column!r} (struct<bytes, path> or binary) and an "
                f"integer label column {label_column!r} ({field})")
    filesystem, path, schema = _open(source, dataset, field, expected)
    columns = ", ".join(f"{f.name} ({f.type})" for f in schema)

    def wrong(what: str) -> DataError:
        return layout_error(dataset, source, expected, f"{what}; its columns are: {columns}")

    _check_columns(schema, image_column, label_column, wrong)
    try:
        table = pq.read_table(path, filesystem=filesystem, columns=[image_column, label_column])
    except (pa.ArrowException, OSError) as err:
        raise layout_error(dataset, source, expected, f"reading it failed: {err}") from err
    labels = _labels(table.column(label_column), wrong)
    class_names = _parquet_class_names(schema.metadata or {}, label_column, labels, source, dataset)
    if len(labels) and labels.max() >= len(class_names):
        raise wrong(f"it has label {labels.max()} but its metadata names only {len(class_names)} classes")

    mapping, class_names = class_map(class_names, wanted)
    rows = np.arange(len(labels))
    if mapping is not None:
        new = mapping[labels]
        rows = np.flatnonzero(new >= 0)
        labels = new[rows]
        table = table.take(pa.array(rows))
    data, paths = _image_bytes(table.column(image_column).combine_chunks(), rows, wrong)
    names = [f"{source} row {int(r)}" + (f" ({p})" if p else "") for r, p in zip(rows, paths)]
    return ParquetImages(data, labels, class_names, names)


def _open(source: str, dataset: str, field: str, expected: str):
    """(filesystem, path, schema) of one Parquet file; a missing file, a folder or a non-Parquet file is named."""
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    try:
        filesystem, path = filesystem_for(source)
        info = filesystem.get_file_info(path)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise DataError(f"dataset {dataset!r}: cannot open {source} ({field}): {err}") from err
    local = isinstance(filesystem, pafs.LocalFileSystem)
    shown = Path(path if is_uri(source) else source)  # the path as given, for the listing
    if info.type == pafs.FileType.NotFound:
        raise layout_error(dataset, source, expected, found(shown) if local else "it does not exist")
    if info.type == pafs.FileType.Directory:
        raise layout_error(dataset, source, f"{expected}; point at one file per split, such as train.parquet, not "
                           "at their folder", found(shown) if local else "it is a folder")
    try:
        with filesystem.open_input_file(path) as handle:
            schema = pq.read_schema(handle)
    except (pa.ArrowException, OSError) as err:
        raise layout_error(dataset, source, expected, f"it is not a readable Parquet file: {err}") from err
    return filesystem, path, schema


def _check_columns(schema, image_column: str, label_column: str, wrong: Callable[[str], DataError]) -> None:
    import pyarrow as pa

    for column in (image_column, label_column):
        if column not in schema.names:
            raise wrong(f"it has no column {column!r}")
    image_type = schema.field(image_column).type
    if pa.types.is_struct(image_type):
        child_names = [image_type.field(i).name for i in range(image_type.num_fields)]
        if "bytes" not in child_names or not _is_binary(image_type.field("bytes").type):
            raise wrong(f"the image column {image_column!r} is a struct without a binary 'bytes' field")
    elif not _is_binary(image_type):
        raise wrong(f"the image column {image_column!r} has type {image_type}, not struct<bytes, path> or binary")
    if not pa.types.is_integer(schema.field(label_column).type):
        raise wrong(f"the label column {label_column!r} has type {schema.field(label_column).type}, not an integer")


def _labels(column, wrong: Callable[[str], DataError]) -> np.ndarray:
    if column.null_count:
        raise wrong(f"{column.null_count} row(s) have no label")
    labels = column.to_numpy().astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise wrong(f"it has negative labels (row {int(np.argmin(labels))}: {labels.min()})")
    return labels


def _image_bytes(images, rows: np.ndarray, wrong: Callable[[str], DataError]) -> tuple[list[bytes], list[str | None]]:
    """The embedded bytes of every image (and its stored path, if any); rows without bytes are an error."""
    import pyarrow as pa

    if pa.types.is_struct(images.type):
        child_names = [images.type.field(i).name for i in range(images.type.num_fields)]
        paths = images.field("path").to_pylist() if "path" in child_names else [None] * len(images)
        data = images.field("bytes").to_pylist()
        missing = [i for i, (value, outer) in enumerate(zip(data, images.is_null().to_pylist()))
                   if value is None or outer]
    else:
        paths = [None] * len(images)
        data = images.to_pylist()
        missing = [i for i, value in enumerate(data) if value is None]
    if missing:
        shown = ", ".join(str(int(rows[i])) for i in missing[:5])
        raise wrong(f"{len(missing)} row(s) have no embedded image bytes (rows {shown}); images stored only as "
                    "paths are not supported, export with the image bytes embedded")
    return data, paths


def _is_binary(tp: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_binary(tp) or pa.types.is_large_binary(tp) or pa.types.is_binary_view(tp)


def _parquet_class_names(metadata: dict[bytes, bytes], label_column: str, labels: np.ndarray, source: str,
                         dataset: str) -> list[str]:
    """Class names from `class_names` (JSON list), else a Hugging Face ClassLabel, else '0', '1', ..."""
    if b"class_names" in metadata:
        try:
            names = json.loads(metadata[b"class_names"])
        except ValueError as err:
            raise DataError(f"dataset {dataset!r}: the schema metadata 'class_names' of {source} is not JSON: "
                            f"{err}") from err
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(f"dataset {dataset!r}: the schema metadata 'class_names' of {source} must be a JSON "
                            f"list of strings, got {str(names)[:80]}")
        return names
    if b"huggingface" in metadata:
        try:
            features = json.loads(metadata[b"huggingface"]).get("info", {}).get("features", {})
            feature = features.get(label_column, {}) if isinstance(features, dict) else {}
            if feature.get("_type") == "ClassLabel" and isinstance(feature.get("names"), list):
                return [str(n) for n in feature["names"]]
        except (ValueError, AttributeError):
            pass  # unusual metadata: fall back to numbered classes
    count = int(labels.max()) + 1 if len(labels) else 0
    return [str(i) for i in range(count)]


def parquet_set(data: ParquetImages, size: int) -> EncodedImageSet:
    return EncodedImageSet(data.items, data.labels, size, names=data.names)


@register_dataset("parquet", ParquetOptions)  # no known sizes: a Parquet file's size is read from the file
def load_parquet(spec: DatasetSpec, options: ParquetOptions, size: int):
    """Hugging Face-style Parquet image files (local or URI): image struct<bytes, path> and label columns."""
    if not options.train.strip():
        raise SpecError("is required: the training split's Parquet file or URI (e.g. data/train.parquet, "
                        "s3://bucket/cifar10/train.parquet)", "dataset.options.train")
    columns = dict(image_column=options.image_column, label_column=options.label_column, wanted=options.classes)
    train = read_parquet_images(resolve_source(options.train, spec.root), spec.name, "dataset.options.train",
                                **columns)
    test = None
    if options.test is not None:
        test_data = read_parquet_images(resolve_source(options.test, spec.root), spec.name, "dataset.options.test",
                                        **columns)
        if test_data.class_names != train.class_names:
            raise DataError(f"dataset {spec.name!r}: the test file {options.test} names its classes "
                            f"{short(test_data.class_names)} but the train file {options.train} "
                            f"{short(train.class_names)}; both splits must share one class list")
        test = parquet_set(test_data, size)
    return parquet_set(train, size), test, {}, train.class_names
