"""Noise and blur corruptions of CIFAR-10-C (and gaussian_blur, one of its four extra validation corruptions),
each the reference's function (make_cifar_c.py) with the reference's draws from `reference_rng`."""
from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import convolve, gaussian_filter, map_coordinates

from rft_ray.data.corruptions.base import (
    clipped_zoom, from_uint8, gaussian, generator_of, motion_blur, pixels, reference_rng, register_corruption,
    scale, to_image,
)


@register_corruption("gaussian_noise")
def gaussian_noise(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    c = (0.04, 0.06, 0.08, 0.09, 0.10)[severity - 1]
    x = pixels(image) / 255.0
    return to_image(x + reference_rng(index, "gaussian_noise").normal(size=x.shape, scale=c))


@register_corruption("shot_noise")
def shot_noise(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    c = (500, 250, 100, 75, 50)[severity - 1]
    x = pixels(image) / 255.0
    return to_image(reference_rng(index, "shot_noise").poisson(x * c) / c)


@register_corruption("impulse_noise")
def impulse_noise(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    # skimage.util.random_noise(mode="s&p", amount=c): each channel value flips with probability c, to salt or
    # pepper with probability 1/2 each (skimage >= 0.19's Bernoulli draws, from a Generator).
    c = (0.01, 0.02, 0.03, 0.05, 0.07)[severity - 1]
    rng = generator_of(reference_rng(index, "impulse_noise"))
    x = pixels(image) / 255.0
    flipped = rng.random(x.shape) <= c
    salted = rng.random(x.shape) <= 0.5
    x[flipped & salted] = 1.0
    x[flipped & ~salted] = 0.0
    return to_image(x)


@register_corruption("gaussian_blur")
def gaussian_blur(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    sigma = (0.4, 0.6, 0.7, 0.8, 1.0)[severity - 1] * scale(image)
    return to_image(gaussian(pixels(image) / 255.0, sigma))


def _cv2_gaussian3(sigma: float) -> tuple[np.float32, np.float32]:
    """cv2.getGaussianKernel(3, sigma, CV_32F) as (centre, side) weights."""
    t = np.exp(-0.5 / (sigma * sigma) * np.array([1.0, 0.0, 1.0])).astype(np.float32)
    total = 1.0 / (float(t[0]) + float(t[1]) + float(t[2]))
    return np.float32(float(t[1]) * total), np.float32(float(t[0]) * total)


def _blur3_reflect101(a: np.ndarray, centre: np.float32, side: np.float32) -> np.ndarray:
    # cv2.GaussianBlur(a, (3, 3)) on float32: rows then columns, centre*s + (left + right)*side in float32.
    p = np.pad(a, ((0, 0), (1, 1)), mode="reflect")
    a = p[:, 1:-1] * centre + (p[:, :-2] + p[:, 2:]) * side
    p = np.pad(a, ((1, 1), (0, 0)), mode="reflect")
    return p[1:-1] * centre + (p[:-2] + p[2:]) * side


def defocus_kernel(radius: float, alias_blur: float, half: int = 8) -> np.ndarray:
    """The reference's `disk`: an aliased disk on a (2*half+1)^2 grid (17x17 at 32 px), normalised and softened
    by cv2.GaussianBlur (3x3, sigma alias_blur), all in float32 as OpenCV computes it (bit-equal to cv2)."""
    grid = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    disk /= np.sum(disk)
    return _blur3_reflect101(disk, *_cv2_gaussian3(alias_blur))


@register_corruption("defocus_blur")
def defocus_blur(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    radius, alias_blur = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))[severity - 1]
    s = scale(image)
    if s == 1:
        kernel = defocus_kernel(radius, alias_blur)
    else:
        # At S px: the 32 px kernel resampled onto an odd grid whose centre is the kernel's centre (so nothing
        # shifts), sampled at the S/32-scaled positions, renormalised.
        half = max(1, int(np.ceil(3 * s)))  # the 32 px kernel's support is 5x5 (radius <= 1.5 plus the 3x3 blur)
        base = defocus_kernel(radius, alias_blur).astype(np.float64)
        positions = 8 + np.arange(-half, half + 1) / s
        kernel = np.clip(_sample(base, positions), 0, None)
        kernel /= kernel.sum()
    x = pixels(image) / 255.0
    # cv2.filter2D: correlation with the kernel, borders BORDER_REFLECT_101 (scipy's "mirror").
    out = np.stack([convolve(x[..., d], kernel[::-1, ::-1].astype(np.float64), mode="mirror") for d in range(3)],
                   axis=-1)
    return to_image(out)


def _sample(kernel: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Bilinear samples of `kernel` on the grid positions x positions (in its own pixel coordinates)."""
    yy, xx = np.meshgrid(positions, positions, indexing="ij")
    return map_coordinates(kernel, (yy, xx), order=1, mode="constant", cval=0.0)


@register_corruption("glass_blur")
def glass_blur(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    sigma, delta, iterations = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))[severity - 1]
    s = scale(image)
    sigma, delta = sigma * s, max(1, round(delta * s))
    size = image.shape[-1]
    rng = reference_rng(index, "glass_blur")
    x = np.uint8(gaussian(pixels(image) / 255.0, sigma) * 255)  # the reference rounds down to 8 bits here
    # The reference's "swap" `x[h, w], x[h', w'] = x[h', w'], x[h, w]` acts on numpy views, so it is a copy:
    # x[h, w] = x[h + dy, w + dx], pixel by pixel from bottom-right to top-left, (dy, dx) in [-delta, delta).
    positions = range(size - delta, delta, -1)
    for _ in range(iterations):
        for h in positions:
            for w in positions:
                dx, dy = rng.randint(-delta, delta, size=(2,))
                x[h, w] = x[h + dy, w + dx]
    return to_image(gaussian(x / 255.0, sigma))


@register_corruption("motion_blur")
def motion_blur_corruption(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    radius, sigma = ((6, 1.0), (6, 1.5), (6, 2.0), (8, 2.0), (9, 2.5))[severity - 1]  # the CIFAR file's
    s = scale(image)
    angle = reference_rng(index, "motion_blur").uniform(-45, 45)
    blurred = motion_blur(pixels(image) / 255.0, max(1, round(radius * s)), sigma * s, angle)
    return from_uint8(np.clip(np.floor(blurred * 255 + 1e-6), 0, 255))  # 8 bits as ImageMagick 6.9 gives them


@register_corruption("zoom_blur")
def zoom_blur(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    # np.arange as in the reference (its float steps sometimes include the end point; kept); float32 as there.
    factors = np.arange(1, (1.06, 1.11, 1.16, 1.21, 1.26)[severity - 1], 0.01)
    x = (pixels(image) / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for factor in factors:
        out += clipped_zoom(x, factor)
    return to_image((x + out) / (len(factors) + 1))


def _affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """cv2.getAffineTransform: the 2x3 map taking the three (x, y) points `src` to `dst`, solved in double."""
    a = np.zeros((6, 6))
    for i, (x, y) in enumerate(src.astype(np.float64)):
        a[2 * i, :3] = a[2 * i + 1, 3:] = (x, y, 1.0)
    return np.linalg.solve(a, dst.astype(np.float64).reshape(6)).reshape(2, 3)


def _warp_affine_reflect101(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """cv2.warpAffine(x, m, size, INTER_LINEAR, BORDER_REFLECT_101): each output pixel samples the input at
    m^-1 (x, y), bilinearly, borders mirrored without repeating the edge (scipy's "mirror")."""
    inverse = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
    size = x.shape[0]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    sx = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    sy = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    return np.stack([map_coordinates(x[..., c], (sy, sx), order=1, mode="mirror") for c in range(x.shape[2])],
                    axis=-1)


@register_corruption("elastic_transform")
def elastic_transform(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    size = image.shape[-1]
    # (alpha, sigma, affine jitter) as multiples of the image size, as in the reference (IMSIZE * ...).
    c = np.array(((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                  (0.1, 0.03, 0.03))[severity - 1]) * size
    rng = reference_rng(index, "elastic_transform")
    x = pixels(image).astype(np.float32) / 255.0
    # A random affine map of three points, then a smooth random displacement field; float32 as there.
    centre, half = np.float32(size) // 2, size // 3
    src = np.float32([[centre + half, centre + half], [centre + half, centre - half], [centre - half, centre - half]])
    dst = src + rng.uniform(-c[2], c[2], size=src.shape).astype(np.float32)
    x = _warp_affine_reflect101(x, _affine_from_points(src, dst)).astype(np.float32)
    dx = (gaussian_filter(rng.uniform(-1, 1, size=(size, size)), c[1], mode="reflect", truncate=3) * c[0]
          ).astype(np.float32)
    dy = (gaussian_filter(rng.uniform(-1, 1, size=(size, size)), c[1], mode="reflect", truncate=3) * c[0]
          ).astype(np.float32)
    xs, ys, zs = np.meshgrid(np.arange(size), np.arange(size), np.arange(3))
    indices = (np.reshape(ys + dy[..., None], (-1, 1)), np.reshape(xs + dx[..., None], (-1, 1)),
               np.reshape(zs, (-1, 1)))
    return to_image(map_coordinates(x, indices, order=1, mode="reflect").reshape(x.shape))
