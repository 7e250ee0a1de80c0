"""What the folder datasets share: error messages that say what is on disk, the image-folder scanner, list
files, and class selection.

Every loader reads local files only (CIFAR may also be downloaded by torchvision when
`dataset.download` is true). Missing or misplaced data raises `DataError` naming the path, the
layout that was expected and what was found there.

Besides each dataset's official layout, the folder datasets (cifar10, cifar100, caltech256, cub200,
stanford_dogs) accept the generic image-folder layout `<root>/{train,test}/<class>/*`, read by the
`imagefolder` dataset's code (`rft_ray.data.imagefolder`). Images must lie directly in their class folder
(subfolders are ignored, as in torchvision's Caltech-256 reader).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Collection, Sequence

import numpy as np

from rft_ray.config import DatasetSpec, SpecError
from rft_ray.data.base import ArrayImageSet, DataError, EncodedImageSet, ImageSet

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # the official releases' images
NUMBERED = re.compile(r"^\d+\.(.+)$")


# ---------------------------------------------------------------------------------------------------
# Error messages


def found(path: Path, limit: int = 8) -> str:
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


def layout_error(dataset: str, path: Path | str, expected: str, actual: str) -> DataError:
    return DataError(f"dataset {dataset!r}: cannot read {path}: expected {expected}, but {actual}.")


def short(names: Sequence[str], limit: int = 5) -> str:
    return "[" + ", ".join(names[:limit]) + (f", ... ({len(names)} classes)" if len(names) > limit else "") + "]"


def dataset_root(spec: DatasetSpec, expected: str) -> Path:
    if spec.root is None:
        raise DataError(f"dataset {spec.name!r} reads local files, so `dataset.root` must be set: point it at "
                        f"the folder holding {expected}.")
    root = Path(spec.root).expanduser()
    if not root.is_dir():
        raise layout_error(spec.name, root, f"dataset.root to be an existing folder with {expected}", found(root))
    return root


# ---------------------------------------------------------------------------------------------------
# Image folders


def class_folders(folder: Path, dataset: str, expected: str, skip: Collection[str] = ()) -> list[Path]:
    """The sorted, visible subfolders of `folder` (one per class), minus `skip`."""
    if not folder.is_dir():
        raise layout_error(dataset, folder, expected, found(folder))
    folders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in skip)
    if not folders:
        raise layout_error(dataset, folder, expected, f"it has no class subfolders ({found(folder)})")
    return folders


def _check_folder_classes(folder: Path, dataset: str, expected: str, names: list[str],
                          class_names: Sequence[str] | None) -> list[str]:
    """The class list a scan labels by: the folders' own names, or `class_names` when they all belong to it."""
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise layout_error(dataset, folder, f"{expected}, one folder per class",
                           f"several folders map to the class name(s) {', '.join(duplicates[:5])}")
    if class_names is None:
        return names
    index_of = {n: i for i, n in enumerate(class_names)}
    unknown = [n for n in names if n not in index_of]
    if unknown:
        raise layout_error(dataset, folder, f"{expected}, with the same classes as the training split "
                           f"({', '.join(list(class_names)[:5])}{' ...' if len(class_names) > 5 else ''})",
                           f"it has class folder(s) not among them: {', '.join(unknown[:5])}")
    return list(class_names)


def scan_image_folder(folder: Path, dataset: str, expected: str, *, class_names: Sequence[str] | None = None,
                      class_name: Callable[[str], str] = lambda name: name, skip: Collection[str] = (),
                      extensions: Collection[str] = IMAGE_EXTENSIONS, ignored: list[str] | None = None
                      ) -> tuple[list[str], np.ndarray, list[str]]:
    """Read an ImageFolder-style tree `folder/<class>/<image>`: (file paths, labels, class names).

    Classes are the sorted subfolders (named by `class_name(folder name)`), or, with `class_names` given
    (a test split following its train split), labelled by their position in that list. Files whose
    extension (any case) is not among `extensions` are skipped (and appended to `ignored` when given; hidden
    files are not); a class folder without images is an error.
    """
    folders = class_folders(folder, dataset, expected, skip)
    names = [class_name(f.name) for f in folders]
    class_names = _check_folder_classes(folder, dataset, expected, names, class_names)
    index_of = {n: i for i, n in enumerate(class_names)}
    files: list[str] = []
    labels: list[int] = []
    for sub, name in zip(folders, names):
        visible = sorted(p for p in sub.iterdir() if p.is_file() and not p.name.startswith("."))
        images = [p for p in visible if p.suffix.lower() in extensions]
        if ignored is not None:
            ignored.extend(str(p) for p in visible if p.suffix.lower() not in extensions)
        if not images:
            common = [e for e in (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif") if e in extensions]
            shown = ", ".join(f"*{e}" for e in common) + (", ..." if len(extensions) > len(common) else "")
            raise layout_error(dataset, sub, f"{expected}: image files ({shown}) in every class folder",
                               f"this class folder has none ({found(sub)})")
        files.extend(str(p) for p in images)
        labels.extend([index_of[name]] * len(images))
    return files, np.asarray(labels, dtype=np.int64), list(class_names)


def encoded_files(files: Sequence[str], labels: Sequence[int], size: int) -> EncodedImageSet:
    return EncodedImageSet(list(files), labels, size, names=list(files))


def strip_number(name: str) -> str:
    match = NUMBERED.match(name)
    return match.group(1) if match else name


# ---------------------------------------------------------------------------------------------------
# List files (CUB-200, DomainNet's split files)


def read_table_file(path: Path, dataset: str, columns: int, expected: str) -> list[list[str]]:
    """Whitespace-separated lines with `columns` fields (the last may hold spaces); blank lines skipped."""
    if not path.is_file():
        raise layout_error(dataset, path, expected, found(path))
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


def inside(base: Path, entry: str, listed_in: Path | str, dataset: str) -> str:
    """`base/entry` for a path read from a dataset's list file, refusing entries that leave `base` (absolute
    paths, `..`): a list file is data, and data must not point the loader at files elsewhere."""
    relative = entry.strip().replace("\\", "/")
    parts = Path(relative).parts
    if not relative or Path(relative).is_absolute() or ".." in parts or relative.startswith("~"):
        raise DataError(f"dataset {dataset!r}: {listed_in} lists {entry.strip()[:120]!r}, a path outside "
                        f"{base}; entries must be relative paths inside the dataset folder")
    return str(base / relative)


def require_files(paths: Sequence[str], listed_in: str, dataset: str) -> None:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataError(f"dataset {dataset!r}: {len(missing)} of the {len(paths)} images listed in {listed_in} are "
                        f"missing, e.g. {', '.join(missing[:3])}")


# ---------------------------------------------------------------------------------------------------
# Class selection (the `classes` option)


def class_map(class_names: Sequence[str], wanted: list[str] | None) -> tuple[np.ndarray | None, list[str]]:
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


def keep_classes(images: ImageSet, mapping: np.ndarray | None) -> ImageSet:
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
