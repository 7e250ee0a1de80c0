"""RQ3: does OOD accuracy follow clean accuracy the way PGD accuracy does? Correlations over evaluation points.

Pearson and Spearman correlations (`analysis.correlation`) over all points of a group (all runs and
steps); points without ``test_ood_accuracy`` (datasets without an OOD split) are left out of the OOD
correlation and counted; NaN (JSON null, with a note) when fewer than 2 points or a column is constant.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from analysis.cleaning import REQUIRED_COLUMNS
from analysis.correlation import correlation
from analysis.frame import prepare


def rq3_table(
    table: pa.Table, by: Sequence[str] = ("strategy",), *, strict: bool = False,
    strategy_order: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Per group (default: per strategy, pooling its datasets): correlation of OOD accuracy with clean
    accuracy (points without OOD accuracy left out, counted) next to that of PGD accuracy with clean."""
    by = tuple(by)
    if by not in (("strategy",), ("strategy", "dataset")):
        raise ValueError(f"rq3_table groups by ('strategy',) or ('strategy', 'dataset'), got {by!r}")
    frame = prepare(table, strict, REQUIRED_COLUMNS + ("test_ood_accuracy",))
    out = []
    for key, rows in frame.groups(by, strategy_order):
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
