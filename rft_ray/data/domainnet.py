"""DomainNet: train on one domain; the other domains' test splits are the natural OOD domains. Per-domain
image folders (with or without the official split files) or per-domain Parquet exports."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rft_ray.config import DatasetSpec
from rft_ray.config.dataset_options import DOMAINNET_DOMAINS, DomainNetOptions
from rft_ray.data.base import (
    DataError,
    ImageSet,
    KnownSizes,
    register_dataset,
    stratified_split,
)
from rft_ray.data.layout import (
    class_folders,
    dataset_root,
    encoded_files,
    found,
    inside,
    layout_error,
    read_table_file,
    require_files,
    scan_image_folder,
    short,
)
from rft_ray.data.parquet import parquet_set, read_parquet_images

DOMAINS = DOMAINNET_DOMAINS
# The cleaned release's official split, per domain: (train, test).
SIZES: dict[str, tuple[int, int]] = {
    "clipart": (33_525, 14_604), "infograph": (36_023, 15_582), "painting": (50_416, 21_850),
    "quickdraw": (120_750, 51_750), "real": (120_906, 52_041), "sketch": (48_212, 20_916),
}
_LAYOUT = ("per-domain folders <root>/<domain>/<class>/*.jpg (with the official split files "
           "<root>/<domain>_train.txt and <root>/<domain>_test.txt, optional), or Parquet exports "
           "<root>/<domain>/train.parquet and <root>/<domain>/test.parquet; domains: " + ", ".join(DOMAINS))


def known_sizes(spec: DatasetSpec, options: DomainNetOptions) -> KnownSizes:
    """The official split of the training domain; each OOD domain's official test split."""
    train, test = SIZES[options.domain]
    others = options.ood_domains or [d for d in DOMAINS if d != options.domain]
    return KnownSizes(train, test, {d: SIZES[d][1] for d in others})


def _domain_present(root: Path, domain: str) -> bool:
    return (root / domain).is_dir()


def _domain_split_file(root: Path, domain: str, split: str, class_names: list[str], dataset: str
                       ) -> tuple[list[str], np.ndarray]:
    path = root / f"{domain}_{split}.txt"
    rows = read_table_file(path, dataset, 2, f"'{domain}/<class>/<file>.jpg <label>' lines")
    label_of = {n: i for i, n in enumerate(class_names)}
    files, labels = [], []
    for rel, _number in rows:
        parts = rel.split("/")
        if len(parts) < 3 or parts[0] != domain:
            raise DataError(f"dataset {dataset!r}: {path} should list '{domain}/<class>/<file>.jpg <label>', but "
                            f"has {rel!r}")
        if parts[1] not in label_of:
            raise DataError(f"dataset {dataset!r}: {path} lists {rel!r}, whose class {parts[1]!r} has no folder in "
                            f"{root / domain} ({found(root / domain)})")
        files.append(inside(root, rel, path, dataset))
        labels.append(label_of[parts[1]])
    require_files(files, str(path), dataset)
    return files, np.asarray(labels, dtype=np.int64)


def _parquet_domain(folder: Path, domain: str, dataset: str, size: int, seed: int, fraction: float,
                    need_train: bool) -> tuple[ImageSet | None, ImageSet, list[str]]:
    """A domain exported as <domain>/train.parquet and/or <domain>/test.parquet."""
    parts = {}
    for split in ("train", "test"):
        path = folder / f"{split}.parquet"
        if path.is_file() and (split == "test" or need_train):
            parts[split] = read_parquet_images(str(path), dataset, f"DomainNet domain {domain!r}")
    if "test" not in parts:
        data = parts.get("train") or read_parquet_images(str(folder / "train.parquet"), dataset,
                                                         f"DomainNet domain {domain!r}")
        images = parquet_set(data, size)
        keep, held = stratified_split(images.labels, fraction, seed, f"test/{domain}")
        return images.subset(keep), images.subset(held), data.class_names
    test = parts["test"]
    if "train" in parts and parts["train"].class_names != test.class_names:
        raise DataError(f"dataset {dataset!r}: {folder / 'train.parquet'} and {folder / 'test.parquet'} name "
                        f"different classes ({short(parts['train'].class_names)} vs {short(test.class_names)})")
    if need_train and "train" not in parts:
        raise layout_error(dataset, folder, _LAYOUT, f"the training domain has test.parquet but no "
                           f"train.parquet ({found(folder)})")
    train = parquet_set(parts["train"], size) if need_train else None
    return train, parquet_set(test, size), test.class_names


def _load_domain(root: Path, domain: str, dataset: str, size: int, seed: int, fraction: float,
                 need_train: bool) -> tuple[ImageSet | None, ImageSet, list[str]]:
    """(train or None when not needed, test, class names) of one DomainNet domain."""
    folder = root / domain
    if (folder / "train.parquet").is_file() or (folder / "test.parquet").is_file():
        return _parquet_domain(folder, domain, dataset, size, seed, fraction, need_train)
    class_names = [p.name for p in class_folders(folder, dataset, _LAYOUT)]
    if (root / f"{domain}_test.txt").is_file() and (not need_train or (root / f"{domain}_train.txt").is_file()):
        train = None
        if need_train:
            train = encoded_files(*_domain_split_file(root, domain, "train", class_names, dataset), size)
        test = encoded_files(*_domain_split_file(root, domain, "test", class_names, dataset), size)
        return train, test, class_names
    files, labels, class_names = scan_image_folder(folder, dataset, _LAYOUT)
    images = encoded_files(files, labels, size)
    keep, held = stratified_split(labels, fraction, seed, f"test/{domain}")
    return images.subset(keep), images.subset(held), class_names


def _ood_domains(spec: DatasetSpec, options: DomainNetOptions, root: Path) -> list[str]:
    if not _domain_present(root, options.domain):
        present = [d for d in DOMAINS if _domain_present(root, d)]
        raise layout_error(spec.name, root / options.domain, f"the training domain (dataset.options.domain) as "
                           f"{_LAYOUT}", f"it is missing (domains present: {', '.join(present) or 'none'}; "
                           f"{found(root)})")
    if options.ood_domains is None:
        return [d for d in DOMAINS if d != options.domain and _domain_present(root, d)]
    absent = [d for d in options.ood_domains if not _domain_present(root, d)]
    if absent:
        raise layout_error(spec.name, root / absent[0], f"the OOD domain(s) of dataset.options.ood_domains as "
                           f"{_LAYOUT}", f"{', '.join(absent)} {'is' if len(absent) == 1 else 'are'} "
                           f"missing ({found(root)})")
    return list(options.ood_domains)


@register_dataset("domainnet", DomainNetOptions, natural_ood=True, sizes=known_sizes)
def load_domainnet(spec: DatasetSpec, options: DomainNetOptions, size: int):
    """DomainNet: train on one domain, the other domains' test splits are the natural OOD domains."""
    root = dataset_root(spec, _LAYOUT)
    ood_domains = _ood_domains(spec, options, root)
    train, test, names = _load_domain(root, options.domain, spec.name, size, spec.split_seed,
                                      options.test_fraction, need_train=True)
    ood: dict[str, ImageSet] = {}
    for domain in ood_domains:
        _, domain_test, domain_names = _load_domain(root, domain, spec.name, size, spec.split_seed,
                                                    options.test_fraction, need_train=False)
        if domain_names != names:
            missing = [n for n in names if n not in domain_names]
            extra = [n for n in domain_names if n not in names]
            detail = (f"missing {short(missing)}, extra {short(extra)}" if missing or extra
                      else "the same classes in a different order")
            raise DataError(f"dataset {spec.name!r}: domain {domain!r} at {root / domain} has classes that differ from "
                            f"the training domain {options.domain!r} ({detail}); every domain must have the same "
                            "classes")
        ood[domain] = domain_test
    return train, test, ood, names
