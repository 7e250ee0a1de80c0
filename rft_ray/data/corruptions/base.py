"""The corruption registry and what the corruptions share: seeding, conversions and the reference's helpers
(skimage's gaussian, clipped zoom, ImageMagick's motion blur)."""
from __future__ import annotations

import math
import zlib
from typing import Callable

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from scipy.ndimage import zoom as scizoom

from rft_ray.config.registry import Registry

Corruption = Callable[[torch.Tensor, int, int], torch.Tensor]
CORRUPTIONS: Registry[Corruption] = Registry("corruption", "dataset.corruptions")


def register_corruption(*names: str):
    """Register under one or more names (an alias keeps an old spelling working)."""
    def wrap(fn: Corruption) -> Corruption:
        for name in names:
            CORRUPTIONS.add(name, fn)
        return fn

    return wrap


def corruption_names() -> list[str]:
    return sorted(CORRUPTIONS.names())


def create_corruption(name: str, severity: int) -> Callable[[torch.Tensor, int], torch.Tensor]:
    fn = CORRUPTIONS.get(name)
    return lambda image, index: fn(image, index, severity)


def reference_rng(index: int, name: str) -> np.random.RandomState:
    """The draws of one image's corruption. make_cifar_c.py draws from numpy's global RandomState; ours is a
    RandomState seeded by the image index and the corruption's name, drawn in the reference's order with the
    reference's calls, so seeding the reference's global RNG the same way gives the same draws (how the golden
    outputs in tests/fixtures/cifar10_c_reference were made). RandomState's streams are frozen by NumPy."""
    return np.random.RandomState([index, zlib.crc32(name.encode())])


def generator_of(rng: np.random.RandomState) -> np.random.Generator:
    """A Generator continuing `rng`'s MT19937 stream (skimage's random_noise takes a Generator)."""
    bits = np.random.MT19937()
    bits.state = rng.get_state(legacy=False)
    return np.random.Generator(bits)


def pixels(image: torch.Tensor) -> np.ndarray:
    """uint8 [3, S, S] tensor -> uint8 [S, S, 3] array, what `np.array(pil_image)` gives the reference."""
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy())


def to_image(x: np.ndarray) -> torch.Tensor:
    """[S, S, 3] floats in [0, 1] -> uint8 [3, S, S], as CIFAR-10-C stores: clip, times 255, then np.uint8
    (which truncates)."""
    out = (np.clip(x, 0, 1) * 255).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)


def from_uint8(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(x, dtype=np.uint8)).permute(2, 0, 1)  # a copy: PIL's arrays are read-only


def scale(image: torch.Tensor) -> float:
    """The reference is tuned for 32 px: lengths in pixels scale by S/32 (see the package docstring)."""
    return image.shape[-1] / 32.0


def gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """skimage.filters.gaussian(x, sigma, channel_axis=-1) as the reference calls it: per channel, edges
    replicated, truncated at 4 sigma."""
    return gaussian_filter(x, sigma=(sigma, sigma, 0), mode="nearest", truncate=4.0)


def clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom into the centre of an [S, S, C] array by `factor` >= 1, keeping the size (the reference's)."""
    size = x.shape[0]
    crop = int(np.ceil(size / factor))
    top = (size - crop) // 2
    zoomed = scizoom(x[top:top + crop, top:top + crop], (factor, factor, 1), order=1)
    trim = (zoomed.shape[0] - size) // 2
    return zoomed[trim:trim + size, trim:trim + size]


def motion_blur(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's motion blur (which the reference calls through Wand): a one-sided Gaussian streak of
    2*radius+1 taps along `angle` degrees, edges replicated; the numpy port imagecorruptions uses. Within one
    level of ImageMagick 6.9 on the golden images (tests/test_corruptions_reference.py)."""
    width = 2 * radius + 1
    kernel = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    kernel /= kernel.sum()
    dy_unit, dx_unit = math.sin(math.radians(angle)), math.cos(math.radians(angle))
    h, w = x.shape[:2]
    padded = np.pad(x, ((width, width), (width, width), (0, 0)), mode="edge")
    out = np.zeros_like(x, dtype=np.float64)
    for i, weight in enumerate(kernel):
        dy, dx = -math.ceil(i * dy_unit - 0.5), -math.ceil(i * dx_unit - 0.5)
        if abs(dy) >= h or abs(dx) >= w:
            break
        out += weight * padded[width - dy:width - dy + h, width - dx:width - dx + w]
    return out
