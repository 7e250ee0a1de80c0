"""95% intervals on accuracies: the Wilson score interval from an accuracy and the image count behind it.

Every accuracy the platform records is a fraction of a seeded, class-stratified subset's images answered
correctly (``test_images``, ``pgd_images``, ``val_*``, ``ood_images/<domain>`` say how many). The interval
describes image-sampling variation only: how far the accuracy on the whole split could lie from the one measured
on the subset (treating the subset as a random sample; stratification makes it, if anything, conservative). It
says nothing about seed-to-seed variation of training.

Why Wilson and not the normal (Wald) interval ``p +- 1.96 sqrt(p(1-p)/n)``: at accuracies near 0 or 1 (PGD
accuracy of a non-robust model is often a few %) Wald's interval leaves [0, 1] and covers far below 95%; Wilson
stays inside [0, 1], is never empty at p = 0 or 1, and covers close to its nominal level at every n (Brown, Cai &
DasGupta, "Interval Estimation for a Binomial Proportion", Statistical Science 2001).

    centre = (p + z^2 / 2n) / (1 + z^2 / n),   half = z / (1 + z^2 / n) * sqrt(p(1-p)/n + z^2 / 4n^2)

A pooled OOD accuracy weighted by domain size (`evaluation.ood_pooling: by_size`) is not a plain proportion; its
interval here uses the total image count, which is exact for equal weights of equal-sized domains and close
otherwise. Where a count is missing (results written before counts were recorded) the interval is NaN (None in
JSON): undefined, never guessed.
"""
from __future__ import annotations

from typing import Any

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(acc, n, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of the Wilson interval for accuracies `acc` measured on `n` images (arrays broadcast).
    NaN where n is missing (NaN), not positive, or acc is NaN; ValueError for an accuracy outside [0, 1]."""
    p = np.asarray(acc, dtype=np.float64)
    count = np.asarray(n, dtype=np.float64)
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"accuracies must be fractions in [0, 1]; got {p[(p < 0) | (p > 1)].ravel()[0]!r}")
    with np.errstate(invalid="ignore", divide="ignore"):
        z2n = z * z / count
        centre = (p + z2n / 2) / (1 + z2n)
        half = z / (1 + z2n) * np.sqrt(p * (1 - p) / count + z2n / (4 * count))
        lo, hi = np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)
    undefined = ~(count > 0) | np.isnan(p)
    return np.where(undefined, np.nan, lo), np.where(undefined, np.nan, hi)


def interval(acc: Any, n: Any) -> list[float] | None:
    """One accuracy's [lower, upper] (JSON-able), None when the count is unknown."""
    if acc is None or n is None:
        return None
    lo, hi = wilson_interval(float(acc), float(n))
    return None if np.isnan(lo) else [float(lo), float(hi)]


def with_interval(text: str, ci: list[float] | None, digits: int = 3) -> str:
    """A report cell: the number, then `[lo, hi]` when the interval is known."""
    return text if ci is None else f"{text} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
