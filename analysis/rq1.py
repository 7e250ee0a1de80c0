"""RQ1: does robustness peak before clean accuracy converges? Per run, and summarised per strategy x dataset.

Conventions (stated again in the report): per run, robustness peak = max ``pgd_adv_acc`` (earliest step
on ties); final = the run's last evaluated step; drop = peak - final robustness. Accuracy has *converged*
at the first step where ``test_clean_acc >= max(test_clean_acc of the run) - tol`` (default ``tol=0.01``,
one accuracy point; compared with 1e-9 slack so float rounding of the boundary does not matter); the peak
came before convergence when ``peak_step < converged_step`` (strictly). The per-strategy+dataset summary
reports the run with the best final clean accuracy (ties: higher final robustness, then smaller run id)
and, beside it, means over all runs and the number of runs whose peak came before convergence.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from analysis.frame import prepare

_SLACK = 1e-9  # float rounding slack in the convergence test (0.9 - 0.3 > 0.6 in binary)


def rq1_trials(
    table: pa.Table, tol: float = 0.01, *, strict: bool = False, strategy_order: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """One row per run: the robustness peak, final values and convergence step (module docstring)."""
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and 0 <= tol <= 1):
        raise ValueError(f"convergence tolerance must be a number in [0, 1] (accuracy fraction), got {tol!r}")
    frame = prepare(table, strict)
    out = []
    for (strategy, dataset), rows in frame.groups(strategy_order=strategy_order):
        for run_id, idx in frame.runs(rows):
            step, acc, rob = frame.step[idx], frame.acc[idx], frame.rob[idx]
            peak = int(np.argmax(rob))  # first occurrence = earliest step
            converged = int(np.flatnonzero(acc >= acc.max() - tol - _SLACK)[0])
            row = {
                "strategy": strategy, "dataset": dataset, "run_id": run_id, "n_points": int(len(idx)),
                "peak_robustness": float(rob[peak]), "peak_step": int(step[peak]),
                "final_step": int(step[-1]), "final_robustness": float(rob[-1]),
                "final_accuracy": float(acc[-1]), "max_accuracy": float(acc.max()),
                "drop": float(rob[peak] - rob[-1]),
                "converged_step": int(step[converged]),
                "peak_before_convergence": bool(step[peak] < step[converged]),
                # 95% Wilson intervals (analysis.uncertainty) of the peak and final values; None without counts
                "peak_robustness_ci": frame.intervals(int(idx[peak]))["pgd_adv_acc_ci"],
                "final_robustness_ci": frame.intervals(int(idx[-1]))["pgd_adv_acc_ci"],
                "final_accuracy_ci": frame.intervals(int(idx[-1]))["test_clean_acc_ci"],
            }
            first = int(idx[0])
            for key, values in frame.extra.items():
                row[key] = values[first]
            out.append(row)
    return out


def rq1_table(
    table: pa.Table, tol: float = 0.01, *, strict: bool = False, strategy_order: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Per strategy+dataset: the best run by final clean accuracy (its RQ1 numbers, `run_id`), and the
    means over all runs (`mean_*`) and how many runs peaked before accuracy converged."""
    trials = rq1_trials(table, tol, strict=strict, strategy_order=strategy_order)
    out = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for t in trials:
        groups.setdefault((t["strategy"], t["dataset"]), []).append(t)
    for (strategy, dataset), runs in groups.items():
        best = sorted(runs, key=lambda t: (-t["final_accuracy"], -t["final_robustness"], t["run_id"]))[0]
        row = dict(best)
        row.pop("n_points")
        row.update({
            "n_runs": len(runs),
            "n_points": sum(t["n_points"] for t in runs),
            "mean_peak_robustness": float(np.mean([t["peak_robustness"] for t in runs])),
            "mean_final_robustness": float(np.mean([t["final_robustness"] for t in runs])),
            "mean_drop": float(np.mean([t["drop"] for t in runs])),
            "mean_final_accuracy": float(np.mean([t["final_accuracy"] for t in runs])),
            "n_peak_before_convergence": int(sum(t["peak_before_convergence"] for t in runs)),
            "tolerance": float(tol),
        })
        out.append(row)
    return out
