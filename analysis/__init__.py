"""Analysis of the result table: Pareto frontiers, AUC, RQ1/RQ3 tables, figures and the report.

Pure functions over numpy arrays and pyarrow tables (no Ray, no MLflow). `analysis.report.main` is
`rft analyze`; `analysis.report.analyze` is the same as a function. Figures (matplotlib) are only
imported when drawn.
"""
from analysis.frontier import frontier_auc, hypervolume_auc, pareto_frontier, trapezoid_auc
from analysis.tables import (
    CleaningReport,
    DroppedRowsWarning,
    TableError,
    auc_table,
    clean_table,
    rq1_table,
    rq1_trials,
    rq3_table,
)

__all__ = [
    "pareto_frontier", "hypervolume_auc", "trapezoid_auc", "frontier_auc",
    "clean_table", "auc_table", "rq1_table", "rq1_trials", "rq3_table",
    "CleaningReport", "DroppedRowsWarning", "TableError",
]
