"""What a trial reports at an evaluation point, to Ray Tune and to MLflow alike: the record's metrics, its
step, and the sweep's objectives computed from the records so far. The live path (the Train worker) and
the back-fill (from the result store) compute it with these same functions."""
from __future__ import annotations

import math
import re
import time
from typing import Any

from rft_ray.config.metrics import (
    PARETO_AUC,
    VALIDATION_COLUMNS,
    missing_validation,
    reported_column,
    selection_column,
)
from rft_ray.config.search import Objective
from rft_ray.results.record import EvalRecord

# Keys Tune adds to every result, and the record's bookkeeping: not metrics of the run.
TUNE_KEYS = frozenset({
    "timestamp", "checkpoint_dir_name", "done", "training_iteration", "trial_id", "date", "time_this_iter_s",
    "time_total_s", "pid", "hostname", "node_ip", "config", "time_since_restore", "iterations_since_restore",
    "experiment_tag", "checkpoint_path", "should_checkpoint", "step", "total_steps", "trainable_params",
    "total_params", "measured_at",
})


def objective_values(records: list[EvalRecord], objective: dict[str, Any], select_on: str) -> dict[str, float]:
    """One objective of a trial from its records so far (`final`, `best`, or the trial's Pareto AUC), read on
    `select_on`'s split: {its result key: the value the search reads} plus, where the objective has a test
    counterpart and selects on validation, {its reported key: the test value at the point it chose}."""
    target = Objective(**{k: objective[k] for k in ("metric", "mode", "reduce") if k in objective})
    key, reported = target.key_on(select_on), target.reported_key(select_on)
    if target.metric == PARETO_AUC:
        from analysis.frontier import hypervolume_auc

        out = {key: hypervolume_auc([(_metric(r, selection_column("test_clean_acc", select_on)),
                                      _metric(r, selection_column("pgd_adv_acc", select_on))) for r in records])}
        if reported is not None and reported != key:
            out[reported] = hypervolume_auc([(r.test_clean_acc, r.pgd_adv_acc) for r in records])
        return out
    values = [_metric(r, selection_column(target.metric, select_on)) for r in records]
    chosen = len(values) - 1
    if target.reduce == "best":
        finite = [i for i, v in enumerate(values) if math.isfinite(v)]
        if not finite:
            return {key: float("nan"), **({reported: float("nan")} if reported and reported != key else {})}
        sign = 1 if target.mode == "max" else -1
        chosen = max(finite, key=lambda i: (sign * values[i], -i))  # the earliest best point
    out = {key: values[chosen]}
    if reported is not None and reported != key:
        out[reported] = _metric(records[chosen], reported_column(target.metric))
    return out


def objective_key(objective: dict[str, Any], select_on: str) -> str:
    """The result key of an objective given as a plain dict (as trials receive it): `Objective.key_on`."""
    return Objective(**{k: objective[k] for k in ("metric", "mode", "reduce") if k in objective}).key_on(select_on)


def _metric(record: EvalRecord, metric: str) -> float:
    values = record.metrics()
    if metric in values:
        return float(values[metric])
    if metric in VALIDATION_COLUMNS.values():
        value = getattr(record, metric, None)
        if value is None:
            raise missing_validation(f"run {record.run_id} (step {record.step})", [metric], "search.select_on:")
        return float(value)
    domains = ", ".join(sorted(record.ood_acc)) or "none"
    raise ValueError(f"objective metric {metric!r} is not measured by this run (OOD domains: {domains})")


def trial_metrics(records: list[EvalRecord], objectives: list[dict[str, Any]], select_on: str) -> dict[str, Any]:
    """What a trial reports at an evaluation point: the record's metrics, its step, the objectives read on
    `select_on` (with the chosen points' test values) and the knee of its points so far."""
    last = records[-1]
    out: dict[str, Any] = dict(last.metrics())
    out.update(step=int(last.step), total_steps=int(last.total_steps), trainable_params=int(last.trainable_params),
               total_params=int(last.total_params))
    if last.measured_at is not None:
        out["measured_at"] = float(last.measured_at)  # MLflow's time of the point (bookkeeping, not a metric)
    for objective in objectives:
        out.update(objective_values(records, objective, select_on))
    out.update(knee_metrics(records, select_on))
    return out


def knee_metrics(records: list[EvalRecord], select_on: str) -> dict[str, float]:
    """The knee of the trial's points so far (`analysis.knee`), chosen on `select_on`'s (clean, PGD) points:
    ``knee_step``, and its test ``knee_clean_acc``, ``knee_pgd_acc``; chosen on validation also the values it
    was chosen on, ``knee_val_clean_acc``, ``knee_val_pgd_acc``. So a trial run's last logged values are the
    knee of its whole run. Points whose accuracies are not fractions in [0, 1] (a failed or missing measurement)
    take no part; {} when none is left."""
    from analysis.knee import knee_index

    acc_column, rob_column = (selection_column(c, select_on) for c in ("test_clean_acc", "pgd_adv_acc"))

    def value(record: EvalRecord, column: str) -> float:
        number = getattr(record, column, None)
        return float("nan") if number is None else float(number)

    usable = [r for r in records if 0 <= value(r, acc_column) <= 1 and 0 <= value(r, rob_column) <= 1]
    found = knee_index([value(r, acc_column) for r in usable], [value(r, rob_column) for r in usable],
                       [r.step for r in usable]) if usable else None
    if found is None:
        return {}
    knee = usable[found[0]]
    out = {"knee_step": float(knee.step), "knee_clean_acc": float(knee.test_clean_acc),
           "knee_pgd_acc": float(knee.pgd_adv_acc)}
    if select_on == "validation":
        out.update(knee_val_clean_acc=value(knee, acc_column), knee_val_pgd_acc=value(knee, rob_column))
    return out


def measured_ms(measured_at: float | None) -> int:
    """MLflow's time (ms) of a point's metrics: when it was measured; now for points stored before that was kept."""
    return int((time.time() if measured_at is None else float(measured_at)) * 1000)


def numeric_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The run's metrics in a Tune result: numbers that are not Tune's bookkeeping."""
    out = {}
    for key, value in result.items():
        if key in TUNE_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[key] = float(value)
    return out


def loggable(metrics: dict[str, float]) -> dict[str, float]:
    """MLflow refuses infinite values; NaN it keeps."""
    return {k: v for k, v in metrics.items() if not math.isinf(v)}


# A sweep summary row's values that the parent run carries per group: name in MLflow -> the row's key. The
# drop is computed from two of them: how much robustness the best final point lost against the group's peak.
GROUP_METRICS = {"frontier_auc": "frontier_auc", "best_final_acc": "final_acc", "best_final_pgd_acc": "final_pgd",
                 "peak_pgd_acc": "peak_pgd"}


# Chosen on validation (search.select_on), the validation values the best final points were chosen on.
GROUP_VALIDATION_METRICS = {"best_final_val_acc": "final_acc_val", "best_final_val_pgd_acc": "final_pgd_val"}
KNEE_METRICS = ("knee_clean_acc", "knee_pgd_acc", "knee_step", "knee_val_clean_acc", "knee_val_pgd_acc")
# With search.min_acc: the most robust point at that clean-accuracy floor; absent where no point reaches it.
FLOOR_METRICS = ("floor_clean_acc", "floor_pgd_acc", "floor_step", "floor_val_clean_acc", "floor_val_pgd_acc")


def group_metrics(rows: list[dict[str, Any]], groups: list[Any] = ()) -> dict[str, float]:
    """The sweep summary's rows (`analysis.summary.sweep_summary`) as parent-run metrics `<group>/<name>`
    (`frontier_auc`, `best_final_acc`, `best_final_pgd_acc`, `peak_pgd_acc`, `pgd_drop` = peak - best final
    PGD accuracy, and from rows that carry the knee of the group's pooled frontier `knee_clean_acc`,
    `knee_pgd_acc`, `knee_step`, and from rows with an accuracy floor (search.min_acc) whose group reaches it
    `floor_clean_acc`, `floor_pgd_acc`, `floor_step`), so sweeps compare side by side in MLflow. Rows chosen on
    validation (search.select_on) carry the chosen points' test values under these names and the validation
    values they were chosen on as `best_final_val_acc`, `best_final_val_pgd_acc`, `knee_val_clean_acc`,
    `knee_val_pgd_acc`, `floor_val_clean_acc`, `floor_val_pgd_acc`; rows with the frontier AUC's 95% interval add
    `frontier_auc_lo`, `frontier_auc_hi`. A row's group
    is the sweep's group of its strategy and dataset, else `<strategy>-<dataset>`; characters MLflow refuses in
    names become `_`."""
    names = {(g.strategy, g.dataset): g.name for g in groups}
    out: dict[str, float] = {}
    for row in rows:
        name = names.get((row["strategy"], row["dataset"]), f"{row['strategy']}-{row['dataset']}")
        name = re.sub(r"[^\w.\-]", "_", name)
        values = {key: float(row[column]) for key, column in GROUP_METRICS.items()}
        values["pgd_drop"] = values["peak_pgd_acc"] - values["best_final_pgd_acc"]
        values.update({key: float(row[column]) for key, column in GROUP_VALIDATION_METRICS.items()
                       if row.get(column) is not None})
        values.update({key: float(row[key]) for key in KNEE_METRICS + FLOOR_METRICS if row.get(key) is not None})
        if row.get("frontier_auc_ci") is not None:  # the paired bootstrap's 95% interval (analysis.bootstrap)
            values["frontier_auc_lo"], values["frontier_auc_hi"] = map(float, row["frontier_auc_ci"])
        out.update({f"{name}/{key}": value for key, value in values.items()})
    return loggable(out)
