"""PGD radius selection: robustness at different eps values is not one axis, so an analysis uses one radius.

A run measures its spec's radius (``pgd_eps`` / ``pgd_adv_acc``) and possibly extra radii
(``evaluation.pgd.extra_eps``, columns ``pgd_adv_acc/<radius label>``). Two radii are one radius when
`rft_ray.results.record.same_radius` says so (the platform's one tolerance). Radii are reported rounded to
9 decimals.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pyarrow as pa

from analysis.cleaning import TableError
from rft_ray.results.record import PGD_PREFIX, eps_label, parse_eps_label, same_radius


def distinct_radii(values: Iterable[float]) -> list[float]:
    """Sorted radii, rounded to 9 decimals, one per radius (`same_radius`)."""
    out: list[float] = []
    for value in sorted(round(float(v), 9) for v in values):
        if not any(same_radius(value, kept) for kept in out):
            out.append(value)
    return out


def _pgd_eps(table: pa.Table) -> list[Any]:
    """The pgd_eps column as Python values (None where null); [] without the column."""
    return table.column("pgd_eps").to_pylist() if "pgd_eps" in table.column_names else []


def extra_columns(table: pa.Table) -> dict[float, str]:
    """Radius -> column name of the robust accuracies measured at evaluation.pgd.extra_eps radii."""
    out = {}
    for name in table.column_names:
        if name.startswith(PGD_PREFIX):
            try:
                out[parse_eps_label(name[len(PGD_PREFIX):])] = name
            except (ValueError, ZeroDivisionError):  # a column name that is no radius label
                continue
    return out


def eps_values(table: pa.Table) -> list[float]:
    """Every PGD radius the table holds: its pgd_eps values and its pgd_adv_acc/<radius> columns."""
    return distinct_radii([v for v in _pgd_eps(table) if v is not None] + list(extra_columns(table)))


def radius_conventions(loaded: pa.Table, selected: pa.Table) -> dict[str, list[float]]:
    """pgd_eps: the radius analysed; other_pgd_eps: the radii of the store left for another analysis."""
    used = eps_values(selected)
    return {"pgd_eps": used,
            "other_pgd_eps": [v for v in eps_values(loaded) if not any(same_radius(v, u) for u in used)]}


def without_extra_radii(table: pa.Table) -> pa.Table:
    """After selection: one radius, in pgd_adv_acc / pgd_eps alone."""
    return table.drop_columns([name for name in table.column_names if name.startswith(PGD_PREFIX)])


def select_eps(table: pa.Table, eps: float | None) -> pa.Table:
    """Rows measured at one PGD radius: robustness at different eps values is not one axis, never pooled.

    Without `eps`: the run specs' own radius (evaluation.pgd.eps), TableError when there are several.
    A radius found in a pgd_adv_acc/<radius> column (evaluation.pgd.extra_eps) becomes the table's
    pgd_adv_acc for the rows that measured it; those rows' pgd_eps is set to that radius.
    """
    if eps is None:  # extra radii only on request
        primary = distinct_radii(v for v in _pgd_eps(table) if v is not None)
        if len(primary) > 1:
            raise TableError(f"the results hold PGD accuracy at {len(primary)} radii "
                             f"({', '.join(eps_label(v) for v in primary)}); frontiers mix nothing measured at "
                             "different eps: choose one with --eps (e.g. --eps 1/255)")
        return without_extra_radii(table)
    values = eps_values(table)
    keep = [v for v in values if same_radius(v, eps)]
    if not keep:
        raise TableError(f"no results at PGD eps {eps_label(eps)}; the results hold "
                         f"{', '.join(eps_label(v) for v in values) or 'no pgd_eps column'}")
    radius = keep[0]
    mask = np.zeros(table.num_rows, dtype=bool)
    if "pgd_eps" in table.column_names:
        mask[:] = [v is not None and same_radius(v, radius) for v in _pgd_eps(table)]
    robust = table.column("pgd_adv_acc").to_numpy(zero_copy_only=False).astype(float).copy()
    for value, name in extra_columns(table).items():
        if same_radius(value, radius):
            extra = np.array([np.nan if v is None else v for v in table.column(name).to_pylist()], dtype=float)
            measured = ~np.isnan(extra) & ~mask
            robust[measured] = extra[measured]
            mask |= measured
    out = table.set_column(table.column_names.index("pgd_adv_acc"), "pgd_adv_acc", pa.array(robust))
    if "pgd_eps" in out.column_names:
        out = out.set_column(out.column_names.index("pgd_eps"), "pgd_eps", pa.array(np.full(table.num_rows, radius)))
    return without_extra_radii(out.filter(pa.array(mask)))
