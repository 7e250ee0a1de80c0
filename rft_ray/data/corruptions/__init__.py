"""Deterministic image corruptions for OOD evaluation: the 15 of CIFAR-10-C (Hendrycks & Dietterich, 2019).

Each corruption maps a uint8 [3, S, S] image, its index and a severity (1-5) to a corrupted uint8 image. Each is
the reference's function, `make_cifar_c.py` in github.com/hendrycks/robustness (ImageNet-C/create_c/, last
changed 2019-01-08), ported to numpy/scipy/PIL with its parameters, its float types, its random calls in its
order, and its storage (clip, x255, np.uint8, which truncates). Randomness comes from `reference_rng(index,
name)`, a RandomState seeded by the image index and the corruption's name, where the reference draws from
numpy's global RNG; seeding the reference the same way gives the same draws. At 32 px every corruption equals
the reference to the bit on the golden images (tests/test_corruptions_reference.py), except motion_blur and
snow's streaks: the reference calls ImageMagick (Wand); ours is the numpy port of its kernel that the
imagecorruptions package uses, within one level of ImageMagick 6.9 and equal on 98-100% of values. Also:
gaussian_blur (one of CIFAR-10-C's extra validation corruptions) and `jpeg` (jpeg_compression's older name).

Draws that differ from the CIFAR-10-C files on disk: those files come from one global RNG run through the test
set, so their noise, angles and crops are other draws from the same distributions. impulse_noise follows
scikit-image >= 0.19 (Bernoulli draws from a Generator); the 2019 scikit-image drew np.random.choice.
frost: the reference's photographs frost1-5 (frost6 is never drawn: randint(5)), shipped in
rft_ray/assets/frost with their Apache-2.0 notice; at 32 px the reference's cv2.resize 0.2x, stored.

Sizes other than 32 px (datasets whose own images are larger; CIFAR and digits are corrupted at their own
size and resized after, as the CIFAR-10-C files are): lengths the reference gives in pixels (blur sigmas,
glass-blur distance, motion-blur radius and sigma, snow's streaks) are multiplied by S/32; defocus_blur
samples the 32 px kernel at S/32 about its centre (so an edge does not move); frost scales the photographs by
0.2*S/32; fog uses the next power-of-2 map, cropped; elastic_transform is written in multiples of the size.

By mean pixel distance from the clean image, three are not ordered by severity, in the reference as here:
elastic_transform (its affine jitter shrinks as the elastic field grows), frost (severity 4 keeps less of
the image than 3 under the same frost weight) and glass_blur (the stronger blur of severities 2-3 smooths
the pixel copies).
"""
from __future__ import annotations

from rft_ray.data.corruptions import noise_blur, weather_digital  # noqa: F401  (they register themselves)
from rft_ray.data.corruptions.base import (
    CORRUPTIONS, corruption_names, create_corruption, reference_rng, register_corruption,
)

__all__ = ["CORRUPTIONS", "corruption_names", "create_corruption", "reference_rng", "register_corruption"]
