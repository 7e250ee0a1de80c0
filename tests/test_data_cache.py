"""The node-local data cache: decoded once, then memory-mapped, with identical pixels, keyed by content."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from rft_ray.config import DatasetSpec
from rft_ray.data import cache as data_cache
from rft_ray.data import create_bundle
from rft_ray.data.base import dataset_entry


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(data_cache.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def loader_calls(monkeypatch):
    """Count how often the digits loader runs (a cache hit must not run it)."""
    entry = dataset_entry("digits")
    calls = []
    original = entry.loader

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(entry, "loader", counting)
    return calls


def arrays(bundle):
    out = {"train": bundle.train.materialize(), "val": bundle.val.materialize(), "test": bundle.test.materialize()}
    out.update({f"ood/{k}": v.materialize() for k, v in bundle.ood.items()})
    return out


def test_second_load_reads_the_cache_with_identical_arrays(cache_dir, loader_calls):
    spec = DatasetSpec(name="digits", corruptions=["contrast", "gaussian_noise"])
    uncached = arrays(create_bundle(spec, 16))
    assert len(loader_calls) == 1 and not cache_dir.exists()  # plain create_bundle does not cache
    first = create_bundle(spec, 16, cache=True)
    assert len(loader_calls) == 2
    entries = [p for p in (cache_dir / "data").iterdir() if p.is_dir()]
    assert len(entries) == 1 and (entries[0] / "meta.json").is_file()
    second = create_bundle(spec, 16, cache=True)
    assert len(loader_calls) == 2  # read from the cache: the loader did not run
    assert isinstance(second.train, data_cache.TensorImageSet)
    assert isinstance(second.val, data_cache.TensorImageSet) and len(second.val) > 0  # every point measures it
    for name, (images, labels) in uncached.items():
        for bundle in (first, second):
            got_images, got_labels = arrays(bundle)[name]
            assert torch.equal(got_images, images) and torch.equal(got_labels, labels), name
    assert second.class_names == [str(d) for d in range(10)]


def test_key_follows_what_decides_the_pixels(cache_dir):
    spec = DatasetSpec(name="digits")
    key = data_cache.cache_key(spec, 16)
    assert data_cache.cache_key(spec, 16) == key
    assert data_cache.cache_key(spec, 32) != key
    assert data_cache.cache_key(DatasetSpec(name="digits", split_seed=1), 16) != key
    assert data_cache.cache_key(DatasetSpec(name="digits", val_fraction=0.2), 16) != key
    # Corruptions are applied on top of the cached test split: same entry.
    assert data_cache.cache_key(DatasetSpec(name="digits", corruptions=["jpeg"]), 16) == key


def test_changed_input_file_misses(tmp_path, cache_dir):
    from tests.test_datasets import balanced, write_parquet

    path = write_parquet(tmp_path / "all.parquet", balanced(3, 6), class_names=["a", "b", "c"])
    spec = DatasetSpec(name="parquet", options={"train": str(path)}, corruptions=[])
    key = data_cache.cache_key(spec, 16)
    first = create_bundle(spec, 16, cache=True)
    write_parquet(path, balanced(3, 6), class_names=["a", "b", "c"], seed=5)
    os.utime(path, ns=(1, 1))
    assert data_cache.cache_key(spec, 16) != key
    second = create_bundle(spec, 16, cache=True)
    assert not torch.equal(first.train.materialize()[0], second.train.materialize()[0])


def test_disabled_and_too_big(cache_dir, monkeypatch):
    spec = DatasetSpec(name="digits")
    monkeypatch.setenv(data_cache.MAX_BYTES_ENV, "1000")
    bundle = create_bundle(spec, 16, cache=True)
    assert not isinstance(bundle.train, data_cache.TensorImageSet)  # over the limit: lazy, as without the cache
    monkeypatch.delenv(data_cache.MAX_BYTES_ENV)
    monkeypatch.setenv(data_cache.CACHE_ENV, "off")
    bundle = create_bundle(spec, 16, cache=True)
    assert not isinstance(bundle.train, data_cache.TensorImageSet)


def test_concurrent_builders_agree(cache_dir):
    """Two processes missing at once: one builds, the other waits for it; both read the same entry."""
    import multiprocessing as mp

    context = mp.get_context("spawn")
    with context.Pool(2) as pool:
        sums = pool.map(_load_digits_sum, [str(cache_dir)] * 2)
    assert sums[0] == sums[1]
    assert len([p for p in (cache_dir / "data").iterdir() if p.is_dir()]) == 1
    assert not [p for p in (cache_dir / "data").iterdir() if p.name.startswith(".tmp")]


def _load_digits_sum(folder: str) -> int:
    os.environ[data_cache.CACHE_ENV] = folder
    torch.set_num_threads(1)
    bundle = create_bundle(DatasetSpec(name="digits"), 16, cache=True)
    return int(bundle.train.materialize()[0].to(torch.int64).sum()) + int(np.sum(bundle.test.labels))
