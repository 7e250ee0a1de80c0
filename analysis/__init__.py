"""Analysis of the result table: Pareto frontiers, AUC, RQ1/RQ3 tables, the sweep summary, figures and the report.

Pure functions over numpy arrays and pyarrow tables (no Ray, no MLflow, no torch; the only platform code
it reads is `rft_ray.results`). Where each thing lives:

* `frontier`: Pareto frontier and its area (hypervolume / trapezoid AUC);
* `cleaning`: validation of the result table, the columns analysis needs, dropped-row accounting;
* `frame`: the clean table as numpy columns, grouped per strategy x dataset and run; the strategy order;
* `auc`: the strategy x dataset AUC table, per-run AUCs, trainable parameters vs AUC;
* `rq1`: robustness peak vs accuracy convergence; `rq3`: OOD/PGD vs clean accuracy correlations
  (`correlation`: Pearson / Spearman);
* `summary`: the sweep's summary table (best final / peak values, frontier AUC and its knee per group);
* `knee`: the frontier's knee and the most robust point at a clean-accuracy floor, per run and per group;
* `radius`: selecting one PGD radius;
* `uncertainty`: 95% Wilson intervals of accuracies from the image counts behind them;
* `measured`: robust accuracies at every radius, training-time PGD and `rft attack`'s stronger attacks;
  `attacks`: frontier AUC per attack beside PGD's on the same points, the gradient-masking flag; `curves`:
  accuracy against eps; `corruptions`: accuracy per corruption and severity; `robustness`: these in
  `analyze` (figures `robustness_plots`, report sections `report_robustness`);
* `report`: `analyze` (the analysis as a function, writing report.md / report.html / analysis.json),
  with `conventions` (the conventions in words), `report_sections` (the report's text) and
  `report_render` (Markdown / HTML); `plots`: figures (matplotlib, imported only when drawn).

The command line is `rft analyze` (`rft_ray.cli.analyze`). Strategy order: every function that orders
strategies takes ``strategy_order`` (the platform passes its registry's order); None = alphabetical.
"""
from analysis.attacks import attack_auc_table, masking_table
from analysis.auc import auc_table, params_vs_auc, trial_aucs
from analysis.cleaning import (
    CleaningReport,
    DroppedRowsWarning,
    TableError,
    clean_table,
)
from analysis.correlation import correlation
from analysis.corruptions import corruption_table
from analysis.curves import robustness_curves
from analysis.frontier import (
    frontier_auc,
    hypervolume_auc,
    pareto_frontier,
    trapezoid_auc,
)
from analysis.rq1 import rq1_table, rq1_trials
from analysis.rq3 import rq3_table
from analysis.summary import summary_table_markdown, sweep_summary

__all__ = [
    "pareto_frontier", "hypervolume_auc", "trapezoid_auc", "frontier_auc",
    "clean_table", "auc_table", "trial_aucs", "params_vs_auc", "rq1_table", "rq1_trials", "rq3_table",
    "correlation", "sweep_summary", "summary_table_markdown",
    "attack_auc_table", "masking_table", "robustness_curves", "corruption_table",
    "CleaningReport", "DroppedRowsWarning", "TableError",
]
