"""Frontier AUC with a 95% interval: a paired bootstrap over images, from the per-image verdicts kept beside the
records (`rft_ray.results.verdicts`).

What varies: which images the seeded subsets happened to draw (image-sampling variation), not training (seeds).
Every run of a dataset is measured on the same images (same fingerprints), so one replicate resamples the
dataset's image indices ONCE (with replacement, as many as the subset holds) and applies that draw to every point
of every run of every strategy: the replicate's clean and robust accuracy of each point, each strategy's pooled
frontier AUC, and so the AUC differences between strategies, all come from the same images. A PGD subset that is
part of the test subset is resampled through it (the robust accuracy of a replicate is over the drawn images that
are PGD images), so a point's clean and robust accuracy keep their correlation; a robustness subset of other
images (an OOD domain) is resampled on its own.

* Each group's interval: the 2.5% and 97.5% percentiles of its replicate AUCs (percentile bootstrap).
* Each pair of strategies on a dataset: the interval of the AUC difference (a - b), and the win share: the
  share of replicates in which a's AUC is higher (ties count half). A difference is *resolved* when its
  interval excludes 0. The best strategy is *unresolved* when its difference to the second is not.
* Only the hypervolume AUC is vectorised (argsort + running maximum over all replicates at once); the trapezoid
  AUC loops over replicates.
* Where the bootstrap cannot be run for a dataset (points without verdicts, runs on other images, the pooled OOD
  axis whose weights are not a plain proportion) the reason is given instead of an interval.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from analysis.frontier import frontier_auc

DEFAULT_REPLICATES = 1000
DEFAULT_SEED = 0


def hypervolume_batch(acc: np.ndarray, rob: np.ndarray) -> np.ndarray:
    """Hypervolume AUC of each row's points (arrays [R, m]): the area under max{rob_i : acc_i >= x}."""
    if acc.shape[1] == 0:
        return np.zeros(acc.shape[0])
    order = np.argsort(-acc, axis=1, kind="stable")
    a, r = np.take_along_axis(acc, order, 1), np.take_along_axis(rob, order, 1)
    best = np.maximum.accumulate(r, axis=1)
    below = np.concatenate([a[:, 1:], np.zeros((a.shape[0], 1))], axis=1)
    return ((a - below) * best).sum(axis=1)


def _batch_auc(acc: np.ndarray, rob: np.ndarray, kind: str) -> np.ndarray:
    if kind == "hypervolume":
        return hypervolume_batch(acc, rob)
    return np.array([frontier_auc(np.column_stack([a, r]), kind) for a, r in zip(acc, rob)])


def _draw_counts(n: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """[R, n] float counts of n draws with replacement from n images, per replicate (one bincount, not R)."""
    drawn = rng.integers(0, n, size=(replicates, n)) + n * np.arange(replicates)[:, None]
    return np.bincount(drawn.ravel(), minlength=replicates * n).reshape(replicates, n).astype(np.float64)


def resampled_accuracies(clean: np.ndarray, robust: np.ndarray, robust_positions: np.ndarray | None,
                         replicates: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Replicate accuracies [R, P] of P points from their verdicts: clean [P, n], robust [P, m]. With
    `robust_positions` (the robust images' positions among the clean ones) one draw serves both; without, the
    robust images are drawn on their own."""
    n = clean.shape[1]
    weights = _draw_counts(n, replicates, rng)  # [R, n]: how often each image is drawn
    acc = weights @ clean.T.astype(np.float64) / n
    if robust_positions is not None:
        w_rob = weights[:, robust_positions]
    else:
        w_rob = _draw_counts(robust.shape[1], replicates, rng)
    total = np.maximum(w_rob.sum(axis=1, keepdims=True), 1.0)
    return acc, w_rob @ robust.T.astype(np.float64) / total


def bootstrap_groups(clean: np.ndarray, robust: np.ndarray, robust_positions: np.ndarray | None,
                     group_of_point: np.ndarray, n_groups: int, *, kind: str = "hypervolume",
                     replicates: int = DEFAULT_REPLICATES, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Replicate AUCs [R, G] of each group's pooled frontier (points of group g: group_of_point == g), every
    group's points resampled through the same draws (module docstring)."""
    if replicates < 2:
        raise ValueError(f"the bootstrap needs at least 2 replicates, got {replicates}")
    acc, rob = resampled_accuracies(clean, robust, robust_positions, replicates, np.random.default_rng(seed))
    return np.column_stack([_batch_auc(acc[:, group_of_point == g], rob[:, group_of_point == g], kind)
                            for g in range(n_groups)])


def percentile_interval(samples: np.ndarray) -> list[float]:
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return [float(lo), float(hi)]


def compare(names: list[str], aucs: list[float], boot: np.ndarray) -> tuple[list[dict], list[dict]]:
    """Per group its interval and sd over replicates; per ordered pair (a before b) the difference's interval, win share, resolved."""
    groups = [{"strategy": s, "auc": a, "auc_ci": percentile_interval(boot[:, i]),
               "auc_sd": float(np.std(boot[:, i], ddof=1))} for i, (s, a) in enumerate(zip(names, aucs))]
    pairs = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            diff = boot[:, i] - boot[:, j]
            ci = percentile_interval(diff)
            pairs.append({"a": names[i], "b": names[j], "difference": aucs[i] - aucs[j], "difference_ci": ci,
                          "difference_sd": float(np.std(diff, ddof=1)),
                          "a_wins_share": float(np.mean(diff > 0) + 0.5 * np.mean(diff == 0)),
                          "resolved": bool(ci[0] > 0 or ci[1] < 0)})
    return groups, pairs


def best_resolved(names: list[str], aucs: list[float], pairs: list[dict]) -> bool | None:
    """Whether the highest-AUC strategy's difference to the second is resolved; None with one strategy."""
    if len(names) < 2:
        return None
    ranked = sorted(range(len(names)), key=lambda i: -aucs[i])
    first, second = names[ranked[0]], names[ranked[1]]
    pair = next(p for p in pairs if {p["a"], p["b"]} == {first, second})
    return pair["resolved"]


def describe(replicates: int, seed: int) -> str:
    return (f"paired bootstrap over images, {replicates} replicates (seed {seed}): each replicate draws the "
            "dataset's subset images with replacement once and applies the draw to every point of every run; 95% "
            "percentile intervals of each strategy's pooled frontier AUC and of each pair's difference; a difference "
            "is resolved when its interval excludes 0; image-sampling variation only, not seed-to-seed")


def as_json(dataset: str, groups: list[dict], pairs: list[dict], resolved: bool | None) -> dict[str, Any]:
    return {"dataset": dataset, "groups": groups, "pairs": pairs, "best_resolved": resolved}
