"""Figures of the stronger attacks and the robustness curves (matplotlib Agg, as `analysis.plots`).

* `plot_attack_frontiers`: one figure per attack and radius, a panel per dataset: per strategy the frontier
  of (clean accuracy, PGD accuracy) solid and that of (clean accuracy, attack accuracy) dashed, both on
  exactly the same points (`analysis.attacks.compared_points`).
* `plot_robustness_curves`: a panel per dataset, accuracy against eps (in /255) per strategy, training-time
  PGD solid, each stronger attack in its own line style, clean accuracy at eps 0 (`analysis.curves`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.lines import Line2D

from analysis.attacks import compared_points
from analysis.curves import CLEAN_SOURCE
from analysis.frame import order_strategies
from analysis.frontier import frontier_outline, pareto_frontier
from analysis.measured import PGD_SOURCE, AttackColumn, MeasuredTable, attack_name
from analysis.plots import _new_figure, _save, strategy_color

_ATTACK_STYLES = ("--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)))


def _panels(n: int, width: float = 5.2, height: float = 4.4):
    fig = _new_figure(width * n + 1.8, height)
    axes = fig.subplots(1, n, squeeze=False)[0]
    return fig, axes


def plot_attack_frontiers(
    measured: MeasuredTable, attack: AttackColumn, out_path: str | Path, *, kind: str = "hypervolume",
    step_budget: int | None = None, strategy_order: Sequence[str] | None = None,
) -> str:
    """PGD and the attack's frontiers side by side on the same points, a panel per dataset."""
    groups = compared_points(measured, attack, step_budget, strategy_order)
    groups = {k: g for k, g in groups.items() if len(g["acc"])}
    if not groups:
        raise ValueError(f"no point holds both {attack.column} and PGD at eps {attack.label}")
    datasets = sorted({d for _, d in groups})
    fig, axes = _panels(len(datasets))
    name = attack_name(attack.slug)
    for ax, dataset in zip(axes, datasets):
        for strategy in order_strategies((s for s, d in groups if d == dataset), strategy_order):
            g = groups[(strategy, dataset)]
            color = strategy_color(strategy)
            for column, style, marker in (("pgd", "-", "o"), ("attack", "--", "x")):
                points = np.column_stack([g["acc"], g[column]])
                ax.scatter(points[:, 0], points[:, 1], s=14, color=color, alpha=0.35, marker=marker, zorder=2)
                outline = frontier_outline(pareto_frontier(points), kind)
                ax.plot(outline[:, 0], outline[:, 1], color=color, lw=1.6, ls=style, zorder=3)
        ax.set_xlim(0, 1.0)
        ax.set_ylim(0, 1.0)
        ax.set_xlabel("accuracy (test_clean_acc)")
        ax.set_ylabel(f"robust accuracy at eps {attack.label}")
        ax.set_title(dataset)
        ax.grid(True, alpha=0.3)
    strategies = order_strategies((s for s, _ in groups), strategy_order)
    handles = [Line2D([], [], color=strategy_color(s), lw=2, label=s) for s in strategies]
    handles += [Line2D([], [], color="black", ls="-", marker="o", label="PGD (training-time)"),
                Line2D([], [], color="black", ls="--", marker="x", label=name)]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(f"Pareto frontiers under PGD (solid) and {name} (dashed) at eps {attack.label}\n"
                 f"({kind} AUC; only points measured by both, all runs and steps pooled)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_path)


def plot_robustness_curves(
    rows: Sequence[dict[str, Any]], out_path: str | Path, *, strategy_order: Sequence[str] | None = None,
) -> str:
    """Accuracy against eps per strategy (the selected run of `analysis.curves`), a panel per dataset."""
    rows = [r for r in rows if r["acc"] is not None]
    if not rows:
        raise ValueError("no robustness-curve rows to plot")
    datasets = sorted({r["dataset"] for r in rows})
    attacks = list(dict.fromkeys(r["source"] for r in rows if r["source"] not in (CLEAN_SOURCE, PGD_SOURCE)))
    styles = {PGD_SOURCE: "-", **{a: _ATTACK_STYLES[i % len(_ATTACK_STYLES)] for i, a in enumerate(attacks)}}
    fig, axes = _panels(len(datasets))
    for ax, dataset in zip(axes, datasets):
        here = [r for r in rows if r["dataset"] == dataset]
        for strategy in order_strategies((r["strategy"] for r in here), strategy_order):
            mine = [r for r in here if r["strategy"] == strategy]
            clean = [r for r in mine if r["source"] == CLEAN_SOURCE]
            for source, style in styles.items():
                curve = clean + sorted((r for r in mine if r["source"] == source), key=lambda r: r["eps"])
                if len(curve) > len(clean):
                    ax.plot([r["eps"] * 255 for r in curve], [r["acc"] for r in curve], color=strategy_color(strategy),
                            ls=style, marker="o" if source == PGD_SOURCE else "x", ms=4, lw=1.6)
        ax.set_ylim(0, 1.0)
        ax.set_xlabel("eps (x / 255, L-inf; 0 = clean accuracy)")
        ax.set_ylabel("accuracy")
        ax.set_title(dataset)
        ax.grid(True, alpha=0.3)
    strategies = order_strategies((r["strategy"] for r in rows), strategy_order)
    handles = [Line2D([], [], color=strategy_color(s), lw=2, label=s) for s in strategies]
    handles += [Line2D([], [], color="black", ls=style, marker="o" if source == PGD_SOURCE else "x",
                       label=attack_name(source)) for source, style in styles.items()]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    steps = sorted({r["step"] for r in rows})
    at = f"step {steps[0]}" if len(steps) == 1 else (f"steps {', '.join(map(str, steps))}" if len(steps) <= 4
                                                      else f"steps {steps[0]}-{steps[-1]}")
    fig.suptitle("Robustness curves: accuracy against eps (per strategy the run with the best clean accuracy at "
                 f"its point; {at})", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_path)
