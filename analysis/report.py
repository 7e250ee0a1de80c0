"""`analyze`: result store -> tables, figures, Markdown + self-contained HTML report, JSON.

`analyze(...)` does the work and returns an `AnalysisResult` (`.data`: every number, JSON-able, with
undefined values such as a correlation of a constant column as ``None``; `.files`: the paths written).
Bad input raises ValueError (`TableError` for a table that cannot be analysed), OSError or a pyarrow error;
the command line around it is `rft analyze` (`rft_ray.cli.analyze`).

Where each part lives: radius selection `analysis.radius`, cleaning `analysis.cleaning`, the AUC table
`analysis.auc`, RQ1 `analysis.rq1`, RQ3 `analysis.rq3`, the conventions in words `analysis.conventions`,
the report's text `analysis.report_sections` (rendered by `analysis.report_render`), figures `analysis.plots`;
stronger attacks, robustness curves and corruptions `analysis.robustness` (with tables/*.csv).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from analysis.auc import POOLINGS, auc_table, params_vs_auc, trial_aucs
from analysis.auc_intervals import auc_intervals
from analysis.axis import axis_column, axis_label, check_axis, select_axis
from analysis.bootstrap import DEFAULT_REPLICATES, DEFAULT_SEED, describe
from analysis.cleaning import ANALYSIS_COLUMNS, TableError, clean_table
from analysis.conventions import conventions, sample_sizes
from analysis.frame import order_strategies
from analysis.frontier import AUC_KINDS
from analysis.knee import check_min_acc, group_knees, trial_knees
from analysis.models import models
from analysis.radius import radius_conventions
from analysis.report_render import render_html, render_markdown
from analysis.report_sections import report_blocks
from analysis.robustness import (
    DEFAULT_MASKING_THRESHOLD,
    check_robustness_options,
    robustness_analysis,
)
from analysis.rq1 import rq1_table, rq1_trials
from analysis.rq3 import rq3_table
from analysis.seeds import ranking_resolution, seed_variation
from analysis.wise import add_wise_auc, clean_wise, load_wise, wise_groups, wise_summary

SCHEMA = "rft-analysis/1"
DEFAULT_OUT = "rft-analysis"


@dataclass
class AnalysisResult:
    data: dict[str, Any]
    files: list[str] = field(default_factory=list)


def load_results(results: str | os.PathLike | pa.Table) -> pa.Table:
    """The result table of a store (local path or URI), or the table itself if one is given."""
    if isinstance(results, pa.Table):
        table = results
        where = "the given table"
    else:
        from rft_ray.results.store import (
            ResultStore,  # lazy: keeps the pure functions free of the engine
        )

        root = str(results)
        if "://" not in root:
            path = Path(root).expanduser()
            if not path.exists():
                raise FileNotFoundError(f"result store {root!r} does not exist")
            if not path.is_dir():
                raise TableError(f"result store {root!r} is a file; give the directory holding the <run_id>.parquet files")
        table = ResultStore(root).read()
        where = f"result store {root!r}"
    if table.num_rows == 0:
        raise TableError(f"{where} holds no evaluation records (no <run_id>.parquet file with rows)")
    return table


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, recursively; anything else unknown -> str."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


def _check_arguments(kind: str, pooling: str, step_budget: int | None, tol: float, provenance: Any) -> None:
    if kind not in AUC_KINDS:
        raise ValueError(f"unknown AUC kind {kind!r}; choose one of {', '.join(AUC_KINDS)}")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    if step_budget is not None and (isinstance(step_budget, bool) or not isinstance(step_budget, int) or step_budget < 0):
        raise ValueError(f"step budget must be a whole number >= 0, got {step_budget!r}")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and 0 <= tol <= 1):
        raise ValueError(f"convergence tolerance must be in [0, 1] (accuracy fraction), got {tol!r}")
    if provenance is not None and not isinstance(provenance, dict):
        raise ValueError(f"provenance must be a dict, got {type(provenance).__name__}")


def analyze(
    results: str | os.PathLike | pa.Table,
    out_dir: str | os.PathLike,
    *,
    kind: str = "hypervolume",
    pooling: str = "pooled",
    step_budget: int | None = None,
    provenance: dict[str, Any] | None = None,
    tol: float = 0.01,
    strict: bool = False,
    figures: bool = True,
    eps: float | None = None,
    strategy_order: Sequence[str] | None = None,
    min_acc: float | None = None,
    masking_threshold: float = DEFAULT_MASKING_THRESHOLD,
    curve_step: int | None = None,
    axis: str = "pgd",
    select_on: str = "validation",
    replicates: int = DEFAULT_REPLICATES,
    bootstrap_seed: int = DEFAULT_SEED,
) -> AnalysisResult:
    """Analyse a result store (local path, URI, or a table) into `out_dir`; see module docstring.

    `strategy_order`: the order of strategies in tables and figures (`analysis.frame`; the platform passes
    its registry's order); None: alphabetical. `min_acc`: the clean-accuracy floor of the knee section's
    "most robust point at the floor" (`analysis.knee`); None: no floor. `masking_threshold`: the gap PGD -
    stronger attack above which a point is flagged; `curve_step`: the step of the robustness curves (None:
    each run's final step); both `analysis.robustness`. `axis`: the frontier's robustness axis, pgd, ood or ood:<domain>
    (`analysis.axis`). `select_on`: the split the knee section chooses on (`analysis.selection`); the frontiers,
    AUC and RQ tables are the paper's, on test points. `replicates` (0: none) and `bootstrap_seed`: the paired bootstrap
    of the AUC intervals (`analysis.bootstrap`), run where the store keeps per-image verdicts."""
    _check_arguments(kind, pooling, step_budget, tol, provenance)
    check_axis(axis)
    min_acc = check_min_acc(min_acc)
    check_robustness_options(masking_threshold, curve_step)
    loaded = load_results(results)
    table, cleaning = clean_table(select_axis(loaded, axis, eps), strict=strict, required=ANALYSIS_COLUMNS,
                                  warn=True)
    auc_rows = auc_table(table, kind=kind, pooling=pooling, step_budget=step_budget, strategy_order=strategy_order)
    # WiSE-FT points: marked, never in a plain number
    wise = clean_wise(load_wise(results), table, eps, strict, axis)
    if wise is not None:
        add_wise_auc(auc_rows, table, wise, kind, pooling, step_budget)
    intervals = _intervals(results, table, loaded, auc_rows, axis, kind, pooling, step_budget, replicates,
                           bootstrap_seed)
    seeds = _seeds(results, table, loaded, intervals, axis, kind, step_budget, replicates, bootstrap_seed,
                   strategy_order)
    rq1 = rq1_table(table, tol, strategy_order=strategy_order)
    datasets = sorted({r["dataset"] for r in auc_rows})
    out = Path(out_dir)
    figure_files = _draw_figures(table, out / "figures", datasets, auc_rows, rq1, kind, step_budget,
                                 strategy_order, wise=wise, intervals=intervals) if figures else {}
    robustness, robustness_figures, tables = robustness_analysis(
        loaded, out, kind=kind, step_budget=step_budget, masking_threshold=masking_threshold, curve_step=curve_step,
        strict=strict, figures=figures, strategy_order=strategy_order)
    figure_files.update(robustness_figures)
    data = _json_safe({
        "schema": SCHEMA,
        "results": str(results) if not isinstance(results, pa.Table) else "<table>",
        "conventions": {**conventions(kind, pooling, step_budget, tol), "tolerance": tol,
                        "robustness_axis": axis, "robustness_column": axis_column(axis),
                        "robustness_label": axis_label(axis),
                        **radius_conventions(loaded, table), "images_per_metric": sample_sizes(loaded)},
        "provenance": dict(provenance or {}),
        "summary": {
            "n_runs": len(set(table.column("run_id").to_pylist())),
            "n_points": table.num_rows,
            "strategies": order_strategies((r["strategy"] for r in auc_rows), strategy_order),
            "datasets": datasets,
            "models": models(table),
            "best_strategy": {d: [r["strategy"] for r in auc_rows if r["dataset"] == d and r["is_best"]] for d in datasets},
        },
        "cleaning": cleaning.to_dict(),
        "auc": auc_rows,
        "auc_intervals": intervals,
        "seeds": seeds,
        "wise": wise_summary(wise, results) if wise is not None else None,
        "auc_trials": trial_aucs(table, kind=kind, step_budget=step_budget, strategy_order=strategy_order)
        if pooling == "per_trial" else None,
        "params_vs_auc": params_vs_auc(auc_rows),
        "rq1": rq1,
        "rq1_trials": rq1_trials(table, tol, strategy_order=strategy_order),
        "rq3": rq3_table(table, strategy_order=strategy_order),
        "rq3_by_dataset": rq3_table(table, by=("strategy", "dataset"), strategy_order=strategy_order),
        **_knees(table, min_acc, step_budget, strategy_order, select_on, axis),
        **robustness,
        "figures": {k: os.path.relpath(v, out) for k, v in figure_files.items()},
    })
    return AnalysisResult(data=data, files=_write_report(data, out) + list(figure_files.values()) + tables)


def _intervals(results, table: pa.Table, loaded: pa.Table, auc_rows: list[dict], axis: str, kind: str,
               pooling: str, step_budget: int | None, replicates: int, seed: int) -> dict[str, Any]:
    """The AUC intervals from the store's per-image verdicts (`analysis.auc_intervals`); for a table given
    directly, or with replicates 0, none (every row's auc_ci None)."""
    if isinstance(results, pa.Table) or replicates == 0:
        for row in auc_rows:
            row["auc_ci"], row["best_resolved"] = None, None
        return {"datasets": [], "unavailable": {"*": "no per-image verdicts (a table was given, or replicates 0)"}}
    from rft_ray.results.store import ResultStore  # lazy: keeps the pure functions free of the engine

    out = auc_intervals(ResultStore(str(results)), table, loaded, auc_rows, axis=axis, kind=kind, pooling=pooling,
                        step_budget=step_budget, replicates=replicates, seed=seed)
    return {"method": describe(replicates, seed), "replicates": replicates, "seed": seed, **out}


def _seeds(results, table: pa.Table, loaded: pa.Table, intervals: dict[str, Any], axis: str, kind: str,
           step_budget: int | None, replicates: int, seed: int, strategy_order: Sequence[str] | None) -> dict:
    """Seed-to-seed against image-sampling variation (`analysis.seeds`), where groups ran several seeds."""
    store = None
    if not isinstance(results, pa.Table):
        from rft_ray.results.store import ResultStore  # lazy: keeps the pure functions free of the engine

        store = ResultStore(str(results))
    out = seed_variation(store, table, loaded, axis=axis, kind=kind, step_budget=step_budget, replicates=replicates,
                         seed=seed, strategy_order=strategy_order)
    return {**out, "resolve": ranking_resolution(out["groups"], intervals)}


def _knees(table: pa.Table, min_acc: float | None, step_budget: int | None,
           strategy_order: Sequence[str] | None, select_on: str, axis: str) -> dict[str, Any]:
    """The knee (and the most robust point at the accuracy floor) per group and per run, over the points the
    AUC uses (step <= the step budget), chosen on `select_on`'s split. Results without validation metrics
    leave the section empty with the reason (`knee_unavailable`), which the report prints: the rest of the
    report, on test points, stands."""
    from rft_ray.config.metrics import SelectionError

    if step_budget is not None:
        import pyarrow.compute as pc

        table = table.filter(pc.less_equal(table.column("step"), step_budget))
    try:
        return {"knees": group_knees(table, min_acc, strategy_order=strategy_order, select_on=select_on, axis=axis),
                "knee_trials": trial_knees(table, min_acc, strategy_order=strategy_order, select_on=select_on,
                                           axis=axis),
                "min_acc": min_acc, "knee_select_on": select_on}
    except SelectionError as err:
        return {"knees": None, "knee_trials": None, "min_acc": min_acc, "knee_select_on": select_on,
                "knee_unavailable": str(err)}


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "dataset"


def _draw_figures(table: pa.Table, fig_dir: Path, datasets: list[str], auc_rows: list[dict], rq1: list[dict],
                  kind: str, step_budget: int | None, strategy_order: Sequence[str] | None,
                  wise: pa.Table | None = None, intervals: dict[str, Any] | None = None) -> dict[str, str]:
    """Per dataset the curves and the frontiers (with the WiSE-FT points marked), then the AUC heat map: figure
    key -> path written."""
    from analysis import plots  # lazy: matplotlib only when figures are drawn

    selected = {(r["strategy"], r["dataset"]): r["run_id"] for r in rq1}
    files: dict[str, str] = {}
    slugs: set[str] = set()
    for d in datasets:
        slug = _slug(d)
        while slug in slugs:  # two dataset names that differ only in unsafe characters
            slug += "_"
        slugs.add(slug)
        sel = {s: run for (s, dd), run in selected.items() if dd == d}
        files[f"curves_{d}"] = plots.plot_curves(table, d, fig_dir / f"curves_{slug}.png", selected_runs=sel,
                                                 strategy_order=strategy_order)
        files[f"frontiers_{d}"] = plots.plot_frontiers(
            table, d, fig_dir / f"frontiers_{slug}.png", kind=kind, step_budget=step_budget, auc_rows=auc_rows,
            strategy_order=strategy_order, wise=wise_groups(wise, step_budget) if wise is not None else None)
        measured = next((r for r in (intervals or {}).get("datasets", []) if r["dataset"] == d), None)
        if measured is not None and len(measured["groups"]) > 1:  # the paired bootstrap's pairwise matrix
            files[f"pairwise_{d}"] = plots.plot_pairwise(measured, fig_dir / f"pairwise_{slug}.png")
    files["auc_heatmap"] = plots.plot_auc_heatmap(auc_rows, fig_dir / "auc_heatmap.png", kind=kind,
                                                  strategy_order=strategy_order)
    return files


def _write_report(data: dict[str, Any], out: Path) -> list[str]:
    """report.md, report.html and analysis.json in `out`: their paths."""
    out.mkdir(parents=True, exist_ok=True)
    blocks = report_blocks(data)
    paths = [out / "report.md", out / "report.html", out / "analysis.json"]
    paths[0].write_text(render_markdown(blocks), encoding="utf-8")
    paths[1].write_text(render_html(blocks, out), encoding="utf-8")
    paths[2].write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return [str(p) for p in paths]
