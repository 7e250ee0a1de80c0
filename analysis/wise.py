"""WiSE-FT points (`rft interpolate`) in the analysis: marked, and never mixed into a plain number.

Layout (`rft_ray.training.interpolate` writes it): `<store>/interpolated` is a result store of its own, apart
from the runs' files, with one `<run id>.wise-step<step>` file per interpolated checkpoint (`wise_run_id`) and
one row per alpha. Each row is an ordinary EvalRecord of the source run (strategy, dataset, hyperparameters,
trainable parameters) measured by the run's own evaluation on the run's own seeded sets, with `step` = the
checkpoint's step (the training it cost), `wise_alpha` = alpha and `source_run_id` = the run: alpha 1 is the
checkpoint itself, alpha 0 the run's step-0 model.

In the analysis (`analysis.report.analyze`), when the sub-store holds rows: the AUC rows gain `auc_with_wise`
(the same AUC over the same points plus the WiSE-FT points of the group's runs, each counted at its
checkpoint's step for the step budget; per-trial pooling: each run's own points plus its own WiSE-FT points,
the best run's AUC, that run in `wise_best_run_id`, which may differ from the plain `best_run_id`) and
`n_wise_points` beside the plain `auc`, which stays as it was; the frontier figures mark the points (hollow
diamonds) and draw the frontier with them dashed (per-trial: the frontier of `wise_best_run_id`). Nothing else (RQ1, RQ3, knees) sees them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from analysis.axis import select_axis
from analysis.cleaning import REQUIRED_COLUMNS, clean_table, float_column, string_column
from analysis.frame import Frame
from analysis.frontier import frontier_auc
from analysis.models import by_model, models
from analysis.radius import eps_values
from rft_ray.results.store import INTERPOLATED_DIR, WISE_STEP_SUFFIX

WISE_SUBSTORE = INTERPOLATED_DIR  # <store>/interpolated
WISE_COLUMNS = ("wise_alpha", "source_run_id")
_WISE_SUFFIX = WISE_STEP_SUFFIX


def wise_run_id(run_id: str, step: int) -> str:
    """The sub-store's run id of the interpolations of `run_id`'s checkpoint at `step`."""
    return f"{run_id}.wise-step{int(step)}"


def wise_steps(run_ids: list[str], run_id: str) -> dict[int, str]:
    """Of the sub-store's run ids, those of `run_id`'s checkpoints, by step."""
    out = {}
    for name in run_ids:
        match = _WISE_SUFFIX.search(name)
        if match and name[: match.start()] == run_id:
            out[int(match.group(1))] = name
    return out


def wise_root(results: str | os.PathLike) -> str:
    return str(results).rstrip("/") + "/" + WISE_SUBSTORE


def load_wise(results: Any) -> pa.Table | None:
    """The rows of the store's WiSE-FT sub-store; None for a table given directly or a store without them."""
    if isinstance(results, pa.Table):
        return None
    from rft_ray.results.store import ResultStore  # lazy, as analysis.report's loading

    root = wise_root(results)
    if "://" not in root and not Path(root).expanduser().is_dir():
        return None
    table = ResultStore(root).read()
    return table if table.num_rows else None


def clean_wise(wise: pa.Table | None, plain: pa.Table, eps: float | None, strict: bool,
               axis: str = "pgd") -> pa.Table | None:
    """The WiSE-FT rows on the robustness axis (at the radius) the (selected, cleaned) plain table holds, cleaned
    and grouped by model like it; None if none.

    The rows of one checkpoint share its run id and step, so for cleaning each (checkpoint, alpha) is made a run
    of its own (`<run id>@<alpha>`); `source_run_id` ties a row to its run."""
    if wise is None or any(c not in wise.column_names for c in WISE_COLUMNS):
        return None
    radii = eps_values(plain)
    from analysis.cleaning import TableError

    try:
        radius = (radii[0] if len(radii) == 1 else eps) if axis == "pgd" else None
        wise = select_axis(wise, axis, radius)
    except TableError:
        return None  # no interpolation measured at the radius (or on the axis) analysed
    if wise.num_rows == 0:
        return None
    ids = [f"{run}@{alpha!r}" for run, alpha in zip(wise.column("run_id").to_pylist(),
                                                   wise.column("wise_alpha").to_pylist())]
    wise = wise.set_column(wise.column_names.index("run_id"), "run_id", pa.array(ids, pa.string()))
    try:
        clean, _ = clean_table(wise, strict=strict, required=REQUIRED_COLUMNS + WISE_COLUMNS, warn=True)
    except TableError:
        if strict:
            raise
        return None  # every row unusable: as if there were none
    return by_model(clean, models(plain))


def _wise_arrays(wise: pa.Table) -> dict[str, np.ndarray]:
    return {"source": string_column(wise.column("source_run_id")), "strategy": string_column(wise.column("strategy")),
            "dataset": string_column(wise.column("dataset")), "step": float_column(wise.column("step")),
            "acc": float_column(wise.column("test_clean_acc")), "rob": float_column(wise.column("pgd_adv_acc")),
            "alpha": float_column(wise.column("wise_alpha"))}


def add_wise_auc(auc_rows: list[dict[str, Any]], plain: pa.Table, wise: pa.Table, kind: str, pooling: str,
                 step_budget: int | None) -> None:
    """Set `auc_with_wise` and `n_wise_points` of every AUC row (module docstring); `plain` and `wise` cleaned."""
    frame, w = Frame.of(plain), _wise_arrays(wise)
    in_budget = w["step"] <= step_budget if step_budget is not None else np.ones(len(w["step"]), dtype=bool)
    groups = dict(frame.groups())
    for row in auc_rows:
        rows = groups.get((row["strategy"], row["dataset"]), np.array([], dtype=int))
        if step_budget is not None:
            rows = rows[frame.step[rows] <= step_budget]
        per_run = {}
        used = 0
        for run_id, idx in frame.runs(rows):
            mine = in_budget & (w["source"] == run_id)
            used += int(mine.sum())
            per_run[run_id] = np.vstack([np.column_stack([frame.acc[idx], frame.rob[idx]]),
                                         np.column_stack([w["acc"][mine], w["rob"][mine]])])
        if pooling == "pooled":
            row["auc_with_wise"] = frontier_auc(np.vstack(list(per_run.values())) if per_run else np.empty((0, 2)),
                                                kind)
        else:
            aucs = {run_id: frontier_auc(points, kind) for run_id, points in per_run.items()}
            # the first maximum in run-id order, as the plain best run's ties
            best = max(aucs, key=lambda run_id: aucs[run_id], default=None)
            row["auc_with_wise"] = aucs[best] if best is not None else 0.0
            row["wise_best_run_id"] = best
        row["n_wise_points"] = used


def wise_groups(wise: pa.Table, step_budget: int | None) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """(strategy, dataset) -> arrays source (run id), acc, rob, alpha of its WiSE-FT points within the budget."""
    w = _wise_arrays(wise)
    keep = w["step"] <= step_budget if step_budget is not None else np.ones(len(w["step"]), dtype=bool)
    out: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for key in sorted(set(zip(w["strategy"][keep], w["dataset"][keep]))):
        m = keep & (w["strategy"] == key[0]) & (w["dataset"] == key[1])
        out[key] = {name: w[name][m] for name in ("source", "acc", "rob", "alpha")}
    return out


def wise_summary(wise: pa.Table, results: Any) -> dict[str, Any]:
    """What the report says about the WiSE-FT points used."""
    w = _wise_arrays(wise)
    checkpoints = {(s, int(step)) for s, step in zip(w["source"], w["step"])}
    return {"substore": wise_root(results), "n_points": int(len(w["acc"])), "n_checkpoints": len(checkpoints),
            "n_runs": len(set(w["source"])), "alphas": sorted({float(a) for a in w["alpha"]})}
