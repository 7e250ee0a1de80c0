"""Which split a selection reads: the knee, the accuracy-floor point, the summary's best final points and `rft best`
choose on validation by default and report the chosen point's test metrics beside it.

Selection code reads ``test_clean_acc`` and ``pgd_adv_acc`` (`analysis.frame.Frame`'s ``acc`` and ``rob``). To
choose on validation, `selection_view` puts the validation columns in their places (as `analysis.axis.select_axis`
puts a robustness axis in ``pgd_adv_acc``'s place) and keeps the test values as ``reported_test_clean_acc`` and
``reported_robustness``, which the tables print beside the values the point was chosen on. On test the view is the
table itself (choosing on test: optimistic, and warned where the choice is made).

The paper's figures and AUC tables do not select: they stay on test points (`analysis.report`).

Validation measures clean accuracy, PGD accuracy at the run's own radius and the pooled OOD accuracy
(``val_clean_acc``, ``val_pgd_adv_acc``, ``val_ood_accuracy``); an axis or radius it does not measure (one OOD
domain, an extra radius of evaluation.pgd.extra_eps) cannot be chosen on validation: `SelectionError` says so.
A table (or a group of it) with no validation metrics at all is a `SelectionError` naming what is missing and
how to fix it, never a silent fall-back to test; single rows without them (e.g. a failed measurement) are left
out with a `DroppedRowsWarning`.
"""
from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa

from analysis.cleaning import DroppedRowsWarning, float_column
from rft_ray.config.metrics import (
    OOD_PREFIX,
    VALIDATION_COLUMNS,
    SelectionError,
    check_select_on,
    missing_validation,
    same_radius,
    selection_column,
)
from rft_ray.results.record import VALIDATION_COUNTS

REPORTED_ACC, REPORTED_ROB = "reported_test_clean_acc", "reported_robustness"
REPORTED_COLUMNS = (REPORTED_ACC, REPORTED_ROB)
# The images behind the validation values a view put in test_clean_acc / pgd_adv_acc (val_images, val_pgd_images
# or val_ood_images): their Wilson intervals. test_images / pgd_images keep counting the reported test values.
CHOSEN_ACC_IMAGES, CHOSEN_ROB_IMAGES = "chosen_acc_images", "chosen_rob_images"
CHOSEN_COUNTS = (CHOSEN_ACC_IMAGES, CHOSEN_ROB_IMAGES)


def check_validation_axis(table: pa.Table, axis: str = "pgd", eps: float | None = None) -> None:
    """Before `select_axis`: SelectionError when validation does not measure the axis (one OOD domain) or the
    radius (rows whose own radius, pgd_eps, is not `eps`: `eps` is one of their extra radii, test only)."""
    if axis.startswith("ood:"):
        selection_column(OOD_PREFIX + axis[len("ood:"):], "validation")
    if axis == "pgd" and eps is not None and "pgd_eps" in table.column_names:
        own = [r for r in set(table.column("pgd_eps").to_pylist()) if r is not None]
        if any(not same_radius(r, eps) for r in own):
            raise SelectionError(f"validation measures PGD at each run's own radius only; some runs measured eps "
                                 f"{eps:g} as an extra radius (test images only): choose at their own radius, or on "
                                 "test with --select-on test (optimistic)")


def selection_view(table: pa.Table, select_on: str, axis: str = "pgd", what: str = "the results",
                   option: str = "--select-on") -> pa.Table:
    """After `select_axis`: the table the selection reads (module docstring). `what` names the table and
    `option` the setting in the error of a table without validation metrics."""
    if check_select_on(select_on, option) == "test":
        return table
    if axis.startswith("ood:"):
        selection_column(OOD_PREFIX + axis[len("ood:"):], "validation")  # SelectionError: test-only domain
    acc, rob = float_column(table.column("test_clean_acc")), float_column(table.column("pgd_adv_acc"))
    out = _with(_with(table, REPORTED_ACC, acc), REPORTED_ROB, rob)
    columns = [VALIDATION_COLUMNS["test_clean_acc"],
               VALIDATION_COLUMNS["test_ood_accuracy" if axis == "ood" else "pgd_adv_acc"]]
    absent = [c for c in columns if c not in table.column_names or table.column(c).null_count == table.num_rows]
    if absent:
        raise missing_validation(what, absent, option)
    val_acc, val_rob = (float_column(table.column(c)) for c in columns)
    _check_groups(table, val_acc, val_rob, columns, what, option)
    measured = ~(np.isnan(val_acc) | np.isnan(val_rob))
    if not measured.all():
        warnings.warn(f"{int((~measured).sum())} of {len(measured)} evaluation points have no validation metrics "
                      f"({', '.join(columns)}) and take no part in the selection", DroppedRowsWarning, stacklevel=2)
    out = _with(_with(out, "test_clean_acc", val_acc), "pgd_adv_acc", val_rob)
    for name, column in zip(CHOSEN_COUNTS, columns):
        count = VALIDATION_COUNTS[column]
        out = _with(out, name, float_column(table.column(count)) if count in table.column_names
                    else np.full(table.num_rows, np.nan))
    return out.filter(pa.array(measured))


def _check_groups(table: pa.Table, val_acc: np.ndarray, val_rob: np.ndarray, columns: list[str], what: str,
                  option: str) -> None:
    """Every strategy x dataset needs some validation points: a group without any is an error, not a gap."""
    keys = list(zip(table.column("strategy").to_pylist(), table.column("dataset").to_pylist()))
    measured = ~(np.isnan(val_acc) | np.isnan(val_rob))
    bare = sorted({k for k in keys if k[0] is not None and k[1] is not None} - {k for k, m in zip(keys, measured) if m})
    if bare:
        groups = ", ".join(f"{s} on {d}" for s, d in bare)
        raise missing_validation(f"{what} ({groups})", columns, option)


def _with(table: pa.Table, name: str, values: np.ndarray) -> pa.Table:
    array = pa.array(values, type=pa.float64())
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, array)
    return table.append_column(name, array)


