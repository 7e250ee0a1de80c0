"""The knee of the (accuracy, robustness) frontier, and the most robust point above an accuracy floor.

Points are evaluation points ``(test_clean_acc, pgd_adv_acc)`` (`analysis.frontier`'s convention), each
with its run id and optimizer step (and, in tables, the run's lr and weight decay).

* **Knee.** Take the Pareto front of the points (`analysis.frontier.pareto_frontier`: non-dominated,
  duplicates collapsed), sorted by accuracy ascending ``a_1 < ... < a_m`` (so robustness descending
  ``r_1 > ... > r_m``). Normalise both axes by their range on the front, ``x = (a - a_1) / (a_m - a_1)``
  and ``y = (r - r_m) / (r_1 - r_m)``: the two extreme points become ``(0, 1)`` and ``(1, 0)`` and the
  line joining them is ``x + y = 1``. A point's knee distance is its signed perpendicular distance to
  that line, ``(x + y - 1) / sqrt(2)``, positive on the side of the ideal point ``(1, 1)``. The knee is
  the front point with the largest knee distance: the one that bulges most towards "accurate and
  robust", where giving up a little of one axis stops buying much of the other. Which point that is does
  not depend on the axes' scales (a distance to a line scales the same for every point under a per-axis
  scaling); normalising makes the distance itself unit-free, so it compares across groups whose PGD
  accuracy is a tenth of their clean accuracy or half of it (0: no bulge; 1/sqrt(2) ~ 0.707: a corner).
  A point *below* the line (a dent in the front) has a negative distance and is never preferred to the
  extremes (distance 0), so a straight or concave front has its knee at an extreme point.
* **Ties** (knee distances within `TIE_TOLERANCE` of the largest; e.g. every point of a straight front,
  or the two points of a two-point front): the earliest step wins, then the smaller run id. The same
  (accuracy, robustness) reached by several evaluation points is one front point; the tie rule picks
  which of them is reported.
* **Small fronts.** No points: no knee (None). A front of one point (one point, or one point dominating
  all others): that point, knee distance 0. A front of two points: both are extremes (distance 0), so
  the tie rule picks the one measured at the earlier step.
* **Accuracy floor.** The most robust point with ``test_clean_acc >= min_acc`` (``min_acc`` a fraction in
  [0, 1]); ties: the higher accuracy, then the earliest step, then the smaller run id. None when no
  point reaches the floor. It is always a front point.

Per trial (`trial_knees`): the points of one run. Per group (`group_knees`): the pooled points of every
run of a strategy on a dataset (all steps, all hyperparameters), as the pooled AUC pools them.

**Which split.** The knee and the floor point are selections: `group_knees` and `trial_knees` choose them on
``select_on``'s points (`analysis.selection`; validation by default: ``(val_clean_acc, val_pgd_adv_acc)``, and
the floor is a floor on ``val_clean_acc``) and report the chosen point's test values as ``test_clean_acc``,
``pgd_adv_acc`` beside the values it was chosen on, ``val_clean_acc``, ``val_pgd_adv_acc``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from analysis.frame import EXTRA_COLUMNS, Frame, extra_count, prepare
from analysis.frontier import as_points, pareto_frontier
from analysis.selection import (
    CHOSEN_ACC_IMAGES,
    CHOSEN_COUNTS,
    CHOSEN_ROB_IMAGES,
    REPORTED_ACC,
    REPORTED_COLUMNS,
    REPORTED_ROB,
    selection_view,
)
from analysis.uncertainty import interval

# Knee distances closer than this (in normalised units) are a tie: float noise of collinear points.
TIE_TOLERANCE = 1e-9
POINT_KEYS = ("run_id", "step", "lr", "weight_decay", "test_clean_acc", "pgd_adv_acc")


def check_min_acc(min_acc: Any) -> float | None:
    """The accuracy floor as a float, None for none; ValueError unless a number in [0, 1]."""
    if min_acc is None:
        return None
    if isinstance(min_acc, bool) or not isinstance(min_acc, (int, float, np.integer, np.floating)) \
            or not math.isfinite(min_acc) or not 0 <= min_acc <= 1:
        raise ValueError(f"min_acc (the clean-accuracy floor) must be a fraction in [0, 1], e.g. 0.9 for 90%; "
                         f"got {min_acc!r}")
    return float(min_acc)


def _tie_order(indices: np.ndarray, step: np.ndarray, run_id: np.ndarray | None) -> int:
    """The earliest step among `indices`, then the smaller run id, then the first row."""
    def key(i):
        return (int(step[i]), str(run_id[i]) if run_id is not None else "", int(i))

    return int(min(indices, key=key))


def _columns(acc, rob, step, run_id) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    points = as_points(np.column_stack([np.asarray(acc, dtype=np.float64).reshape(-1),
                                        np.asarray(rob, dtype=np.float64).reshape(-1)]))
    steps = np.asarray(step, dtype=np.int64).reshape(-1)
    runs = None if run_id is None else np.asarray(run_id, dtype=object).reshape(-1)
    if len(steps) != len(points) or (runs is not None and len(runs) != len(points)):
        raise ValueError(f"accuracy, robustness, step and run id need one value per point; got {len(points)} "
                         f"points, {len(steps)} steps" + ("" if runs is None else f", {len(runs)} run ids"))
    return points, steps, runs


def knee_distances(front: np.ndarray) -> np.ndarray:
    """Signed normalised distance of each front point (a `pareto_frontier` result) to the line joining the
    front's extremes, positive towards (1, 1); zeros for a front of fewer than three points."""
    front = as_points(front, "frontier")
    if len(front) < 3:
        return np.zeros(len(front))
    x = (front[:, 0] - front[0, 0]) / (front[-1, 0] - front[0, 0])  # ranges > 0: a front is strictly monotone
    y = (front[:, 1] - front[-1, 1]) / (front[0, 1] - front[-1, 1])
    return (x + y - 1.0) / math.sqrt(2.0)


def knee_index(acc, rob, step, run_id=None) -> tuple[int, float] | None:
    """(index of the knee point among the given points, its knee distance); None for no points."""
    points, steps, runs = _columns(acc, rob, step, run_id)
    if len(points) == 0:
        return None
    front = pareto_frontier(points)
    distance = knee_distances(front)
    best = float(distance.max())
    tied = front[distance >= best - TIE_TOLERANCE]
    on_tied = np.flatnonzero([(row == tied).all(axis=1).any() for row in points])  # exact copies of front values
    return _tie_order(on_tied, steps, runs), best


def floor_index(acc, rob, step, run_id=None, *, min_acc: float) -> int | None:
    """Index of the most robust point with accuracy >= min_acc (module docstring); None when none reaches it."""
    floor = check_min_acc(min_acc)
    if floor is None:
        raise ValueError("floor_index needs an accuracy floor (min_acc), got None")
    points, steps, runs = _columns(acc, rob, step, run_id)
    above = np.flatnonzero(points[:, 0] >= floor)
    if len(above) == 0:
        return None
    top = above[points[above, 1] == points[above, 1].max()]
    top = top[points[top, 0] == points[top, 0].max()]
    return _tie_order(top, steps, runs)


# ---------------------------------------------------------------------------------------------------
# Result tables


def _point(frame: Frame, i: int) -> dict[str, Any]:
    """A chosen point: its run, step, hyperparameters and test values; chosen on a `selection_view` other than
    test's, also the values it was chosen on (``val_clean_acc``, ``val_pgd_adv_acc``)."""
    extra = frame.extra
    point = {"run_id": str(frame.run_id[i]), "step": int(frame.step[i]),
             "lr": _number(extra["lr"][i]) if "lr" in extra else None,
             "weight_decay": _number(extra["weight_decay"][i]) if "weight_decay" in extra else None,
             "test_clean_acc": float(frame.acc[i]), "pgd_adv_acc": float(frame.rob[i]), **frame.intervals(i)}
    if REPORTED_ACC in extra:  # chosen on validation (`analysis.selection.selection_view`): test is reported
        point.update(test_clean_acc=float(extra[REPORTED_ACC][i]), pgd_adv_acc=float(extra[REPORTED_ROB][i]),
                     val_clean_acc=float(frame.acc[i]), val_pgd_adv_acc=float(frame.rob[i]))
        point.update(frame.intervals(i, acc=point["test_clean_acc"], rob=point["pgd_adv_acc"]))
        point.update(val_clean_acc_ci=interval(point["val_clean_acc"], extra_count(extra, CHOSEN_ACC_IMAGES, i)),
                     val_pgd_adv_acc_ci=interval(point["val_pgd_adv_acc"], extra_count(extra, CHOSEN_ROB_IMAGES, i)))
    return point


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def selected_points(frame: Frame, rows: np.ndarray, min_acc: float | None) -> dict[str, Any]:
    """Of the given rows: n_points, front_points (size of their Pareto front), the knee (with its
    ``knee_distance``), min_acc and, with a floor, the most robust point at it (at_floor)."""
    rows = np.asarray(rows, dtype=np.int64)
    args = (frame.acc[rows], frame.rob[rows], frame.step[rows], frame.run_id[rows])
    found = knee_index(*args)
    knee = None
    if found is not None:
        knee = {**_point(frame, int(rows[found[0]])), "knee_distance": found[1]}
    front = pareto_frontier(np.column_stack([frame.acc[rows], frame.rob[rows]]))
    out: dict[str, Any] = {"n_points": len(rows), "front_points": len(front), "knee": knee, "min_acc": min_acc,
                           "at_floor": None}
    if min_acc is not None:
        at = floor_index(*args, min_acc=min_acc)
        out["at_floor"] = None if at is None else _point(frame, int(rows[at]))
    return out


def selection_frame(table: pa.Table, select_on: str, strict: bool, axis: str = "pgd",
                    option: str = "--select-on") -> Frame:
    """The `Frame` selections read: acc/rob on `select_on`'s split, the test values in extra (`_point`)."""
    return prepare(selection_view(table, select_on, axis, option=option), strict,
                   extra=EXTRA_COLUMNS + REPORTED_COLUMNS + CHOSEN_COUNTS)


def group_knees(
    table: pa.Table, min_acc: float | None = None, *, strict: bool = False,
    strategy_order: Sequence[str] | None = None, select_on: str = "validation", axis: str = "pgd",
) -> list[dict[str, Any]]:
    """Per strategy x dataset, over the pooled points of its runs: strategy, dataset, n_runs, n_points,
    front_points, knee, min_acc, at_floor (points: `POINT_KEYS`, and the values they were chosen on; the knee
    also its ``knee_distance``), chosen on `select_on`'s split (module docstring; `axis` the robustness axis
    `analysis.axis.select_axis` put in pgd_adv_acc)."""
    floor = check_min_acc(min_acc)
    frame = selection_frame(table, select_on, strict, axis)
    return [{"strategy": strategy, "dataset": dataset, "n_runs": len(frame.runs(rows)),
             **selected_points(frame, rows, floor)}
            for (strategy, dataset), rows in frame.groups(strategy_order=strategy_order)]


def trial_knees(
    table: pa.Table, min_acc: float | None = None, *, strict: bool = False,
    strategy_order: Sequence[str] | None = None, select_on: str = "validation", axis: str = "pgd",
) -> list[dict[str, Any]]:
    """Per run (grouped as `group_knees`, runs by id): strategy, dataset, run_id, and the fields of
    `selected_points`, chosen on `select_on`'s split."""
    floor = check_min_acc(min_acc)
    frame = selection_frame(table, select_on, strict, axis)
    return [{"strategy": strategy, "dataset": dataset, "run_id": run_id, **selected_points(frame, idx, floor)}
            for (strategy, dataset), rows in frame.groups(strategy_order=strategy_order)
            for run_id, idx in frame.runs(rows)]
