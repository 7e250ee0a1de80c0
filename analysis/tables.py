"""Per-group tables over the result table (`rft_ray.results.store.ResultStore.read()`): pure numpy / pyarrow.

Every public function takes the pyarrow result table and first runs `clean_table` on it, so a bad table
can never produce a silently wrong number:

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
* exact duplicate rows of one ``(run_id, step)`` -> all but one dropped and counted.

Conventions (stated again in the report):

* AUC pooling ``"pooled"`` (default): a strategy's frontier on a dataset pools every evaluation point of
  every run of that strategy on that dataset (all steps, all hyperparameters). ``"per_trial"``: one
  frontier per run; the group's ``auc`` is the BEST run's AUC (``best_run_id``); the mean over runs is
  given as ``auc_trial_mean``. ``step_budget=N`` keeps only points with ``step <= N``.
* "% above average" = (auc - mean auc of all strategies on the dataset) / that mean * 100; NaN
  (JSON null) when the mean is 0. ``is_best`` marks the highest AUC per dataset (ties all marked).
* ``trainable_params`` of a group: median over its runs of each run's value.
* RQ1, per run: robustness peak = max ``pgd_adv_acc`` (earliest step on ties); final = the run's last
  evaluated step; drop = peak - final robustness. Accuracy has *converged* at the first step where
  ``test_clean_acc >= max(test_clean_acc of the run) - tol`` (default ``tol=0.01``, one accuracy
  point; compared with 1e-9 slack so float rounding of the boundary does not matter); the peak came before convergence when ``peak_step < converged_step`` (strictly). The
  per-strategy+dataset summary reports the run with the best final clean accuracy (ties: higher final
  robustness, then smaller run id) and, beside it, means over all runs and the number of runs whose peak
  came before convergence.
* RQ3: Pearson and Spearman (average ranks for ties) correlations over evaluation points; NaN (JSON
  null, with a note) when fewer than 2 points or a column is constant.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analysis.frontier import AUC_KINDS, frontier_auc

POOLINGS: tuple[str, ...] = ("pooled", "per_trial")
# Strategies of the paper in a fixed order (tables and figures); others follow alphabetically.
STRATEGY_ORDER: tuple[str, ...] = ("full", "linear", "bitfit", "lora", "ia3", "adapter", "compacter")

KEY_COLUMNS = ("run_id", "strategy", "dataset")
REQUIRED_COLUMNS = ("run_id", "strategy", "dataset", "step", "test_clean_acc", "pgd_adv_acc")
# What `analyze` needs: the above plus the columns of RQ3 and of the parameter table.
ANALYSIS_COLUMNS = REQUIRED_COLUMNS + ("test_ood_accuracy", "trainable_params")
_FRONTIER_METRICS = ("test_clean_acc", "pgd_adv_acc")
_SLACK = 1e-9  # float rounding slack in the convergence test (0.9 - 0.3 > 0.6 in binary)


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
# Validation / cleaning


def _is_string(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    """Numeric column -> float64 numpy array, null -> NaN."""
    return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _strings(column: pa.ChunkedArray) -> np.ndarray:
    return np.array(pc.cast(column, pa.string()).to_pylist(), dtype=object)


def clean_table(
    table: pa.Table, *, strict: bool = False, required: Sequence[str] = REQUIRED_COLUMNS, warn: bool = True
) -> tuple[pa.Table, CleaningReport]:
    """Validate the result table; return the usable rows (sorted by run_id, step) and what was left out."""
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
    for name in ("step", "test_clean_acc", "pgd_adv_acc", "test_ood_accuracy", "trainable_params"):
        if name in present and not _is_numeric(table.schema.field(name).type):
            raise TableError(f"column {name} must be numeric, but its type is {table.schema.field(name).type}")

    n = table.num_rows
    keep = np.ones(n, dtype=bool)
    dropped: dict[str, int] = {}
    ignored: dict[str, int] = {}

    def drop(mask: np.ndarray, reason: str) -> None:
        nonlocal keep
        if mask.any():
            dropped[reason] = dropped.get(reason, 0) + int(mask.sum())
            keep &= ~mask

    for name in KEY_COLUMNS:
        if name in present:
            values = _strings(table.column(name))
            drop(np.array([v is None or v == "" for v in values], dtype=bool), f"{name} missing or empty")
    if "step" in present:
        step = _floats(table.column("step"))
        with np.errstate(invalid="ignore"):
            bad_step = ~np.isfinite(step) | (step < 0) | (step != np.round(step))
        drop(bad_step, "step missing, negative or not a whole number")
    for name in _FRONTIER_METRICS:
        if name in present:
            values = _floats(table.column(name))
            drop(np.isnan(values), f"{name} is NaN or null")
            with np.errstate(invalid="ignore"):
                drop(np.isfinite(values) & ((values < 0) | (values > 1)) | np.isinf(values), f"{name} infinite or outside [0, 1]")

    replacements: dict[str, np.ndarray] = {}
    if "test_ood_accuracy" in present:
        ood = _floats(table.column("test_ood_accuracy"))
        with np.errstate(invalid="ignore"):
            bad = keep & (np.isinf(ood) | (ood < 0) | (ood > 1))
        if bad.any():
            ignored["test_ood_accuracy infinite or outside [0, 1]"] = int(bad.sum())
            ood = np.where(bad, np.nan, ood)
        replacements["test_ood_accuracy"] = ood
    if "trainable_params" in present:
        params = _floats(table.column("trainable_params"))
        with np.errstate(invalid="ignore"):
            bad = keep & (np.isinf(params) | (params < 0))
        if bad.any():
            ignored["trainable_params negative or infinite"] = int(bad.sum())
            params = np.where(bad, np.nan, params)
        replacements["trainable_params"] = params

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
    table = table.sort_by([("run_id", "ascending"), ("step", "ascending")])

    # Consistency across rows: one (strategy, dataset) per run, one row per (run_id, step).
    run = _strings(table.column("run_id"))
    strat = _strings(table.column("strategy"))
    data = _strings(table.column("dataset"))
    owner: dict[str, tuple[str, str]] = {}
    for r, s, d in zip(run, strat, data):
        if owner.setdefault(r, (s, d)) != (s, d):
            raise TableError(
                f"run {r!r} appears under two strategy/dataset pairs {owner[r]} and {(s, d)}; "
                "a run id must name one run"
            )
    step = _floats(table.column("step")).astype(np.int64)
    same = np.zeros(table.num_rows, dtype=bool)
    same[1:] = (run[1:] == run[:-1]) & (step[1:] == step[:-1])
    if same.any():
        compare = [c for c in table.column_names if c not in ("wall_seconds", "eval_seconds")]
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
        table = table.filter(pa.array(~same))

    report = CleaningReport(n_input_rows=n, n_kept_rows=table.num_rows, dropped=dropped, ignored_values=ignored)
    if warn and not report.clean:
        warnings.warn("result table: " + "; ".join(report.lines()), DroppedRowsWarning, stacklevel=2)
    return table, report


def _rows_equal(a: dict, b: dict) -> bool:
    for key in a:
        x, y = a[key], b.get(key)
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        if x != y:
            return False
    return True


# ---------------------------------------------------------------------------------------------------
# Internal column view of a clean table


@dataclass
class _Frame:
    run_id: np.ndarray
    strategy: np.ndarray
    dataset: np.ndarray
    step: np.ndarray
    acc: np.ndarray
    rob: np.ndarray
    ood: np.ndarray | None
    params: np.ndarray | None
    extra: dict[str, list]

    @classmethod
    def of(cls, table: pa.Table) -> "_Frame":
        names = table.column_names
        extra = {c: table.column(c).to_pylist() for c in ("lr", "weight_decay", "seed") if c in names}
        return cls(
            run_id=_strings(table.column("run_id")),
            strategy=_strings(table.column("strategy")),
            dataset=_strings(table.column("dataset")),
            step=_floats(table.column("step")).astype(np.int64),
            acc=_floats(table.column("test_clean_acc")),
            rob=_floats(table.column("pgd_adv_acc")),
            ood=_floats(table.column("test_ood_accuracy")) if "test_ood_accuracy" in names else None,
            params=_floats(table.column("trainable_params")) if "trainable_params" in names else None,
            extra=extra,
        )

    def groups(self, keys: Sequence[str] = ("strategy", "dataset")) -> list[tuple[tuple[str, ...], np.ndarray]]:
        """(key values, row indices) per group, in table order (strategies canonical, datasets sorted)."""
        columns = [getattr(self, k) for k in keys]
        index: dict[tuple[str, ...], list[int]] = {}
        for i, key in enumerate(zip(*columns)):
            index.setdefault(tuple(key), []).append(i)

        def sort_key(key: tuple[str, ...]):
            return tuple(strategy_sort_key(v) if k == "strategy" else (0, v) for k, v in zip(keys, key))

        return [(key, np.array(index[key])) for key in sorted(index, key=sort_key)]

    def runs(self, rows: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """(run_id, row indices sorted by step) for the given rows, by run id."""
        out: dict[str, list[int]] = {}
        for i in rows:
            out.setdefault(self.run_id[i], []).append(int(i))
        return [(r, np.array(sorted(idx, key=lambda i: self.step[i]))) for r, idx in sorted(out.items())]


def strategy_sort_key(name: str) -> tuple[int, str]:
    return (STRATEGY_ORDER.index(name), "") if name in STRATEGY_ORDER else (len(STRATEGY_ORDER), name)


def order_strategies(names: Iterable[str]) -> list[str]:
    return sorted(set(names), key=strategy_sort_key)


def _prepare(table: pa.Table, strict: bool, required: Sequence[str] = REQUIRED_COLUMNS) -> _Frame:
    clean, _ = clean_table(table, strict=strict, required=required, warn=True)
    return _Frame.of(clean)


def _check_options(kind: str, pooling: str, step_budget: int | None) -> None:
    if kind not in AUC_KINDS:
        raise ValueError(f"unknown AUC kind {kind!r}; choose one of {', '.join(AUC_KINDS)}")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    if step_budget is not None and (
        isinstance(step_budget, bool) or not isinstance(step_budget, (int, np.integer)) or step_budget < 0
    ):
        raise ValueError(f"step_budget must be a whole number >= 0 or None, got {step_budget!r}")


def _median_params(frame: _Frame, rows: np.ndarray) -> int | float | None:
    if frame.params is None:
        return None
    per_run = []
    for _, idx in frame.runs(rows):
        values = frame.params[idx]
        values = values[~np.isnan(values)]
        if len(values):
            per_run.append(float(np.median(values)))
    if not per_run:
        return None
    med = float(np.median(per_run))
    return int(med) if med.is_integer() else med


# ---------------------------------------------------------------------------------------------------
# AUC table


def trial_aucs(
    table: pa.Table, *, kind: str = "hypervolume", step_budget: int | None = None, strict: bool = False
) -> list[dict[str, Any]]:
    """One row per run: strategy, dataset, run_id, auc, n_points (points with step <= step_budget)."""
    _check_options(kind, "per_trial", step_budget)
    frame = _prepare(table, strict)
    out = []
    for (strategy, dataset), rows in frame.groups():
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
) -> list[dict[str, Any]]:
    """Strategy x dataset AUC rows (long form): strategy, dataset, auc, pct_above_average, is_best,
    n_runs, n_points, trainable_params, best_run_id and auc_trial_mean (per-trial pooling only, else None)."""
    _check_options(kind, pooling, step_budget)
    frame = _prepare(table, strict)
    rows_out: list[dict[str, Any]] = []
    for (strategy, dataset), rows in frame.groups():
        if step_budget is not None:
            rows_used = rows[frame.step[rows] <= step_budget]
        else:
            rows_used = rows
        runs = frame.runs(rows_used)
        row = {"strategy": strategy, "dataset": dataset, "n_runs": len(runs), "n_points": int(len(rows_used)),
               "trainable_params": _median_params(frame, rows), "best_run_id": None, "auc_trial_mean": None}
        if pooling == "pooled":
            row["auc"] = frontier_auc(np.column_stack([frame.acc[rows_used], frame.rob[rows_used]]), kind)
        else:
            per_run = [(frontier_auc(np.column_stack([frame.acc[idx], frame.rob[idx]]), kind), run_id)
                       for run_id, idx in runs]
            if per_run:
                best = sorted(per_run, key=lambda t: (-t[0], t[1]))[0]  # ties: smaller run id
                row["auc"], row["best_run_id"] = best
                row["auc_trial_mean"] = float(np.mean([a for a, _ in per_run]))
            else:
                row["auc"] = 0.0
        rows_out.append(row)

    for dataset in sorted({r["dataset"] for r in rows_out}):
        group = [r for r in rows_out if r["dataset"] == dataset]
        aucs = np.array([r["auc"] for r in group])
        mean, best = float(aucs.mean()), float(aucs.max())
        for r in group:
            r["pct_above_average"] = (r["auc"] - mean) / mean * 100.0 if mean > 0 else float("nan")
            r["is_best"] = bool(math.isclose(r["auc"], best, rel_tol=1e-12, abs_tol=1e-12))
            r["dataset_mean_auc"] = mean
    keys = ("strategy", "dataset", "auc", "pct_above_average", "is_best", "n_runs", "n_points",
            "trainable_params", "best_run_id", "auc_trial_mean", "dataset_mean_auc")
    return [{k: r[k] for k in keys} for r in rows_out]


# ---------------------------------------------------------------------------------------------------
# RQ1: robustness peak vs accuracy convergence


def rq1_trials(table: pa.Table, tol: float = 0.01, *, strict: bool = False) -> list[dict[str, Any]]:
    """One row per run: the robustness peak, final values and convergence step (module docstring)."""
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and 0 <= tol <= 1):
        raise ValueError(f"convergence tolerance must be a number in [0, 1] (accuracy fraction), got {tol!r}")
    frame = _prepare(table, strict)
    out = []
    for (strategy, dataset), rows in frame.groups():
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
            }
            first = int(idx[0])
            for key, values in frame.extra.items():
                row[key] = values[first]
            out.append(row)
    return out


def rq1_table(table: pa.Table, tol: float = 0.01, *, strict: bool = False) -> list[dict[str, Any]]:
    """Per strategy+dataset: the best run by final clean accuracy (its RQ1 numbers, `run_id`), and the
    means over all runs (`mean_*`) and how many runs peaked before accuracy converged."""
    trials = rq1_trials(table, tol, strict=strict)
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


# ---------------------------------------------------------------------------------------------------
# RQ3: correlations with clean accuracy


def _rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties get their average rank (like scipy.stats.rankdata(method='average'))."""
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    ranks = np.empty(len(a), dtype=np.float64)
    start = 0
    for end in range(1, len(a) + 1):
        if end == len(a) or sorted_a[end] != sorted_a[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0  # mean of ranks start+1 .. end
            start = end
    return ranks


def correlation(x, y, x_name: str = "x", y_name: str = "y") -> dict[str, Any]:
    """Pearson and Spearman correlation of two equal-length finite arrays; NaN with a note when undefined."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"correlation needs two 1-D arrays of equal length, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(f"correlation inputs must be finite ({x_name}, {y_name} contain NaN or inf)")
    n = len(x)
    notes = []
    if n < 2:
        notes.append(f"fewer than 2 points ({n})")
    else:
        if np.ptp(x) == 0:
            notes.append(f"{x_name} is constant")
        if np.ptp(y) == 0:
            notes.append(f"{y_name} is constant")
    if notes:
        return {"n": n, "pearson": float("nan"), "spearman": float("nan"), "note": "; ".join(notes)}

    def pearson(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a - a.mean(), b - b.mean()
        denom = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
        return float(np.clip(np.dot(a, b) / denom, -1.0, 1.0)) if denom > 0 else float("nan")

    return {"n": n, "pearson": pearson(x, y), "spearman": pearson(_rankdata(x), _rankdata(y)), "note": None}


def rq3_table(
    table: pa.Table, by: Sequence[str] = ("strategy",), *, strict: bool = False
) -> list[dict[str, Any]]:
    """Per group (default: per strategy, pooling its datasets): correlation of OOD accuracy with clean
    accuracy (points without OOD accuracy left out, counted) next to that of PGD accuracy with clean."""
    by = tuple(by)
    if by not in (("strategy",), ("strategy", "dataset")):
        raise ValueError(f"rq3_table groups by ('strategy',) or ('strategy', 'dataset'), got {by!r}")
    frame = _prepare(table, strict, REQUIRED_COLUMNS + ("test_ood_accuracy",))
    out = []
    for key, rows in frame.groups(by):
        ood = frame.ood[rows]
        has = ~np.isnan(ood)
        c_ood = correlation(ood[has], frame.acc[rows][has], "test_ood_accuracy", "test_clean_acc")
        c_pgd = correlation(frame.rob[rows], frame.acc[rows], "pgd_adv_acc", "test_clean_acc")
        if not has.any():
            c_ood["note"] = "no OOD accuracy (no OOD split)"
        row = dict(zip(by, key))
        row.update({
            "n_points": int(len(rows)), "n_ood_points": int(has.sum()),
            "n_runs": len(set(frame.run_id[rows])),
            "ood_clean_pearson": c_ood["pearson"], "ood_clean_spearman": c_ood["spearman"], "ood_note": c_ood["note"],
            "pgd_clean_pearson": c_pgd["pearson"], "pgd_clean_spearman": c_pgd["spearman"], "pgd_note": c_pgd["note"],
        })
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------------
# Helpers for figures and reports


def group_points(
    table: pa.Table, step_budget: int | None = None, *, strict: bool = False
) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """(strategy, dataset) -> arrays run_id, step, acc, rob of its points (step <= budget), sorted by run, step."""
    frame = _prepare(table, strict)
    out = {}
    for key, rows in frame.groups():
        idx = np.concatenate([i for _, i in frame.runs(rows)])
        if step_budget is not None:
            idx = idx[frame.step[idx] <= step_budget]
        out[key] = {"run_id": frame.run_id[idx], "step": frame.step[idx], "acc": frame.acc[idx], "rob": frame.rob[idx]}
    return out


def pivot(rows: list[dict[str, Any]], value: str) -> tuple[list[str], list[str], np.ndarray]:
    """Long rows -> (strategies, datasets, matrix[strategy, dataset]) of `value` (NaN where absent)."""
    strategies = order_strategies(r["strategy"] for r in rows)
    datasets = sorted({r["dataset"] for r in rows})
    matrix = np.full((len(strategies), len(datasets)), np.nan)
    for r in rows:
        v = r[value]
        matrix[strategies.index(r["strategy"]), datasets.index(r["dataset"])] = np.nan if v is None else v
    return strategies, datasets, matrix
