"""A clean result table as numpy columns, its groups (strategy x dataset) and runs, and the strategy order.

Strategy order (tables, reports, figure legends): the caller's ``strategy_order`` (the platform passes its
strategy registry's order, `rft_ray.models.strategies.strategy_names()`); strategies it does not list, and
all of them when it is None, follow alphabetically. Datasets are always sorted alphabetically.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa

from analysis.cleaning import REQUIRED_COLUMNS, clean_table, float_column, string_column
from analysis.uncertainty import interval

EXTRA_COLUMNS = ("lr", "weight_decay", "seed")  # carried per run into the RQ1 rows


def strategy_sort_key(name: str, strategy_order: Sequence[str] | None = None) -> tuple[int, str]:
    """Listed strategies first, in the given order; the others after them, alphabetically."""
    order = tuple(strategy_order or ())
    return (order.index(name), "") if name in order else (len(order), name)


def order_strategies(names: Iterable[str], strategy_order: Sequence[str] | None = None) -> list[str]:
    """The distinct names, in the strategy order (module docstring)."""
    return sorted(set(names), key=lambda name: strategy_sort_key(name, strategy_order))


@dataclass
class Frame:
    run_id: np.ndarray
    strategy: np.ndarray
    dataset: np.ndarray
    step: np.ndarray
    acc: np.ndarray
    rob: np.ndarray
    ood: np.ndarray | None
    params: np.ndarray | None
    extra: dict[str, list]
    # Images behind acc and rob (test_images, pgd_images; NaN where the results did not record them): the
    # Wilson intervals of `analysis.uncertainty`.
    n_acc: np.ndarray | None = None
    n_rob: np.ndarray | None = None

    @classmethod
    def of(cls, table: pa.Table, extra: Sequence[str] = EXTRA_COLUMNS) -> "Frame":
        """The columns of a table `clean_table` returned; `extra` columns (those present) as Python lists."""
        names = table.column_names
        return cls(
            run_id=string_column(table.column("run_id")),
            strategy=string_column(table.column("strategy")),
            dataset=string_column(table.column("dataset")),
            step=float_column(table.column("step")).astype(np.int64),
            acc=float_column(table.column("test_clean_acc")),
            rob=float_column(table.column("pgd_adv_acc")),
            ood=float_column(table.column("test_ood_accuracy")) if "test_ood_accuracy" in names else None,
            params=float_column(table.column("trainable_params")) if "trainable_params" in names else None,
            extra={c: table.column(c).to_pylist() for c in extra if c in names},
            n_acc=_counts(table, "test_images"),
            n_rob=_counts(table, "pgd_images"),
        )

    def intervals(self, i: int, acc: float | None = None, rob: float | None = None) -> dict[str, list[float] | None]:
        """Row i's 95% Wilson intervals: test_clean_acc_ci and pgd_adv_acc_ci ([lo, hi] or None), from its test
        image counts; `acc`/`rob` give the test values where the frame's columns hold validation ones (a
        selection view)."""
        acc = self.acc[i] if acc is None else acc
        rob = self.rob[i] if rob is None else rob
        return {"test_clean_acc_ci": interval(acc, _count_at(self.n_acc, i)),
                "pgd_adv_acc_ci": interval(rob, _count_at(self.n_rob, i))}

    def groups(
        self, keys: Sequence[str] = ("strategy", "dataset"), strategy_order: Sequence[str] | None = None
    ) -> list[tuple[tuple[str, ...], np.ndarray]]:
        """(key values, row indices) per group, strategies in the strategy order, datasets sorted."""
        columns = [getattr(self, k) for k in keys]
        index: dict[tuple[str, ...], list[int]] = {}
        for i, key in enumerate(zip(*columns)):
            index.setdefault(tuple(key), []).append(i)

        def sort_key(key: tuple[str, ...]):
            return tuple(strategy_sort_key(v, strategy_order) if k == "strategy" else (0, v) for k, v in zip(keys, key))

        return [(key, np.array(index[key])) for key in sorted(index, key=sort_key)]

    def runs(self, rows: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """(run_id, row indices sorted by step) for the given rows, by run id."""
        out: dict[str, list[int]] = {}
        for i in rows:
            out.setdefault(self.run_id[i], []).append(int(i))
        return [(r, np.array(sorted(idx, key=lambda i: self.step[i]))) for r, idx in sorted(out.items())]


def _counts(table: pa.Table, column: str) -> np.ndarray:
    """An image-count column as floats, NaN where missing (all NaN when the results have no such column)."""
    if column not in table.column_names:
        return np.full(table.num_rows, np.nan)
    return float_column(table.column(column))


def _count_at(counts: np.ndarray | None, i: int) -> float | None:
    return None if counts is None or np.isnan(counts[i]) else float(counts[i])


def extra_count(extra: dict[str, list], column: str, i: int) -> float | None:
    """Row i's image count in one of a frame's extra columns; None where absent, null or NaN."""
    values = extra.get(column)
    value = None if values is None else values[i]
    return None if value is None or value != value else float(value)


def prepare(table: pa.Table, strict: bool, required: Sequence[str] = REQUIRED_COLUMNS,
            extra: Sequence[str] = EXTRA_COLUMNS) -> Frame:
    """`clean_table` (warning about what it drops), then the columns."""
    clean, _ = clean_table(table, strict=strict, required=required, warn=True)
    return Frame.of(clean, extra)


# ---------------------------------------------------------------------------------------------------
# Views for figures and reports


def group_points(
    table: pa.Table, step_budget: int | None = None, *, strict: bool = False,
    strategy_order: Sequence[str] | None = None,
) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """(strategy, dataset) -> arrays run_id, step, acc, rob of its points (step <= budget), sorted by run, step,
    and n_acc, n_rob: the images behind acc and rob (NaN where not recorded)."""
    frame = prepare(table, strict)
    out = {}
    for key, rows in frame.groups(strategy_order=strategy_order):
        idx = np.concatenate([i for _, i in frame.runs(rows)])
        if step_budget is not None:
            idx = idx[frame.step[idx] <= step_budget]
        out[key] = {"run_id": frame.run_id[idx], "step": frame.step[idx], "acc": frame.acc[idx], "rob": frame.rob[idx],
                    "n_acc": frame.n_acc[idx], "n_rob": frame.n_rob[idx]}
    return out


def pivot(
    rows: list[dict[str, Any]], value: str, strategy_order: Sequence[str] | None = None
) -> tuple[list[str], list[str], np.ndarray]:
    """Long rows -> (strategies, datasets, matrix[strategy, dataset]) of `value` (NaN where absent)."""
    strategies = order_strategies((r["strategy"] for r in rows), strategy_order)
    datasets = sorted({r["dataset"] for r in rows})
    matrix = np.full((len(strategies), len(datasets)), np.nan)
    for r in rows:
        v = r[value]
        matrix[strategies.index(r["strategy"]), datasets.index(r["dataset"])] = np.nan if v is None else v
    return strategies, datasets, matrix
