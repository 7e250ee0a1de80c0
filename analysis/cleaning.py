"""Validation and cleaning of the result table (`rft_ray.results.store.ResultStore.read()`).

Every table function of `analysis` first runs `clean_table`, so a bad table can never produce a silently
wrong number:

* a missing required column, a column of the wrong type, a run id that appears under two
  strategies/datasets, or two different rows for the same ``(run_id, step)`` -> `TableError`
  naming the problem (and, for a missing column, listing the columns present);
* rows whose frontier metrics (``test_clean_acc``, ``pgd_adv_acc``) are NaN/null/inf/outside [0, 1],
  or whose run_id/strategy/dataset/step are missing or invalid -> dropped, counted per reason in the
  `CleaningReport`, and a `DroppedRowsWarning` is issued; with ``strict=True`` -> `TableError` instead;
* an infinite or out-of-range ``test_ood_accuracy`` or a negative ``trainable_params`` -> that value
  alone is ignored (treated as missing; the row still counts for the frontier), counted in the report;
  ``strict=True`` -> `TableError`. A NaN/null ``test_ood_accuracy`` is not an error: it means the
  dataset has no OOD split; such points are left out of the OOD correlation and counted;
* exact duplicate rows of one ``(run_id, step)`` -> all but one dropped and counted;
* a table of several models -> each row's dataset becomes ``<dataset>/<model>`` (`analysis.models`), so no
  group pools two models.

The columns named here are the subset of the record's columns (`rft_ray.results.record.REQUIRED_COLUMNS`,
the one schema) that analysis reads.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analysis.models import by_model

KEY_COLUMNS = ("run_id", "strategy", "dataset")
REQUIRED_COLUMNS = ("run_id", "strategy", "dataset", "step", "test_clean_acc", "pgd_adv_acc")
# What `analyze` needs: the above plus the columns of RQ3 and of the parameter table.
ANALYSIS_COLUMNS = REQUIRED_COLUMNS + ("test_ood_accuracy", "trainable_params")
FRONTIER_METRICS = ("test_clean_acc", "pgd_adv_acc")
_NUMERIC_COLUMNS = ("step", "test_clean_acc", "pgd_adv_acc", "test_ood_accuracy", "trainable_params")
_TIMING_COLUMNS = ("wall_seconds", "eval_seconds", "measured_at")  # may differ between two copies of one row


class TableError(ValueError):
    """A result table that cannot be analysed as it is; the message says what is wrong."""


class DroppedRowsWarning(UserWarning):
    """Rows (or values) of the result table were left out; the cleaning report counts them."""


@dataclass
class CleaningReport:
    n_input_rows: int
    n_kept_rows: int
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows (a row may have several reasons)
    ignored_values: dict[str, int] = field(default_factory=dict)  # reason -> values treated as missing

    @property
    def n_dropped_rows(self) -> int:
        return self.n_input_rows - self.n_kept_rows

    @property
    def clean(self) -> bool:
        return not self.dropped and not self.ignored_values

    def lines(self) -> list[str]:
        if self.clean:
            return [f"all {self.n_input_rows} rows used; none dropped"]
        out = [f"{self.n_dropped_rows} of {self.n_input_rows} rows dropped, {self.n_kept_rows} used"]
        out += [f"dropped: {reason}: {n} row(s)" for reason, n in self.dropped.items()]
        out += [f"value ignored (treated as missing): {reason}: {n}" for reason, n in self.ignored_values.items()]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_input_rows": self.n_input_rows,
            "n_kept_rows": self.n_kept_rows,
            "n_dropped_rows": self.n_dropped_rows,
            "dropped": dict(self.dropped),
            "ignored_values": dict(self.ignored_values),
        }


# ---------------------------------------------------------------------------------------------------
# Columns as numpy arrays


def float_column(column: pa.ChunkedArray) -> np.ndarray:
    """Numeric column -> float64 numpy array, null -> NaN."""
    return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def string_column(column: pa.ChunkedArray) -> np.ndarray:
    """String column -> numpy object array, null -> None."""
    return np.array(pc.cast(column, pa.string()).to_pylist(), dtype=object)


def _is_string(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)


# ---------------------------------------------------------------------------------------------------
# clean_table and its steps


def clean_table(
    table: pa.Table, *, strict: bool = False, required: Sequence[str] = REQUIRED_COLUMNS, warn: bool = True
) -> tuple[pa.Table, CleaningReport]:
    """Validate the result table; return the usable rows (sorted by run_id, step) and what was left out."""
    _check_schema(table, required)
    n = table.num_rows
    keep, dropped = _invalid_rows(table)
    replacements, ignored = _invalid_values(table, keep)
    if strict and (dropped or ignored):
        problems = [f"{reason}: {k} row(s)" for reason, k in {**dropped, **ignored}.items()]
        raise TableError("result table has bad rows (strict mode): " + "; ".join(problems))

    for name, values in replacements.items():
        arr = pa.array(values, type=pa.float64(), from_pandas=True)  # NaN -> null
        table = table.set_column(table.column_names.index(name), name, arr)
    table = table.filter(pa.array(keep))
    if table.num_rows == 0:
        reasons = "; ".join(f"{r}: {k}" for r, k in dropped.items()) or "the table has no rows"
        raise TableError(f"result table has no usable rows ({n} rows in, all dropped: {reasons})")
    table = by_model(table.sort_by([("run_id", "ascending"), ("step", "ascending")]))  # several models: per model
    _check_one_owner_per_run(table)
    table = _without_duplicate_steps(table, dropped, strict)

    report = CleaningReport(n_input_rows=n, n_kept_rows=table.num_rows, dropped=dropped, ignored_values=ignored)
    if warn and not report.clean:
        warnings.warn("result table: " + "; ".join(report.lines()), DroppedRowsWarning, stacklevel=2)
    return table, report


def _check_schema(table: pa.Table, required: Sequence[str]) -> None:
    """TableError for a missing required column or a column of the wrong type."""
    if not isinstance(table, pa.Table):
        raise TableError(f"expected a pyarrow.Table, got {type(table).__name__}")
    present = list(table.column_names)
    missing = [c for c in required if c not in present]
    if missing:
        raise TableError(
            f"result table is missing required column(s) {', '.join(missing)}; columns present: "
            f"{', '.join(present) if present else '(none: the table is empty)'}"
        )
    for name in KEY_COLUMNS:
        if name in present and not (_is_string(table.schema.field(name).type) or pa.types.is_null(table.schema.field(name).type)):
            raise TableError(f"column {name} must hold strings, but its type is {table.schema.field(name).type}")
    for name in _NUMERIC_COLUMNS:
        if name in present and not _is_numeric(table.schema.field(name).type):
            raise TableError(f"column {name} must be numeric, but its type is {table.schema.field(name).type}")


def _invalid_rows(table: pa.Table) -> tuple[np.ndarray, dict[str, int]]:
    """(rows to keep, reason -> rows dropped) for missing keys, bad steps and bad frontier metrics."""
    present = table.column_names
    keep = np.ones(table.num_rows, dtype=bool)
    dropped: dict[str, int] = {}

    def drop(mask: np.ndarray, reason: str) -> None:
        nonlocal keep
        if mask.any():
            dropped[reason] = dropped.get(reason, 0) + int(mask.sum())
            keep &= ~mask

    for name in KEY_COLUMNS:
        if name in present:
            values = string_column(table.column(name))
            drop(np.array([v is None or v == "" for v in values], dtype=bool), f"{name} missing or empty")
    if "step" in present:
        step = float_column(table.column("step"))
        with np.errstate(invalid="ignore"):
            bad_step = ~np.isfinite(step) | (step < 0) | (step != np.round(step))
        drop(bad_step, "step missing, negative or not a whole number")
    for name in FRONTIER_METRICS:
        if name in present:
            values = float_column(table.column(name))
            drop(np.isnan(values), f"{name} is NaN or null")
            with np.errstate(invalid="ignore"):
                drop(np.isfinite(values) & ((values < 0) | (values > 1)) | np.isinf(values), f"{name} infinite or outside [0, 1]")
    return keep, dropped


def _invalid_values(table: pa.Table, keep: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """(column -> values with the unusable ones set to NaN, reason -> values ignored) of the kept rows."""
    rules = {
        "test_ood_accuracy": ("test_ood_accuracy infinite or outside [0, 1]", lambda v: np.isinf(v) | (v < 0) | (v > 1)),
        "trainable_params": ("trainable_params negative or infinite", lambda v: np.isinf(v) | (v < 0)),
    }
    replacements: dict[str, np.ndarray] = {}
    ignored: dict[str, int] = {}
    for name, (reason, is_bad) in rules.items():
        if name not in table.column_names:
            continue
        values = float_column(table.column(name))
        with np.errstate(invalid="ignore"):
            bad = keep & is_bad(values)
        if bad.any():
            ignored[reason] = int(bad.sum())
            values = np.where(bad, np.nan, values)
        replacements[name] = values
    return replacements, ignored


def _check_one_owner_per_run(table: pa.Table) -> None:
    """TableError when one run id appears under two (strategy, dataset) pairs."""
    owner: dict[str, tuple[str, str]] = {}
    run, strat, data = (string_column(table.column(c)) for c in KEY_COLUMNS)
    for r, s, d in zip(run, strat, data):
        if owner.setdefault(r, (s, d)) != (s, d):
            raise TableError(
                f"run {r!r} appears under two strategy/dataset pairs {owner[r]} and {(s, d)}; "
                "a run id must name one run"
            )


def _without_duplicate_steps(table: pa.Table, dropped: dict[str, int], strict: bool) -> pa.Table:
    """One row per (run_id, step) of a table sorted by them: exact copies dropped (counted in `dropped`),
    two different rows -> TableError."""
    run = string_column(table.column("run_id"))
    step = float_column(table.column("step")).astype(np.int64)
    same = np.zeros(table.num_rows, dtype=bool)
    same[1:] = (run[1:] == run[:-1]) & (step[1:] == step[:-1])
    if not same.any():
        return table
    compare = [c for c in table.column_names if c not in _TIMING_COLUMNS]
    rows = table.select(compare).to_pylist()
    for i in np.flatnonzero(same):
        if not _rows_equal(rows[i], rows[i - 1]):
            raise TableError(
                f"run {run[i]!r} has two different rows for step {step[i]}; cannot tell which is right "
                "(was the store written by two processes under one run id?)"
            )
    dropped["duplicate row of one (run_id, step)"] = int(same.sum())
    if strict:
        raise TableError(f"result table has {int(same.sum())} duplicate (run_id, step) row(s) (strict mode)")
    return table.filter(pa.array(~same))


def _rows_equal(a: dict, b: dict) -> bool:
    for key in a:
        x, y = a[key], b.get(key)
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        if x != y:
            return False
    return True
