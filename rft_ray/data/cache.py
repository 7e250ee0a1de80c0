"""Decode each dataset once per node: a content-keyed cache of decoded uint8 splits on local disk.

A trial used to decode (and resize) its dataset itself; with many trials per node that is the same work
over and over. The first trial on a node now decodes the splits a run uses (train after the validation
split and `train_limit`, the validation split, which every evaluation point measures
(`evaluation.validation`), test, natural OOD domains and own OOD sets) into `.npy` files; every later trial
memory-maps them, so concurrent trials also share one copy in the page cache.

- Where: `$RFT_DATA_CACHE` (a folder; `off` disables the cache), else `~/.cache/rft-ray`; entries under
  `data/<key>/`.
- Key: a hash of what decides the decoded pixels: the dataset section (name, root, options, validation
  fraction, split seed, train limit, own OOD sets), the image size, the input files' sizes and modification
  times (every file under `dataset.root` and under each own OOD set, the Parquet files named in the options,
  scikit-learn's version for `digits`),
  and the source of the dataset code itself. Change any of them and the entry is simply not found.
- Safe under concurrent trials: an entry is built in a private temporary folder and renamed into place
  (atomic); a lock file makes a second trial that misses at the same time wait for the first instead of
  decoding too; a reader only ever sees complete entries.
- Splits larger than `$RFT_DATA_CACHE_MAX_BYTES` in total (default 8 GiB) are not cached (decoded lazily,
  as without the cache).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from rft_ray.data.base import ImageSet
from rft_ray.data.parquet import resolve_source
from rft_ray.results.files import filesystem_for, is_uri

CACHE_ENV = "RFT_DATA_CACHE"
MAX_BYTES_ENV = "RFT_DATA_CACHE_MAX_BYTES"
DEFAULT_MAX_BYTES = 8 << 30
FORMAT = 2  # 2: the validation split is decoded too (1 left it lazy)
_DATASETS_DIR = Path(__file__).resolve().parent  # every module here (registry, loaders) keys the cache


def cache_root() -> Path:
    value = os.environ.get(CACHE_ENV, "").strip()
    if value and value.lower() not in ("off", "0", "false", "no"):
        return Path(value).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "rft-ray"


def enabled() -> bool:
    return os.environ.get(CACHE_ENV, "").strip().lower() not in ("off", "0", "false", "no")


def max_bytes() -> int:
    try:
        return int(os.environ.get(MAX_BYTES_ENV, DEFAULT_MAX_BYTES))
    except ValueError:
        return DEFAULT_MAX_BYTES


class TensorImageSet(ImageSet):
    """Decoded images uint8 [N, 3, S, S] (memory-mapped from the cache), optionally through an index."""

    def __init__(self, pixels: torch.Tensor, labels: np.ndarray, size: int, index: np.ndarray | None = None):
        self.pixels, self.size, self.index = pixels, size, index
        self.labels = np.asarray(labels, dtype=np.int64)

    def image(self, index: int) -> torch.Tensor:
        row = int(self.index[index]) if self.index is not None else index
        return self.pixels[row].clone()

    def subset(self, indices) -> "TensorImageSet":
        indices = np.asarray(indices, dtype=np.int64)
        rows = self.index[indices] if self.index is not None else indices
        return TensorImageSet(self.pixels, self.labels[indices], self.size, rows)

    def materialize(self) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = self.pixels if self.index is None else self.pixels[torch.from_numpy(self.index)]
        return pixels, torch.as_tensor(self.labels, dtype=torch.long)


# ---------------------------------------------------------------------------------------------------
# Keys


def _code_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted(_DATASETS_DIR.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _files_fingerprint(location: str) -> list | None:
    """(relative path, size, mtime) of a file or of every file under a folder; None when unknown (remote)."""
    if is_uri(location):
        try:
            import pyarrow.fs as pafs

            filesystem, path = filesystem_for(location)
            info = filesystem.get_file_info(path)
            if info.type != pafs.FileType.File or info.mtime is None:
                return None
            return [[location, info.size, str(info.mtime)]]
        except Exception:
            return None
    path = Path(location).expanduser()
    if path.is_file():
        stat = path.stat()
        return [[str(path.resolve()), stat.st_size, stat.st_mtime_ns]]
    if not path.is_dir():
        return []
    rows = []
    for folder, subfolders, files in os.walk(path):
        subfolders.sort()
        for name in sorted(files):
            full = os.path.join(folder, name)
            try:
                stat = os.stat(full)
            except OSError:
                continue
            rows.append([os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns])
    return rows


def cache_key(spec, image_size: int) -> str | None:
    """The entry's key, or None when the inputs cannot be fingerprinted (then nothing is cached)."""
    inputs: dict[str, Any] = {}
    if spec.root is not None:
        root = spec.root if is_uri(spec.root) else str(Path(spec.root).expanduser().resolve())
        files = _files_fingerprint(root)
        if files is None:
            return None
        inputs["root"] = [root, files]
    options = spec.options or {}
    for field in ("train", "test"):
        value = options.get(field) if spec.name == "parquet" else None
        if value:
            files = _files_fingerprint(resolve_source(value, spec.root))  # the file the loader reads
            if files is None:
                return None
            inputs[field] = files
    for name, source in sorted(spec.ood.items()):  # own OOD sets (`dataset.ood`): a folder or a Parquet file
        files = _files_fingerprint(resolve_source(source, None))
        if files is None:
            return None
        inputs[f"ood/{name}"] = files
    if spec.name == "digits":
        import sklearn

        inputs["sklearn"] = sklearn.__version__
    decisive = {
        "format": FORMAT, "code": _code_fingerprint(), "image_size": image_size, "inputs": inputs,
        "dataset": {"name": spec.name, "root": spec.root, "options": options, "val_fraction": spec.val_fraction,
                    "split_seed": spec.split_seed, "train_limit": spec.train_limit, "ood": spec.ood},
    }
    return hashlib.sha256(json.dumps(decisive, sort_keys=True, default=str).encode()).hexdigest()[:32]


# ---------------------------------------------------------------------------------------------------
# Reading and writing entries

Splits = tuple[ImageSet, ImageSet, ImageSet, dict[str, ImageSet], list[str]]  # train, val, test, natural and own OOD, names


def _split_files(names: list[str]) -> dict[str, str]:
    return {name: f"{i:03d}" for i, name in enumerate(names)}


def _write_split(folder: Path, stem: str, images: ImageSet) -> None:
    n, size = len(images), images.size
    pixels = np.lib.format.open_memmap(folder / f"{stem}.npy", mode="w+", dtype=np.uint8, shape=(n, 3, size, size))
    for i in range(n):
        pixels[i] = images.image(i).numpy()
    pixels.flush()
    del pixels
    np.save(folder / f"{stem}.labels.npy", np.asarray(images.labels, dtype=np.int64))


def _read_split(folder: Path, stem: str, size: int) -> TensorImageSet:
    # Copy-on-write mapping: shared with every other trial on the node, never written back.
    pixels = np.load(folder / f"{stem}.npy", mmap_mode="c")
    labels = np.load(folder / f"{stem}.labels.npy")
    return TensorImageSet(torch.from_numpy(pixels), labels, size)


def _read_entry(folder: Path, size: int) -> Splits:
    meta = json.loads((folder / "meta.json").read_text())
    files = meta["splits"]
    train, val, test = (_read_split(folder, files[name], size) for name in ("train", "val", "test"))
    ood = {name: _read_split(folder, files[f"ood/{name}"], size) for name in meta["ood"]}
    return train, val, test, ood, list(meta["class_names"])


def cached_splits(spec, image_size: int, load_uncached: Callable[[], Splits]) -> Splits:
    """The splits from the node's cache, building the entry first when it is missing."""
    key = cache_key(spec, image_size)
    if key is None:
        return load_uncached()
    base = cache_root() / "data"
    folder = base / key
    if (folder / "meta.json").is_file():
        return _read_entry(folder, image_size)
    base.mkdir(parents=True, exist_ok=True)
    with open(base / f"{key}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per entry; the others wait, then read
        try:
            if (folder / "meta.json").is_file():
                return _read_entry(folder, image_size)
            splits = load_uncached()
            train, val, test, ood, class_names = splits
            decoded = [train, val, test, *ood.values()]
            if sum(len(s) * 3 * image_size * image_size for s in decoded) > max_bytes():
                return splits
            temporary = base / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            temporary.mkdir()
            try:
                names = ["train", "val", "test", *(f"ood/{name}" for name in ood)]
                files = _split_files(names)
                for name, images in zip(names, decoded):
                    _write_split(temporary, files[name], images)
                (temporary / "meta.json").write_text(json.dumps({
                    "format": FORMAT, "dataset": spec.name, "image_size": image_size, "class_names": class_names,
                    "ood": list(ood), "splits": files, "sizes": {n: len(s) for n, s in zip(names, decoded)}}))
                os.rename(temporary, folder)  # atomic: readers see a complete entry or none
            except BaseException:
                shutil.rmtree(temporary, ignore_errors=True)
                if (folder / "meta.json").is_file():  # another node process sharing the folder won the race
                    return _read_entry(folder, image_size)
                raise
            return _read_entry(folder, image_size)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
