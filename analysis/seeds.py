"""Seed-to-seed against image-sampling variation of the frontier AUC, where a sweep repeated its configurations
over training seeds (`search.seeds`; each record says its ``seed``).

Two sources of uncertainty, kept apart:

* **Image sampling** (which images the seeded subsets drew): every run, whatever its training seed, is measured
  on the same images (the subsets follow ``dataset.split_seed``, not ``training.seed``), so the paired bootstrap
  of `analysis.bootstrap` gives each seed's AUC an interval and a standard deviation over replicates.
* **Training seed** (initialisation, data order, augmentation): the AUCs of the same strategy's runs under
  different seeds, on the same images, differ by training alone.

Per strategy x dataset with runs of two or more seeds: each seed's pooled frontier AUC (the AUC table's pooled
definition over that seed's runs; the same step budget), its 95% bootstrap interval and bootstrap sd; over the
seeds, the AUC mean and sd (ddof 1: seed-to-seed variation) and the image sd (root mean square of the seeds'
bootstrap sds). A strategy ranking reported on the mean of k seeds carries both: the difference of two
strategies' means has variance (sd_a^2 + sd_b^2) / k + image_sd_diff^2, where image_sd_diff is the bootstrap sd of
their AUC difference (image noise is shared by every seed's runs, so more seeds do not shrink it);
`seeds_to_resolve` solves for the k that puts a difference's 95% interval off zero.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from analysis.auc import auc_table
from analysis.cleaning import string_column
from analysis.frame import order_strategies
from analysis.uncertainty import Z95

SEED_LABEL = "{strategy} seed {seed}"


def seed_variation(store, table: pa.Table, loaded: pa.Table, *, axis: str, kind: str, step_budget: int | None,
                   replicates: int, seed: int, strategy_order: Sequence[str] | None = None) -> dict[str, Any]:
    """``groups``: one row per strategy x dataset with two or more seeds (module docstring); ``unavailable``:
    per dataset why no bootstrap ran (no store, or `analysis.auc_intervals`'s reason). No seeds column, or one
    seed per group: no groups."""
    if "seed" not in table.column_names:
        return {"groups": [], "unavailable": {}}
    seeds = [None if v is None else int(v) for v in table.column("seed").to_pylist()]
    strategies = string_column(table.column("strategy"))
    datasets = string_column(table.column("dataset"))
    per_group: dict[tuple[str, str], set[int]] = {}
    for s, d, k in zip(strategies, datasets, seeds):
        if k is not None:
            per_group.setdefault((s, d), set()).add(k)
    repeated = {key for key, found in per_group.items() if len(found) > 1}
    if not repeated:
        return {"groups": [], "unavailable": {}}
    labels = [SEED_LABEL.format(strategy=s, seed=k) for s, k in zip(strategies, seeds)]
    relabelled = table.set_column(table.column_names.index("strategy"), "strategy", pa.array(labels, pa.string()))
    rows = auc_table(relabelled, kind=kind, pooling="pooled", step_budget=step_budget)
    measured: dict[tuple[str, str], dict[str, Any]] = {}
    if store is None or replicates == 0:
        unavailable = {"*": "no per-image verdicts (a table was given, or replicates 0)"}
    else:
        from analysis.auc_intervals import auc_intervals

        found = auc_intervals(store, relabelled, loaded, rows, axis=axis, kind=kind, pooling="pooled",
                              step_budget=step_budget, replicates=replicates, seed=seed)
        unavailable = found["unavailable"]
        measured = {(g["strategy"], d["dataset"]): g for d in found["datasets"] for g in d["groups"]}
    by_label = {(r["strategy"], r["dataset"]): {**r, **measured.get((r["strategy"], r["dataset"]), {})}
                for r in rows}
    groups = []
    for strategy in order_strategies({s for s, _ in repeated}, strategy_order):
        for dataset in sorted(d for s, d in repeated if s == strategy):
            per_seed = [{"seed": k, **_seed_row(by_label[(SEED_LABEL.format(strategy=strategy, seed=k), dataset)])}
                        for k in sorted(per_group[(strategy, dataset)])]
            groups.append({"strategy": strategy, "dataset": dataset, **summarise(per_seed)})
    return {"groups": groups, "unavailable": unavailable}


def _seed_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"auc": row["auc"], "auc_ci": row.get("auc_ci"), "auc_sd": row.get("auc_sd"), "n_runs": row["n_runs"],
            "n_points": row["n_points"]}


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Over the seeds: n_seeds, auc_mean, auc_sd_seeds (ddof 1), auc_sd_images (root mean square of the seeds'
    bootstrap sds; None where any seed has none), and the per-seed rows."""
    aucs = np.array([r["auc"] for r in per_seed], dtype=float)
    image_sds = [r["auc_sd"] for r in per_seed]
    images = None if any(v is None for v in image_sds) else float(np.sqrt(np.mean(np.square(image_sds))))
    return {"n_seeds": len(per_seed), "auc_mean": float(aucs.mean()),
            "auc_sd_seeds": float(aucs.std(ddof=1)) if len(aucs) > 1 else None, "auc_sd_images": images,
            "seeds": per_seed}


def seeds_to_resolve(difference: float, sd_seed_a: float, sd_seed_b: float, sd_image_difference: float,
                     z: float = Z95, most: int = 1000) -> int | None:
    """The fewest seeds k per strategy at which a difference of two strategies' mean AUCs lies z standard errors
    from 0: |difference| >= z * sqrt((sd_seed_a^2 + sd_seed_b^2) / k + sd_image_difference^2). None when no k
    up to `most` does (image noise alone, which more seeds do not reduce, hides it; more images would)."""
    room = (abs(difference) / z) ** 2 - sd_image_difference ** 2
    if room <= 0:
        return None
    k = max(1, math.ceil((sd_seed_a ** 2 + sd_seed_b ** 2) / room - 1e-12))
    return k if k <= most else None


def ranking_resolution(groups: list[dict[str, Any]], intervals: dict[str, Any]) -> list[dict[str, Any]]:
    """Per dataset with two or more seeded strategies: the best and second strategy by mean AUC, their
    difference, and `seeds_to_resolve` from their seed sds and the image sd of their difference (the pair's
    bootstrap over every seed's points in `intervals`, `analysis.auc_intervals`; None where not measured)."""
    out = []
    for dataset in sorted({g["dataset"] for g in groups}):
        ranked = sorted((g for g in groups if g["dataset"] == dataset), key=lambda g: -g["auc_mean"])
        if len(ranked) < 2:
            continue
        first, second = ranked[:2]
        pairs = next((d["pairs"] for d in intervals.get("datasets", []) if d["dataset"] == dataset), [])
        pair = next((p for p in pairs if {p["a"], p["b"]} == {first["strategy"], second["strategy"]}), None)
        image_sd = None if pair is None else pair.get("difference_sd")
        needed = None
        if image_sd is not None and first["auc_sd_seeds"] is not None and second["auc_sd_seeds"] is not None:
            needed = seeds_to_resolve(first["auc_mean"] - second["auc_mean"], first["auc_sd_seeds"],
                                      second["auc_sd_seeds"], image_sd)
        out.append({"dataset": dataset, "best": first["strategy"], "second": second["strategy"],
                    "difference": first["auc_mean"] - second["auc_mean"], "sd_seed_best": first["auc_sd_seeds"],
                    "sd_seed_second": second["auc_sd_seeds"], "sd_image_difference": image_sd,
                    "seeds_to_resolve": needed})
    return out
