"""Noise and blur corruptions of CIFAR-10-C (and gaussian_blur, one of its four extra validation corruptions)."""
from __future__ import annotations


import numpy as np
import torch
from scipy.ndimage import convolve1d, gaussian_filter, map_coordinates
from scipy.ndimage import zoom as scizoom
from scipy.signal import fftconvolve

from rft_ray.data.corruptions.base import (
    _float, _np_rng, _rng, _uint8, clipped_zoom, from_hwc, hwc, motion_blur, register_corruption, scale,
)


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    # skimage.filters.gaussian as the reference calls it: per channel, edges replicated, truncated at 4 sigma.
    return gaussian_filter(x, sigma=(sigma, sigma, 0), mode="nearest", truncate=4.0)


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


@register_corruption("impulse_noise")
def impulse_noise(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    # skimage.util.random_noise(mode="s&p"): each channel value independently, half salt, half pepper.
    amount = (0.01, 0.02, 0.03, 0.05, 0.07)[severity - 1]
    rng = _np_rng(index, "impulse_noise")
    x = hwc(image)
    flipped = rng.random(x.shape) <= amount
    salted = rng.random(x.shape) <= 0.5
    x[flipped & salted] = 1.0
    x[flipped & ~salted] = 0.0
    return from_hwc(x)


@register_corruption("gaussian_blur")
def gaussian_blur(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    sigma = (0.4, 0.6, 0.7, 0.8, 1.0)[severity - 1] * scale(image)
    return from_hwc(_gaussian(hwc(image), sigma))


@register_corruption("defocus_blur")
def defocus_blur(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    radius, alias_blur = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))[severity - 1]
    # The reference's kernel for 32 px: an aliased disk on a 17x17 grid, softened by cv2.GaussianBlur with a
    # 3x3 window (BORDER_REFLECT_101, scipy's "mirror").
    grid = np.arange(-8, 9)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).astype(np.float64)
    window = np.exp(-(np.arange(-1, 2) ** 2) / (2 * alias_blur**2))
    kernel = convolve1d(convolve1d(disk / disk.sum(), window / window.sum(), axis=0, mode="mirror"),
                        window / window.sum(), axis=1, mode="mirror")
    s = scale(image)
    if s != 1:
        # Resample that kernel to S/32 (corners aligned, so the centre stays put), rather than drawing a disk
        # of radius*S/32: a disk on the pixel grid aliases differently at each size and breaks the ordering.
        width = 2 * round(8 * s) + 1
        kernel = np.clip(scizoom(kernel, (width - 1) / 16, order=1), 0, None)
        kernel = kernel[:width, :width]
    nonzero = np.flatnonzero(kernel.sum(axis=0) > 1e-12 * kernel.sum())
    half = max(abs(nonzero[0] - kernel.shape[0] // 2), abs(nonzero[-1] - kernel.shape[0] // 2))
    centre = kernel.shape[0] // 2
    kernel = kernel[centre - half:centre + half + 1, centre - half:centre + half + 1]
    kernel = kernel / kernel.sum()
    x = np.pad(hwc(image), ((half, half), (half, half), (0, 0)), mode="reflect")  # numpy's reflect = REFLECT_101
    return from_hwc(fftconvolve(x, kernel[..., None], mode="valid", axes=(0, 1)))


@register_corruption("glass_blur")
def glass_blur(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    sigma, delta, iterations = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))[severity - 1]
    s = scale(image)
    sigma, delta = sigma * s, max(1, round(delta * s))
    size = image.shape[-1]
    rng = _np_rng(index, "glass_blur")
    x = np.uint8(_gaussian(hwc(image), sigma) * 255)  # the reference rounds down to 8 bits between the blurs
    # Swap each pixel with a random neighbour, in the reference's order (bottom-right to top-left), tracked
    # on pixel indices. randint(-delta, delta) excludes +delta in the reference too: the bias is kept.
    source = list(range(size * size))
    positions = range(size - delta, delta, -1)
    for _ in range(iterations):
        shifts = rng.integers(-delta, delta, size=(len(positions) ** 2, 2)).tolist()
        k = 0
        for h in positions:
            for w in positions:
                dx, dy = shifts[k]
                k += 1
                p, q = h * size + w, (h + dy) * size + (w + dx)
                source[p], source[q] = source[q], source[p]
    x = x.reshape(-1, 3)[source].reshape(size, size, 3) / 255.0
    return from_hwc(_gaussian(x, sigma))


@register_corruption("motion_blur")
def motion_blur_corruption(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    radius, sigma = ((10, 1.0), (10, 1.5), (10, 2.0), (10, 2.5), (12, 3.0))[severity - 1]
    s = scale(image)
    angle = _np_rng(index, "motion_blur").uniform(-45, 45)
    return from_hwc(motion_blur(hwc(image), max(1, round(radius * s)), sigma * s, angle))


@register_corruption("zoom_blur")
def zoom_blur(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    # np.arange as in the reference (its float steps sometimes include the end point; kept).
    factors = np.arange(1, (1.06, 1.11, 1.16, 1.21, 1.26)[severity - 1], 0.01)
    x = hwc(image)
    out = np.zeros_like(x)
    for factor in factors:
        out += clipped_zoom(x, factor)
    return from_hwc((x + out) / (len(factors) + 1))


@register_corruption("elastic_transform")
def elastic_transform(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    size = image.shape[-1]
    # (alpha, sigma, affine jitter) as multiples of the image size, as in the reference (IMSIZE * ...).
    alpha, sigma, jitter = np.array(((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
                                     (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))[severity - 1]) * size
    rng = _np_rng(index, "elastic_transform")
    x = hwc(image)
    # A random affine map of three points (cv2.getAffineTransform + warpAffine, BORDER_REFLECT_101).
    centre, half = size // 2, size // 3
    src = np.array([[centre + half, centre + half], [centre + half, centre - half], [centre - half, centre - half]],
                   dtype=np.float64)
    dst = src + rng.uniform(-jitter, jitter, size=src.shape)
    forward = np.linalg.solve(np.hstack([src, np.ones((3, 1))]), dst).T  # 2x3, (x, y) -> (x', y')
    inverse = np.linalg.inv(np.vstack([forward, [0, 0, 1]]))[:2]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    sx = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    sy = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    x = np.stack([map_coordinates(x[..., c], (sy, sx), order=1, mode="mirror") for c in range(3)], axis=-1)
    # Then a smooth random displacement field (skimage gaussian, mode="reflect", truncate=3).
    dx = gaussian_filter(rng.uniform(-1, 1, size=(size, size)), sigma, mode="reflect", truncate=3) * alpha
    dy = gaussian_filter(rng.uniform(-1, 1, size=(size, size)), sigma, mode="reflect", truncate=3) * alpha
    x = np.stack([map_coordinates(x[..., c], (ys + dy, xs + dx), order=1, mode="reflect") for c in range(3)], axis=-1)
    return from_hwc(x)
