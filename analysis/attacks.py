"""Stronger attacks beside training-time PGD: frontier AUC per attack, and the gradient-masking flag.

What is compared (stated again in the report): for an attack column ``<slug>_adv_acc/<eps>``
(`analysis.measured`), the points are the evaluation points that hold BOTH that attack's accuracy and
training-time PGD's accuracy at the same radius (``pgd_adv_acc`` when the row's ``pgd_eps`` is that radius,
else ``pgd_adv_acc/<eps>``). ``rft attack`` attacks the run's own seeded PGD subset, so at one point both
numbers are measured on the same images (``<slug>_images`` and ``pgd_images`` count them; points where the
two counts differ are counted as ``n_images_differ``) and judged by the same rule, the run's
``evaluation.pgd.verdict`` (under final_iterate a clean error PGD's last iterate gets right counts as robust for
PGD, and the attacks judge it the same way).

* AUC per attack: per strategy x dataset (and attack and radius), the frontier AUC of the points
  (test_clean_acc, attack accuracy) next to that of (test_clean_acc, PGD accuracy) on exactly the same
  points: every point of every run pooled (steps <= step_budget when set), AUC kind as the analysis'.
  ``attack_minus_pgd`` = attack AUC - PGD AUC (negative: the attack finds more adversarial examples).
  Attacked points without PGD at that radius are counted (``n_attacked``) but used in neither AUC.
* Gradient-masking flag: a point is flagged when PGD accuracy - attack accuracy > threshold (default 0.05,
  5 accuracy points; strictly greater, with 1e-9 slack so that a gap equal to the threshold up to float
  rounding is not flagged). PGD overestimating robustness that much suggests its gradients are obfuscated.
  ``pgd_rerun`` (PGD again) is left out: a gap there is not masking. ``max_gap``: the largest PGD - attack
  difference over the compared points (may be negative).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from analysis.auc import check_options
from analysis.frontier import frontier_auc
from analysis.measured import AttackColumn, MeasuredTable, attack_columns, attack_name

DEFAULT_MASKING_THRESHOLD = 0.05
NOT_MASKING = ("pgd_rerun",)  # the same attack again: a gap means non-determinism, not masking
_SLACK = 1e-9  # 0.55 - 0.50 is 0.05000000000000004 in binary


def check_masking_threshold(threshold: Any) -> float:
    """The threshold as a float; ValueError unless it is a number in [0, 1] (accuracy fraction)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) \
            or not 0 <= threshold <= 1:
        raise ValueError(f"masking threshold must be a number in [0, 1] (accuracy fraction, e.g. 0.05 = 5 points), "
                         f"got {threshold!r}")
    return float(threshold)


def _measured(table: pa.Table | MeasuredTable, strict: bool) -> MeasuredTable:
    return table if isinstance(table, MeasuredTable) else MeasuredTable.of(table, strict=strict)


def compared_points(
    measured: MeasuredTable, attack: AttackColumn, step_budget: int | None = None,
    strategy_order: Sequence[str] | None = None,
) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """(strategy, dataset) -> arrays run_id, step, acc, pgd, attack, n_attacked of the points holding both
    the attack's and PGD's accuracy at the attack's radius (steps <= step_budget), by run and step."""
    frame = measured.frame
    attacked = measured.values(attack.column)
    pgd = measured.pgd_at(attack.eps)
    out = {}
    for key, rows in frame.groups(strategy_order=strategy_order):
        idx = np.concatenate([i for _, i in frame.runs(rows)])
        if step_budget is not None:
            idx = idx[frame.step[idx] <= step_budget]
        has_attack = idx[~np.isnan(attacked[idx])]
        if not len(has_attack):
            continue
        both = has_attack[~np.isnan(pgd[has_attack])]
        out[key] = {"run_id": frame.run_id[both], "step": frame.step[both], "acc": frame.acc[both],
                    "pgd": pgd[both], "attack": attacked[both], "n_attacked": len(has_attack),
                    "attack_images": measured.counts(attack.images_column)[both],
                    "pgd_images": measured.counts("pgd_images")[both]}
    return out


def _images_differ(points: dict[str, np.ndarray]) -> int:
    a, p = points["attack_images"], points["pgd_images"]
    return int(np.sum(np.isfinite(a) & np.isfinite(p) & (a != p)))


def attack_auc_table(
    table: pa.Table | MeasuredTable, kind: str = "hypervolume", step_budget: int | None = None, *,
    strict: bool = False, strategy_order: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per attack x radius x strategy x dataset with attacked points: attack, attack_name, eps,
    eps_label, strategy, dataset, n_attacked, n_points (compared), n_runs, pgd_auc, attack_auc,
    attack_minus_pgd, n_images_differ (module docstring). pgd_auc / attack_auc are None without compared points."""
    check_options(kind, "pooled", step_budget)
    measured = _measured(table, strict)
    out = []
    for attack in attack_columns(measured.table.column_names):
        for (strategy, dataset), p in compared_points(measured, attack, step_budget, strategy_order).items():
            n = len(p["acc"])
            pgd_auc = frontier_auc(np.column_stack([p["acc"], p["pgd"]]), kind) if n else None
            attack_auc = frontier_auc(np.column_stack([p["acc"], p["attack"]]), kind) if n else None
            out.append({
                "attack": attack.slug, "attack_name": attack_name(attack.slug), "eps": attack.eps,
                "eps_label": attack.label, "strategy": strategy, "dataset": dataset,
                "n_attacked": int(p["n_attacked"]), "n_points": n, "n_runs": len(set(p["run_id"])),
                "pgd_auc": pgd_auc, "attack_auc": attack_auc,
                "attack_minus_pgd": attack_auc - pgd_auc if n else None, "n_images_differ": _images_differ(p),
            })
    return out


def masking_table(
    table: pa.Table | MeasuredTable, threshold: float = DEFAULT_MASKING_THRESHOLD, step_budget: int | None = None,
    *, strict: bool = False, strategy_order: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(summary, flagged points). Summary: one row per attack x radius x strategy x dataset with compared
    points: n_points, n_flagged, max_gap, mean_gap, threshold. Flagged: one row per flagged point: attack,
    eps_label, strategy, dataset, run_id, step, pgd_adv_acc, attack_adv_acc, gap (= PGD - attack)."""
    threshold = check_masking_threshold(threshold)
    check_options("hypervolume", "pooled", step_budget)
    measured = _measured(table, strict)
    summary, flagged = [], []
    for attack in attack_columns(measured.table.column_names):
        if attack.slug in NOT_MASKING:
            continue
        for (strategy, dataset), p in compared_points(measured, attack, step_budget, strategy_order).items():
            if not len(p["acc"]):
                continue
            gap = p["pgd"] - p["attack"]
            flags = gap > threshold + _SLACK
            where = {"attack": attack.slug, "attack_name": attack_name(attack.slug), "eps": attack.eps,
                     "eps_label": attack.label, "strategy": strategy, "dataset": dataset}
            summary.append({**where, "n_points": len(gap), "n_flagged": int(flags.sum()),
                            "max_gap": float(gap.max()), "mean_gap": float(gap.mean()), "threshold": threshold,
                            "n_images_differ": _images_differ(p)})
            for i in np.flatnonzero(flags):
                flagged.append({**where, "run_id": str(p["run_id"][i]), "step": int(p["step"][i]),
                                "test_clean_acc": float(p["acc"][i]), "pgd_adv_acc": float(p["pgd"][i]),
                                "attack_adv_acc": float(p["attack"][i]), "gap": float(gap[i])})
    return summary, flagged
