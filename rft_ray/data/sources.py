"""The real datasets: CIFAR-10/100, Caltech-256, CUB-200-2011, Stanford Dogs, DomainNet and Parquet files.

Every loader reads local files only (CIFAR may also be downloaded by torchvision when
`dataset.download` is true). Missing or misplaced data raises `DataError` naming the path, the
layout that was expected and what was found there.

Besides each dataset's official layout, the folder datasets (cifar10, cifar100, caltech256, cub200,
stanford_dogs) accept the generic image-folder layout:

    <root>/train/<class>/*.jpg|jpeg|png
    <root>/test/<class>/*.jpg|jpeg|png

with the class names taken verbatim from the train folder's subfolders, sorted. Images must lie directly in
their class folder (subfolders are ignored, as in torchvision's Caltech-256 reader).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Literal, Sequence

import numpy as np

from rft_ray.data.base import (
    ArrayImageSet,
    DataError,
    EncodedImageSet,
    ImageSet,
    register_dataset,
    stratified_split,
)
from rft_ray.config import DatasetSpec, SpecError, described

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
FOLDER_LAYOUT = "<root>/train/<class>/*.jpg|jpeg|png and <root>/test/<class>/*.jpg|jpeg|png"
DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
_NUMBERED = re.compile(r"^\d+\.(.+)$")


# ---------------------------------------------------------------------------------------------------
# Shared helpers: error messages, the image-folder scanner, class selection


def _found(path: Path, limit: int = 8) -> str:
    """What is at `path`, for error messages: its first entries, or that it is missing/empty/a file."""
    if not path.exists():
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if parent.is_dir() and parent != path:
            return f"{path} does not exist ({parent} holds: {_entries(parent, limit)})"
        return f"{path} does not exist"
    if not path.is_dir():
        return f"{path} is a file, not a folder"
    return f"{path} holds: {_entries(path, limit)}"


def _entries(folder: Path, limit: int = 8) -> str:
    try:
        names = sorted(os.listdir(folder))
    except OSError as err:
        return f"(cannot list it: {err})"
    if not names:
        return "nothing (it is empty)"
    shown = [n + ("/" if (folder / n).is_dir() else "") for n in names[:limit]]
    more = f", ... ({len(names)} entries)" if len(names) > limit else ""
    return ", ".join(shown) + more


def _layout_error(dataset: str, path: Path | str, expected: str, found: str) -> DataError:
    return DataError(f"dataset {dataset!r}: cannot read {path}: expected {expected}, but {found}.")


def _root(spec: DatasetSpec, expected: str) -> Path:
    if spec.root is None:
        raise DataError(f"dataset {spec.name!r} reads local files, so `dataset.root` must be set: point it at "
                        f"the folder holding {expected}.")
    root = Path(spec.root).expanduser()
    if not root.is_dir():
        raise _layout_error(spec.name, root, f"dataset.root to be an existing folder with {expected}", _found(root))
    return root


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _class_folders(folder: Path, dataset: str, expected: str, skip: Collection[str] = ()) -> list[Path]:
    """The sorted, visible subfolders of `folder` (one per class), minus `skip`."""
    if not folder.is_dir():
        raise _layout_error(dataset, folder, expected, _found(folder))
    folders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in skip)
    if not folders:
        raise _layout_error(dataset, folder, expected, f"it has no class subfolders ({_found(folder)})")
    return folders


def scan_image_folder(folder: Path, dataset: str, expected: str, *, class_names: Sequence[str] | None = None,
                      class_name: Callable[[str], str] = lambda name: name,
                      skip: Collection[str] = ()) -> tuple[list[str], np.ndarray, list[str]]:
    """Read an ImageFolder-style tree `folder/<class>/<image>`: (file paths, labels, class names).

    Classes are the sorted subfolders (named by `class_name(folder name)`), or, with `class_names` given
    (a test split following its train split), labelled by their position in that list. Files other
    than jpg/jpeg/png (any case) are skipped; an empty class folder is an error.
    """
    folders = _class_folders(folder, dataset, expected, skip)
    names = [class_name(f.name) for f in folders]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _layout_error(dataset, folder, f"{expected}, one folder per class",
                            f"several folders map to the class name(s) {', '.join(duplicates[:5])}")
    if class_names is None:
        class_names = names
    else:
        index_of = {n: i for i, n in enumerate(class_names)}
        unknown = [n for n in names if n not in index_of]
        if unknown:
            raise _layout_error(dataset, folder, f"{expected}, with the same classes as the training split "
                                f"({', '.join(list(class_names)[:5])}{' ...' if len(class_names) > 5 else ''})",
                                f"it has class folder(s) not among them: {', '.join(unknown[:5])}")
    index_of = {n: i for i, n in enumerate(class_names)}
    files: list[str] = []
    labels: list[int] = []
    for sub, name in zip(folders, names):
        images = sorted(p for p in sub.iterdir() if p.is_file() and _is_image(p))
        if not images:
            raise _layout_error(dataset, sub, f"{expected}: image files (*.jpg, *.jpeg, *.png) in every class "
                                "folder", f"this class folder has none ({_found(sub)})")
        files.extend(str(p) for p in images)
        labels.extend([index_of[name]] * len(images))
    return files, np.asarray(labels, dtype=np.int64), list(class_names)


def _encoded_files(files: Sequence[str], labels: Sequence[int], size: int) -> EncodedImageSet:
    return EncodedImageSet(list(files), labels, size, names=list(files))


def _has_folder_splits(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "test").is_dir()


def _load_folder_splits(root: Path, dataset: str, size: int) -> tuple[ImageSet, ImageSet, list[str]]:
    """The generic layout: root/train/<class>/* and root/test/<class>/* (class names: train's folder names)."""
    train_files, train_labels, names = scan_image_folder(root / "train", dataset, FOLDER_LAYOUT)
    test_files, test_labels, _ = scan_image_folder(root / "test", dataset, FOLDER_LAYOUT, class_names=names)
    return _encoded_files(train_files, train_labels, size), _encoded_files(test_files, test_labels, size), names


def _strip_number(name: str) -> str:
    match = _NUMBERED.match(name)
    return match.group(1) if match else name


def _class_map(class_names: Sequence[str], wanted: list[str] | None) -> tuple[np.ndarray | None, list[str]]:
    """For the `classes` option: old label -> new label (-1: dropped), and the new class names."""
    if wanted is None:
        return None, list(class_names)
    path = "dataset.options.classes"
    if len(wanted) == 0:
        raise SpecError("lists no class; give at least 2 class names, or null for all classes", path)
    repeated = sorted({c for c in wanted if wanted.count(c) > 1})
    if repeated:
        raise SpecError(f"lists {', '.join(map(repr, repeated))} more than once", path)
    index_of = {n: i for i, n in enumerate(class_names)}
    unknown = [c for c in wanted if c not in index_of]
    if unknown:
        shown = ", ".join(list(class_names)[:10]) + (f", ... ({len(class_names)} classes)"
                                                     if len(class_names) > 10 else "")
        raise SpecError(f"unknown class(es) {', '.join(map(repr, unknown[:5]))}; this dataset's classes are: "
                        f"{shown}", path)
    mapping = np.full(len(class_names), -1, dtype=np.int64)
    for new, name in enumerate(wanted):
        mapping[index_of[name]] = new
    return mapping, list(wanted)


def _keep_classes(images: ImageSet, mapping: np.ndarray | None) -> ImageSet:
    """Keep only the images whose class is selected, relabelled (ArrayImageSet / EncodedImageSet)."""
    if mapping is None:
        return images
    new = mapping[images.labels]
    rows = np.flatnonzero(new >= 0)
    if isinstance(images, ArrayImageSet):
        return ArrayImageSet(images.pixels[rows], new[rows], images.size)
    if isinstance(images, EncodedImageSet):
        names = [images.names[i] for i in rows] if images.names else None
        return EncodedImageSet([images.items[i] for i in rows], new[rows], images.size, names=names)
    raise TypeError(f"cannot select classes of a {type(images).__name__}")  # a bug, not input


# ---------------------------------------------------------------------------------------------------
# Parquet (Hugging Face `datasets` exports)


def _resolve_source(source: str, base: str | None) -> str:
    """A path or URI; relative paths are relative to `base` (dataset.root) when set, else the current dir."""
    if "://" in source:
        return source
    path = Path(source).expanduser()
    if not path.is_absolute():
        if base is not None and "://" in base:
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
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    expected = (f"a Parquet file with an image column {image_column!r} (struct<bytes, path> or binary) and an "
                f"integer label column {label_column!r}")
    try:
        filesystem, path = pafs.FileSystem.from_uri(source)
        info = filesystem.get_file_info(path)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise DataError(f"dataset {dataset!r}: cannot open {source} ({field}): {err}") from err
    if info.type == pafs.FileType.NotFound:
        found = _found(Path(path)) if isinstance(filesystem, pafs.LocalFileSystem) else "it does not exist"
        raise _layout_error(dataset, source, f"{expected} ({field})", found)
    if info.type == pafs.FileType.Directory:
        listing = (_found(Path(path)) if isinstance(filesystem, pafs.LocalFileSystem) else "it is a folder")
        raise _layout_error(dataset, source, f"{expected} ({field}); point at one file per split, such as "
                            "train.parquet, not at their folder", listing)
    try:
        with filesystem.open_input_file(path) as handle:
            schema = pq.read_schema(handle)
    except (pa.ArrowException, OSError) as err:
        raise _layout_error(dataset, source, f"{expected} ({field})", f"it is not a readable Parquet file: {err}") from err

    columns = ", ".join(f"{f.name} ({f.type})" for f in schema)

    def wrong(what: str) -> DataError:
        return _layout_error(dataset, source, f"{expected} ({field})", f"{what}; its columns are: {columns}")

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

    try:
        table = pq.read_table(path, filesystem=filesystem, columns=[image_column, label_column])
    except (pa.ArrowException, OSError) as err:
        raise _layout_error(dataset, source, f"{expected} ({field})", f"reading it failed: {err}") from err
    label_array = table.column(label_column)
    if label_array.null_count:
        raise wrong(f"{label_array.null_count} row(s) have no label")
    labels = label_array.to_numpy().astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise wrong(f"it has negative labels (row {int(np.argmin(labels))}: {labels.min()})")
    class_names = _parquet_class_names(schema.metadata or {}, label_column, labels, source, dataset)
    if len(labels) and labels.max() >= len(class_names):
        raise wrong(f"it has label {labels.max()} but its metadata names only {len(class_names)} classes")

    mapping, class_names = _class_map(class_names, wanted)
    rows = np.arange(len(labels))
    if mapping is not None:
        new = mapping[labels]
        rows = np.flatnonzero(new >= 0)
        labels = new[rows]
        table = table.take(pa.array(rows))
    images = table.column(image_column).combine_chunks()
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
    names = [f"{source} row {int(r)}" + (f" ({p})" if p else "") for r, p in zip(rows, paths)]
    return ParquetImages(data, labels, class_names, names)


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


def _parquet_set(data: ParquetImages, size: int) -> EncodedImageSet:
    return EncodedImageSet(data.items, data.labels, size, names=data.names)


@dataclass
class ParquetOptions:
    train: str = described("the training split: a Parquet file path or URI (required; relative paths are relative "
                       "to dataset.root when set, else to the current folder)", "")
    test: str | None = described("the test split's Parquet file or URI (null: a seeded stratified split of train)",
                             None)
    test_fraction: float = described("share of train held out, seeded and stratified, as test when test is null", 0.2)
    image_column: str = described("column holding the images: struct<bytes, path> (Hugging Face Image) or binary",
                              "image")
    label_column: str = described("integer class column (Hugging Face exports: 'label', 'fine_label', ...)", "label")
    classes: list[str] | None = described("keep only these classes, relabelled 0..k-1 in this order (null: all)", None)

    def __post_init__(self):
        if not 0.0 < self.test_fraction < 1.0:
            raise SpecError(f"must be in (0, 1), got {self.test_fraction}", "test_fraction")


@register_dataset("parquet", ParquetOptions)
def load_parquet(spec: DatasetSpec, options: ParquetOptions, size: int):
    """Hugging Face-style Parquet image files (local or URI): image struct<bytes, path> and label columns."""
    if not options.train.strip():
        raise SpecError("is required: the training split's Parquet file or URI (e.g. data/train.parquet, "
                        "s3://bucket/cifar10/train.parquet)", "dataset.options.train")
    columns = dict(image_column=options.image_column, label_column=options.label_column, wanted=options.classes)
    train = read_parquet_images(_resolve_source(options.train, spec.root), spec.name, "dataset.options.train",
                                **columns)
    test = None
    if options.test is not None:
        test_data = read_parquet_images(_resolve_source(options.test, spec.root), spec.name, "dataset.options.test",
                                        **columns)
        if test_data.class_names != train.class_names:
            raise DataError(f"dataset {spec.name!r}: the test file {options.test} names its classes "
                            f"{_short(test_data.class_names)} but the train file {options.train} "
                            f"{_short(train.class_names)}; both splits must share one class list")
        test = _parquet_set(test_data, size)
    return _parquet_set(train, size), test, {}, train.class_names


def _short(names: Sequence[str], limit: int = 5) -> str:
    return "[" + ", ".join(names[:limit]) + (f", ... ({len(names)} classes)" if len(names) > limit else "") + "]"


# ---------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100


@dataclass
class CifarOptions:
    classes: list[str] | None = described("keep only these classes, relabelled 0..k-1 in this order (e.g. 10 of "
                                      "CIFAR-100's classes; null: all)", None)


def _load_cifar(spec: DatasetSpec, options: CifarOptions, size: int, hundred: bool):
    base_folder = "cifar-100-python" if hundred else "cifar-10-batches-py"
    title = "CIFAR-100" if hundred else "CIFAR-10"
    expected = (f"{base_folder}/ (torchvision's {title} format) or the image-folder layout {FOLDER_LAYOUT}")
    if spec.root is None:
        raise DataError(f"dataset {spec.name!r}: `dataset.root` must be set: point it at the folder holding "
                        f"{expected} (with `dataset.download: true` and a network, torchvision downloads "
                        f"{title} into it), or use the 'parquet' dataset for Hugging Face Parquet exports.")
    root = Path(spec.root).expanduser()
    if _has_folder_splits(root):
        train, test, names = _load_folder_splits(root, spec.name, size)
    else:
        if not spec.download and not (root / base_folder).is_dir():
            raise DataError(
                f"dataset {spec.name!r}: no {title} data at {root}: expected {root / base_folder}/ (torchvision's "
                f"format) or the image-folder layout {FOLDER_LAYOUT}, but {_found(root)}. Set `dataset.download: "
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
                                f"Expected torchvision's {title} files there ({_found(root / base_folder)}); "
                                "downloading needs a network.") from err
            sets.append(data)
        names = list(sets[0].classes)
        train, test = (ArrayImageSet(np.asarray(s.data, dtype=np.uint8), s.targets, size) for s in sets)
    mapping, names = _class_map(names, options.classes)
    return _keep_classes(train, mapping), _keep_classes(test, mapping), {}, names


@register_dataset("cifar10", CifarOptions)
def load_cifar10(spec: DatasetSpec, options: CifarOptions, size: int):
    """CIFAR-10 via torchvision (root/cifar-10-batches-py, or download) or root/{train,test}/<class>/ images."""
    return _load_cifar(spec, options, size, hundred=False)


@register_dataset("cifar100", CifarOptions)
def load_cifar100(spec: DatasetSpec, options: CifarOptions, size: int):
    """CIFAR-100 via torchvision (root/cifar-100-python, or download) or root/{train,test}/<class>/ images."""
    return _load_cifar(spec, options, size, hundred=True)


# ---------------------------------------------------------------------------------------------------
# Caltech-256


@dataclass
class Caltech256Options:
    include_clutter: bool = described("keep the 257.clutter background category as a class", False)
    test_fraction: float = described("share of each class held out, seeded, as the test split (no official split)",
                                 0.2)

    def __post_init__(self):
        if not 0.0 < self.test_fraction < 1.0:
            raise SpecError(f"must be in (0, 1), got {self.test_fraction}", "test_fraction")


@register_dataset("caltech256", Caltech256Options)
def load_caltech256(spec: DatasetSpec, options: Caltech256Options, size: int):
    """Caltech-256: root/256_ObjectCategories/<NNN.name>/*.jpg (seeded test split) or root/{train,test}/<class>/."""
    expected = (f"<root>/256_ObjectCategories/<NNN.name>/*.jpg (the official tarball; root may also be "
                f"256_ObjectCategories itself) or {FOLDER_LAYOUT}")
    root = _root(spec, expected)
    if _has_folder_splits(root):
        train, test, names = _load_folder_splits(root, spec.name, size)
        return train, test, {}, names
    categories = root / "256_ObjectCategories"
    if not categories.is_dir():
        numbered = [p for p in root.iterdir() if p.is_dir() and _NUMBERED.match(p.name)]
        if root.name != "256_ObjectCategories" and not numbered:
            raise _layout_error(spec.name, root, expected, _found(root))
        categories = root
    skip = () if options.include_clutter else ("257.clutter",)
    files, labels, names = scan_image_folder(categories, spec.name, expected, class_name=_strip_number, skip=skip)
    return _encoded_files(files, labels, size), None, {}, names


# ---------------------------------------------------------------------------------------------------
# CUB-200-2011


def _read_table_file(path: Path, dataset: str, columns: int, expected: str) -> list[list[str]]:
    """Whitespace-separated lines with `columns` fields (the last may hold spaces); blank lines skipped."""
    if not path.is_file():
        raise _layout_error(dataset, path, expected, _found(path))
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=columns - 1)
            if len(parts) != columns:
                raise DataError(f"dataset {dataset!r}: line {number} of {path} should have {columns} fields "
                                f"({expected}), but reads {line.strip()[:80]!r}")
            rows.append(parts)
    return rows


def _inside(base: Path, entry: str, listed_in: Path | str, dataset: str) -> str:
    """`base/entry` for a path read from a dataset's list file, refusing entries that leave `base` (absolute
    paths, `..`): a list file is data, and data must not point the loader at files elsewhere."""
    relative = entry.strip().replace("\\", "/")
    parts = Path(relative).parts
    if not relative or Path(relative).is_absolute() or ".." in parts or relative.startswith("~"):
        raise DataError(f"dataset {dataset!r}: {listed_in} lists {entry.strip()[:120]!r}, a path outside "
                        f"{base}; entries must be relative paths inside the dataset folder")
    return str(base / relative)


def _require_files(paths: Sequence[str], listed_in: str, dataset: str) -> None:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataError(f"dataset {dataset!r}: {len(missing)} of the {len(paths)} images listed in {listed_in} are "
                        f"missing, e.g. {', '.join(missing[:3])}")


@register_dataset("cub200", natural_ood=False)
def load_cub200(spec: DatasetSpec, options: Any, size: int):
    """CUB-200-2011 birds with the official split: root/CUB_200_2011/{images.txt, ..., images/} or {train,test}/."""
    files = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt", "images/")
    expected = (f"<root>/CUB_200_2011/ (or root being it) holding {', '.join(files)} (the official archive), "
                f"or {FOLDER_LAYOUT}")
    root = _root(spec, expected)
    if _has_folder_splits(root):
        train, test, names = _load_folder_splits(root, spec.name, size)
        return train, test, {}, names
    base = root / "CUB_200_2011" if (root / "CUB_200_2011").is_dir() else root
    missing = [f for f in files if not (base / f).exists()]
    if missing:
        raise _layout_error(spec.name, base, expected, f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                            f"missing ({_found(base)})")
    classes = _read_table_file(base / "classes.txt", spec.name, 2, "'<class id> <NNN.name>'")
    class_ids = {_int(cid, base / "classes.txt", spec.name): _strip_number(name.strip())
                 for cid, name in classes}
    if sorted(class_ids) != list(range(1, len(class_ids) + 1)):
        raise DataError(f"dataset {spec.name!r}: the class ids in {base / 'classes.txt'} must be 1..N")
    names = [class_ids[i] for i in range(1, len(class_ids) + 1)]
    images = {iid: rel.strip() for iid, rel in
              _read_table_file(base / "images.txt", spec.name, 2, "'<image id> <class folder>/<file>'")}
    labels = {iid: _int(c, base / "image_class_labels.txt", spec.name) for iid, c in
              _read_table_file(base / "image_class_labels.txt", spec.name, 2, "'<image id> <class id>'")}
    split = {iid: _int(s, base / "train_test_split.txt", spec.name) for iid, s in
             _read_table_file(base / "train_test_split.txt", spec.name, 2, "'<image id> <1 train | 0 test>'")}
    for listing, table in (("image_class_labels.txt", labels), ("train_test_split.txt", split)):
        absent = [iid for iid in images if iid not in table]
        if absent:
            raise DataError(f"dataset {spec.name!r}: {len(absent)} image id(s) of {base / 'images.txt'} are "
                            f"missing from {base / listing}, e.g. {', '.join(absent[:3])}")
    bad = [iid for iid in images if not 1 <= labels[iid] <= len(names)]
    if bad:
        raise DataError(f"dataset {spec.name!r}: image {bad[0]} in {base / 'image_class_labels.txt'} has class "
                        f"{labels[bad[0]]}, outside the {len(names)} classes of classes.txt")
    order = sorted(images, key=int)
    paths = [_inside(base / "images", images[i], base / "images.txt", spec.name) for i in order]
    _require_files(paths, str(base / "images.txt"), spec.name)
    all_labels = np.asarray([labels[i] - 1 for i in order], dtype=np.int64)
    is_train = np.asarray([split[i] == 1 for i in order])
    sets = []
    for keep in (is_train, ~is_train):
        rows = np.flatnonzero(keep)
        sets.append(_encoded_files([paths[r] for r in rows], all_labels[rows], size))
    return sets[0], sets[1], {}, names


def _int(text: str, path: Path, dataset: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"dataset {dataset!r}: {path} should hold whole numbers, but has {text.strip()[:40]!r}") from None


# ---------------------------------------------------------------------------------------------------
# Stanford Dogs


def _mat_file_list(path: Path, dataset: str, expected: str) -> list[str]:
    if not path.is_file():
        raise _layout_error(dataset, path, expected, _found(path))
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


@register_dataset("stanford_dogs")
def load_stanford_dogs(spec: DatasetSpec, options: Any, size: int):
    """Stanford Dogs, official split: root/Images/<wnid-Breed>/*.jpg with train_list.mat, test_list.mat."""
    expected = ("<root>/Images/<wnid-Breed_Name>/*.jpg with <root>/train_list.mat and <root>/test_list.mat "
                f"(the official images.tar and lists.tar), or {FOLDER_LAYOUT}")
    root = _root(spec, expected)
    if _has_folder_splits(root):
        train, test, names = _load_folder_splits(root, spec.name, size)
        return train, test, {}, names
    images = root / "Images"
    if not images.is_dir():
        raise _layout_error(spec.name, root, expected, f"there is no Images/ folder ({_found(root)})")
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
        paths = [_inside(images, e, root / f"{split}_list.mat", spec.name) for e in entries]
        _require_files(paths, str(root / f"{split}_list.mat"), spec.name)
        sets.append(_encoded_files(paths, [label_of[e.split("/")[0]] for e in entries], size))
    return sets[0], sets[1], {}, names


# ---------------------------------------------------------------------------------------------------
# DomainNet


@dataclass
class DomainNetOptions:
    domain: Literal["clipart", "infograph", "painting", "quickdraw", "real", "sketch"] = described(
        "the training domain; every other domain present is an OOD domain (its test split)", "real")
    ood_domains: list[str] | None = described("only these OOD domains (null: every other domain present)", None)
    test_fraction: float = described("share of each class held out, seeded, as test for domains without official "
                                 "split files or test.parquet", 0.2)

    def __post_init__(self):
        if not 0.0 < self.test_fraction < 1.0:
            raise SpecError(f"must be in (0, 1), got {self.test_fraction}", "test_fraction")
        for i, name in enumerate(self.ood_domains or []):
            if name not in DOMAINS:
                raise SpecError(f"must be one of {', '.join(map(repr, DOMAINS))}, got {name!r}", f"ood_domains[{i}]")
            if name == self.domain:
                raise SpecError(f"{name!r} is the training domain (domain), so it cannot also be OOD",
                                f"ood_domains[{i}]")
        if self.ood_domains is not None and len(set(self.ood_domains)) != len(self.ood_domains):
            raise SpecError(f"lists a domain more than once: {self.ood_domains}", "ood_domains")


_DOMAINNET_LAYOUT = ("per-domain folders <root>/<domain>/<class>/*.jpg (with the official split files "
                     "<root>/<domain>_train.txt and <root>/<domain>_test.txt, optional), or Parquet exports "
                     "<root>/<domain>/train.parquet and <root>/<domain>/test.parquet; domains: " + ", ".join(DOMAINS))


def _domain_present(root: Path, domain: str) -> bool:
    return (root / domain).is_dir()


def _domain_split_file(root: Path, domain: str, split: str, class_names: list[str], dataset: str
                       ) -> tuple[list[str], np.ndarray]:
    path = root / f"{domain}_{split}.txt"
    rows = _read_table_file(path, dataset, 2, f"'{domain}/<class>/<file>.jpg <label>' lines")
    label_of = {n: i for i, n in enumerate(class_names)}
    files, labels = [], []
    for rel, _number in rows:
        parts = rel.split("/")
        if len(parts) < 3 or parts[0] != domain:
            raise DataError(f"dataset {dataset!r}: {path} should list '{domain}/<class>/<file>.jpg <label>', but "
                            f"has {rel!r}")
        if parts[1] not in label_of:
            raise DataError(f"dataset {dataset!r}: {path} lists {rel!r}, whose class {parts[1]!r} has no folder in "
                            f"{root / domain} ({_found(root / domain)})")
        files.append(_inside(root, rel, path, dataset))
        labels.append(label_of[parts[1]])
    _require_files(files, str(path), dataset)
    return files, np.asarray(labels, dtype=np.int64)


def _load_domain(root: Path, domain: str, dataset: str, size: int, seed: int, fraction: float,
                 need_train: bool) -> tuple[ImageSet | None, ImageSet, list[str]]:
    """(train or None when not needed, test, class names) of one DomainNet domain."""
    folder = root / domain
    if (folder / "train.parquet").is_file() or (folder / "test.parquet").is_file():
        parts = {}
        for split in ("train", "test"):
            path = folder / f"{split}.parquet"
            if path.is_file() and (split == "test" or need_train):
                parts[split] = read_parquet_images(str(path), dataset, f"DomainNet domain {domain!r}")
        if "test" not in parts:
            data = parts.get("train") or read_parquet_images(str(folder / "train.parquet"), dataset,
                                                             f"DomainNet domain {domain!r}")
            images = _parquet_set(data, size)
            keep, held = stratified_split(images.labels, fraction, seed, f"test/{domain}")
            return images.subset(keep), images.subset(held), data.class_names
        test = parts["test"]
        if "train" in parts and parts["train"].class_names != test.class_names:
            raise DataError(f"dataset {dataset!r}: {folder / 'train.parquet'} and {folder / 'test.parquet'} name "
                            f"different classes ({_short(parts['train'].class_names)} vs {_short(test.class_names)})")
        if need_train and "train" not in parts:
            raise _layout_error(dataset, folder, _DOMAINNET_LAYOUT, f"the training domain has test.parquet but no "
                                f"train.parquet ({_found(folder)})")
        train = _parquet_set(parts["train"], size) if need_train else None
        return train, _parquet_set(test, size), test.class_names
    class_names = [p.name for p in _class_folders(folder, dataset, _DOMAINNET_LAYOUT)]
    if (root / f"{domain}_test.txt").is_file() and (not need_train or (root / f"{domain}_train.txt").is_file()):
        train = None
        if need_train:
            train = _encoded_files(*_domain_split_file(root, domain, "train", class_names, dataset), size)
        test = _encoded_files(*_domain_split_file(root, domain, "test", class_names, dataset), size)
        return train, test, class_names
    files, labels, class_names = scan_image_folder(folder, dataset, _DOMAINNET_LAYOUT)
    images = _encoded_files(files, labels, size)
    keep, held = stratified_split(labels, fraction, seed, f"test/{domain}")
    return images.subset(keep), images.subset(held), class_names


@register_dataset("domainnet", DomainNetOptions, natural_ood=True)
def load_domainnet(spec: DatasetSpec, options: DomainNetOptions, size: int):
    """DomainNet: train on one domain, the other domains' test splits are the natural OOD domains."""
    root = _root(spec, _DOMAINNET_LAYOUT)
    if not _domain_present(root, options.domain):
        present = [d for d in DOMAINS if _domain_present(root, d)]
        raise _layout_error(spec.name, root / options.domain, f"the training domain (dataset.options.domain) as "
                            f"{_DOMAINNET_LAYOUT}", f"it is missing (domains present: "
                            f"{', '.join(present) or 'none'}; {_found(root)})")
    if options.ood_domains is None:
        ood_domains = [d for d in DOMAINS if d != options.domain and _domain_present(root, d)]
    else:
        absent = [d for d in options.ood_domains if not _domain_present(root, d)]
        if absent:
            raise _layout_error(spec.name, root / absent[0], f"the OOD domain(s) of dataset.options.ood_domains as "
                                f"{_DOMAINNET_LAYOUT}", f"{', '.join(absent)} {'is' if len(absent) == 1 else 'are'} "
                                f"missing ({_found(root)})")
        ood_domains = list(options.ood_domains)
    train, test, names = _load_domain(root, options.domain, spec.name, size, spec.split_seed,
                                      options.test_fraction, need_train=True)
    ood: dict[str, ImageSet] = {}
    for domain in ood_domains:
        _, domain_test, domain_names = _load_domain(root, domain, spec.name, size, spec.split_seed,
                                                    options.test_fraction, need_train=False)
        if domain_names != names:
            missing = [n for n in names if n not in domain_names]
            extra = [n for n in domain_names if n not in names]
            detail = (f"missing {_short(missing)}, extra {_short(extra)}" if missing or extra
                      else "the same classes in a different order")
            raise DataError(f"dataset {spec.name!r}: domain {domain!r} at {root / domain} has classes that differ from "
                            f"the training domain {options.domain!r} ({detail}); every domain must have the same "
                            "classes")
        ood[domain] = domain_test
    return train, test, ood, names
