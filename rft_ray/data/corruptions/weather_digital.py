"""Weather (snow, frost, fog) and digital (brightness, contrast, JPEG, pixelate) corruptions of CIFAR-10-C, each
the reference's function (make_cifar_c.py) with the reference's draws from `reference_rng`."""
from __future__ import annotations

import functools
import io
from importlib import resources

import numpy as np
import torch
from PIL import Image

from rft_ray.data.corruptions.base import (
    clipped_zoom, from_uint8, motion_blur, pixels, reference_rng, register_corruption, scale, to_image,
)

_GREY = (np.float32(0.299), np.float32(0.587), np.float32(0.114))  # cv2.COLOR_RGB2GRAY's weights
FROST_PHOTOS = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")  # randint(5): no frost6


@register_corruption("snow")
def snow(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    # (mean, std, zoom, threshold, blur radius, blur sigma, image weight)
    c = ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
         (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8))[severity - 1]
    s, size = scale(image), image.shape[-1]
    rng = reference_rng(index, "snow")
    x = pixels(image).astype(np.float32) / 255.0
    flakes = clipped_zoom(rng.normal(size=(size, size), loc=c[0], scale=c[1])[..., None], c[2])
    flakes[flakes < c[3]] = 0
    flakes = (np.clip(flakes, 0, 1) * 255).astype(np.uint8) / 255.0  # the reference blurs an 8-bit image
    flakes = motion_blur(flakes, max(1, round(c[4] * s)), c[5] * s, rng.uniform(-135, -45))
    flakes = np.clip(np.floor(flakes * 255 + 1e-6), 0, 255) / 255.0  # 8 bits as ImageMagick 6.9 gives them
    grey = x[..., 0] * _GREY[0] + x[..., 1] * _GREY[1] + x[..., 2] * _GREY[2]
    x = c[6] * x + (1 - c[6]) * np.maximum(x, grey[..., None] * 1.5 + 0.5)
    return to_image(x + flakes + np.rot90(flakes, k=2))


@functools.lru_cache(maxsize=8)
def frost_textures(size: int) -> tuple[np.ndarray, ...]:
    """The reference's frost photographs (rft_ray/assets/frost, Apache-2.0, from hendrycks/robustness) as RGB
    uint8 at the scale used for `size` px images. At 32 px: the reference's cv2.resize(photo, 0.2x), stored as
    computed by OpenCV (frostN_cifar.png), so crops are the reference's to the bit. At other sizes: the photos
    resized by 0.2 * size / 32 (PIL bilinear), so the frost's structure keeps its size relative to the image."""
    folder = resources.files("rft_ray") / "assets" / "frost"
    textures = []
    for name in FROST_PHOTOS:
        if size == 32:
            with Image.open(folder / name.replace(".png", "_cifar.png").replace(".jpg", "_cifar.png")) as photo:
                textures.append(np.asarray(photo.convert("RGB"), dtype=np.uint8))
            continue
        with Image.open(folder / name) as photo:
            photo = photo.convert("RGB")
            factor = 0.2 * size / 32
            shape = (max(size + 1, round(photo.width * factor)), max(size + 1, round(photo.height * factor)))
            textures.append(np.asarray(photo.resize(shape, Image.BILINEAR), dtype=np.uint8))
    return tuple(textures)


@register_corruption("frost")
def frost(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    c = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))[severity - 1]
    size = image.shape[-1]
    rng = reference_rng(index, "frost")
    texture = frost_textures(size)[rng.randint(5)]
    top, left = rng.randint(0, texture.shape[0] - size), rng.randint(0, texture.shape[1] - size)
    crop = texture[top:top + size, left:left + size]
    out = np.clip(c[0] * pixels(image) + c[1] * crop, 0, 255)
    return from_uint8(out.astype(np.uint8))


def plasma_fractal(mapsize: int, wibbledecay: float, rng: np.random.RandomState) -> np.ndarray:
    """The reference's diamond-square plasma fractal (mapsize a power of 2), in [0, 1]; its draws and its
    order of additions."""
    maparray = np.zeros((mapsize, mapsize))
    stepsize, wibble = mapsize, 100.0

    def wibbledmean(array):
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(squareaccum)
        drgrid = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = (drgrid + np.roll(drgrid, 1, axis=0)) + (ulgrid + np.roll(ulgrid, -1, axis=1))
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(ltsum)
        ttsum = (drgrid + np.roll(drgrid, 1, axis=1)) + (ulgrid + np.roll(ulgrid, -1, axis=0))
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


@register_corruption("fog")
def fog(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    c = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))[severity - 1]
    size = image.shape[-1]
    # The reference's 32x32 map at 32 px; the next power of 2 at other sizes, cropped.
    mapsize = 1 << max(1, (size - 1).bit_length())
    x = pixels(image) / 255.0
    max_val = x.max()
    x += c[0] * plasma_fractal(mapsize, c[1], reference_rng(index, "fog"))[:size, :size][..., None]
    return to_image(x * max_val / (max_val + c[0]))


def _rgb2hsv(arr: np.ndarray) -> np.ndarray:
    """skimage.color.rgb2hsv, line for line (its float operations, so the result is bit-equal)."""
    out = np.empty_like(arr)
    out_v = arr.max(-1)
    delta = np.ptp(arr, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out_s = delta / out_v
        out_s[delta == 0.0] = 0.0
        idx = arr[..., 0] == out_v
        out[idx, 0] = (arr[idx, 1] - arr[idx, 2]) / delta[idx]
        idx = arr[..., 1] == out_v
        out[idx, 0] = 2.0 + (arr[idx, 2] - arr[idx, 0]) / delta[idx]
        idx = arr[..., 2] == out_v
        out[idx, 0] = 4.0 + (arr[idx, 0] - arr[idx, 1]) / delta[idx]
        out_h = (out[..., 0] / 6.0) % 1.0
    out_h[delta == 0.0] = 0.0
    out[..., 0], out[..., 1], out[..., 2] = out_h, out_s, out_v
    out[np.isnan(out)] = 0
    return out


def _hsv2rgb(arr: np.ndarray) -> np.ndarray:
    """skimage.color.hsv2rgb, line for line."""
    hi = np.floor(arr[..., 0] * 6)
    f = arr[..., 0] * 6 - hi
    p = arr[..., 2] * (1 - arr[..., 1])
    q = arr[..., 2] * (1 - f * arr[..., 1])
    t = arr[..., 2] * (1 - (1 - f) * arr[..., 1])
    v = arr[..., 2]
    hi = np.stack([hi, hi, hi], axis=-1).astype(np.uint8) % 6
    return np.choose(hi, np.stack([np.stack((v, t, p), axis=-1), np.stack((q, v, p), axis=-1),
                                   np.stack((p, v, t), axis=-1), np.stack((p, q, v), axis=-1),
                                   np.stack((t, p, v), axis=-1), np.stack((v, p, q), axis=-1)]))


@register_corruption("brightness")
def brightness(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    c = (0.05, 0.1, 0.15, 0.2, 0.3)[severity - 1]
    x = _rgb2hsv(pixels(image) / 255.0)
    x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
    return to_image(_hsv2rgb(x))


@register_corruption("contrast")
def contrast(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    c = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    x = pixels(image) / 255.0
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return to_image((x - means) * c + means)


@register_corruption("jpeg_compression", "jpeg")
def jpeg_compression(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    quality = (80, 65, 58, 50, 40)[severity - 1]
    buffer = io.BytesIO()
    Image.fromarray(pixels(image)).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return from_uint8(np.asarray(decoded.convert("RGB"), dtype=np.uint8))


@register_corruption("pixelate")
def pixelate(image: torch.Tensor, index: int, severity: int) -> torch.Tensor:
    c = (0.95, 0.9, 0.85, 0.75, 0.65)[severity - 1]
    size = image.shape[-1]
    small = max(1, int(size * c))
    pil = Image.fromarray(pixels(image))
    return from_uint8(np.asarray(pil.resize((small, small), Image.BOX).resize((size, size), Image.BOX)))
