"""Pearson and Spearman correlation of two columns, NaN with a note where undefined. Pure numpy.

Spearman is Pearson over ranks, ties given their average rank (like scipy.stats.spearmanr). Fewer than 2
points, or a constant column, make both undefined (NaN, JSON null) with a note saying why.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def _rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties get their average rank (like scipy.stats.rankdata(method='average'))."""
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    ranks = np.empty(len(a), dtype=np.float64)
    start = 0
    for end in range(1, len(a) + 1):
        if end == len(a) or sorted_a[end] != sorted_a[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0  # mean of ranks start+1 .. end
            start = end
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    return float(np.clip(np.dot(a, b) / denom, -1.0, 1.0)) if denom > 0 else float("nan")


def correlation(x, y, x_name: str = "x", y_name: str = "y") -> dict[str, Any]:
    """Pearson and Spearman correlation of two equal-length finite arrays; NaN with a note when undefined."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"correlation needs two 1-D arrays of equal length, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(f"correlation inputs must be finite ({x_name}, {y_name} contain NaN or inf)")
    n = len(x)
    notes = []
    if n < 2:
        notes.append(f"fewer than 2 points ({n})")
    else:
        if np.ptp(x) == 0:
            notes.append(f"{x_name} is constant")
        if np.ptp(y) == 0:
            notes.append(f"{y_name} is constant")
    if notes:
        return {"n": n, "pearson": float("nan"), "spearman": float("nan"), "note": "; ".join(notes)}
    return {"n": n, "pearson": _pearson(x, y), "spearman": _pearson(_rankdata(x), _rankdata(y)), "note": None}
