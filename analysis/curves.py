"""Robustness curves: accuracy against the attack radius eps, per strategy and dataset, at one step.

Conventions (stated again in the report):

* the point of a run: its last evaluated step (<= ``step`` when one is chosen); runs without such a point
  are left out;
* sources: ``clean`` (test_clean_acc, drawn at eps 0), ``pgd`` (training-time PGD: pgd_adv_acc at the row's
  pgd_eps and every pgd_adv_acc/<eps> column) and each stronger attack's ``<slug>_adv_acc/<eps>`` columns
  (`analysis.measured`); a radius appears where the point measured it;
* per strategy x dataset the curve is the run with the best clean accuracy at its point (ties: higher
  pgd_adv_acc, then smaller run id), as RQ1 picks its run; ``mean_acc`` beside it averages the runs that
  measured that source and radius at their point (``n_runs`` of them).

Rows come by strategy (the strategy order of `analysis.frame`), dataset, then source (clean, pgd, the
attacks in `analysis.measured.ATTACK_NAMES` order) and eps ascending.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from analysis.measured import (
    PGD_SOURCE,
    MeasuredTable,
    attack_columns,
    attack_name,
    attack_sort_key,
)
from rft_ray.results.record import eps_label

CLEAN_SOURCE = "clean"


def _source_key(source: str, eps: float) -> tuple:
    if source == CLEAN_SOURCE:
        return (0, (0, ""), eps)
    return (1 if source == PGD_SOURCE else 2, attack_sort_key(source), eps)


def _measurements(measured: MeasuredTable) -> dict[tuple[str, float], np.ndarray]:
    """(source, eps) -> accuracy per row (NaN where not measured)."""
    out = {(CLEAN_SOURCE, 0.0): measured.frame.acc}
    for radius in measured.pgd_radii():
        out[(PGD_SOURCE, radius)] = measured.pgd_at(radius)
    for attack in attack_columns(measured.table.column_names):
        out[(attack.slug, attack.eps)] = measured.values(attack.column)
    return out


def robustness_curves(
    table: pa.Table | MeasuredTable, step: int | None = None, *, strict: bool = False,
    strategy_order: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per strategy x dataset x source x eps (module docstring): strategy, dataset, source,
    source_name, eps, eps_label, run_id and step (the selected run's point), acc (None where that run did not
    measure it), mean_acc, n_runs."""
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0):
        raise ValueError(f"curve step must be a whole number >= 0 or None (each run's final step), got {step!r}")
    measured = table if isinstance(table, MeasuredTable) else MeasuredTable.of(table, strict=strict)
    frame = measured.frame
    values = _measurements(measured)
    out = []
    for (strategy, dataset), rows in frame.groups(strategy_order=strategy_order):
        points = measured.point_rows(rows, step)
        if not points:
            continue
        chosen_run = min(points, key=lambda r: (-frame.acc[points[r]], -frame.rob[points[r]], r))
        chosen = points[chosen_run]
        idx = np.array(sorted(points.values()))
        for (source, eps), acc in sorted(values.items(), key=lambda item: _source_key(*item[0])):
            at_points = acc[idx]
            measured_here = at_points[~np.isnan(at_points)]
            if not len(measured_here):
                continue
            out.append({
                "strategy": strategy, "dataset": dataset, "source": source,
                "source_name": "clean accuracy" if source == CLEAN_SOURCE else attack_name(source),
                "eps": float(eps), "eps_label": "0" if source == CLEAN_SOURCE else eps_label(eps),
                "run_id": chosen_run, "step": int(frame.step[chosen]),
                "acc": None if np.isnan(acc[chosen]) else float(acc[chosen]),
                "mean_acc": float(measured_here.mean()), "n_runs": len(measured_here),
            })
    return out


def has_curve(rows: list[dict[str, Any]]) -> bool:
    """Whether the curves hold more than one robust measurement (a radius or an attack beyond one PGD radius)."""
    return len({(r["source"], r["eps"]) for r in rows if r["source"] != CLEAN_SOURCE}) > 1
