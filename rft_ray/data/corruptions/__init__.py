"""Deterministic image corruptions for OOD evaluation: the 15 of CIFAR-10-C (Hendrycks & Dietterich, 2019).

Each corruption maps a uint8 [3, S, S] image, its index and a severity (1-5) to a corrupted uint8 image.
Randomness is seeded by the image index and the corruption's name, so every evaluation sees the same
corrupted images. The algorithms and severity parameters are those of the reference code, `make_cifar_c.py`
in github.com/hendrycks/robustness (ImageNet-C/create_c/), as we know it; it could not be consulted here.

Following the reference (parameters and algorithm): gaussian_noise, shot_noise, impulse_noise (skimage
salt-and-pepper per channel value), gaussian_blur (an extra: one of CIFAR-10-C's validation corruptions),
defocus_blur (aliased disk), glass_blur (blur, local pixel swaps in the reference's order, blur), zoom_blur,
elastic_transform (affine jitter then a smoothed displacement field, in multiples of S as the reference
writes them), contrast, brightness (a shift of V in HSV), jpeg_compression (PIL quality 80-40; `jpeg` is its
older name, kept as an alias) and pixelate (PIL box down- and up-sampling).

Our own approximations:
- motion_blur and snow's streaks: the reference calls ImageMagick (Wand) motion_blur; we use the numpy port
  of ImageMagick's one-sided Gaussian streak kernel that the imagecorruptions package also uses.
- snow, fog: the reference algorithms (seeded noise layer, zoomed, thresholded, motion-blurred; diamond-square
  plasma fractal), with numpy's generator instead of the global one, so the draws differ from CIFAR-10-C's.
- frost: CIFAR-10-C overlays crops of six frost photographs shipped with the reference code; we do not have
  them and synthesize a seeded frost texture instead (thin bright veins from smoothed noise at two scales
  over fine grain, tinted ice-blue). The blend weights are the reference's; the texture is not.
- Sizes other than 32 px: the reference is tuned for CIFAR's 32 px. Lengths it gives in pixels (blur
  sigmas, the defocus radius and its anti-aliasing window, glass-blur swap distance, motion-blur radius and
  sigma, the frost texture's scales) are multiplied by S/32; defocus_blur resamples the 32 px kernel to
  S/32; fog uses the next power-of-2 map, cropped; elastic_transform is already written in multiples of the
  size. At 32 px all of these are the reference values.

By mean pixel distance from the clean image, three are not ordered by severity, in the reference as here:
elastic_transform (its affine jitter shrinks as the elastic field grows), frost (severity 4 keeps less of
the image than 3 under the same frost weight) and glass_blur (the stronger blur of severities 2-3 smooths
the pixel swaps).
"""
from __future__ import annotations

from rft_ray.data.corruptions import noise_blur, weather_digital  # noqa: F401  (they register themselves)
from rft_ray.data.corruptions.base import CORRUPTIONS, corruption_names, create_corruption, register_corruption

__all__ = ["CORRUPTIONS", "corruption_names", "create_corruption", "register_corruption"]
