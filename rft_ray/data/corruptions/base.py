"""The corruption registry and what the corruptions share: conversions, seeding, zoom and motion blur."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
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


def _float(image: torch.Tensor) -> torch.Tensor:
    return image.float() / 255.0


def _uint8(image: torch.Tensor) -> torch.Tensor:
    return (image.clamp(0, 1) * 255.0).round().to(torch.uint8)


def _rng(index: int, name: str) -> torch.Generator:
    return torch.Generator().manual_seed(index * 1_000_003 + sum(map(ord, name)))


def _np_rng(index: int, name: str) -> np.random.Generator:
    # The same seed as _rng, for the corruptions written in numpy.
    return np.random.default_rng(index * 1_000_003 + sum(map(ord, name)))


def hwc(image: torch.Tensor) -> np.ndarray:
    """uint8 [3, S, S] tensor -> float [S, S, 3] array in [0, 1], the reference code's layout."""
    return image.permute(1, 2, 0).numpy().astype(np.float64) / 255.0


def from_hwc(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray((np.clip(x, 0, 1) * 255.0).round().astype(np.uint8))).permute(2, 0, 1)


def scale(image: torch.Tensor) -> float:
    """The reference is tuned for 32 px: lengths in pixels scale by S/32."""
    return image.shape[-1] / 32.0


def clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom into the centre of an [S, S, C] array by `factor` >= 1, keeping the size (as the reference does)."""
    size = x.shape[0]
    crop = int(np.ceil(size / factor))
    top = (size - crop) // 2
    zoomed = scizoom(x[top:top + crop, top:top + crop], (factor, factor, 1), order=1)
    trim = (zoomed.shape[0] - size) // 2
    return zoomed[trim:trim + size, trim:trim + size]


def motion_blur(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's motion blur (which the reference calls through Wand): a one-sided Gaussian streak of
    2*radius+1 taps along `angle` degrees, edges replicated; the same numpy port imagecorruptions uses."""
    width = 2 * radius + 1
    kernel = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    kernel /= kernel.sum()
    dy_unit, dx_unit = math.sin(math.radians(angle)), math.cos(math.radians(angle))
    h, w = x.shape[:2]
    padded = np.pad(x, ((width, width), (width, width), (0, 0)), mode="edge")
    out = np.zeros_like(x)
    for i, weight in enumerate(kernel):
        dy, dx = -math.ceil(i * dy_unit - 0.5), -math.ceil(i * dx_unit - 0.5)
        if abs(dy) >= h or abs(dx) >= w:
            break
        out += weight * padded[width - dy:width - dy + h, width - dx:width - dx + w]
    return out
