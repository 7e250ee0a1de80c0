"""The CIFAR-10-C corruption suite (rft_ray.data.corruptions) and the `corruptions: cifar10-c` shorthand."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rft_ray.config.fields import SpecError
from rft_ray.config.run import CIFAR10_C, DatasetSpec, RunSpec
from rft_ray.data import create_bundle
from rft_ray.data.corruptions import corruption_names, create_corruption

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# Seeded by the image index: a different index draws different noise, flakes, fog or warps.
RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow", "frost", "fog",
          "elastic_transform"}
# Not ordered by mean pixel distance in the reference parameters themselves (see the module docstring).
UNORDERED = {"elastic_transform", "frost", "glass_blur"}


def synthetic(seed: int, side: int) -> torch.Tensor:
    """Gradients, a bright square's edges and a little texture: structure every corruption can act on."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, side)
    x = np.stack([np.add.outer(ramp, ramp) / 2, np.outer(ramp, 1 - ramp) * 2, np.full((side, side), 0.4)], -1)
    lo, hi = sorted(rng.integers(side // 8, side - side // 8, size=2))
    x[lo:hi + 1, lo:hi + 1] = rng.uniform(0.6, 1.0, size=3)
    x = np.clip(x * 200 + 25 + rng.normal(0, 8, size=x.shape), 0, 255)
    return torch.from_numpy(x.astype(np.uint8)).permute(2, 0, 1).contiguous()


def _resize(image: torch.Tensor, side: int) -> torch.Tensor:
    if image.shape[-1] == side:
        return image
    pil = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((side, side), Image.BICUBIC)
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)


def images(side: int, count: int = 4) -> list[torch.Tensor]:
    """Real CIFAR-10 test images when the shared data is here, else seeded synthetic ones."""
    path = SHARED_DATA / "cifar10" / "test.parquet"
    if not path.is_file():
        return [synthetic(seed, side) for seed in range(count)]
    import pyarrow.parquet as pq

    rows = pq.read_table(path, columns=["image"]).slice(0, count).to_pylist()
    decoded = [Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB") for row in rows]
    return [_resize(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1), side) for im in decoded]


def distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference in [0, 1] units."""
    return (a.float() - b.float()).abs().mean().item() / 255.0


def test_suite_is_the_fifteen_and_registered():
    assert len(CIFAR10_C) == len(set(CIFAR10_C)) == 15
    assert set(CIFAR10_C) <= set(corruption_names())
    assert {"gaussian_blur", "jpeg"} <= set(corruption_names())  # older names keep working


def test_jpeg_is_jpeg_compression():
    image = images(32)[0]
    assert torch.equal(create_corruption("jpeg", 3)(image, 0), create_corruption("jpeg_compression", 3)(image, 0))


@pytest.mark.parametrize("side", [32, 64])
@pytest.mark.parametrize("name", CIFAR10_C)
def test_shape_type_and_determinism(name, side):
    image = images(side, 1)[0]
    for severity in (1, 3, 5):
        corrupt = create_corruption(name, severity)
        out = corrupt(image, 7)
        assert out.dtype == torch.uint8 and out.shape == image.shape
        assert torch.equal(out, corrupt(image.clone(), 7))  # the same index, the same image
        if name in RANDOM:
            # Some indices: motion blur's random angle only matters once it moves a rounded kernel tap.
            assert any(not torch.equal(out, corrupt(image, other)) for other in (8, 9, 10, 11))


@pytest.mark.parametrize("side", [32, 64])
@pytest.mark.parametrize("name", CIFAR10_C)
def test_severity_one_is_mild(name, side):
    corrupt = create_corruption(name, 1)
    for index, image in enumerate(images(side)):
        out = corrupt(image, index)
        assert not torch.equal(out, image)
        assert distance(out, image) < 0.35


@pytest.mark.parametrize("side", [32, 64])
@pytest.mark.parametrize("name", CIFAR10_C)
def test_severity_ordering(name, side):
    clean = images(side)
    if name in RANDOM:  # more draws, so that the ordering is of the corruption, not of one draw
        clean = clean * 4
    outputs = [[create_corruption(name, severity)(image, index) for index, image in enumerate(clean)]
               for severity in range(1, 6)]
    distances = [np.mean([distance(o, image) for o, image in zip(outs, clean)]) for outs in outputs]
    if name in UNORDERED:
        # The five severities are still five different corruptions of every image.
        for index in range(len(clean)):
            assert len({outs[index].numpy().tobytes() for outs in outputs}) == 5
    else:
        assert all(later >= earlier for earlier, later in zip(distances, distances[1:])), distances
        assert distances[-1] > distances[0]


def test_shorthand_expands_to_the_fifteen():
    spec = RunSpec.from_dict({"dataset": {"name": "digits", "corruptions": "cifar10-c"}})
    assert spec.dataset.corruptions == list(CIFAR10_C)
    assert RunSpec.from_dict(spec.to_dict()).dataset.corruptions == list(CIFAR10_C)  # round trip
    assert DatasetSpec(corruptions="cifar10-c").corruptions == list(CIFAR10_C)


def test_shorthand_typo_names_the_field():
    with pytest.raises(SpecError) as err:
        RunSpec.from_dict({"dataset": {"name": "digits", "corruptions": "cifar10c"}})
    assert err.value.field_path == "dataset.corruptions" and "cifar10-c" in str(err.value)


def test_unknown_name_in_list_names_the_field_and_the_choices():
    spec = RunSpec.from_dict({"dataset": {"name": "digits", "corruptions": ["frost", "jpeg_compresion"]}})
    with pytest.raises(SpecError) as err:
        create_bundle(spec.dataset, 16)
    assert err.value.field_path == "dataset.corruptions"
    assert "jpeg_compression" in str(err.value) and "elastic_transform" in str(err.value)


def _resized(image: torch.Tensor, side: int) -> torch.Tensor:
    # The clean images' own resize (rft_ray.data.base.to_tensor): PIL bilinear.
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    return torch.from_numpy(np.asarray(pil.resize((side, side), Image.BILINEAR)).copy()).permute(2, 0, 1)


@pytest.mark.parametrize("cache", [False, True])
def test_small_images_are_corrupted_at_their_own_size_then_resized(cache, tmp_path, monkeypatch):
    # digits are 8 px: like the CIFAR-10-C files (32 px corruptions a model's transform resizes), the corruption
    # acts on the 8 px image and the result is resized to the model's 32 px; the node's cache, which keeps only
    # resized images, gives the same images.
    from rft_ray.data import cache as data_cache

    monkeypatch.setenv(data_cache.CACHE_ENV, str(tmp_path / "cache"))
    spec = RunSpec.from_dict({"dataset": {"name": "digits", "corruptions": ["pixelate", "gaussian_noise"],
                                          "severity": 5}}).dataset
    bundle = create_bundle(spec, 32, cache=cache)
    if cache:  # built on the first call, read on the second
        bundle = create_bundle(spec, 32, cache=cache)
        assert type(bundle.test).__name__ == "TensorImageSet"
    for name in ("pixelate", "gaussian_noise"):
        for index in (0, 5):
            source = bundle.test.source(index)
            assert source.shape == (3, 8, 8)
            expected = _resized(create_corruption(name, 5)(source, index), 32)
            assert torch.equal(bundle.ood[name].image(index), expected)
            # Not the old rule (corrupting the resized image): pixelate at 8 px merges whole digit strokes.
            if name == "pixelate":
                assert not torch.equal(expected, create_corruption(name, 5)(bundle.test.image(index), index))


@pytest.mark.parametrize("side", [32, 64, 224])
def test_defocus_keeps_a_step_edge_in_place(side):
    # A vertical step between columns side/2 - 1 and side/2: a centred blur leaves the profile point-symmetric
    # about the edge (lo + hi on mirrored columns); a kernel off its centre would shift it.
    lo, hi = 40, 220
    image = torch.full((3, side, side), lo, dtype=torch.uint8)
    image[:, :, side // 2:] = hi
    for severity in range(1, 6):
        out = create_corruption("defocus_blur", severity)(image, 0)[0].float()
        row = out[side // 2]
        mirrored = row + row.flip(0)
        assert (mirrored - (lo + hi)).abs().max() <= 2, (severity, mirrored)  # truncation: up to 1 level each
        assert row[side // 2 - 1] < (lo + hi) / 2 < row[side // 2]
        if severity == 5:
            assert row[side // 2 - 1] > lo and row[side // 2] < hi  # and it does blur


def test_larger_images_are_resized_first_then_corrupted():
    from rft_ray.data.base import ArrayImageSet, TransformedImageSet

    pixels = np.stack([synthetic(seed, 48).permute(1, 2, 0).numpy() for seed in range(2)])
    clean = ArrayImageSet(pixels, [0, 1], 32)
    for name in ("defocus_blur", "frost"):
        corrupt = create_corruption(name, 3)
        corrupted = TransformedImageSet(clean, corrupt)
        for index in range(2):
            assert torch.equal(corrupted.image(index), corrupt(clean.image(index), index))
