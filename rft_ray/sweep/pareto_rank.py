"""Pareto ranking of objective vectors for Pareto ASHA's rungs, pure Python (no Ray), so it is testable alone.

Vectors are "higher is better" in every coordinate: `signed_vector` flips minimised objectives and turns a
missing or NaN value into -inf, the worst value there is, so a trial that failed to report an objective is
dominated by every peer that is at least as good elsewhere and never outranks one on that objective.

The rung rule (`keeps_at_rung`) judges each trial on two vectors recorded when it reached the rung: its value
there (`current`: smoothed over the last doubling of steps once three reports are there) and its learning
curve's trend carried to the trials' step budget (`forecast`, see `trend_forecast`: linear in log(step) over the
last doubling of steps, rises only, times an optimism factor; with the measurement noise known, a rise counts
only beyond one standard error of the slope, and the forecast gets one standard error of the value on top).
With n trials recorded at the rung (the candidate included) and reduction factor r, the candidate continues if

1. it is *protected*: no peer's current vector dominates its forecast (it could still end on the front, even if
   it learns late: robustness often peaks early and accuracy rises late, so a low learning rate looks dominated
   at the first rungs), or
2. fewer than ceil(n / r) peers rank ahead of it, protected trials first, then by non-dominated front of the
   current vectors, then crowding distance (descending); ties go to the candidate, as ASHA keeps a trial equal
   to its cutoff.

So the rung keeps ceil(n / r) trials, or more when more than that are protected: a trial whose forecast is
dominated is cut by rule 2 alone, as in ASHA. A trial with a flat curve (or a single report) has its current
value as its forecast, so a trial on the front of what has been recorded is never cut. With one objective,
rule 2 keeps the candidate exactly when fewer than ceil(n / r) of its peers are strictly better (the top
ceil(n / r), ties to the candidate); Ray's ASHA instead stops a candidate below the (1 - 1/r) percentile,
linearly interpolated, of its peers' values (peers [1, 3], r = 2, candidate 1.5: Ray stops it, here one peer is
better and ceil(3 / 2) = 2, so it continues). The rule that preceded this one (issue 17: keep any trial fewer
than 1/r of its peers dominate) kept 0.75 to 0.87 of each rung's trials at r = 2 in the simulator (up to all of a
rung whose trials lie on a trade-off) and still cut late bloomers; benchmarks/RESULTS.md measures both.
Without the noise terms (a raw slope, optimism 1.5: issue 26's first rule) every trial whose slope a noisy
evaluation tipped upwards was protected, and a rung kept about 0.8 of its trials; with them about 0.77, and 0.02
to 0.06 less compute for about the same share of the front kept (benchmarks/RESULTS.md).
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


def trend_fit(history: Sequence[tuple[float, Vector]]) -> list[tuple[float, float, float, int] | None]:
    """Per objective, the least-squares line of the value against log2(step) over the reports of the last doubling
    of steps (step >= now / 2) of a trial's reports `history` ((step, maximised vector), ascending, the last one
    now): (value of the line at now, slope per doubling, spread of log2(step) around its mean, reports).
    None for an objective with a missing (-inf) value in the window, and for every objective when fewer than two
    reports (or one step) are there."""
    now, _ = history[-1]
    window = [(math.log2(step), vector) for step, vector in history if step >= now / 2 and step > 0]
    xs = [x for x, _ in window]
    mean_x = sum(xs) / len(xs) if xs else 0.0
    spread = sum((x - mean_x) ** 2 for x in xs)
    lines: list[tuple[float, float, float, int] | None] = []
    for m in range(len(history[-1][1])):
        ys = [vector[m] for _, vector in window]
        if len(window) < 2 or spread <= 0 or not all(math.isfinite(y) for y in ys):
            lines.append(None)
            continue
        mean_y = sum(ys) / len(ys)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread
        lines.append((mean_y + slope * (math.log2(now) - mean_x), slope, spread, len(window)))
    return lines


def trend_scatter(history: Sequence[tuple[float, Vector]]) -> list[tuple[float, int] | None]:
    """Per objective, (sum of squared residuals, degrees of freedom) of `trend_fit`'s line over its window: what
    a trial's reports say about the measurement noise (None where the line rests on fewer than three reports)."""
    now, _ = history[-1]
    window = [(math.log2(step), vector) for step, vector in history if step >= now / 2 and step > 0]
    out: list[tuple[float, int] | None] = []
    for m, line in enumerate(trend_fit(history)):
        if line is None or line[3] < 3:
            out.append(None)
            continue
        value_now, slope, _, count = line
        residuals = [vector[m] - (value_now + slope * (x - math.log2(now))) for x, vector in window]
        out.append((sum(r * r for r in residuals), count - 2))
    return out


def trend_forecast(history: Sequence[tuple[float, Vector]], horizon: float, optimism: float,
                   noise: Sequence[float | None] | None = None) -> tuple[Vector, Vector]:
    """(value now, forecast at step `horizon`) of a trial from its reports `history`, per objective, from
    `trend_fit`'s line:

    - value now: the line at now when it rests on three reports or more (one noisy evaluation then weighs a third
      or less), else the last report;
    - forecast: the value now plus the line's slope, if it rises, times the doublings left to `horizon` and
      `optimism`. With `noise` (per objective, the standard deviation of one report around its trend, or None
      where unknown; see `trend_scatter`), the rise counted is the slope less one standard error, sd /
      sqrt(spread), where the line rests on three reports or more (a rise within the measurement noise is not a
      trend), and the forecast gets one standard error of the value now, sd / sqrt(reports), on top (a gap
      within the noise is not a reason to stop a trial). A falling curve, a missing (-inf) value or fewer than
      two reports: the value now, plus that margin (a forecast never lowers a trial, so a trial is never cut for
      its trend alone)."""
    now, last = history[-1]
    doublings = math.log2(horizon / now) if horizon > now > 0 else 0.0
    reports = sum(1 for step, _ in history if step >= now / 2 and step > 0)
    value, forecast = [], []
    for m, (reported, line) in enumerate(zip(last, trend_fit(history))):
        sd = noise[m] if noise is not None and noise[m] is not None else 0.0
        margin = sd / math.sqrt(max(1, reports)) if math.isfinite(reported) else 0.0
        if line is None:
            value.append(reported)
            forecast.append(reported + margin)
            continue
        fitted, slope, spread, count = line
        now_value = fitted if count >= 3 else reported
        rise = max(0.0, slope - (sd / math.sqrt(spread) if count >= 3 else 0.0))
        value.append(now_value)
        forecast.append(now_value + optimism * rise * doublings + margin)
    return tuple(value), tuple(forecast)


def protected(currents: Sequence[Vector], forecasts: Sequence[Vector]) -> list[bool]:
    """Per trial of a rung: no other trial's current vector dominates its forecast."""
    return [not any(dominates(p, forecasts[i]) for j, p in enumerate(currents) if j != i)
            for i in range(len(currents))]


def keeps_at_rung(currents: Sequence[Vector], forecasts: Sequence[Vector], candidate: int,
                  reduction_factor: float) -> bool:
    """Whether trial `candidate` continues past a rung where `currents` (and their `forecasts`) are recorded."""
    n = len(currents)
    shielded = protected(currents, forecasts)
    if shielded[candidate]:
        return True
    front_of = [0] * n
    crowding = [0.0] * n
    for index, front in enumerate(non_dominated_sort(currents)):
        for i, distance in zip(front, crowding_distance([currents[i] for i in front])):
            front_of[i], crowding[i] = index, distance

    def rank(i: int) -> tuple:
        return (not shielded[i], front_of[i], -crowding[i])

    ahead = sum(1 for j in range(n) if j != candidate and rank(j) < rank(candidate))
    return ahead < promotion_slots(n, reduction_factor)
