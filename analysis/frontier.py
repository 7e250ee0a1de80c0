"""Pareto frontier and its area (AUC) for (accuracy, robustness) points. Pure numpy.

Convention (used everywhere in `analysis`):

* A point is ``(accuracy, robustness)`` = ``(test_clean_acc, pgd_adv_acc)``, both in ``[0, 1]``.
  Inputs are arrays of shape ``(N, 2)`` (``N`` may be 0). NaN, +-inf and values outside ``[0, 1]``
  are rejected with a ``ValueError`` naming the problem and the first offending row; nothing is
  clipped or silently dropped here (cleaning a result table is `analysis.cleaning`' job).
* ``p`` dominates ``q`` when ``p`` is at least as good on both coordinates and strictly better on
  one. The frontier is the set of non-dominated points; exact duplicates are collapsed to one.
  `pareto_frontier` returns it sorted by accuracy ascending, hence robustness strictly descending.
* ``hypervolume`` AUC (the default): the area of the part of ``[0, 1]^2`` dominated by the frontier
  with ``(0, 0)`` as reference point, i.e. the area of the union of the rectangles
  ``[0, a_i] x [0, r_i]`` -- the staircase under the frontier. Only the frontier matters, so adding
  a dominated point never changes it, adding any point never lowers it, and it is order-invariant.
* ``trapezoid`` AUC (option): the area of the polygon bounded by the frontier points joined by
  straight lines (accuracy ascending), closed at its two ends down to the axes: from the leftmost
  point (highest robustness) horizontally to the robustness axis, and from the rightmost point
  (highest accuracy) vertically down to the accuracy axis. That is, the polygon
  ``(0, 0), (0, r_1), (a_1, r_1), ..., (a_m, r_m), (a_m, 0)``. For one point both kinds equal
  ``a * r``; in general ``hypervolume <= trapezoid <= max(a) * max(r) <= 1``. The trapezoid AUC is
  order-invariant and unchanged by adding a dominated point (it depends on the frontier only), but
  adding a *non-dominated* point can LOWER it: a new frontier point below the straight segment
  between two old frontier points replaces that segment by two lower ones. Example: frontier
  ``(0.2, 0.8), (0.8, 0.2)`` has trapezoid AUC 0.46; adding ``(0.5, 0.3)`` gives 0.40.
* The AUC of an empty set is 0.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

AucKind = Literal["hypervolume", "trapezoid"]
AUC_KINDS: tuple[str, ...] = ("hypervolume", "trapezoid")


def as_points(points, name: str = "points") -> np.ndarray:
    """Validate and return a float64 ``(N, 2)`` array of (accuracy, robustness) in [0, 1]."""
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numbers of shape (N, 2) (accuracy, robustness): {err}") from None
    if arr.size == 0:
        return np.empty((0, 2), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(
            f"{name} must have shape (N, 2) with columns (accuracy, robustness); got shape {arr.shape}"
        )
    for check, what in ((np.isnan, "NaN"), (np.isinf, "an infinite value")):
        bad = check(arr)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(
                f"{name} contain {what} in {int(bad.any(axis=1).sum())} row(s) (first: row {row}, "
                f"{('accuracy', 'robustness')[col]} = {arr[row, col]}); NaN and infinite values are not "
                "valid accuracies, so they are rejected instead of being used or dropped silently"
            )
    outside = (arr < 0.0) | (arr > 1.0)
    if outside.any():
        row, col = np.argwhere(outside)[0]
        raise ValueError(
            f"{name} contain values outside [0, 1] in {int(outside.any(axis=1).sum())} row(s) (first: row "
            f"{row}, {('accuracy', 'robustness')[col]} = {arr[row, col]}); accuracies must be fractions in [0, 1]"
        )
    return arr


def pareto_frontier(points) -> np.ndarray:
    """The non-dominated points, duplicates collapsed, sorted by accuracy ascending / robustness descending."""
    arr = as_points(points)
    if len(arr) == 0:
        return arr
    # Sweep from the highest accuracy down (ties: highest robustness first); a point is kept exactly
    # when its robustness beats every point of at least its accuracy already seen.
    order = np.lexsort((-arr[:, 1], -arr[:, 0]))
    kept = []
    best_rob = -np.inf
    for acc, rob in arr[order]:
        if rob > best_rob:
            kept.append((acc, rob))
            best_rob = rob
    return np.array(kept[::-1], dtype=np.float64)


def hypervolume_auc(points) -> float:
    """Area of [0,1]^2 dominated by the points, reference (0, 0): the staircase under the frontier."""
    front = pareto_frontier(points)
    if len(front) == 0:
        return 0.0
    acc, rob = front[:, 0], front[:, 1]
    widths = np.diff(np.concatenate(([0.0], acc)))
    return float(np.sum(widths * rob))


def trapezoid_auc(points) -> float:
    """Area under the frontier joined by straight lines, closed to the axes (see module docstring)."""
    front = pareto_frontier(points)
    if len(front) == 0:
        return 0.0
    acc, rob = front[:, 0], front[:, 1]
    left = acc[0] * rob[0]  # horizontal closure to the robustness axis
    segments = np.sum(np.diff(acc) * (rob[:-1] + rob[1:]) / 2.0)
    return float(left + segments)


def frontier_auc(points, kind: AucKind = "hypervolume") -> float:
    """`hypervolume_auc` or `trapezoid_auc` by name."""
    if kind == "hypervolume":
        return hypervolume_auc(points)
    if kind == "trapezoid":
        return trapezoid_auc(points)
    raise ValueError(f"unknown AUC kind {kind!r}; choose one of {', '.join(AUC_KINDS)}")


def frontier_outline(front: np.ndarray, kind: AucKind = "hypervolume") -> np.ndarray:
    """Vertices of the outline whose enclosed area is the AUC (for plotting), from the robustness axis
    to the accuracy axis. ``front`` must be a `pareto_frontier` result."""
    front = as_points(front, "frontier")
    if len(front) == 0:
        return np.empty((0, 2))
    if kind not in AUC_KINDS:
        raise ValueError(f"unknown AUC kind {kind!r}; choose one of {', '.join(AUC_KINDS)}")
    verts = [(0.0, front[0, 1])]
    for i, (acc, rob) in enumerate(front):
        if kind == "hypervolume" and i > 0:
            verts.append((front[i - 1, 0], rob))  # step down, then across
        verts.append((acc, rob))
    verts.append((front[-1, 0], 0.0))
    return np.array(verts, dtype=np.float64)
