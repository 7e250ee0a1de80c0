"""`rft analyze`: result store -> tables, figures, Markdown + self-contained HTML report, JSON.

`analyze(...)` does the work and returns an `AnalysisResult` (`.data`: every number, JSON-able, with
undefined values such as a correlation of a constant column as ``None``; `.files`: the paths written).
`main(argv)` is the command line; bad input prints one paragraph to stderr and returns 2.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from analysis.frontier import AUC_KINDS
from rft_ray.results.record import PGD_PREFIX, eps_label, parse_eps_label
from analysis.tables import (
    ANALYSIS_COLUMNS,
    POOLINGS,
    TableError,
    auc_table,
    clean_table,
    correlation,
    order_strategies,
    rq1_table,
    rq1_trials,
    rq3_table,
    trial_aucs,
)

SCHEMA = "rft-analysis/1"
DEFAULT_OUT = "rft-analysis"


@dataclass
class AnalysisResult:
    data: dict[str, Any]
    files: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------
# Loading


def load_results(results: str | os.PathLike | pa.Table) -> pa.Table:
    """The result table of a store (local path or URI), or the table itself if one is given."""
    if isinstance(results, pa.Table):
        table = results
        where = "the given table"
    else:
        from rft_ray.results.store import ResultStore  # lazy: keeps the pure functions free of the engine

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


# ---------------------------------------------------------------------------------------------------
# Analysis


def _eps_values(table: pa.Table) -> list[float]:
    """Every PGD radius the table holds: its pgd_eps values and its pgd_adv_acc/<radius> columns."""
    values = set()
    if "pgd_eps" in table.column_names:
        values |= {round(float(v), 9) for v in table.column("pgd_eps").to_pylist() if v is not None}
    values |= {round(radius, 9) for radius in _extra_columns(table)}
    return sorted(values)


def _extra_columns(table: pa.Table) -> dict[float, str]:
    """Radius -> column name of the robust accuracies measured at evaluation.pgd.extra_eps radii."""
    out = {}
    for name in table.column_names:
        if name.startswith(PGD_PREFIX):
            try:
                out[parse_eps_label(name[len(PGD_PREFIX):])] = name
            except ValueError:
                continue
    return out


def select_eps(table: pa.Table, eps: float | None) -> pa.Table:
    """Rows measured at one PGD radius: robustness at different eps values is not one axis, never pooled.

    A radius found in a pgd_adv_acc/<radius> column (evaluation.pgd.extra_eps) becomes the table's
    pgd_adv_acc for the rows that measured it; those rows' pgd_eps is set to that radius.
    """
    values = _eps_values(table)
    if eps is None:
        # Without --eps: the run specs' own radius (evaluation.pgd.eps); extra radii only on request.
        primary = sorted({round(float(v), 9) for v in table.column("pgd_eps").to_pylist() if v is not None}) \
            if "pgd_eps" in table.column_names else []
        if len(primary) > 1:
            raise TableError(f"the results hold PGD accuracy at {len(primary)} radii "
                             f"({', '.join(eps_label(v) for v in primary)}); frontiers mix nothing measured at "
                             "different eps: choose one with --eps (e.g. --eps 1/255)")
        return _without_extra_radii(table)
    keep = [v for v in values if math.isclose(v, eps, rel_tol=1e-6, abs_tol=1e-9)]
    if not keep:
        raise TableError(f"no results at PGD eps {eps_label(eps)}; the results hold "
                         f"{', '.join(eps_label(v) for v in values) or 'no pgd_eps column'}")
    radius = keep[0]
    n = table.num_rows
    mask = np.zeros(n, dtype=bool)
    robust = table.column("pgd_adv_acc").to_numpy(zero_copy_only=False).astype(float).copy()
    if "pgd_eps" in table.column_names:
        column = np.array([np.nan if v is None else v for v in table.column("pgd_eps").to_pylist()], dtype=float)
        mask |= np.isclose(column, radius, rtol=1e-6, atol=1e-9)
    for value, name in _extra_columns(table).items():
        if math.isclose(value, radius, rel_tol=1e-6, abs_tol=1e-9):
            extra = np.array([np.nan if v is None else v for v in table.column(name).to_pylist()], dtype=float)
            measured = ~np.isnan(extra) & ~mask
            robust[measured] = extra[measured]
            mask |= measured
    out = table.set_column(table.column_names.index("pgd_adv_acc"), "pgd_adv_acc", pa.array(robust))
    if "pgd_eps" in out.column_names:
        out = out.set_column(out.column_names.index("pgd_eps"), "pgd_eps", pa.array(np.full(n, radius)))
    return _without_extra_radii(out.filter(pa.array(mask)))


def _without_extra_radii(table: pa.Table) -> pa.Table:
    """After selection: one radius, in pgd_adv_acc / pgd_eps alone."""
    return table.drop_columns([name for name in table.column_names if name.startswith(PGD_PREFIX)])


def parse_eps(text: str) -> float:
    """'2/255', '0.0078' -> a float in (0, 1]."""
    try:
        value = parse_eps_label(text)
    except (ValueError, ZeroDivisionError):
        raise _UsageError(f"--eps takes a number or a fraction such as 2/255, got {text!r}") from None
    if not 0 < value <= 1:
        raise _UsageError(f"--eps must be in (0, 1] (pixel units), got {text!r}")
    return value


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


def _conventions(kind: str, pooling: str, step_budget: int | None, tol: float) -> dict[str, Any]:
    auc = {
        "hypervolume": "hypervolume: area of [0,1]^2 dominated by the Pareto frontier of the "
        "(accuracy, robustness) = (test_clean_acc, pgd_adv_acc) points, reference point (0, 0) "
        "(the staircase under the frontier)",
        "trapezoid": "trapezoid: area under the Pareto frontier joined by straight lines (accuracy "
        "ascending), closed horizontally from the leftmost point to the robustness axis and vertically from "
        "the rightmost point down to the accuracy axis; unlike the hypervolume, adding a non-dominated point "
        "can lower it",
    }[kind]
    pool = {
        "pooled": "pooled: a strategy's frontier on a dataset pools every evaluation point of every run of "
        "that strategy on that dataset (all steps, all hyperparameters)",
        "per_trial": "per trial: one frontier per run; the table reports the best run's AUC per "
        "strategy and dataset (auc_trial_mean: mean over its runs)",
    }[pooling]
    budget = f"only evaluation points with step <= {step_budget}" if step_budget is not None else "all steps"
    return {
        "auc_kind": kind,
        "auc_definition": auc,
        "pooling": pooling,
        "pooling_definition": pool,
        "step_budget": step_budget,
        "step_budget_definition": budget,
        "pct_above_average": "(AUC - mean AUC of all strategies on the dataset) / that mean * 100; "
        "undefined (null) when that mean is 0; best = highest AUC on the dataset (ties all marked)",
        "trainable_params": "median over the group's runs of each run's trainable_params",
        "convergence": f"accuracy has converged at the first evaluated step where test_clean_acc >= (the run's "
        f"maximum test_clean_acc) - {tol:g} (tolerance {tol:g} = {tol * 100:g} percentage points; 1e-9 slack for "
        "float rounding); the "
        "robustness peak (max pgd_adv_acc, earliest step on ties) came before convergence when its step is "
        "strictly smaller",
        "rq1_summary": "RQ1 is computed on each run's own curve; per strategy and dataset the table shows the "
        "run with the best final test_clean_acc (ties: higher final robustness, then smaller run id), next to "
        "means over all its runs and the number of runs whose peak came before convergence; final = the "
        "run's last evaluated step, drop = peak - final robustness",
        "rq3": "Pearson and Spearman (average ranks for ties) correlations over evaluation points, all runs and "
        "steps of the group; points without test_ood_accuracy (datasets without an OOD split) are left out of "
        "the OOD correlation; undefined (NaN / null) when a column is constant or fewer than 2 points",
        "step_axis": "figures plot step + 1 on a log-scaled axis, so step 0 appears at x = 1",
        "undefined_values": "NaN in tables, null in JSON",
    }


def _params_vs_auc(auc_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset: rank correlation of trainable parameters with AUC across strategies."""
    out = []
    for dataset in sorted({r["dataset"] for r in auc_rows}):
        rows = [r for r in auc_rows if r["dataset"] == dataset and r["trainable_params"] is not None]
        c = correlation([r["trainable_params"] for r in rows], [r["auc"] for r in rows], "trainable_params", "AUC")
        out.append({"dataset": dataset, "n_strategies": c["n"], "pearson": c["pearson"],
                    "spearman": c["spearman"], "note": c["note"]})
    return out


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "dataset"


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
) -> AnalysisResult:
    """Analyse a result store (local path, URI, or a table) into `out_dir`; see module docstring."""
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

    loaded = load_results(results)
    raw = select_eps(loaded, eps)
    table, cleaning = clean_table(raw, strict=strict, required=ANALYSIS_COLUMNS, warn=True)

    auc_rows = auc_table(table, kind=kind, pooling=pooling, step_budget=step_budget)
    trials = trial_aucs(table, kind=kind, step_budget=step_budget) if pooling == "per_trial" else None
    rq1 = rq1_table(table, tol)
    rq1_runs = rq1_trials(table, tol)
    rq3 = rq3_table(table)
    rq3_ds = rq3_table(table, by=("strategy", "dataset"))
    strategies = order_strategies(r["strategy"] for r in auc_rows)
    datasets = sorted({r["dataset"] for r in auc_rows})
    best = {d: [r["strategy"] for r in auc_rows if r["dataset"] == d and r["is_best"]] for d in datasets}

    out = Path(out_dir)
    fig_dir = out / "figures"
    figure_files: dict[str, str] = {}
    if figures:
        from analysis import plots  # lazy: matplotlib only when figures are drawn

        selected = {(r["strategy"], r["dataset"]): r["run_id"] for r in rq1}
        slugs: set[str] = set()
        for d in datasets:
            slug = _slug(d)
            while slug in slugs:  # two dataset names that differ only in unsafe characters
                slug += "_"
            slugs.add(slug)
            sel = {s: run for (s, dd), run in selected.items() if dd == d}
            figure_files[f"curves_{d}"] = plots.plot_curves(table, d, fig_dir / f"curves_{slug}.png", selected_runs=sel)
            figure_files[f"frontiers_{d}"] = plots.plot_frontiers(
                table, d, fig_dir / f"frontiers_{slug}.png", kind=kind, step_budget=step_budget,
                auc_rows=auc_rows)
        figure_files["auc_heatmap"] = plots.plot_auc_heatmap(auc_rows, fig_dir / "auc_heatmap.png", kind=kind)

    data = _json_safe({
        "schema": SCHEMA,
        "results": str(results) if not isinstance(results, pa.Table) else "<table>",
        "conventions": {**_conventions(kind, pooling, step_budget, tol), "tolerance": tol,
                        "pgd_eps": _eps_values(table),
                        "other_pgd_eps": [v for v in _eps_values(loaded) if v not in _eps_values(table)]},
        "provenance": dict(provenance or {}),
        "summary": {
            "n_runs": len(set(table.column("run_id").to_pylist())),
            "n_points": table.num_rows,
            "strategies": strategies,
            "datasets": datasets,
            "best_strategy": best,
        },
        "cleaning": cleaning.to_dict(),
        "auc": auc_rows,
        "auc_trials": trials,
        "params_vs_auc": _params_vs_auc(auc_rows),
        "rq1": rq1,
        "rq1_trials": rq1_runs,
        "rq3": rq3,
        "rq3_by_dataset": rq3_ds,
        "figures": {k: os.path.relpath(v, out) for k, v in figure_files.items()},
    })

    out.mkdir(parents=True, exist_ok=True)
    blocks = _report_blocks(data)
    paths = [out / "report.md", out / "report.html", out / "analysis.json"]
    paths[0].write_text(_render_markdown(blocks), encoding="utf-8")
    paths[1].write_text(_render_html(blocks, out), encoding="utf-8")
    paths[2].write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return AnalysisResult(data=data, files=[str(p) for p in paths] + list(figure_files.values()))


# ---------------------------------------------------------------------------------------------------
# Report: blocks rendered to Markdown and to HTML


def _num(value: Any, digits: int = 4, signed: bool = False, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "NaN"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:{'+' if signed else ''}.{digits}f}{suffix}"


def _report_blocks(data: dict[str, Any]) -> list[tuple]:
    conv, summary = data["conventions"], data["summary"]
    b: list[tuple] = [("h1", "Robustness trade-off in fine-tuning: analysis")]
    b.append(("p", f"Results: {data['results']}. {summary['n_runs']} runs, {summary['n_points']} evaluation points, "
                   f"{len(summary['strategies'])} strategies ({', '.join(summary['strategies'])}) on "
                   f"{len(summary['datasets'])} datasets ({', '.join(summary['datasets'])})."))
    if data["provenance"]:
        b.append(("h2", "Provenance"))
        b.append(("list", [f"{k}: {v}" for k, v in data["provenance"].items()]))
    b.append(("h2", "Conventions"))
    b.append(("list", [
        "Robustness: PGD accuracy at eps " + (", ".join(eps_label(v) for v in conv["pgd_eps"]) or "unknown")
        + " (one radius per analysis; results at other radii are analysed separately with --eps"
        + (": this store also holds " + ", ".join(eps_label(v) for v in conv["other_pgd_eps"])
           if conv.get("other_pgd_eps") else "") + ").",
        f"AUC kind: {conv['auc_definition']}.",
        f"Pooling: {conv['pooling_definition']}.",
        f"Step budget: {conv['step_budget_definition']}.",
        f"% above average: {conv['pct_above_average']}.",
        f"Trainable parameters: {conv['trainable_params']}.",
        f"Convergence (RQ1): {conv['convergence']}.",
        f"RQ1 summary: {conv['rq1_summary']}.",
        f"RQ3: {conv['rq3']}.",
        f"Figures: {conv['step_axis']}.",
        f"Undefined values: {conv['undefined_values']}.",
    ]))
    b.append(("h2", "Data cleaning"))
    cl = data["cleaning"]
    lines = [f"{cl['n_input_rows']} rows read, {cl['n_kept_rows']} used, {cl['n_dropped_rows']} dropped."]
    lines += [f"Dropped: {r}: {n} row(s)." for r, n in cl["dropped"].items()]
    lines += [f"Value ignored (treated as missing): {r}: {n}." for r, n in cl["ignored_values"].items()]
    b.append(("list", lines))

    # AUC: the paper's layout, strategies x datasets.
    auc = data["auc"]
    strategies, datasets = summary["strategies"], summary["datasets"]
    by = {(r["strategy"], r["dataset"]): r for r in auc}
    b.append(("h2", f"AUC ({conv['auc_kind']}, {conv['pooling']}"
                    + (f", steps <= {conv['step_budget']}" if conv["step_budget"] is not None else "") + ")"))
    b.append(("p", "Each cell: AUC (% above the dataset's mean AUC); **bold** with (best) = best strategy on the "
                   "dataset. Trainable parameters: median over the strategy's groups."))
    header = ["strategy", "trainable params"] + datasets + ["mean % above avg"]
    rows = []
    for s in strategies:
        cells = [s]
        params = [by[(s, d)]["trainable_params"] for d in datasets if (s, d) in by and by[(s, d)]["trainable_params"] is not None]
        cells.append(_num(int(np.median(params))) if params else "n/a")
        pcts = []
        for d in datasets:
            r = by.get((s, d))
            if r is None:
                cells.append("n/a")
                continue
            text = f"{_num(r['auc'])} ({_num(r['pct_above_average'], 1, True, '%')})"
            cells.append(("bold", text + " (best)") if r["is_best"] else text)
            if r["pct_above_average"] is not None:
                pcts.append(r["pct_above_average"])
        cells.append(_num(float(np.mean(pcts)), 1, True, "%") if pcts else "NaN")
        rows.append(cells)
    b.append(("table", header, rows))
    b.append(("p", "Per group: runs / points used, trainable parameters beside the AUC"
                   + (", and the best run (per-trial pooling)." if conv["pooling"] == "per_trial" else ".")))
    header = ["strategy", "dataset", "AUC", "% above avg", "best", "runs", "points", "trainable params"]
    if conv["pooling"] == "per_trial":
        header += ["best run", "mean AUC over runs"]
    rows = []
    for r in auc:
        row = [r["strategy"], r["dataset"], _num(r["auc"]), _num(r["pct_above_average"], 1, True, "%"),
               _num(r["is_best"]), _num(r["n_runs"]), _num(r["n_points"]),
               _num(r["trainable_params"]) if r["trainable_params"] is not None else "n/a"]
        if conv["pooling"] == "per_trial":
            row += [r["best_run_id"] or "n/a", _num(r["auc_trial_mean"])]
        rows.append(row)
    b.append(("table", header, rows))
    b.append(("p", "Trainable parameters vs AUC across strategies, per dataset:"))
    b.append(("table", ["dataset", "strategies", "Pearson", "Spearman", "note"],
              [[r["dataset"], _num(r["n_strategies"]), _num(r["pearson"], 3), _num(r["spearman"], 3), r["note"] or ""]
               for r in data["params_vs_auc"]]))
    if "auc_heatmap" in data["figures"]:
        b.append(("img", data["figures"]["auc_heatmap"], "AUC heat map"))

    b.append(("h2", "RQ1: robustness peak vs accuracy convergence"))
    b.append(("p", f"Tolerance {conv['tolerance']:g}. Columns from the run with the best final clean accuracy "
                   "(run), except the mean columns (over all runs) and 'peak before conv.' counted over runs."))
    header = ["strategy", "dataset", "runs", "run", "peak rob.", "peak step", "final step", "final rob.",
              "drop", "final acc.", "converged step", "peak before conv.", "mean peak", "mean final", "mean drop",
              "runs peak before conv."]
    rows = [[r["strategy"], r["dataset"], _num(r["n_runs"]), r["run_id"], _num(r["peak_robustness"]),
             _num(r["peak_step"]), _num(r["final_step"]), _num(r["final_robustness"]), _num(r["drop"]),
             _num(r["final_accuracy"]), _num(r["converged_step"]), _num(r["peak_before_convergence"]),
             _num(r["mean_peak_robustness"]), _num(r["mean_final_robustness"]), _num(r["mean_drop"]),
             f"{r['n_peak_before_convergence']}/{r['n_runs']}"] for r in data["rq1"]]
    b.append(("table", header, rows))
    for d in datasets:
        key = f"curves_{d}"
        if key in data["figures"]:
            b.append(("img", data["figures"][key], f"Accuracy and robustness against step: {d}"))

    b.append(("h2", "RQ3: OOD accuracy vs clean accuracy, next to PGD accuracy vs clean accuracy"))
    header = ["strategy", "points", "OOD points", "OOD~clean Pearson", "OOD~clean Spearman",
              "PGD~clean Pearson", "PGD~clean Spearman", "note"]

    def rq3_rows(rows: list[dict], with_dataset: bool) -> list[list[str]]:
        out = []
        for r in rows:
            note = "; ".join(f"{w}: {n}" for w, n in (("OOD", r["ood_note"]), ("PGD", r["pgd_note"])) if n)
            out.append([r["strategy"]] + ([r["dataset"]] if with_dataset else []) + [
                _num(r["n_points"]), _num(r["n_ood_points"]), _num(r["ood_clean_pearson"], 3),
                _num(r["ood_clean_spearman"], 3), _num(r["pgd_clean_pearson"], 3), _num(r["pgd_clean_spearman"], 3), note])
        return out

    b.append(("p", "Per strategy, over all its evaluation points (datasets pooled):"))
    b.append(("table", header, rq3_rows(data["rq3"], False)))
    b.append(("p", "Per strategy and dataset:"))
    b.append(("table", header[:1] + ["dataset"] + header[1:], rq3_rows(data["rq3_by_dataset"], True)))

    b.append(("h2", "Pareto frontiers"))
    for d in datasets:
        key = f"frontiers_{d}"
        if key in data["figures"]:
            b.append(("img", data["figures"][key], f"Pareto frontiers: {d}"))
    b.append(("p", "Every number above is in analysis.json (null = undefined)."))
    return b


def _md_cell(cell: Any) -> str:
    if isinstance(cell, tuple) and cell[0] == "bold":
        return f"**{_md_cell(cell[1])}**"
    return str(cell).replace("|", "\\|").replace("\n", " ")


def _render_markdown(blocks: list[tuple]) -> str:
    out: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            out.append(f"# {block[1]}")
        elif kind == "h2":
            out.append(f"## {block[1]}")
        elif kind == "p":
            out.append(block[1])
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "table":
            header, rows = block[1], block[2]
            lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{block[2]}]({block[1]})")
        out.append("")
    return "\n".join(out)


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}figure{margin:1em 0}img{max-width:100%}
figcaption{color:#555;font-size:0.9em}"""


def _html_inline(text: str) -> str:
    escaped = html.escape(text)
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)


def _render_html(blocks: list[tuple], base: Path) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>rft analyze report</title>", f"<style>{_CSS}</style></head><body>"]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{_html_inline(block[1])}</p>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            header, rows = block[1], block[2]

            def cell(c: Any) -> str:
                if isinstance(c, tuple) and c[0] == "bold":
                    return f"<b>{html.escape(str(c[1]))}</b>"
                return html.escape(str(c))

            parts.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                         + "</tr></thead><tbody>"
                         + "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
                         + "</tbody></table>")
        elif kind == "img":
            encoded = base64.b64encode((base / block[1]).read_bytes()).decode("ascii")
            parts.append(f'<figure><img alt="{html.escape(block[2])}" src="data:image/png;base64,{encoded}">'
                         f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------------
# Command line


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # never exit from inside argparse: main returns 2
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="rft analyze",
        description="Analyse a result store: strategy x dataset AUC table, RQ1 (robustness peak vs accuracy "
        "convergence), RQ3 (OOD/PGD vs clean accuracy correlations), figures, report.md/report.html/analysis.json.",
    )
    p.add_argument("results", metavar="RESULTS", help="result store: a local directory or a URI (s3://..., gs://...)")
    p.add_argument("--out", metavar="DIR", default=DEFAULT_OUT, help=f"output directory (default: ./{DEFAULT_OUT})")
    p.add_argument("--json", action="store_true", help="print the machine-readable result (analysis.json) to stdout")
    p.add_argument("--auc", choices=AUC_KINDS, default="hypervolume", help="AUC kind (default: hypervolume)")
    p.add_argument("--per-trial", action="store_true",
                   help="one frontier per run; report the best run's AUC per strategy and dataset")
    p.add_argument("--step-budget", metavar="N", type=int, default=None, help="only use points with step <= N")
    p.add_argument("--eps", default=None,
                   help="PGD radius to analyse, e.g. 2/255 (needed when the results hold several)")
    p.add_argument("--tol", type=float, default=0.01,
                   help="RQ1 convergence tolerance in accuracy (fraction, default 0.01 = 1 point)")
    p.add_argument("--strict", action="store_true", help="fail on bad rows instead of dropping them")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    p.add_argument("--provenance", metavar="KEY=VALUE", action="append", default=[],
                   help="provenance line for the report (repeatable)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        provenance = {}
        for item in args.provenance:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise _UsageError(f"--provenance takes KEY=VALUE, got {item!r}")
            provenance[key] = value
        if args.step_budget is not None and args.step_budget < 0:
            raise _UsageError(f"--step-budget must be >= 0, got {args.step_budget}")
        eps = parse_eps(args.eps) if args.eps is not None else None
    except _UsageError as err:
        print(f"{parser.format_usage().rstrip()}\nrft analyze: error: {err}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = analyze(args.results, args.out, kind=args.auc,
                             pooling="per_trial" if args.per_trial else "pooled", step_budget=args.step_budget,
                             provenance=provenance or None, tol=args.tol, strict=args.strict,
                             figures=not args.no_figures, eps=eps)
        except (ValueError, OSError, pa.ArrowException) as err:
            for w in caught:
                print(f"rft analyze: warning: {w.message}", file=sys.stderr)
            print(f"rft analyze: error: {err}", file=sys.stderr)
            return 2
    for w in caught:
        print(f"rft analyze: warning: {w.message}", file=sys.stderr)

    if args.json:
        print(json.dumps(result.data, indent=2, allow_nan=False))
    else:
        data = result.data
        print(f"analysed {data['summary']['n_runs']} runs, {data['summary']['n_points']} points "
              f"({data['conventions']['auc_kind']} AUC, {data['conventions']['pooling']})")
        for dataset, strategies in data["summary"]["best_strategy"].items():
            print(f"  best on {dataset}: {', '.join(strategies)}")
        print("wrote:")
        for path in result.files:
            print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
