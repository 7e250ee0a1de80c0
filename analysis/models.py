"""Runs of different models are never pooled: a store holding several models is analysed per model.

Every grouping of the analysis (frontiers, AUC, RQ1, RQ3, knees, the sweep summary, `rft best`, the MLflow
group metrics) groups rows by strategy and by the ``dataset`` column. When the table's ``model`` column holds
more than one model, `by_model` makes each row's dataset ``<dataset>/<model>`` (`GROUP_SEPARATOR`), so every
group is strategy x dataset x model and every comparison across strategies is within one dataset and model. With
one model (or no model column: tables written by hand) nothing changes. `analysis.cleaning.clean_table` applies it,
so every table function sees the same groups; a row already split (its dataset holds the separator, which no
dataset label or name can) is left as it is, so cleaning twice changes nothing.
"""
from __future__ import annotations

from typing import Sequence

import pyarrow as pa

GROUP_SEPARATOR = "/"  # allowed in MLflow metric names, never in a dataset label (rft_ray.config.run)


def models(table: pa.Table) -> list[str]:
    """The distinct models of the table's rows, sorted ([] without a model column)."""
    if "model" not in table.column_names:
        return []
    return sorted({m for m in table.column("model").to_pylist() if m})


def by_model(table: pa.Table, present: Sequence[str] | None = None) -> pa.Table:
    """Each row's dataset as ``<dataset>/<model>`` when `present` (default: the table's own models) holds
    several models; the table unchanged otherwise (module docstring)."""
    present = models(table) if present is None else list(present)
    if len(present) < 2 or "model" not in table.column_names or table.num_rows == 0:
        return table
    split = [d if d is None or m is None or GROUP_SEPARATOR in d else f"{d}{GROUP_SEPARATOR}{m}"
             for d, m in zip(table.column("dataset").to_pylist(), table.column("model").to_pylist())]
    return table.set_column(table.column_names.index("dataset"), "dataset", pa.array(split, pa.string()))


def model_note(names: Sequence[str]) -> str | None:
    """The report's line on the models a store holds (None for none recorded)."""
    if not names:
        return None
    if len(names) == 1:
        return f"Model: {names[0]}."
    return (f"Models: {', '.join(names)}. The results hold runs of {len(names)} models, which are never pooled: "
            f"every group is strategy x dataset x model, its dataset shown as <dataset>{GROUP_SEPARATOR}<model>.")
