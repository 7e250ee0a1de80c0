"""Pareto ranking of objective vectors for Pareto ASHA's rungs, pure Python (no Ray), so it is testable alone.

Vectors are "higher is better" in every coordinate: `signed_vector` flips minimised objectives and turns a
missing or NaN value into -inf, the worst value there is, so a trial that failed to report an objective is
dominated by every peer that is at least as good elsewhere and never outranks one on that objective.

The rung rule (`survives_rung`), with n trials recorded at the rung (the candidate included) and
reduction factor r, keeps the candidate if either holds:

1. it is among the top ceil(n / r) of the recorded trials ordered by non-dominated front, then crowding
   distance (descending) within the front; ties go to the candidate, as ASHA keeps a trial equal to its cutoff;
2. fewer than 1/r of its peers (the n - 1 others) dominate it.

Rule 2 is the guarantee: no trial, in particular none whose final result ends on the Pareto front, is cut at
a rung where fewer than 1/r of its peers beat it on every objective at once; rule 1 alone could cut it when
the first front holds more than ceil(n / r) trials. Every trial rule 1 keeps has at most ceil(n / r) - 1
dominators (they all sit in earlier fronts, ahead of it), so rule 2 adds trials only; the front-then-crowding
order decides among the trials with exactly ceil((n - 1) / r) dominators, where ceil(n / r) is larger. With one
objective it keeps the candidate exactly when fewer than ceil(n / r) of its peers are strictly better (the top
ceil(n / r), ties to the candidate). That is close to Ray's ASHA but not the same: Ray stops a candidate below
the (1 - 1/r) percentile, linearly interpolated, of the values its peers recorded at the rung before it; with
peers [1, 3] and r = 2 a candidate at 1.5 is below their interpolated median 2, so Ray stops it, while here one
peer is better and ceil(3 / 2) = 2, so it continues. With several objectives rule 1 keeps ceil(n / r) as well
and rule 2 more when the objectives disagree: the price of never cutting a trial for one objective alone.
"""
from __future__ import annotations

import math
from typing import Sequence

Vector = tuple[float, ...]


def signed_vector(values: Sequence[float | None], modes: Sequence[str]) -> Vector:
    """`values` (one per objective, None or NaN when missing) as a maximised vector: min objectives negated,
    missing ones -inf."""
    out = []
    for value, mode in zip(values, modes, strict=True):
        number = float("nan") if value is None else float(value)
        if math.isnan(number):
            out.append(-math.inf)
        else:
            out.append(number if mode == "max" else -number)
    return tuple(out)


def dominates(a: Vector, b: Vector) -> bool:
    """a is at least as good as b everywhere and better somewhere (all coordinates maximised)."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def non_dominated_sort(points: Sequence[Vector]) -> list[list[int]]:
    """The indices of `points` by front (Deb et al.'s fast non-dominated sort): front 0 is dominated by no
    point, front k by points of earlier fronts only. Equal points share a front."""
    n = len(points)
    dominated_by_count = [0] * n
    dominates_list: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(points[i], points[j]):
                dominates_list[i].append(j)
                dominated_by_count[j] += 1
            elif dominates(points[j], points[i]):
                dominates_list[j].append(i)
                dominated_by_count[i] += 1
    fronts = []
    current = [i for i in range(n) if dominated_by_count[i] == 0]
    while current:
        fronts.append(current)
        following = []
        for i in current:
            for j in dominates_list[i]:
                dominated_by_count[j] -= 1
                if dominated_by_count[j] == 0:
                    following.append(j)
        current = sorted(following)
    return fronts


def crowding_distance(points: Sequence[Vector]) -> list[float]:
    """NSGA-II's crowding distance of each point within `points` (one front): per objective, the gap between
    its neighbours over the objective's range, summed; the extremes of any objective get infinity.

    Equal points share one distance (computed once), so the order they arrive in does not matter; a point with
    a missing (-inf) coordinate gets 0, the least room, and does not take part in the others' distances.
    """
    finite = [i for i, p in enumerate(points) if all(math.isfinite(x) for x in p)]
    distance = [0.0] * len(points)
    unique = sorted({points[i] for i in finite})
    if not unique:
        return distance
    gaps = dict.fromkeys(unique, 0.0)
    for m in range(len(unique[0])):
        ordered = sorted(unique, key=lambda p: p[m])
        span = ordered[-1][m] - ordered[0][m]
        gaps[ordered[0]] = gaps[ordered[-1]] = math.inf
        if span <= 0:
            continue
        for before, point, after in zip(ordered, ordered[1:], ordered[2:]):
            gaps[point] += (after[m] - before[m]) / span
    for i in finite:
        distance[i] = gaps[points[i]]
    return distance


def promotion_slots(n: int, reduction_factor: float) -> int:
    """ceil(n / reduction_factor): how many of n recorded trials rule 1 keeps (at least 1)."""
    return max(1, math.ceil(n / reduction_factor - 1e-9))


def survives_rung(points: Sequence[Vector], candidate: int, reduction_factor: float) -> bool:
    """Whether `points[candidate]` continues past a rung where `points` are recorded (see the module's rule)."""
    n = len(points)
    me = points[candidate]
    dominators = sum(1 for j, p in enumerate(points) if j != candidate and dominates(p, me))
    if dominators * reduction_factor < n - 1:  # rule 2: fewer than 1/r of the n - 1 peers dominate it
        return True
    front_of = [0] * n
    crowding = [0.0] * n
    for index, front in enumerate(non_dominated_sort(points)):
        for i, distance in zip(front, crowding_distance([points[i] for i in front])):
            front_of[i], crowding[i] = index, distance
    ahead = sum(1 for j in range(n) if j != candidate and (
        front_of[j] < front_of[candidate] or (front_of[j] == front_of[candidate] and crowding[j] > crowding[candidate])))
    return ahead < promotion_slots(n, reduction_factor)
