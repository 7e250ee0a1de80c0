"""The datasets' names and option dataclasses, and the corruption names, on the config floor.

They live here, below the dataset registry (`rft_ray.data`, which needs torch), so that a spec's dataset name,
options and corruptions are checked without importing torch (`rft_ray.specs`). Each loader registers with the
class named here; `tests/test_spec.py` holds that these tables and the registries agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rft_ray.config.fields import SpecError, described
from rft_ray.config.run import CIFAR10_C

DOMAINNET_DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")


@dataclass
class NoOptions:
    """This dataset has no options of its own."""


@dataclass
class DigitsOptions:
    test_fraction: float = described("share of each class held out, seeded and stratified, as the test split",
                                     0.25, bounds="(0, 1)")


@dataclass
class ParquetOptions:
    train: str = described("the training split: a Parquet file path or URI (required; relative paths are relative "
                           "to dataset.root when set, else to the current folder)", "")
    test: str | None = described("the test split's Parquet file or URI (null: a seeded stratified split of train)",
                                 None)
    test_fraction: float = described("share of train held out, seeded and stratified, as test when test is null", 0.2,
                                     bounds="(0, 1)")
    image_column: str = described("column holding the images: struct<bytes, path> (Hugging Face Image) or binary",
                                  "image")
    label_column: str = described("integer class column (Hugging Face exports: 'label', 'fine_label', ...)", "label")
    classes: list[str] | None = described("keep only these classes, relabelled 0..k-1 in this order (null: all)", None)


@dataclass
class CifarOptions:
    classes: list[str] | None = described("keep only these classes, relabelled 0..k-1 in this order (e.g. 10 of "
                                          "CIFAR-100's classes; null: all)", None)


@dataclass
class Caltech256Options:
    include_clutter: bool = described("keep the 257.clutter background category as a class", False)
    test_fraction: float = described("share of each class held out, seeded, as the test split (no official split)",
                                     0.2, bounds="(0, 1)")


@dataclass
class DomainNetOptions:
    domain: Literal["clipart", "infograph", "painting", "quickdraw", "real", "sketch"] = described(
        "the training domain; every other domain present is an OOD domain (its test split)", "real")
    ood_domains: list[str] | None = described("only these OOD domains (null: every other domain present)", None)
    test_fraction: float = described("share of each class held out, seeded, as test for domains without official "
                                     "split files or test.parquet", 0.2, bounds="(0, 1)")

    def __post_init__(self):
        for i, name in enumerate(self.ood_domains or []):
            if name not in DOMAINNET_DOMAINS:
                raise SpecError(f"must be one of {', '.join(map(repr, DOMAINNET_DOMAINS))}, got {name!r}",
                                f"ood_domains[{i}]")
            if name == self.domain:
                raise SpecError(f"{name!r} is the training domain (domain), so it cannot also be OOD",
                                f"ood_domains[{i}]")
        if self.ood_domains is not None and len(set(self.ood_domains)) != len(self.ood_domains):
            raise SpecError(f"lists a domain more than once: {self.ood_domains}", "ood_domains")


@dataclass
class ImageFolderOptions:
    test_fraction: float = described("share of each class held out, seeded and stratified, as the test split when "
                                     "root has no train/ and test/ folders", 0.2, bounds="(0, 1)")
    skip_unreadable: bool = described("leave out the files PIL cannot read (counted and listed in a warning) instead "
                                      "of stopping with one error that lists them", False)


# The built-in datasets in the registry's order, with their options.
DATASET_OPTIONS: dict[str, type] = {
    "digits": DigitsOptions, "parquet": ParquetOptions, "imagefolder": ImageFolderOptions, "cifar10": CifarOptions,
    "cifar100": CifarOptions, "caltech256": Caltech256Options, "cub200": NoOptions, "stanford_dogs": NoOptions,
    "domainnet": DomainNetOptions,
}
# The built-in datasets that read local files under dataset.root (parquet names its files in its options).
READS_ROOT = frozenset({"cifar10", "cifar100", "caltech256", "cub200", "stanford_dogs", "domainnet", "imagefolder"})
# The built-in corruptions (rft_ray.data.corruptions), sorted: CIFAR-10-C's 15, gaussian_blur, and jpeg (the older
# name of jpeg_compression).
CORRUPTION_NAMES = tuple(sorted({*CIFAR10_C, "gaussian_blur", "jpeg"}))
