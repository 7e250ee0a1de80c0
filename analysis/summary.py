"""The sweep's summary table: per strategy x dataset, how many trials finished, the best final clean and PGD
accuracy with the hyperparameters that reached them, peaks, the best OOD accuracy and the frontier AUC.

* A run's final point is its last evaluated step; the run is complete when that step reaches its
  ``total_steps``. "Best final" values are taken over the complete runs (over all runs while none is
  complete); ties go to the smaller run id.
* ``peak_acc`` / ``peak_pgd``: maxima over every evaluation point of the group (all runs, all steps).
* ``best_ood``: the highest final ``test_ood_accuracy`` over the same runs as "best final"; NaN when the
  dataset has no OOD split.
* ``frontier_auc``: hypervolume AUC of the group's pooled frontier (`analysis.auc`'s default AUC).
* ``knee_*``: the knee of the group's pooled frontier (`analysis.knee`): its ``run_id``, ``step``, ``lr``,
  ``wd``, ``clean_acc``, ``pgd_acc``. With ``min_acc``, ``floor_*`` the same for the most robust point with
  ``test_clean_acc >= min_acc`` (all None when no point reaches it), and ``floor_min_acc``.

Rows are sorted by dataset, then strategy in the strategy order of `analysis.frame`. The table is cleaned
like every analysis table (`analysis.cleaning`): bad rows are dropped with a `DroppedRowsWarning`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from analysis.cleaning import REQUIRED_COLUMNS, clean_table
from analysis.frame import Frame, strategy_sort_key
from analysis.frontier import hypervolume_auc
from analysis.knee import check_min_acc, selected_points

SUMMARY_COLUMNS = REQUIRED_COLUMNS + ("lr", "weight_decay", "total_steps", "test_ood_accuracy")
_HEADER = ("| dataset | strategy | trials (complete) | best final acc (lr, wd) | best final PGD acc (lr, wd) | "
           "peak acc | peak PGD | best OOD | frontier AUC |")
_RULE = "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"


def sweep_summary(
    table: pa.Table, strategy_order: Sequence[str] | None = None, *, strict: bool = False,
    min_acc: float | None = None,
) -> list[dict[str, Any]]:
    """One row per strategy x dataset (module docstring); [] for a table without rows."""
    min_acc = check_min_acc(min_acc)
    if table.num_rows == 0:
        return []
    clean, _ = clean_table(table, strict=strict, required=SUMMARY_COLUMNS, warn=True)
    frame = Frame.of(clean, extra=("lr", "weight_decay", "total_steps"))
    rows = [{**_group_summary(frame, strategy, dataset, rows), **_selected(frame, rows, min_acc)}
            for (strategy, dataset), rows in frame.groups()]
    return sorted(rows, key=lambda r: (r["dataset"], strategy_sort_key(r["strategy"], strategy_order)))


def _group_summary(frame: Frame, strategy: str, dataset: str, rows: np.ndarray) -> dict[str, Any]:
    lr, wd, total = frame.extra["lr"], frame.extra["weight_decay"], frame.extra["total_steps"]
    finals = [int(idx[-1]) for _, idx in frame.runs(rows)]  # by run id; each run's last evaluated step
    complete = [i for i in finals if frame.step[i] >= total[i]]
    pool = complete or finals
    best_acc = max(pool, key=lambda i: frame.acc[i])  # the first maximum: ties -> smaller run id
    best_pgd = max(pool, key=lambda i: frame.rob[i])
    ood = frame.ood[pool]
    return {
        "strategy": strategy, "dataset": dataset, "trials": len(finals), "complete": len(complete),
        "final_acc": float(frame.acc[best_acc]), "final_acc_lr": lr[best_acc], "final_acc_wd": wd[best_acc],
        "final_pgd": float(frame.rob[best_pgd]), "final_pgd_lr": lr[best_pgd], "final_pgd_wd": wd[best_pgd],
        "peak_acc": float(frame.acc[rows].max()), "peak_pgd": float(frame.rob[rows].max()),
        "best_ood": float(np.nanmax(ood)) if not np.isnan(ood).all() else float("nan"),
        "frontier_auc": hypervolume_auc(np.column_stack([frame.acc[rows], frame.rob[rows]])),
    }


_POINT_FIELDS = {"run_id": "run_id", "step": "step", "lr": "lr", "wd": "weight_decay",
                 "clean_acc": "test_clean_acc", "pgd_acc": "pgd_adv_acc"}


def _selected(frame: Frame, rows: np.ndarray, min_acc: float | None) -> dict[str, Any]:
    """The group's knee as flat ``knee_*`` fields, and with a floor its ``floor_*`` fields."""
    chosen = selected_points(frame, rows, min_acc)
    out = {f"knee_{k}": chosen["knee"][v] for k, v in _POINT_FIELDS.items()}
    if min_acc is not None:
        at = chosen["at_floor"]
        out["floor_min_acc"] = min_acc
        out.update({f"floor_{k}": None if at is None else at[v] for k, v in _POINT_FIELDS.items()})
    return out


def knee_table_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Each row's knee (and, when the rows have them, its most robust point at the accuracy floor) as a
    Markdown table (no trailing newline)."""
    floor = next((r["floor_min_acc"] for r in rows if "floor_min_acc" in r), None)
    header = "| dataset | strategy | knee: clean acc | PGD acc | run | step | lr | wd |"
    if floor is not None:
        header += f" most robust at clean acc >= {floor:.3f}: clean acc | PGD acc | run | step | lr | wd |"
    lines = [header, "|" + " --- |" * (header.count("|") - 1)]
    for r in rows:
        line = f"| {r['dataset']} | {r['strategy']} | " + _point_cells(r, "knee")
        if floor is not None:
            line += " " + (_point_cells(r, "floor") if r.get("floor_run_id") is not None
                           else "no point reaches it | | | | | |")
        lines.append(line)
    return "\n".join(lines)


def _point_cells(r: dict[str, Any], prefix: str) -> str:
    return (f"{r[prefix + '_clean_acc']:.3f} | {r[prefix + '_pgd_acc']:.3f} | {r[prefix + '_run_id']} | "
            f"{r[prefix + '_step']} | {r[prefix + '_lr']:.2g} | {r[prefix + '_wd']:.2g} |")


def summary_table_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of `sweep_summary` as a Markdown table (no trailing newline); NaN shows as nan."""
    lines = [_HEADER, _RULE]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['strategy']} | {r['trials']} ({r['complete']}) | {r['final_acc']:.3f} "
            f"({r['final_acc_lr']:.2g}, {r['final_acc_wd']:.2g}) | {r['final_pgd']:.3f} ({r['final_pgd_lr']:.2g}, "
            f"{r['final_pgd_wd']:.2g}) | {r['peak_acc']:.3f} | {r['peak_pgd']:.3f} | {r['best_ood']:.3f} | "
            f"{r['frontier_auc']:.4f} |")
    return "\n".join(lines)
