"""Accuracy per corruption (and per severity) from the ``ood_acc/<domain>`` columns, per strategy and dataset.

Domains: a domain is a corruption when its name is one of the platform's corruptions (the 15 of CIFAR-10-C,
plus gaussian_blur and jpeg, rft_ray/data/corruptions) or carries a severity suffix: ``<name>/<k>``,
``<name>@<k>``, ``<name>_s<k>``, ``<name>-s<k>`` or ``<name>_severity<k>`` with k in 1-5. A plain corruption
name has the severity of the run's ``dataset.severity``, which the results do not record (severity
shown as "unrecorded") unless the table has a ``severity`` column. Other OOD domains (a dataset's natural
domains) are not corruptions and are left out.

Conventions (stated again in the report): the point of a run is its last evaluated step (<= step_budget
when set). A corruption's accuracy at that point is the mean over the severities it measured; per strategy x
dataset, ``acc`` is the mean over the runs that measured it (``n_runs``), for the corruption and for each
severity. Rows come by strategy (the strategy order of `analysis.frame`), dataset, corruption (CIFAR-10-C
order, then sorted), then severity ("all" = the mean over severities first, then 1-5, then "unrecorded").
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from analysis.cleaning import float_column
from analysis.measured import MeasuredTable
from rft_ray.config.run import CIFAR10_C
from rft_ray.results.record import OOD_PREFIX

KNOWN_CORRUPTIONS = tuple(CIFAR10_C) + ("gaussian_blur", "jpeg")
ALL_SEVERITIES, UNRECORDED = "all", "unrecorded"
_WITH_SEVERITY = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9_]*?)(?:/|@|_s|-s|_severity)(?P<severity>[1-5])$")


def parse_domain(domain: str) -> tuple[str, int | None] | None:
    """(corruption, severity or None) of an OOD domain name, None when it is not a corruption."""
    match = _WITH_SEVERITY.match(domain)
    if match:
        return match["name"], int(match["severity"])
    return (domain, None) if domain in KNOWN_CORRUPTIONS else None


def corruption_domains(column_names: Sequence[str]) -> dict[str, tuple[str, int | None]]:
    """ood_acc/<domain> column -> (corruption, severity or None) for the corruption domains."""
    out = {}
    for name in column_names:
        if name.startswith(OOD_PREFIX) and (parsed := parse_domain(name[len(OOD_PREFIX):])) is not None:
            out[name] = parsed
    return out


def _corruption_key(name: str) -> tuple[int, str]:
    order = list(KNOWN_CORRUPTIONS)
    return (order.index(name), "") if name in order else (len(order), name)


def corruption_table(
    table: pa.Table | MeasuredTable, step_budget: int | None = None, *, strict: bool = False,
    strategy_order: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per strategy x dataset x corruption x severity, with acc and n_runs (module docstring); severity
    is "all" (the mean over severities), "1"-"5", or "unrecorded"; [] when the table holds no corruption domain."""
    measured = table if isinstance(table, MeasuredTable) else MeasuredTable.of(table, strict=strict)
    domains = corruption_domains(measured.table.column_names)
    if not domains:
        return []
    rows_severity = (float_column(measured.table.column("severity"))
                     if "severity" in measured.table.column_names else None)
    values = {column: measured.values(column) for column in domains}
    out = []
    for (strategy, dataset), rows in measured.frame.groups(strategy_order=strategy_order):
        # run -> corruption -> severity -> accuracy at the run's point
        per_run: dict[str, dict[str, dict[int | None, float]]] = {}
        for run_id, row in measured.point_rows(rows, step_budget).items():
            for column, (corruption, severity) in domains.items():
                if np.isnan(values[column][row]):
                    continue
                if severity is None and rows_severity is not None and np.isfinite(rows_severity[row]):
                    severity = int(rows_severity[row])
                per_run.setdefault(run_id, {}).setdefault(corruption, {})[severity] = float(values[column][row])
        corruptions = sorted({c for run in per_run.values() for c in run}, key=_corruption_key)
        for corruption in corruptions:
            by_run = [run[corruption] for run in per_run.values() if corruption in run]
            where = {"strategy": strategy, "dataset": dataset, "corruption": corruption}
            out.append({**where, "severity": ALL_SEVERITIES,
                        "acc": float(np.mean([np.mean(list(s.values())) for s in by_run])), "n_runs": len(by_run)})
            severities = sorted({s for run in by_run for s in run}, key=lambda s: (s is None, s or 0))
            for severity in severities:
                accs = [run[severity] for run in by_run if severity in run]
                out.append({**where, "severity": UNRECORDED if severity is None else str(severity),
                            "acc": float(np.mean(accs)), "n_runs": len(accs)})
    return out
