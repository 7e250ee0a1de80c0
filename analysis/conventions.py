"""The conventions of an analysis in words: stored in analysis.json and stated in the report, so that every
number can be read without the code."""
from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from rft_ray.results.record import OOD_IMAGES_PREFIX, VALIDATION_COUNTS

# The record's count of images behind each metric (rft_ray.results.record.EvalRecord).
COUNT_COLUMNS = {"train_clean_acc": "train_images", "test_clean_acc": "test_images", "pgd_adv_acc": "pgd_images",
                 **VALIDATION_COUNTS}

_AUC = {
    "hypervolume": "hypervolume: area of [0,1]^2 dominated by the Pareto frontier of the "
    "(accuracy, robustness) = (test_clean_acc, pgd_adv_acc) points, reference point (0, 0) "
    "(the staircase under the frontier)",
    "trapezoid": "trapezoid: area under the Pareto frontier joined by straight lines (accuracy "
    "ascending), closed horizontally from the leftmost point to the robustness axis and vertically from "
    "the rightmost point down to the accuracy axis; unlike the hypervolume, adding a non-dominated point "
    "can lower it",
}
_POOLING = {
    "pooled": "pooled: a strategy's frontier on a dataset pools every evaluation point of every run of "
    "that strategy on that dataset (all steps, all hyperparameters)",
    "per_trial": "per trial: one frontier per run; the table reports the best run's AUC per "
    "strategy and dataset (auc_trial_mean: mean over its runs)",
}


def conventions(kind: str, pooling: str, step_budget: int | None, tol: float) -> dict[str, Any]:
    """Each convention of an analysis with these options, by name (analysis.json's "conventions")."""
    budget = f"only evaluation points with step <= {step_budget}" if step_budget is not None else "all steps"
    return {
        "auc_kind": kind,
        "auc_definition": _AUC[kind],
        "pooling": pooling,
        "pooling_definition": _POOLING[pooling],
        "step_budget": step_budget,
        "step_budget_definition": budget,
        "pct_above_average": "(AUC - mean AUC of all strategies on the dataset) / that mean * 100; "
        "undefined (null) when that mean is 0; best = highest AUC on the dataset (ties all marked)",
        "trainable_params": "median over the group's runs of each run's trainable_params",
        "convergence": f"accuracy has converged at the first evaluated step where test_clean_acc >= (the run's "
        f"maximum test_clean_acc) - {tol:g} (tolerance {tol:g} = {tol * 100:g} percentage points; 1e-9 slack for "
        "float rounding); the "
        "robustness peak (max pgd_adv_acc, earliest step on ties) came before convergence when its step is "
        "strictly smaller",
        "rq1_summary": "RQ1 is computed on each run's own curve; per strategy and dataset the table shows the "
        "run with the best final test_clean_acc (ties: higher final robustness, then smaller run id), next to "
        "means over all its runs and the number of runs whose peak came before convergence; final = the "
        "run's last evaluated step, drop = peak - final robustness",
        "rq3": "Pearson and Spearman (average ranks for ties) correlations over evaluation points, all runs and "
        "steps of the group; points without test_ood_accuracy (datasets without an OOD split) are left out of "
        "the OOD correlation; undefined (NaN / null) when a column is constant or fewer than 2 points",
        "step_axis": "figures plot step + 1 on a log-scaled axis, so step 0 appears at x = 1",
        "undefined_values": "NaN in tables, null in JSON",
    }


def _count_range(table: pa.Table, column: str) -> str | None:
    if column not in table.column_names:
        return None
    values = table.column(column).drop_null()
    if len(values) == 0:
        return None
    low, high = pc.min(values).as_py(), pc.max(values).as_py()
    missing = table.num_rows - len(values)
    text = f"{low}" if low == high else f"{low}-{high}"
    return text + (f" ({missing} point(s) without a count)" if missing else "")


def sample_sizes(table: pa.Table) -> str:
    """How many images each metric was measured on, as the results record it (a range when runs differ)."""
    parts = [f"{metric} on {count}" for metric, column in COUNT_COLUMNS.items()
             if (count := _count_range(table, column)) is not None]
    domains = sorted(name[len(OOD_IMAGES_PREFIX):] for name in table.column_names if name.startswith(OOD_IMAGES_PREFIX))
    if domains:
        parts.append("OOD " + ", ".join(f"{d} on {_count_range(table, OOD_IMAGES_PREFIX + d) or 'unknown'}"
                                        for d in domains))
    if not parts:
        return "not recorded (results written before the counts were stored)"
    return "; ".join(parts) + (" images (seeded, class-stratified subsets; PGD's a subset of the test images, "
                               "validation PGD's a subset of the validation images)")
