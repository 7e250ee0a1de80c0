"""What a stronger-attack pass over the kept checkpoints would cost: AutoAttack (standard version) on the
expected frontier points of every trial, counted in passes per attacked image, bounded on both sides.

AutoAttack's standard version runs four attacks in turn, each only on the images every attack before it failed
to break: APGD-CE (100 iterations), APGD-T (9 target classes x 100 iterations), FAB-T (9 targets x 100
iterations) and Square (5000 queries, forward passes only: it uses no gradient). So what one attacked image
costs depends on how long it survives:

- worst case, it survives everything: 100 + 900 + 900 = 1900 forward-backward passes (about 127x PGD-15's 15)
  and 5000 forward-only queries;
- best case, almost no image survives APGD-CE: 100 forward-backward passes (about 7x PGD-15).

(One FAB-T or APGD iteration is counted as one forward-backward pass; FAB's extra forwards per iteration and
each attack's final checks are left out: a few percent of the worst case.) Real runs land in between: robust
points make it expensive. The images are the ones PGD attacks at each point (`evaluation.pgd.examples`, the
same seeded stratified subset) at one radius.

How many points: `output.keep_checkpoints: frontier` keeps each trial's own (clean, PGD) front. Its expected
size is assumed to be the harmonic number H_P = 1 + 1/2 + ... + 1/P of the trial's P evaluation points: exactly
the expected front of P points whose clean and PGD orders are unrelated. A trial trading robustness for accuracy
at every point puts more on its front, up to all P, which the `all points` figures bound.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rft_ray.cost.calibrate import Costs
from rft_ray.cost.counts import Plan

# (attack, forward-backward passes, forward-only queries) per image that reaches it
AUTOATTACK_STANDARD = (("APGD-CE", 100, 0), ("APGD-T", 9 * 100, 0), ("FAB-T", 9 * 100, 0), ("Square", 0, 5000))
WORST_GRADIENT_PASSES = sum(g for _, g, _ in AUTOATTACK_STANDARD)  # 1900: the image survives all four
WORST_QUERIES = sum(q for _, _, q in AUTOATTACK_STANDARD)  # 5000 (Square)
BEST_GRADIENT_PASSES = AUTOATTACK_STANDARD[0][1]  # 100: APGD-CE breaks (almost) every image


def expected_front_size(points: int) -> float:
    """H_P: the expected number of front points among P points whose two rankings are unrelated."""
    return sum(1.0 / k for k in range(1, points + 1))


@dataclass
class StrongerAttackCount:
    """Points, attacked images and passes of one AutoAttack pass, best and worst case, and its hours."""

    frontier_points: float  # expected, over every trial
    all_points: int
    images_per_point: list[int]  # the PGD images of one point, per group (distinct values)
    best_passes_frontier: float  # forward-backward passes in the best case, frontier points
    worst_passes_frontier: float
    worst_queries_frontier: float  # Square's forward-only queries in the worst case
    best_hours_frontier: float
    worst_hours_frontier: float
    best_hours_all: float
    worst_hours_all: float
    not_kept: list[str]  # groups whose runs keep no checkpoints (output.keep_checkpoints: none)


def stronger_attack(plan: Plan, costs: dict[str, Costs]) -> StrongerAttackCount:
    frontier = all_points = 0.0
    best_p = worst_p = worst_q = best_h = worst_h = best_all = worst_all = 0.0
    for g in plan.groups:
        c = costs[g.group]
        points = g.trials * expected_front_size(g.points)
        attacked, attacked_all = points * g.pgd_images_per_point, g.total_points * g.pgd_images_per_point
        best_s = BEST_GRADIENT_PASSES * c.pgd_s_per_iteration_image + c.eval_s_per_image  # + the clean check
        worst_s = (WORST_GRADIENT_PASSES * c.pgd_s_per_iteration_image
                   + (WORST_QUERIES + 1) * c.eval_s_per_image)
        frontier += points
        all_points += g.total_points
        best_p += attacked * BEST_GRADIENT_PASSES
        worst_p += attacked * WORST_GRADIENT_PASSES
        worst_q += attacked * WORST_QUERIES
        best_h, worst_h = best_h + attacked * best_s / 3600, worst_h + attacked * worst_s / 3600
        best_all, worst_all = best_all + attacked_all * best_s / 3600, worst_all + attacked_all * worst_s / 3600
    not_kept = [g.group for g in plan.groups if g.keep_checkpoints == "none"]
    images = sorted({g.pgd_images_per_point for g in plan.groups})
    return StrongerAttackCount(frontier, int(all_points), images, best_p, worst_p, worst_q, best_h, worst_h,
                               best_all, worst_all, not_kept)


def stronger_attack_lines(plan: Plan, count: StrongerAttackCount, hours_text) -> list[str]:
    """The estimate's own block for the AutoAttack pass (kept out of the training totals)."""
    steps = sorted({g.pgd_steps for g in plan.groups})
    pgd = max(steps)
    lines = ["AutoAttack (standard: APGD-CE 100 iterations, APGD-T and FAB-T 9 targets x 100, Square 5000 queries) "
             "on the kept frontier points, e.g. with `rft attack --on frontier`; not in the totals above:",
             f"  points: about {count.frontier_points:,.1f} (each trial's front assumed H_P of its P points; "
             f"up to all {count.all_points:,}), {'/'.join(f'{n:,}' for n in count.images_per_point)} images each (the PGD images), one radius",
             f"  forward-backward passes: {count.best_passes_frontier:,.0f} if almost no image survives APGD-CE "
             f"({BEST_GRADIENT_PASSES}/image, {BEST_GRADIENT_PASSES / pgd:.0f}x PGD-{pgd}) to "
             f"{count.worst_passes_frontier:,.0f} if every image survives all four "
             f"({WORST_GRADIENT_PASSES}/image, {WORST_GRADIENT_PASSES / pgd:.0f}x PGD-{pgd}), plus up to "
             f"{count.worst_queries_frontier:,.0f} forward queries (Square)",
             f"  accelerator-hours: {hours_text(count.best_hours_frontier)} to {hours_text(count.worst_hours_frontier)}"
             f" (on every evaluation point: {hours_text(count.best_hours_all)} to {hours_text(count.worst_hours_all)}),"
             " at the PGD iteration and clean forward costs above"]
    if count.not_kept:
        lines.append(f"  output.keep_checkpoints is none in {', '.join(count.not_kept)}: those runs keep nothing to "
                     "attack; the figures are what frontier would keep")
    return lines


def stronger_attack_json(count: StrongerAttackCount) -> dict[str, Any]:
    return {"attack": "autoattack standard", "components": [
                {"attack": name, "gradient_passes_per_image": g, "forward_queries_per_image": q}
                for name, g, q in AUTOATTACK_STANDARD],
            "frontier_points_expected": count.frontier_points, "all_points": count.all_points,
            "front_size_assumption": "H_P (harmonic number) of each trial's P evaluation points",
            "images_per_point": count.images_per_point, "radii": 1,
            "gradient_passes_frontier": {"best": count.best_passes_frontier, "worst": count.worst_passes_frontier},
            "forward_queries_frontier_worst": count.worst_queries_frontier,
            "hours_frontier": {"best": count.best_hours_frontier, "worst": count.worst_hours_frontier},
            "hours_all_points": {"best": count.best_hours_all, "worst": count.worst_hours_all},
            "in_training_total": False}
