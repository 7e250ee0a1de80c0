"""Weather (snow, frost, fog) and digital (brightness, contrast, JPEG, pixelate) corruptions of CIFAR-10-C."""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from rft_ray.data.corruptions.base import (
    _float, _np_rng, _uint8, clipped_zoom, from_hwc, hwc, motion_blur, register_corruption, scale,
)

_GREY = np.array([0.299, 0.587, 0.114])  # cv2.COLOR_RGB2GRAY


@register_corruption("snow")
def snow(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    # (mean, std, zoom, threshold, blur radius, blur sigma, image weight)
    loc, spread, zoom, threshold, radius, sigma, keep = (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8))[severity - 1]
    s, size = scale(image), image.shape[-1]
    rng = _np_rng(index, "snow")
    x = hwc(image)
    flakes = clipped_zoom(rng.normal(loc, spread, size=(size, size, 1)), zoom)
    flakes[flakes < threshold] = 0
    flakes = np.round(np.clip(flakes, 0, 1) * 255) / 255  # the reference blurs an 8-bit image
    flakes = motion_blur(flakes, max(1, round(radius * s)), sigma * s, rng.uniform(-135, -45))
    x = keep * x + (1 - keep) * np.maximum(x, (x @ _GREY)[..., None] * 1.5 + 0.5)
    return from_hwc(x + flakes + np.rot90(flakes, k=2))


def _frost_texture(size: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """A seeded stand-in for the reference's frost photographs (frost1-6.png, not shipped here): thin bright
    veins where smoothed noise crosses zero, at two scales, over fine grain; tinted ice-blue."""
    veins = np.zeros((size, size))
    for width, weight in ((2.0, 0.6), (0.8, 0.4)):
        field = gaussian_filter(rng.standard_normal((size, size)), width * s, mode="wrap")
        field /= field.std() + 1e-12
        veins += weight * np.exp(-((field / 0.35) ** 2))  # ridges: branching lines like ice crystals
    grain = gaussian_filter(rng.random((size, size)), 0.5 * s, mode="wrap")
    grain = (grain - grain.min()) / (np.ptp(grain) + 1e-12)
    texture = 0.8 * veins + 0.2 * grain
    texture /= texture.max() + 1e-12
    return texture[..., None] * np.array([0.85, 0.92, 1.0])


@register_corruption("frost")
def frost(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    keep, amount = ((1.0, 0.2), (1.0, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))[severity - 1]
    texture = _frost_texture(image.shape[-1], scale(image), _np_rng(index, "frost"))
    return from_hwc(keep * hwc(image) + amount * texture)


def _plasma_fractal(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """The reference's diamond-square plasma fractal on a size x size grid (size a power of 2), in [0, 1]."""
    grid = np.zeros((size, size))
    step, wibble = size, 100.0

    def wibbled_mean(total):
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = grid[0:size:step, 0:size:step]
        squares = corners + np.roll(corners, -1, axis=0)
        squares += np.roll(squares, -1, axis=1)
        grid[half:size:step, half:size:step] = wibbled_mean(squares)
        centres = grid[half:size:step, half:size:step]
        corners = grid[0:size:step, 0:size:step]
        grid[0:size:step, half:size:step] = wibbled_mean(
            centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1))
        grid[half:size:step, 0:size:step] = wibbled_mean(
            centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0))
        step //= 2
        wibble /= decay
    grid -= grid.min()
    return grid / grid.max()


@register_corruption("fog")
def fog(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    amount, decay = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))[severity - 1]
    size = image.shape[-1]
    # The reference's 32x32 map for CIFAR; the next power of 2 for other sizes, cropped, so the coarse
    # structure spans the image at any S.
    mapsize = 1 << max(1, (size - 1).bit_length())
    x = hwc(image)
    peak = x.max()
    x = x + amount * _plasma_fractal(mapsize, decay, _np_rng(index, "fog"))[:size, :size, None]
    return from_hwc(x * peak / (peak + amount))


@register_corruption("brightness")
def brightness(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    # The reference raises V in HSV: hue and saturation stay, so RGB scales by V'/V (grey where V = 0).
    shift = (0.05, 0.1, 0.15, 0.2, 0.3)[severity - 1]
    x = _float(image)
    value = x.amax(dim=0, keepdim=True)
    raised = (value + shift).clamp(max=1.0)
    return _uint8(torch.where(value > 0, x * raised / value.clamp(min=1e-12), raised.expand_as(x)))


@register_corruption("contrast")
def contrast(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    factor = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    x = _float(image)
    mean = x.mean(dim=(1, 2), keepdim=True)
    return _uint8((x - mean) * factor + mean)


@register_corruption("jpeg_compression", "jpeg")
def jpeg_compression(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    quality = (80, 65, 58, 50, 40)[severity - 1]
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return torch.from_numpy(np.asarray(decoded.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)


@register_corruption("pixelate")
def pixelate(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    factor = (0.95, 0.9, 0.85, 0.75, 0.65)[severity - 1]
    size = image.shape[-1]
    small = max(1, int(size * factor))
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    pixels = pil.resize((small, small), Image.BOX).resize((size, size), Image.BOX)
    return torch.from_numpy(np.asarray(pixels, dtype=np.uint8).copy()).permute(2, 0, 1)
