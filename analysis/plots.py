"""Figures (matplotlib, Agg canvas; pyplot and the global backend are never touched).

Each function writes one PNG and returns its path. Strategies keep one colour in every figure, whatever
the strategy order and whichever strategies a figure shows: the colour belongs to the name
(`strategy_color`). Legends and rows follow ``strategy_order`` (`analysis.frame`; None: alphabetical).
Step axes plot ``step + 1`` on a log scale so that step 0 shows (at x = 1).
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.frame import group_points, order_strategies, pivot
from analysis.frontier import frontier_outline, pareto_frontier
from analysis.uncertainty import wilson_interval

# Colours of the paper's strategies, by name; other names get one of the fallback colours by a hash of the name.
STRATEGY_COLORS: dict[str, str] = {
    "full": "#1f77b4",       # blue
    "linear": "#7f7f7f",     # grey
    "bitfit": "#2ca02c",     # green
    "lora": "#d62728",       # red
    "ia3": "#9467bd",        # purple
    "adapter": "#ff7f0e",    # orange
    "compacter": "#8c564b",  # brown
}
_FALLBACK_COLORS = ("#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939", "#ad494a", "#7b4173", "#3182bd")
DPI = 110


def strategy_color(name: str) -> str:
    """Fixed colour per strategy; unknown names get a colour derived from the name (stable across runs)."""
    return STRATEGY_COLORS.get(name) or _FALLBACK_COLORS[zlib.crc32(name.encode()) % len(_FALLBACK_COLORS)]


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_path: str | Path) -> str:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=DPI, bbox_inches="tight")
    return str(out)


def _best_final_run(run_ids: np.ndarray, steps: np.ndarray, acc: np.ndarray, rob: np.ndarray) -> str:
    """The run with the best final clean accuracy (ties: final robustness, then smaller id), as in RQ1."""
    finals = []
    for run in sorted(set(run_ids)):
        m = run_ids == run
        last = int(np.argmax(steps[m]))
        finals.append((-acc[m][last], -rob[m][last], run))
    return sorted(finals)[0][2]


def plot_curves(
    table: pa.Table, dataset: str, out_path: str | Path, *, selected_runs: dict[str, str] | None = None,
    strategy_order: Sequence[str] | None = None,
) -> str:
    """Clean and PGD accuracy against step + 1 (log axis) for every strategy on one dataset.

    Per strategy the selected run (default: the best final clean accuracy, as in RQ1) is drawn solid
    with its robustness peak marked; the other runs of the strategy are drawn faint."""
    groups = {s: g for (s, d), g in group_points(table).items() if d == dataset}
    if not groups:
        raise ValueError(f"no points for dataset {dataset!r}")
    fig = _new_figure(11.0, 4.2)
    ax_acc, ax_rob = fig.subplots(1, 2, sharex=True)
    max_step = 0
    for strategy in order_strategies(groups, strategy_order):
        g = groups[strategy]
        color = strategy_color(strategy)
        chosen = (selected_runs or {}).get(strategy) or _best_final_run(g["run_id"], g["step"], g["acc"], g["rob"])
        for run in sorted(set(g["run_id"])):
            m = g["run_id"] == run
            x = g["step"][m] + 1
            max_step = max(max_step, int(x.max()))
            main = run == chosen
            style = dict(color=color, lw=1.8 if main else 0.8, alpha=1.0 if main else 0.3,
                         label=strategy if main else None, zorder=3 if main else 2)
            ax_acc.plot(x, g["acc"][m], marker="o" if main else None, ms=3, **style)
            ax_rob.plot(x, g["rob"][m], marker="o" if main else None, ms=3, **style)
            if main:  # the 95% Wilson band (analysis.uncertainty); none where the counts are not recorded
                for ax, values, counts in ((ax_acc, g["acc"][m], g["n_acc"][m]), (ax_rob, g["rob"][m], g["n_rob"][m])):
                    lo, hi = wilson_interval(values, counts)
                    if not np.isnan(lo).all():
                        ax.fill_between(x, lo, hi, color=color, alpha=0.15, linewidth=0, zorder=1)
                peak = int(np.argmax(g["rob"][m]))
                ax_rob.plot(x[peak], g["rob"][m][peak], marker="*", ms=13, color=color, mec="black", mew=0.6, zorder=4)
    for ax, title, ylabel in ((ax_acc, "clean accuracy", "test_clean_acc"), (ax_rob, "PGD robustness", "pgd_adv_acc")):
        ax.set_xscale("log")
        ax.set_xlim(0.9, max(max_step, 2) * 1.3)
        ax.set_xlabel("step + 1 (log scale; step 0 at x = 1)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{dataset}: {title}")
        ax.grid(True, which="major", alpha=0.3)
    ax_rob.plot([], [], ls="none", marker="*", ms=11, color="white", mec="black", label="robustness peak")
    handles, labels = ax_rob.get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title="strategy")
    fig.suptitle(f"Accuracy and robustness during fine-tuning: {dataset}\n"
                 "(solid: run with best final clean accuracy per strategy, its band the 95% Wilson interval from the "
                 "images measured; faint: other runs)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_path)


def plot_frontiers(
    table: pa.Table,
    dataset: str,
    out_path: str | Path,
    *,
    kind: str = "hypervolume",
    step_budget: int | None = None,
    auc_rows: Sequence[dict[str, Any]] | None = None,
    strategy_order: Sequence[str] | None = None,
    wise: dict[tuple[str, str], dict[str, np.ndarray]] | None = None,
) -> str:
    """Pareto frontiers of all strategies on one dataset: raw points faint, frontier outline bold.

    The outline is the region whose area is the AUC (staircase for hypervolume, straight segments for
    trapezoid). With per-trial `auc_rows` (their `best_run_id` set), the best run's frontier is drawn.
    `wise` (`analysis.wise.wise_groups`): WiSE-FT points, drawn as hollow diamonds (all of them), and the
    frontier with them dashed, whose area is the AUC rows' `auc_with_wise`: pooled, over every run's points and
    WiSE-FT points; per trial, over those of the run `auc_with_wise` chose (`wise_best_run_id`)."""
    groups = {s: g for (s, d), g in group_points(table, step_budget).items() if d == dataset}
    if not groups:
        raise ValueError(f"no points for dataset {dataset!r}")
    rows = {r["strategy"]: r for r in (auc_rows or []) if r["dataset"] == dataset}
    fig = _new_figure(7.8, 5.6)
    ax = fig.subplots()
    max_acc = max_rob = 0.0
    for strategy in order_strategies(groups, strategy_order):
        g = groups[strategy]
        color = strategy_color(strategy)
        if len(g["acc"]) == 0:
            continue
        ax.scatter(g["acc"], g["rob"], s=14, color=color, alpha=0.35, linewidths=0, zorder=2)
        best_run = rows.get(strategy, {}).get("best_run_id")
        m = g["run_id"] == best_run if best_run else np.ones(len(g["acc"]), dtype=bool)
        front = pareto_frontier(np.column_stack([g["acc"][m], g["rob"][m]]))
        outline = frontier_outline(front, kind)
        label = strategy
        if strategy in rows:
            label += f" (AUC {rows[strategy]['auc']:.3f})"
        ax.plot(outline[:, 0], outline[:, 1], color=color, lw=1.8, label=label, zorder=3)
        ax.scatter(front[:, 0], front[:, 1], s=22, color=color, edgecolors="black", linewidths=0.4, zorder=4)
        max_acc, max_rob = max(max_acc, g["acc"].max()), max(max_rob, g["rob"].max())
        w = (wise or {}).get((strategy, dataset))
        if w is not None and len(w["acc"]):
            ax.scatter(w["acc"], w["rob"], s=30, marker="D", facecolors="none", edgecolors=color, linewidths=1.0,
                       zorder=5)
            wise_run = rows.get(strategy, {}).get("wise_best_run_id")
            own = g["run_id"] == wise_run if wise_run else m
            mine = w["source"] == wise_run if wise_run else np.ones(len(w["acc"]), dtype=bool)
            both = pareto_frontier(np.vstack([np.column_stack([g["acc"][own], g["rob"][own]]),
                                              np.column_stack([w["acc"][mine], w["rob"][mine]])]))
            dashed = frontier_outline(both, kind)
            with_wise = rows.get(strategy, {}).get("auc_with_wise")
            ax.plot(dashed[:, 0], dashed[:, 1], color=color, lw=1.1, ls="--", zorder=3,
                    label=f"{strategy} with WiSE-FT" + (f" (AUC {with_wise:.3f})" if with_wise is not None else ""))
            max_acc, max_rob = max(max_acc, w["acc"].max()), max(max_rob, w["rob"].max())
    if any(key[1] == dataset and len(v["acc"]) for key, v in (wise or {}).items()):
        ax.scatter([], [], s=30, marker="D", facecolors="none", edgecolors="black",
                   label="WiSE-FT point (interpolated weights)")
    ax.set_xlim(0, min(1.0, max_acc + 0.05) if max_acc > 0 else 1.0)
    ax.set_ylim(0, min(1.0, max_rob + 0.05) if max_rob > 0 else 1.0)
    ax.set_xlabel("accuracy (test_clean_acc)")
    ax.set_ylabel("robustness (pgd_adv_acc)")
    pooled = "best run per strategy" if any(r.get("best_run_id") for r in rows.values()) else "all runs and steps pooled"
    budget = f", steps <= {step_budget}" if step_budget is not None else ""
    ax.set_title(f"Pareto frontiers of test points on {dataset}\n({kind} AUC; {pooled}{budget}; faint dots: all points)",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False, title="strategy")
    fig.tight_layout()
    return _save(fig, out_path)


def plot_auc_heatmap(
    auc_rows: Sequence[dict[str, Any]], out_path: str | Path, *, kind: str = "hypervolume",
    strategy_order: Sequence[str] | None = None,
) -> str:
    """Strategies x datasets heat map of AUC, each cell annotated with AUC and % above the dataset mean;
    the best strategy per dataset is outlined and bold."""
    if not auc_rows:
        raise ValueError("no AUC rows to plot")
    strategies, datasets, auc = pivot(list(auc_rows), "auc", strategy_order)
    _, _, pct = pivot(list(auc_rows), "pct_above_average", strategy_order)
    _, _, best = pivot([{**r, "is_best": float(r["is_best"])} for r in auc_rows], "is_best", strategy_order)
    fig = _new_figure(max(4.5, 1.7 * len(datasets) + 2.8), max(3.0, 0.55 * len(strategies) + 1.6))
    ax = fig.subplots()
    finite = auc[np.isfinite(auc)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmax - vmin < 1e-9:
        vmin, vmax = vmin - 0.01, vmax + 0.01
    image = ax.imshow(np.ma.masked_invalid(auc), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    cmap = image.get_cmap()
    for i in range(len(strategies)):
        for j in range(len(datasets)):
            if not np.isfinite(auc[i, j]):
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=9, color="grey")
                continue
            r, g, b, _ = cmap((auc[i, j] - vmin) / (vmax - vmin))
            color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
            text = f"{auc[i, j]:.3f}"
            if np.isfinite(pct[i, j]):
                text += f"\n({pct[i, j]:+.1f}%)"
            is_best = best[i, j] == 1.0
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color=color,
                    fontweight="bold" if is_best else "normal")
            if is_best:
                ax.add_patch(_Rect((j - 0.47, i - 0.47), 0.94, 0.94, fill=False, edgecolor="red", lw=2.0))
    ax.set_xticks(range(len(datasets)), labels=datasets, rotation=20 if len(datasets) > 3 else 0, ha="right" if len(datasets) > 3 else "center")
    ax.set_yticks(range(len(strategies)), labels=strategies)
    ax.set_xlabel("dataset")
    ax.set_ylabel("strategy")
    ax.set_title(f"{kind} AUC per strategy and dataset, test points\n(% vs dataset mean; best outlined in red)",
                 fontsize=10)
    fig.colorbar(image, ax=ax, label=f"{kind} AUC", fraction=0.046, pad=0.04)
    fig.tight_layout()
    return _save(fig, out_path)


def _Rect(*args, **kwargs):
    from matplotlib.patches import Rectangle

    return Rectangle(*args, **kwargs)


def plot_pairwise(result: dict[str, Any], out_path: str | Path) -> str:
    """One dataset's strategy x strategy matrix of the paired bootstrap (`analysis.bootstrap`): each cell the share
    of replicates in which the row's strategy has the higher frontier AUC, and its AUC difference; a resolved
    difference (95% interval excludes 0) is bold and outlined, an unresolved one grey."""
    names = [g["strategy"] for g in result["groups"]]
    if len(names) < 2:
        raise ValueError(f"{result['dataset']}: a pairwise matrix needs two strategies")
    share, diff, resolved = (np.full((len(names), len(names)), np.nan) for _ in range(3))
    for p in result["pairs"]:
        i, j = names.index(p["a"]), names.index(p["b"])
        share[i, j], share[j, i] = p["a_wins_share"], 1 - p["a_wins_share"]
        diff[i, j], diff[j, i] = p["difference"], -p["difference"]
        resolved[i, j] = resolved[j, i] = float(p["resolved"])
    fig = _new_figure(max(4.5, 0.9 * len(names) + 2.5), max(3.5, 0.7 * len(names) + 1.8))
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(share), cmap="RdBu", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(len(names)):
        for j in range(len(names)):
            if i == j:
                continue
            bold = resolved[i, j] == 1.0
            ax.text(j, i, f"{share[i, j]:.2f}\n{diff[i, j]:+.3f}", ha="center", va="center", fontsize=8,
                    color="black" if bold else "dimgrey", fontweight="bold" if bold else "normal")
            if bold:
                ax.add_patch(_Rect((j - 0.47, i - 0.47), 0.94, 0.94, fill=False, edgecolor="black", lw=1.5))
    ax.set_xticks(range(len(names)), labels=names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), labels=names)
    ax.set_title(f"{result['dataset']}: share of bootstrap replicates the row's AUC beats the column's\n"
                 "(and AUC row - column; outlined: resolved, its 95% interval excludes 0)", fontsize=9)
    fig.colorbar(image, ax=ax, label="row wins (share of replicates)", fraction=0.046, pad=0.04)
    fig.tight_layout()
    return _save(fig, out_path)
