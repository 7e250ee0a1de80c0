"""The AUC table's intervals: the store's per-image verdicts gathered per dataset into the matrices
`analysis.bootstrap` resamples, and the results put beside the AUC rows (``auc_ci``, ``best_resolved``).

Which verdicts a point's frontier coordinates come from: clean accuracy ``test_clean_acc``; robustness the
axis' column (`analysis.axis`): ``pgd_adv_acc`` at the run's main radius or ``pgd_adv_acc/<radius>`` at another
(`--eps`), ``ood_acc/<domain>`` for ``--robustness ood:<domain>``. Each point's verdicts must reproduce its
recorded accuracies (else the dataset is refused, naming the point), and every run of a dataset must be measured
on the same images (equal fingerprints).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from analysis.bootstrap import as_json, best_resolved, bootstrap_groups, compare
from analysis.frame import Frame
from rft_ray.results.record import OOD_PREFIX, PGD_PREFIX, eps_label, same_radius


def _robust_metric(axis: str, main_eps: float | None, eps: float | None) -> str | None:
    if axis == "ood":
        return None  # a weighted pool of domains, not one proportion
    if axis.startswith("ood:"):
        return OOD_PREFIX + axis[4:]
    if eps is None or main_eps is None or same_radius(main_eps, eps):
        return "pgd_adv_acc"
    return PGD_PREFIX + eps_label(eps)


def auc_intervals(store, table: pa.Table, loaded: pa.Table, auc_rows: list[dict[str, Any]], *, axis: str,
                  kind: str, pooling: str, step_budget: int | None, replicates: int, seed: int) -> dict[str, Any]:
    """Per dataset the bootstrap's groups and pairs (or the reason it could not run); sets ``auc_ci`` on every
    AUC row (None where not measured) and ``best_resolved`` on the best rows."""
    for row in auc_rows:
        row["auc_ci"], row["best_resolved"] = None, None
    if pooling != "pooled":
        return {"datasets": [], "unavailable": {"*": "intervals are computed for pooled frontiers only"}}
    frame = Frame.of(table, extra=("pgd_eps",))
    main_eps = dict(zip(loaded.column("run_id").to_pylist(), loaded.column("pgd_eps").to_pylist()))
    cache: dict[str, Any] = {}
    out: dict[str, Any] = {"datasets": [], "unavailable": {}}
    for dataset in sorted(set(frame.dataset)):
        rows = np.flatnonzero(frame.dataset == dataset)
        if step_budget is not None:
            rows = rows[frame.step[rows] <= step_budget]
        try:
            matrices = _matrices(store, frame, rows, axis, main_eps, cache)
        except _Unavailable as why:
            out["unavailable"][dataset] = str(why)
            continue
        clean, robust, positions = matrices
        strategies = [r["strategy"] for r in auc_rows if r["dataset"] == dataset]
        group = np.array([strategies.index(s) for s in frame.strategy[rows]])
        boot = bootstrap_groups(clean, robust, positions, group, len(strategies), kind=kind, replicates=replicates,
                                seed=seed)
        aucs = [next(r["auc"] for r in auc_rows if r["dataset"] == dataset and r["strategy"] == s) for s in strategies]
        groups, pairs = compare(strategies, aucs, boot)
        resolved = best_resolved(strategies, aucs, pairs)
        for r in auc_rows:
            if r["dataset"] == dataset:
                r["auc_ci"] = groups[strategies.index(r["strategy"])]["auc_ci"]
                r["best_resolved"] = resolved if r["is_best"] else None
        out["datasets"].append(as_json(dataset, groups, pairs, resolved))
    return out


class _Unavailable(Exception):
    pass


def _matrices(store, frame: Frame, rows: np.ndarray, axis: str, main_eps: dict, cache: dict):
    """clean [P, n], robust [P, m] verdicts of the rows, and the robust images' positions among the clean ones."""
    clean, robust, clean_ids, robust_ids = [], [], set(), set()
    subsets = {}
    for i in rows:
        run_id, step = str(frame.run_id[i]), int(frame.step[i])
        if run_id not in cache:
            cache[run_id] = store.read_verdicts(run_id)
        verdicts = cache[run_id]
        eps = frame.extra["pgd_eps"][i] if "pgd_eps" in frame.extra else None
        metric = _robust_metric(axis, main_eps.get(run_id), eps)
        if metric is None:
            raise _Unavailable("the pooled OOD axis weighs its domains, so it is not one proportion of images")
        point = verdicts.points.get(step) if verdicts is not None else None
        if point is None or "test_clean_acc" not in point or metric not in point:
            raise _Unavailable(f"run {run_id} step {step} has no per-image verdicts of test_clean_acc and {metric} "
                               "(results written before verdicts were kept, or by another tool)")
        for which, value in (("test_clean_acc", frame.acc[i]), (metric, frame.rob[i])):
            if abs(point[which].mean() - value) > 1e-6:  # records hold float32 means; 1/n >> 1e-6 for any subset
                raise _Unavailable(f"run {run_id} step {step}: its verdicts of {which} give {point[which].mean():.6f}, "
                                   f"its record {value:.6f}; the sidecar does not belong to these results")
        clean_subset, robust_subset = verdicts.subset_of("test_clean_acc"), verdicts.subset_of(metric)
        clean_ids.add(clean_subset.fingerprint)
        robust_ids.add(robust_subset.fingerprint)
        subsets.update(clean=clean_subset, robust=robust_subset)
        clean.append(point["test_clean_acc"])
        robust.append(point[metric])
    if not clean:
        raise _Unavailable("no evaluation points")
    if len(clean_ids) > 1 or len(robust_ids) > 1:
        raise _Unavailable("its runs were measured on different images (subset fingerprints differ: other split "
                           "seeds or subset sizes), so their verdicts do not pair")
    where = {index: pos for pos, index in enumerate(subsets["clean"].indices)}
    inside = all(index in where for index in subsets["robust"].indices) and not axis.startswith("ood:")
    positions = np.array([where[index] for index in subsets["robust"].indices]) if inside else None
    return np.array(clean), np.array(robust), positions


def add_summary_intervals(store, table: pa.Table, rows: list[dict[str, Any]], *, replicates: int = 1000,
                          seed: int = 0) -> None:
    """Set ``frontier_auc_ci`` ([lo, hi] or None) on the sweep summary's rows (`analysis.summary`: hypervolume
    AUC of each group's pooled frontier at the main PGD radius, every step) from the store's verdicts."""
    from analysis.cleaning import clean_table
    from analysis.summary import SUMMARY_COLUMNS

    if not rows:
        return
    clean, _ = clean_table(table, required=SUMMARY_COLUMNS)
    auc_rows = [{"strategy": r["strategy"], "dataset": r["dataset"], "auc": r["frontier_auc"],
                 "is_best": r["frontier_auc"] == max(x["frontier_auc"] for x in rows if x["dataset"] == r["dataset"])}
                for r in rows]
    auc_intervals(store, clean, table, auc_rows, axis="pgd", kind="hypervolume", pooling="pooled", step_budget=None,
                  replicates=replicates, seed=seed)
    for row, measured in zip(rows, auc_rows):
        row["frontier_auc_ci"] = measured["auc_ci"]
