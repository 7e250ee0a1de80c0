"""scikit-learn's handwritten digits: the embedded default's downstream task (ships inside the wheel)."""
from __future__ import annotations

import numpy as np

from rft_ray.config import DatasetSpec
from rft_ray.config.dataset_options import DigitsOptions
from rft_ray.data.base import ArrayImageSet, fixed_sizes, register_dataset


@register_dataset("digits", DigitsOptions, sizes=fixed_sizes(1_797, None))
def load_digits(spec: DatasetSpec, options: DigitsOptions, size: int):
    """1,797 8x8 grey digits from scikit-learn, as 3-channel images; seeded stratified test split."""
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    # Pixel values are 0..16; map to 0..255 and repeat the grey channel.
    grey = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)
    pixels = np.repeat(grey[..., None], 3, axis=-1)
    return ArrayImageSet(pixels, data.target, size), None, {}, [str(d) for d in range(10)]
