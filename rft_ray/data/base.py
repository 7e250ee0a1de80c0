"""Image sets, the data bundle every dataset yields, and the dataset registry.

An `ImageSet` returns `(uint8 tensor [3, S, S], label)` already resized to the model's input size S;
pixels stay uint8 until the batch reaches the device, where they become floats in [0, 1] (the model
normalises inside, so attacks work in pixel space).
"""
from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from rft_ray.config import DatasetSpec, build_options
from rft_ray.config.dataset_options import NoOptions
from rft_ray.config.registry import Registry


class DataError(ValueError):
    """Data that is missing or not in the expected layout: names the file or folder, and what was expected."""


def to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def decode_image(data: bytes | str | Path, size: int, origin: str = "") -> torch.Tensor:
    """Decode an encoded image (bytes or a file path); a corrupt or truncated file names itself."""
    try:
        source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
        with Image.open(source) as image:
            image.load()
            return to_tensor(image, size)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        where = origin or (str(data) if not isinstance(data, (bytes, bytearray)) else "an image")
        raise DataError(f"cannot decode image {where}: {err}") from err


class ImageSet(torch.utils.data.Dataset):
    """Labelled images of one split; subclasses implement `image(i)`."""

    labels: np.ndarray
    size: int

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.image(index), int(self.labels[index])

    def subset(self, indices: Sequence[int]) -> "ImageSet":
        return SubsetImageSet(self, np.asarray(indices, dtype=np.int64))

    def materialize(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode every image once: (uint8 [N, 3, S, S], int64 [N]); for fixed evaluation subsets."""
        if len(self) == 0:
            return torch.zeros(0, 3, self.size, self.size, dtype=torch.uint8), torch.zeros(0, dtype=torch.long)
        images = torch.stack([self.image(i) for i in range(len(self))])
        return images, torch.as_tensor(self.labels, dtype=torch.long)


class ArrayImageSet(ImageSet):
    """Images held in memory as uint8 [N, H, W, 3] (or [N, H, W] grey)."""

    def __init__(self, pixels: np.ndarray, labels: Sequence[int], size: int):
        if pixels.dtype != np.uint8:
            raise DataError(f"image array must be uint8, got {pixels.dtype}")
        if len(pixels) != len(labels):
            raise DataError(f"{len(pixels)} images but {len(labels)} labels")
        self.pixels = pixels
        self.labels = np.asarray(labels, dtype=np.int64)
        self.size = size

    def image(self, index: int) -> torch.Tensor:
        return to_tensor(Image.fromarray(self.pixels[index]), self.size)


class EncodedImageSet(ImageSet):
    """Images as encoded bytes or file paths, decoded lazily on access."""

    def __init__(self, items: Sequence[bytes | str | Path], labels: Sequence[int], size: int,
                 names: Sequence[str] | None = None):
        if len(items) != len(labels):
            raise DataError(f"{len(items)} images but {len(labels)} labels")
        self.items = list(items)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.size = size
        self.names = list(names) if names is not None else None

    def image(self, index: int) -> torch.Tensor:
        origin = self.names[index] if self.names else ""
        return decode_image(self.items[index], self.size, origin)


class SubsetImageSet(ImageSet):
    def __init__(self, base: ImageSet, indices: np.ndarray):
        self.base = base
        self.indices = indices
        self.labels = base.labels[indices] if len(indices) else np.zeros(0, dtype=np.int64)
        self.size = base.size

    def image(self, index: int) -> torch.Tensor:
        return self.base.image(int(self.indices[index]))


class TransformedImageSet(ImageSet):
    """A deterministic per-image transform (an OOD corruption): `fn(image, index)`."""

    def __init__(self, base: ImageSet, fn: Callable[[torch.Tensor, int], torch.Tensor]):
        self.base = base
        self.fn = fn
        self.labels = base.labels
        self.size = base.size

    def image(self, index: int) -> torch.Tensor:
        return self.fn(self.base.image(index), index)


@dataclass
class DataBundle:
    """What every dataset yields. `ood` maps a domain name to its images (labels in the same class space);
    `val_ood` the corrupted validation split for each corruption domain of `ood` (the dataset's own and the
    run's own OOD domains have no validation counterpart: the evaluator holds out a part of each)."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    ood: dict[str, ImageSet]
    class_names: list[str]
    image_size: int
    val_ood: dict[str, ImageSet] = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def seeded_permutation(n: int, seed: int, salt: str) -> np.ndarray:
    # Each use gets its own stream (salt), so adding one subset never shifts another.
    key = [seed] + [ord(c) for c in salt]
    return np.random.default_rng(key).permutation(n)


def stratified_split(labels: np.ndarray, fraction: float, seed: int, salt: str) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, held_out) with `fraction` of every class held out, seeded."""
    labels = np.asarray(labels)
    held: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        order = members[seeded_permutation(len(members), seed, f"{salt}/{cls}")]
        count = int(round(fraction * len(members)))
        held.append(order[:count])
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[held_out] = False
    return np.flatnonzero(mask), held_out


def stratified_indices(labels: np.ndarray, count: int | None, seed: int, salt: str) -> np.ndarray:
    """Sorted indices of a seeded sample of `count` items holding every class in proportion to its size.

    Each class gets floor(count * share) items, and the items left over go to the classes with the largest
    remainders (ties in a seeded order, not by label), so a class's count is within one of its exact share
    whatever the order the split is stored in. Items within a class are drawn by a seeded permutation.
    """
    labels = np.asarray(labels)
    if count is None or count >= len(labels):
        return np.arange(len(labels))
    classes, sizes = np.unique(labels, return_counts=True)
    share = sizes * count / len(labels)
    take = np.floor(share).astype(np.int64)
    tie_order = seeded_permutation(len(classes), seed, f"{salt}/remainder")
    by_remainder = np.lexsort((tie_order, -(share - take)))
    take[by_remainder[:count - int(take.sum())]] += 1
    chosen = []
    for cls, k in zip(classes, take):
        members = np.flatnonzero(labels == cls)
        chosen.append(members[seeded_permutation(len(members), seed, f"{salt}/{cls}")[:k]])
    return np.sort(np.concatenate(chosen))


def stratified_subset(images: ImageSet, count: int | None, seed: int, salt: str) -> ImageSet:
    """A seeded, class-stratified subset of `count` images (`stratified_indices`); all of them when count is
    None or not smaller."""
    if count is None or count >= len(images):
        return images
    return images.subset(stratified_indices(images.labels, count, seed, salt))


# ---------------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class KnownSizes:
    """A loader's split sizes known without its data (the official ones), counted as the loader returns them:
    train (everything, when there is no official test split), test (None: a seeded split of train) and the
    test split of each natural OOD domain."""

    train: int
    test: int | None
    ood: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclass
class DatasetEntry:
    name: str
    loader: Callable[[DatasetSpec, Any, int], tuple[ImageSet, ImageSet | None, dict[str, ImageSet], list[str]]]
    config: type
    natural_ood: bool  # has its own OOD domains (DomainNet); corruptions are not added
    summary: str
    # (spec, options) -> the split sizes without reading the data (`rft estimate` away from the data);
    # None: unknown until the data is read (Parquet files).
    sizes: Callable[[DatasetSpec, Any], KnownSizes] | None = None


DATASETS: Registry[DatasetEntry] = Registry("dataset", "dataset.name")


def fixed_sizes(train: int, test: int | None) -> Callable[[DatasetSpec, Any], KnownSizes]:
    """`sizes` for a dataset whose options do not change its split sizes."""
    return lambda spec, options: KnownSizes(train, test)


def register_dataset(name: str, config: type = NoOptions, natural_ood: bool = False,
                     sizes: Callable[[DatasetSpec, Any], KnownSizes] | None = None):
    """Register a loader returning (train, test or None, natural OOD domains, class names).

    With test None, a seeded stratified test split is carved from train (`options.test_fraction`).
    `sizes(spec, options)` states the loader's split sizes when they are known without the data.
    """

    def wrap(fn):
        summary = (fn.__doc__ or "").strip().split("\n")[0]
        DATASETS.add(name, DatasetEntry(name, fn, config, natural_ood, summary, sizes))
        return fn

    return wrap


def dataset_names() -> list[str]:
    return sorted(DATASETS.names())


def dataset_entry(name: str) -> DatasetEntry:
    return DATASETS.get(name)


def dataset_config(name: str, options: dict[str, Any]) -> Any:
    return build_options(dataset_entry(name).config, options, "dataset.options")


def config_fields(config: type) -> list[str]:
    return [f.name for f in dataclasses.fields(config)]
