"""Deterministic image corruptions for OOD evaluation, in the manner of CIFAR-10-C.

Each corruption maps a uint8 [3, S, S] image, its index and a severity (1-5) to a corrupted uint8
image. Randomness (noise) is seeded by the image index, so every evaluation sees the same corrupted
images. Severity parameters follow Hendrycks & Dietterich (2019) for 32px images where they apply.
"""
from __future__ import annotations

import io
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from rft_ray.config.registry import Registry

Corruption = Callable[[torch.Tensor, int, int], torch.Tensor]
CORRUPTIONS: Registry[Corruption] = Registry("corruption", "dataset.corruptions")


def register_corruption(name: str):
    def wrap(fn: Corruption) -> Corruption:
        return CORRUPTIONS.add(name, fn)

    return wrap


def corruption_names() -> list[str]:
    return sorted(CORRUPTIONS.names())


def create_corruption(name: str, severity: int) -> Callable[[torch.Tensor, int], torch.Tensor]:
    fn = CORRUPTIONS.get(name)
    return lambda image, index: fn(image, index, severity)


def _float(image: torch.Tensor) -> torch.Tensor:
    return image.float() / 255.0


def _uint8(image: torch.Tensor) -> torch.Tensor:
    return (image.clamp(0, 1) * 255.0).round().to(torch.uint8)


def _rng(index: int, name: str) -> torch.Generator:
    return torch.Generator().manual_seed(index * 1_000_003 + sum(map(ord, name)))


@register_corruption("gaussian_noise")
def gaussian_noise(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    sigma = (0.04, 0.06, 0.08, 0.09, 0.10)[severity - 1]
    x = _float(image)
    return _uint8(x + sigma * torch.randn(x.shape, generator=_rng(index, "gaussian_noise")))


@register_corruption("shot_noise")
def shot_noise(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    photons = (500.0, 250.0, 100.0, 75.0, 50.0)[severity - 1]
    x = _float(image)
    return _uint8(torch.poisson(x * photons, generator=_rng(index, "shot_noise")) / photons)


@register_corruption("gaussian_blur")
def gaussian_blur(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    # Sigma scales with image size so that severity means the same at 32px and at 224px.
    sigma = (0.4, 0.6, 0.7, 0.8, 1.0)[severity - 1] * image.shape[-1] / 32.0
    radius = max(1, int(3 * sigma + 0.5))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    x = _float(image).unsqueeze(0)
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)
    return _uint8(x.squeeze(0))


@register_corruption("contrast")
def contrast(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    factor = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    x = _float(image)
    mean = x.mean(dim=(1, 2), keepdim=True)
    return _uint8((x - mean) * factor + mean)


@register_corruption("brightness")
def brightness(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    shift = (0.05, 0.1, 0.15, 0.2, 0.3)[severity - 1]
    return _uint8(_float(image) + shift)


@register_corruption("jpeg")
def jpeg(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    quality = (80, 65, 58, 50, 40)[severity - 1]
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return torch.from_numpy(np.asarray(decoded.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)


@register_corruption("pixelate")
def pixelate(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    scale = (0.95, 0.9, 0.85, 0.75, 0.65)[severity - 1]
    size = image.shape[-1]
    small = max(1, int(size * scale))
    x = _float(image).unsqueeze(0)
    x = F.interpolate(x, size=(small, small), mode="area")
    return _uint8(F.interpolate(x, size=(size, size), mode="nearest").squeeze(0))
