"""The strategy x dataset AUC table (area under each Pareto frontier), per-run AUCs, and trainable
parameters against AUC.

Conventions (stated again in the report):

* AUC pooling ``"pooled"`` (default): a strategy's frontier on a dataset pools every evaluation point of
  every run of that strategy on that dataset (all steps, all hyperparameters). ``"per_trial"``: one
  frontier per run; the group's ``auc`` is the BEST run's AUC (``best_run_id``); the mean over runs is
  given as ``auc_trial_mean``. ``step_budget=N`` keeps only points with ``step <= N``.
* "% above average" = (auc - mean auc of all strategies on the dataset) / that mean * 100; NaN
  (JSON null) when the mean is 0. ``is_best`` marks the highest AUC per dataset (ties all marked).
* ``trainable_params`` of a group: median over its runs of each run's largest value (lp_ft rows carry the
  count of their phase, the head alone while probing; a run is described by the larger set it trains).

Rows come in the strategy order of `analysis.frame` (``strategy_order``), datasets sorted.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from analysis.correlation import correlation
from analysis.frame import Frame, prepare
from analysis.frontier import AUC_KINDS, frontier_auc

POOLINGS: tuple[str, ...] = ("pooled", "per_trial")


def check_options(kind: str, pooling: str, step_budget: int | None) -> None:
    """ValueError naming an unknown AUC kind or pooling, or a step budget that is not a whole number >= 0."""
    if kind not in AUC_KINDS:
        raise ValueError(f"unknown AUC kind {kind!r}; choose one of {', '.join(AUC_KINDS)}")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    if step_budget is not None and (
        isinstance(step_budget, bool) or not isinstance(step_budget, (int, np.integer)) or step_budget < 0
    ):
        raise ValueError(f"step_budget must be a whole number >= 0 or None, got {step_budget!r}")


def trial_aucs(
    table: pa.Table, *, kind: str = "hypervolume", step_budget: int | None = None, strict: bool = False,
    strategy_order: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per run: strategy, dataset, run_id, auc, n_points (points with step <= step_budget)."""
    check_options(kind, "per_trial", step_budget)
    frame = prepare(table, strict)
    out = []
    for (strategy, dataset), rows in frame.groups(strategy_order=strategy_order):
        for run_id, idx in frame.runs(rows):
            if step_budget is not None:
                idx = idx[frame.step[idx] <= step_budget]
            points = np.column_stack([frame.acc[idx], frame.rob[idx]])
            out.append({"strategy": strategy, "dataset": dataset, "run_id": run_id,
                        "auc": frontier_auc(points, kind), "n_points": int(len(idx))})
    return out


def auc_table(
    table: pa.Table,
    kind: str = "hypervolume",
    pooling: str = "pooled",
    step_budget: int | None = None,
    *,
    strict: bool = False,
    strategy_order: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Strategy x dataset AUC rows (long form): strategy, dataset, auc, pct_above_average, is_best,
    n_runs, n_points, trainable_params, best_run_id and auc_trial_mean (per-trial pooling only, else None)."""
    check_options(kind, pooling, step_budget)
    frame = prepare(table, strict)
    rows_out = [_group_auc(frame, strategy, dataset, rows, kind, pooling, step_budget)
                for (strategy, dataset), rows in frame.groups(strategy_order=strategy_order)]
    _compare_within_datasets(rows_out)
    keys = ("strategy", "dataset", "auc", "pct_above_average", "is_best", "n_runs", "n_points",
            "trainable_params", "best_run_id", "auc_trial_mean", "dataset_mean_auc")
    return [{k: r[k] for k in keys} for r in rows_out]


def _group_auc(frame: Frame, strategy: str, dataset: str, rows: np.ndarray, kind: str, pooling: str,
               step_budget: int | None) -> dict[str, Any]:
    """One group's AUC row, before the comparison with the other strategies on the dataset."""
    rows_used = rows[frame.step[rows] <= step_budget] if step_budget is not None else rows
    runs = frame.runs(rows_used)
    row = {"strategy": strategy, "dataset": dataset, "n_runs": len(runs), "n_points": int(len(rows_used)),
           "trainable_params": _median_params(frame, rows), "best_run_id": None, "auc_trial_mean": None}
    if pooling == "pooled":
        row["auc"] = frontier_auc(np.column_stack([frame.acc[rows_used], frame.rob[rows_used]]), kind)
        return row
    per_run = [(frontier_auc(np.column_stack([frame.acc[idx], frame.rob[idx]]), kind), run_id) for run_id, idx in runs]
    if per_run:
        best = sorted(per_run, key=lambda t: (-t[0], t[1]))[0]  # ties: smaller run id
        row["auc"], row["best_run_id"] = best
        row["auc_trial_mean"] = float(np.mean([a for a, _ in per_run]))
    else:
        row["auc"] = 0.0
    return row


def _compare_within_datasets(rows: list[dict[str, Any]]) -> None:
    """Set pct_above_average, is_best and dataset_mean_auc of every row, per dataset."""
    for dataset in sorted({r["dataset"] for r in rows}):
        group = [r for r in rows if r["dataset"] == dataset]
        aucs = np.array([r["auc"] for r in group])
        mean, best = float(aucs.mean()), float(aucs.max())
        for r in group:
            r["pct_above_average"] = (r["auc"] - mean) / mean * 100.0 if mean > 0 else float("nan")
            r["is_best"] = bool(math.isclose(r["auc"], best, rel_tol=1e-12, abs_tol=1e-12))
            r["dataset_mean_auc"] = mean


def _median_params(frame: Frame, rows: np.ndarray) -> int | float | None:
    """Median over the group's runs of each run's largest trainable-parameter count. The maximum, not the
    median of a run's rows: lp_ft rows carry the count of their phase (the head alone while probing), and the
    run trains the larger set; for every other strategy all of a run's rows carry the same count."""
    if frame.params is None:
        return None
    per_run = []
    for _, idx in frame.runs(rows):
        values = frame.params[idx]
        values = values[~np.isnan(values)]
        if len(values):
            per_run.append(float(np.max(values)))
    if not per_run:
        return None
    med = float(np.median(per_run))
    return int(med) if med.is_integer() else med


def params_vs_auc(auc_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset: correlation of trainable parameters with AUC across strategies (rows of `auc_table`)."""
    out = []
    for dataset in sorted({r["dataset"] for r in auc_rows}):
        rows = [r for r in auc_rows if r["dataset"] == dataset and r["trainable_params"] is not None]
        c = correlation([r["trainable_params"] for r in rows], [r["auc"] for r in rows], "trainable_params", "AUC")
        out.append({"dataset": dataset, "n_strategies": c["n"], "pearson": c["pearson"],
                    "spearman": c["spearman"], "note": c["note"]})
    return out
