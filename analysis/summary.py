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
  clean accuracy ``>= min_acc`` (all None when no point reaches it), and ``floor_min_acc``.

**Which split** (``select_on``, `analysis.selection`). "Best final", ``best_ood``, the knee and the floor point
are selections: on validation (the default) the runs and points are chosen on ``val_clean_acc``,
``val_pgd_adv_acc``, ``val_ood_accuracy`` (and the floor is on ``val_clean_acc``); the values in ``final_acc``,
``final_pgd``, ``best_ood``, ``knee_clean_acc`` ... are the chosen ones' test values, and ``*_val`` /
``knee_val_*`` / ``floor_val_*`` the validation values they were chosen on. ``peak_*`` and ``frontier_auc``
choose nothing: they describe the test points, as the paper's. Each row says its ``select_on``.

**Intervals.** Every accuracy ``x`` above has ``x_ci``: its 95% Wilson interval ([lo, hi], None where the
results did not record the count; `analysis.uncertainty`) from the images behind it: ``test_images`` for clean
test accuracy, ``pgd_images`` for PGD accuracy, the sum of the ``ood_images/<domain>`` counts for the pooled OOD
accuracy, and ``val_images``, ``val_pgd_images``, ``val_ood_images`` for the validation values. The tables print
each as ``value [lo, hi]``.

Rows are sorted by dataset, then strategy in the strategy order of `analysis.frame`. The table is cleaned
like every analysis table (`analysis.cleaning`): bad rows are dropped with a `DroppedRowsWarning`.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from analysis.cleaning import REQUIRED_COLUMNS, clean_table, float_column
from analysis.frame import Frame, extra_count, strategy_sort_key
from analysis.frontier import hypervolume_auc
from analysis.knee import check_min_acc, selected_points
from analysis.selection import (
    CHOSEN_ACC_IMAGES,
    CHOSEN_COUNTS,
    CHOSEN_ROB_IMAGES,
    REPORTED_ACC,
    REPORTED_COLUMNS,
    REPORTED_ROB,
    selection_view,
)
from analysis.uncertainty import interval, with_interval
from rft_ray.config.metrics import OOD_IMAGES_PREFIX, VALIDATION_COLUMNS, selection_label

SUMMARY_COLUMNS = REQUIRED_COLUMNS + ("lr", "weight_decay", "total_steps", "test_ood_accuracy")
_HEADER = ("| dataset | strategy | trials (complete) | best final acc (lr, wd) | best final PGD acc (lr, wd) | "
           "peak acc | peak PGD | best OOD | frontier AUC |")
_VAL_HEADER = ("| dataset | strategy | trials (complete) | best final test acc (val acc it was chosen on) (lr, wd) | "
               "best final test PGD acc (val PGD) (lr, wd) | peak test acc | peak test PGD | best test OOD (val OOD) | "
               "test frontier AUC |")
_RULE = "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"


def sweep_summary(
    table: pa.Table, strategy_order: Sequence[str] | None = None, *, strict: bool = False,
    min_acc: float | None = None, select_on: str = "validation",
) -> list[dict[str, Any]]:
    """One row per strategy x dataset (module docstring), its selections made on `select_on`'s split; [] for a
    table without rows. SelectionError for validation when the table (or a group) has no validation metrics."""
    min_acc = check_min_acc(min_acc)
    if table.num_rows == 0:
        return []
    clean, _ = clean_table(table, strict=strict, required=SUMMARY_COLUMNS, warn=True)
    clean = _with_ood_count(clean)
    tests = Frame.of(clean, extra=())
    view = selection_view(clean, select_on, what="the sweep's results", option="search.select_on:")
    chosen = Frame.of(view, extra=("lr", "weight_decay", "total_steps", "test_ood_accuracy", _OOD_IMAGES,
                                   VALIDATION_COLUMNS["test_ood_accuracy"], "val_ood_images")
                      + REPORTED_COLUMNS + CHOSEN_COUNTS)
    chosen_rows = dict(chosen.groups())
    rows = [{**_described(tests, strategy, dataset, rows), **_group_summary(chosen, chosen_rows[(strategy, dataset)]),
             **_selected(chosen, chosen_rows[(strategy, dataset)], min_acc), "select_on": select_on}
            for (strategy, dataset), rows in tests.groups()]
    return sorted(rows, key=lambda r: (r["dataset"], strategy_sort_key(r["strategy"], strategy_order)))


_OOD_IMAGES = "test_ood_images"  # the images behind test_ood_accuracy: every domain's ood_images/<domain>


def _with_ood_count(table: pa.Table) -> pa.Table:
    """The table with the pooled OOD accuracy's image count (NaN where no domain recorded one)."""
    columns = [float_column(table.column(c)) for c in table.column_names if c.startswith(OOD_IMAGES_PREFIX)]
    total = np.nansum(columns, axis=0) if columns else np.zeros(table.num_rows)
    counted = np.any(~np.isnan(columns), axis=0) if columns else np.zeros(table.num_rows, bool)
    return table.append_column(_OOD_IMAGES, pa.array(np.where(counted, total, np.nan), type=pa.float64()))


def _described(frame: Frame, strategy: str, dataset: str, rows: np.ndarray) -> dict[str, Any]:
    """What describes the group's test points and chooses nothing (the paper's peaks and frontier AUC)."""
    peak_acc, peak_pgd = rows[np.argmax(frame.acc[rows])], rows[np.argmax(frame.rob[rows])]
    return {"strategy": strategy, "dataset": dataset,
            "peak_acc": float(frame.acc[peak_acc]), "peak_pgd": float(frame.rob[peak_pgd]),
            "peak_acc_ci": frame.intervals(peak_acc)["test_clean_acc_ci"],
            "peak_pgd_ci": frame.intervals(peak_pgd)["pgd_adv_acc_ci"],
            "frontier_auc": hypervolume_auc(np.column_stack([frame.acc[rows], frame.rob[rows]]))}


def _group_summary(frame: Frame, rows: np.ndarray) -> dict[str, Any]:
    """The best final points, chosen on the frame's acc/rob (validation or test) and reported on test."""
    extra = frame.extra
    lr, wd, total = extra["lr"], extra["weight_decay"], extra["total_steps"]
    validation = REPORTED_ACC in extra
    test_acc = np.asarray(extra[REPORTED_ACC], float) if validation else frame.acc
    test_rob = np.asarray(extra[REPORTED_ROB], float) if validation else frame.rob
    test_ood = _floats(extra.get("test_ood_accuracy"), len(frame.step))
    chosen_ood = _floats(extra.get(VALIDATION_COLUMNS["test_ood_accuracy"]), len(frame.step)) if validation \
        else test_ood
    finals = [int(idx[-1]) for _, idx in frame.runs(rows)]  # by run id; each run's last evaluated step
    complete = [i for i in finals if frame.step[i] >= total[i]]
    pool = complete or finals
    best_acc = max(pool, key=lambda i: frame.acc[i])  # the first maximum: ties -> smaller run id
    best_pgd = max(pool, key=lambda i: frame.rob[i])
    with_ood = [i for i in pool if not np.isnan(chosen_ood[i])]
    best_ood = max(with_ood, key=lambda i: chosen_ood[i]) if with_ood else None
    out = {
        "trials": len(finals), "complete": len(complete),
        "final_acc": float(test_acc[best_acc]), "final_acc_lr": lr[best_acc], "final_acc_wd": wd[best_acc],
        "final_pgd": float(test_rob[best_pgd]), "final_pgd_lr": lr[best_pgd], "final_pgd_wd": wd[best_pgd],
        "best_ood": float("nan") if best_ood is None else float(test_ood[best_ood]),
        "final_acc_ci": frame.intervals(best_acc, acc=test_acc[best_acc])["test_clean_acc_ci"],
        "final_pgd_ci": frame.intervals(best_pgd, rob=test_rob[best_pgd])["pgd_adv_acc_ci"],
        "best_ood_ci": None if best_ood is None else interval(test_ood[best_ood],
                                                              extra_count(extra, _OOD_IMAGES, best_ood)),
    }
    if validation:
        out.update(final_acc_val=float(frame.acc[best_acc]), final_pgd_val=float(frame.rob[best_pgd]),
                   best_ood_val=float("nan") if best_ood is None else float(chosen_ood[best_ood]),
                   final_acc_val_ci=interval(frame.acc[best_acc], extra_count(extra, CHOSEN_ACC_IMAGES, best_acc)),
                   final_pgd_val_ci=interval(frame.rob[best_pgd], extra_count(extra, CHOSEN_ROB_IMAGES, best_pgd)),
                   best_ood_val_ci=None if best_ood is None else interval(
                       chosen_ood[best_ood], extra_count(extra, "val_ood_images", best_ood)))
    return out


def _floats(values: list | None, n: int) -> np.ndarray:
    if values is None:
        return np.full(n, np.nan)
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


_POINT_FIELDS = {"run_id": "run_id", "step": "step", "lr": "lr", "wd": "weight_decay",
                 "clean_acc": "test_clean_acc", "pgd_acc": "pgd_adv_acc",
                 "clean_acc_ci": "test_clean_acc_ci", "pgd_acc_ci": "pgd_adv_acc_ci"}


_VALIDATION_FIELDS = {"val_clean_acc": "val_clean_acc", "val_pgd_acc": "val_pgd_adv_acc",
                      "val_clean_acc_ci": "val_clean_acc_ci", "val_pgd_acc_ci": "val_pgd_adv_acc_ci"}


def _selected(frame: Frame, rows: np.ndarray, min_acc: float | None) -> dict[str, Any]:
    """The group's knee as flat ``knee_*`` fields, and with a floor its ``floor_*`` fields (chosen on
    validation: also ``knee_val_clean_acc``, ``knee_val_pgd_acc`` and the floor's)."""
    chosen = selected_points(frame, rows, min_acc)
    fields = {**_POINT_FIELDS, **(_VALIDATION_FIELDS if REPORTED_ACC in frame.extra else {})}
    out = {f"knee_{k}": chosen["knee"][v] for k, v in fields.items()}
    if min_acc is not None:
        at = chosen["at_floor"]
        out["floor_min_acc"] = min_acc
        out.update({f"floor_{k}": None if at is None else at[v] for k, v in fields.items()})
    return out


def knee_table_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Each row's knee (and, when the rows have them, its most robust point at the accuracy floor) as a
    Markdown table (no trailing newline)."""
    floor = next((r["floor_min_acc"] for r in rows if "floor_min_acc" in r), None)
    validation = _on_validation(rows)
    values = "val clean acc | val PGD acc | test clean acc | test PGD acc" if validation else "clean acc | PGD acc"
    header = f"| dataset | strategy | knee: {values} | run | step | lr | wd |"
    if floor is not None:
        on = "val " if validation else ""
        header += f" most robust at {on}clean acc >= {floor:.3f}: {values} | run | step | lr | wd |"
    lines = [header, "|" + " --- |" * (header.count("|") - 1)]
    for r in rows:
        line = f"| {r['dataset']} | {r['strategy']} | " + _point_cells(r, "knee", validation)
        if floor is not None:
            line += " " + (_point_cells(r, "floor", validation) if r.get("floor_run_id") is not None
                           else "no point reaches it |" + " |" * (7 if validation else 5))
        lines.append(line)
    return "\n".join(lines)


def _on_validation(rows: Sequence[dict[str, Any]]) -> bool:
    return any(r.get("select_on") == "validation" for r in rows)


def selection_caption(rows: Sequence[dict[str, Any]]) -> str:
    """What the summary and knee tables say about their selections."""
    return selection_label("validation" if _on_validation(rows) else "test")


def _acc(r: dict[str, Any], key: str) -> str:
    """An accuracy of a summary row with its 95% interval (``key``_ci) where known: "0.812 [0.787, 0.835]"."""
    return with_interval(f"{r[key]:.3f}", r.get(key + "_ci"))


def _point_cells(r: dict[str, Any], prefix: str, validation: bool = False) -> str:
    chosen_on = f"{_acc(r, prefix + '_val_clean_acc')} | {_acc(r, prefix + '_val_pgd_acc')} | " if validation else ""
    return (f"{chosen_on}{_acc(r, prefix + '_clean_acc')} | {_acc(r, prefix + '_pgd_acc')} | {r[prefix + '_run_id']} | "
            f"{r[prefix + '_step']} | {r[prefix + '_lr']:.2g} | {r[prefix + '_wd']:.2g} |")


def summary_table_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of `sweep_summary` as a Markdown table (no trailing newline); every accuracy and the AUC with its
    95% interval where known. Chosen on validation, each best final cell is "test (val)": the chosen run's test
    value, then the validation value it was chosen on. The best OOD cell says "not measured" where nothing
    measured what chooses it: a dataset without OOD splits, or on validation, val_ood_accuracy off
    (evaluation.validation.ood, off by default)."""
    validation = _on_validation(rows)
    lines = [_VAL_HEADER if validation else _HEADER, _RULE]

    def cell(r: dict[str, Any], key: str) -> str:
        if math.isnan(r[key + "_val"] if validation else r[key]):
            return "not measured"
        return f"{_acc(r, key)} ({_acc(r, key + '_val')})" if validation else _acc(r, key)

    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['strategy']} | {r['trials']} ({r['complete']}) | {cell(r, 'final_acc')} "
            f"({r['final_acc_lr']:.2g}, {r['final_acc_wd']:.2g}) | {cell(r, 'final_pgd')} ({r['final_pgd_lr']:.2g}, "
            f"{r['final_pgd_wd']:.2g}) | {_acc(r, 'peak_acc')} | {_acc(r, 'peak_pgd')} | {cell(r, 'best_ood')} | "
            f"{with_interval(format(r['frontier_auc'], '.4f'), r.get('frontier_auc_ci'), 4)} |")
    return "\n".join(lines)
