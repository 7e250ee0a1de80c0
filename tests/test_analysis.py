"""analysis/: frontier + AUC closed forms and properties, tables on a hand-computed table, bad rows,
`analyze()` end to end through a real ResultStore, and the `rft analyze` command line."""
from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

try:  # the package is importable once `pip install -e .` has run; before that, from the checkout
    import analysis  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.auc import auc_table, trial_aucs
from analysis.cleaning import DroppedRowsWarning, TableError, clean_table
from analysis.correlation import correlation
from analysis.frontier import (
    frontier_auc,
    frontier_outline,
    hypervolume_auc,
    pareto_frontier,
    trapezoid_auc,
)
from analysis.rq1 import rq1_table, rq1_trials
from analysis.rq3 import rq3_table

# ---------------------------------------------------------------------------------------------------
# Frontier and AUC: hand-computed cases


def test_frontier_sorted_ties_and_duplicates_collapsed():
    pts = [[0.5, 0.3], [0.5, 0.4], [0.6, 0.4], [0.2, 0.8], [0.2, 0.8], [0.1, 0.1], [0.6, 0.4]]
    # (0.5,0.3) and (0.5,0.4) are dominated by (0.6,0.4) (tie on one coordinate, better on the other)
    np.testing.assert_array_equal(pareto_frontier(pts), [[0.2, 0.8], [0.6, 0.4]])


@pytest.mark.parametrize(
    "points, frontier, hv, trap",
    [
        pytest.param([], np.empty((0, 2)), 0.0, 0.0, id="empty"),
        pytest.param([[0.5, 0.4]], [[0.5, 0.4]], 0.2, 0.2, id="single"),
        pytest.param([[0.5, 0.4]] * 3, [[0.5, 0.4]], 0.2, 0.2, id="duplicates"),
        pytest.param([[1.0, 1.0], [0.3, 0.3]], [[1.0, 1.0]], 1.0, 1.0, id="corner"),
        pytest.param([[0.0, 0.0]], [[0.0, 0.0]], 0.0, 0.0, id="origin"),
        pytest.param([[0.0, 1.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]], 0.0, 0.5, id="both-axes"),
        pytest.param([[0.0, 0.7]], [[0.0, 0.7]], 0.0, 0.0, id="on-robustness-axis"),
        pytest.param([[0.6, 0.0], [0.4, 0.0]], [[0.6, 0.0]], 0.0, 0.0, id="on-accuracy-axis"),
        # staircase: 0.2*0.8 + 0.6*0.2 = 0.28; trapezoid: 0.2*0.8 + 0.6*(0.8+0.2)/2 = 0.46
        pytest.param([[0.8, 0.2], [0.2, 0.8]], [[0.2, 0.8], [0.8, 0.2]], 0.28, 0.46, id="two"),
        # + (0.5,0.5): 0.2*0.8+0.3*0.5+0.3*0.2 = 0.37; 0.16 + 0.3*1.3/2 + 0.3*0.7/2 = 0.46
        pytest.param([[0.8, 0.2], [0.2, 0.8], [0.5, 0.5], [0.4, 0.4]], [[0.2, 0.8], [0.5, 0.5], [0.8, 0.2]],
                     0.37, 0.46, id="three-collinear"),
        pytest.param([[0.5, 0.4], [0.5, 0.3], [0.3, 0.4]], [[0.5, 0.4]], 0.2, 0.2, id="ties-dominated"),
    ],
)
def test_closed_forms(points, frontier, hv, trap):
    np.testing.assert_allclose(pareto_frontier(points).reshape(-1, 2), np.asarray(frontier).reshape(-1, 2))
    assert hypervolume_auc(points) == pytest.approx(hv, abs=1e-12)
    assert trapezoid_auc(points) == pytest.approx(trap, abs=1e-12)
    assert frontier_auc(points, "hypervolume") == pytest.approx(hv, abs=1e-12)
    assert frontier_auc(points, "trapezoid") == pytest.approx(trap, abs=1e-12)
    assert frontier_auc(points) == hypervolume_auc(points)


def test_trapezoid_can_drop_when_a_nondominated_point_is_added():
    """Documented: the trapezoid AUC is NOT monotone (the hypervolume is)."""
    base = [[0.2, 0.8], [0.8, 0.2]]
    more = base + [[0.5, 0.3]]
    assert trapezoid_auc(base) == pytest.approx(0.46)
    assert trapezoid_auc(more) == pytest.approx(0.40)
    assert hypervolume_auc(more) == pytest.approx(0.31) and hypervolume_auc(more) > hypervolume_auc(base)


def test_outline_encloses_the_auc():
    front = pareto_frontier([[0.8, 0.2], [0.2, 0.8], [0.5, 0.3]])
    for kind in ("hypervolume", "trapezoid"):
        v = frontier_outline(front, kind)
        closed = np.vstack([[0.0, 0.0], v, [0.0, 0.0]])
        x, y = closed[:, 0], closed[:, 1]
        shoelace = 0.5 * abs(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))
        assert shoelace == pytest.approx(frontier_auc(front, kind))


@pytest.mark.parametrize(
    "points, message",
    [
        pytest.param([[np.nan, 0.5]], "NaN", id="nan-accuracy"),
        pytest.param([[0.5, 0.5], [0.5, np.nan]], "NaN", id="nan-robustness"),
        pytest.param([[np.inf, 0.5]], "infinite", id="inf"),
        pytest.param([[0.5, -np.inf]], "infinite", id="minus-inf"),
        pytest.param([[1.1, 0.5]], r"outside \[0, 1\]", id="above-one"),
        pytest.param([[0.5, -0.01]], r"outside \[0, 1\]", id="negative"),
        pytest.param([0.5, 0.5], "shape", id="1d"),
        pytest.param([[0.5, 0.5, 0.5]], "shape", id="three-columns"),
        pytest.param([["a", "b"]], "numbers", id="strings"),
    ],
)
@pytest.mark.parametrize("fn", [pareto_frontier, hypervolume_auc, trapezoid_auc])
def test_bad_points_rejected(fn, points, message):
    with pytest.raises(ValueError, match=message):
        fn(points)


@pytest.mark.parametrize("empty", [[], np.empty((0, 2)), np.empty((0,))])
def test_empty_auc_is_zero(empty):
    assert hypervolume_auc(empty) == 0.0 and trapezoid_auc(empty) == 0.0
    assert pareto_frontier(empty).shape == (0, 2)


def test_unknown_kind():
    with pytest.raises(ValueError, match="hypervolume, trapezoid"):
        frontier_auc([[0.5, 0.5]], "area")


# ---------------------------------------------------------------------------------------------------
# Properties (hypothesis)

unit = st.one_of(st.floats(0.0, 1.0, allow_nan=False), st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]))
point = st.tuples(unit, unit)
point_sets = st.lists(point, min_size=0, max_size=25)
KINDS = ("hypervolume", "trapezoid")


def _union_area(points) -> float:
    """Brute force: area of the union of [0,a]x[0,r] over a grid of the coordinates."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    xs = np.unique(np.concatenate([[0.0], pts[:, 0]]))
    area = 0.0
    for x0, x1 in zip(xs[:-1], xs[1:]):
        height = pts[pts[:, 0] >= x1, 1].max(initial=0.0)
        area += (x1 - x0) * height
    return area


@settings(max_examples=150, deadline=None)
@given(point_sets)
def test_prop_auc_in_unit_interval_and_ordered(points):
    hv, tr = hypervolume_auc(points), trapezoid_auc(points)
    assert 0.0 <= hv <= 1.0 and 0.0 <= tr <= 1.0
    assert hv <= tr + 1e-12  # straight segments lie above the staircase
    if points:
        a, r = np.max(points, axis=0)
        assert tr <= a * r + 1e-12
    assert hv == pytest.approx(_union_area(points), abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(point_sets)
def test_prop_frontier_is_exactly_the_nondominated_set(points):
    front = pareto_frontier(points)
    assert np.all(np.diff(front[:, 0]) > 0) and np.all(np.diff(front[:, 1]) < 0)
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    for f in front:  # no input point dominates a frontier point
        dominated = (pts[:, 0] >= f[0]) & (pts[:, 1] >= f[1]) & ((pts[:, 0] > f[0]) | (pts[:, 1] > f[1]))
        assert not dominated.any()
    for p in pts:  # every input point is on the frontier or dominated by it
        assert ((front[:, 0] >= p[0]) & (front[:, 1] >= p[1])).any()


@settings(max_examples=150, deadline=None)
@given(st.lists(point, min_size=1, max_size=25), st.data())
def test_prop_dominated_point_changes_nothing(points, data):
    i = data.draw(st.integers(0, len(points) - 1))
    u, v = data.draw(st.floats(0, 1)), data.draw(st.floats(0, 1))
    a, r = points[i]
    extra = data.draw(st.sampled_from([(a * u, r * v), (a, r * v), (a * u, r), (a, r)]))  # includes a duplicate
    for kind in KINDS:
        assert frontier_auc(points + [extra], kind) == frontier_auc(points, kind)


@settings(max_examples=150, deadline=None)
@given(point_sets, point)
def test_prop_adding_a_point_never_lowers_hypervolume(points, extra):
    assert hypervolume_auc(points + [extra]) >= hypervolume_auc(points) - 1e-12
    # What holds for the trapezoid: it never falls below the old set's hypervolume.
    assert trapezoid_auc(points + [extra]) >= hypervolume_auc(points) - 1e-12


@settings(max_examples=100, deadline=None)
@given(point_sets, st.randoms(use_true_random=False))
def test_prop_order_does_not_matter(points, rnd):
    shuffled = list(points)
    rnd.shuffle(shuffled)
    for kind in KINDS:
        assert frontier_auc(shuffled, kind) == frontier_auc(points, kind)
    np.testing.assert_array_equal(pareto_frontier(shuffled), pareto_frontier(points))


# ---------------------------------------------------------------------------------------------------
# A small result table with hand-computed numbers
#
# cifar10 (OOD = 0.5 * acc + 0.1, linear: constant 0.3), digits (robustness halved, no OOD split):
#   full   A: acc .1 .6 .8 .9  rob 0 .3 .2 .1     B: acc .1 .5 .7 .8  rob 0 .4 .3 .2
#   lora   C: acc .1 .3 .6 .7  rob 0 .5 .5 .4     D: acc .1 .2 .4 .695 rob 0 .1 .2 .3
#   linear E: acc .1 .4 .5 .5  rob 0 .1 .1 .1     F: acc .1 .45 .5 .55 rob 0 .05 .1 .1
# pooled frontiers (cifar10): full (.5,.4)(.7,.3)(.8,.2)(.9,.1) -> .2+.06+.02+.01 = .29
#   lora (.6,.5)(.7,.4) -> .30+.04 = .34; linear (.55,.1) -> .055. Mean .685/3.
# per trial: A .18+.04+.01 = .23, B .2+.06+.02 = .28; C .30+.04 = .34, D .695*.3 (one frontier point); E .05, F .055

STEPS = [0, 10, 100, 1000]
CURVES = {
    ("full", "A"): ([0.1, 0.6, 0.8, 0.9], [0.0, 0.3, 0.2, 0.1], 86_000_000),
    ("full", "B"): ([0.1, 0.5, 0.7, 0.8], [0.0, 0.4, 0.3, 0.2], 86_000_000),
    ("lora", "C"): ([0.1, 0.3, 0.6, 0.7], [0.0, 0.5, 0.5, 0.4], 300_000),
    ("lora", "D"): ([0.1, 0.2, 0.4, 0.695], [0.0, 0.1, 0.2, 0.3], 300_000),
    ("linear", "E"): ([0.1, 0.4, 0.5, 0.5], [0.0, 0.1, 0.1, 0.1], 7_690),
    ("linear", "F"): ([0.1, 0.45, 0.5, 0.55], [0.0, 0.05, 0.1, 0.1], 7_700),
}
DATASETS = ("cifar10", "digits")


def synthetic_rows() -> list[dict]:
    rows = []
    for dataset in DATASETS:
        for (strategy, name), (acc, rob, params) in CURVES.items():
            run_id = f"{strategy}-{dataset}-{name}"
            for i, step in enumerate(STEPS):
                r = rob[i] if dataset == "cifar10" else rob[i] / 2
                if dataset == "digits":
                    ood, domains = float("nan"), {}
                elif strategy == "linear":
                    ood, domains = 0.3, {"shift": 0.3}
                else:
                    ood, domains = 0.5 * acc[i] + 0.1, {"shift": 0.5 * acc[i] + 0.1}
                row = dict(
                    run_id=run_id, strategy=strategy, dataset=dataset, model="vit_tiny", lr=1e-3 if name in "ACE" else 1e-4,
                    weight_decay=0.0, seed=0, step=step, total_steps=1000, epoch=step / 100, examples_seen=step * 32,
                    train_loss=float("nan") if step == 0 else 1.0 / (1 + step), train_clean_acc=acc[i],
                    test_clean_acc=acc[i], pgd_adv_acc=r, pgd_eps=1 / 255, test_ood_accuracy=ood,
                    trainable_params=params, total_params=86_000_000, wall_seconds=float(step), eval_seconds=0.5,
                )
                row["_ood"] = domains
                rows.append(row)
    return rows


def synthetic_table(rows=None) -> pa.Table:
    rows = synthetic_rows() if rows is None else rows
    flat = []
    for row in rows:
        r = {k: v for k, v in row.items() if k != "_ood"}
        r.update({f"ood_acc/{d}": v for d, v in row["_ood"].items()})
        flat.append(r)
    return pa.Table.from_pylist(flat)


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return synthetic_table()


def _by(rows, *keys):
    return {tuple(r[k] for k in keys): r for r in rows}


EXPECTED_POOLED = {"full": 0.29, "lora": 0.34, "linear": 0.055}


def test_auc_table_pooled_hand_computed(table):
    rows = _by(auc_table(table), "strategy", "dataset")
    assert [k for k in rows] == [(s, d) for s in ("full", "linear", "lora") for d in DATASETS]  # default: alphabetical
    for dataset, scale in (("cifar10", 1.0), ("digits", 0.5)):
        mean = sum(EXPECTED_POOLED.values()) * scale / 3
        for strategy, auc in EXPECTED_POOLED.items():
            r = rows[(strategy, dataset)]
            assert r["auc"] == pytest.approx(auc * scale, abs=1e-12)
            assert r["pct_above_average"] == pytest.approx((auc * scale - mean) / mean * 100)
            assert r["is_best"] == (strategy == "lora")
            assert (r["n_runs"], r["n_points"]) == (2, 8)
            assert r["best_run_id"] is None and r["auc_trial_mean"] is None
    assert rows[("full", "cifar10")]["pct_above_average"] == pytest.approx((0.29 - 0.685 / 3) / (0.685 / 3) * 100)
    assert rows[("full", "digits")]["trainable_params"] == 86_000_000
    assert rows[("linear", "cifar10")]["trainable_params"] == 7_695  # median of the two runs


def test_auc_table_trainable_params_is_a_runs_largest_phase():
    # lp_ft: the probe's rows count the head alone, the fine-tuning's the whole model; the median of a run's rows
    # (three probe rows of four) would describe lp_ft as a head-only method.
    rows = []
    for run, params in (("lp_ft-digits-A", (650, 650, 650, 86_000_650)), ("lp_ft-digits-B", (650, 650, 650, 86_000_650)),
                        ("lp_ft-digits-C", (650, 650, 650, 650))):  # C: stopped during the probe
        for i, (step, count) in enumerate(zip(STEPS, params)):
            rows.append(dict(run_id=run, strategy="lp_ft", dataset="digits", model="vit_tiny", lr=1e-3,
                             weight_decay=0.0, seed=0, step=step, total_steps=1000, epoch=step / 100,
                             examples_seen=step * 32, train_loss=0.5, train_clean_acc=0.5,
                             test_clean_acc=0.1 * (i + 1), pgd_adv_acc=0.05, pgd_eps=1 / 255,
                             test_ood_accuracy=float("nan"), trainable_params=count, total_params=86_000_650,
                             wall_seconds=float(step), eval_seconds=0.5, _ood={}))
    (row,) = auc_table(synthetic_table(rows))
    assert row["trainable_params"] == 86_000_650  # median over runs of (86_000_650, 86_000_650, 650)


def test_auc_table_trapezoid(table):
    rows = _by(auc_table(table, kind="trapezoid"), "strategy", "dataset")
    # full: .5*.4 + .2*(.4+.3)/2 + .1*(.3+.2)/2 + .1*(.2+.1)/2 = .2 + .07 + .025 + .015
    assert rows[("full", "cifar10")]["auc"] == pytest.approx(0.31)
    assert rows[("lora", "cifar10")]["auc"] == pytest.approx(0.30 + 0.1 * 0.9 / 2)


def test_auc_table_per_trial_reports_best_run(table):
    rows = _by(auc_table(table, pooling="per_trial"), "strategy", "dataset")
    full = rows[("full", "cifar10")]
    assert full["auc"] == pytest.approx(0.28) and full["best_run_id"] == "full-cifar10-B"
    assert full["auc_trial_mean"] == pytest.approx((0.23 + 0.28) / 2)
    lora = rows[("lora", "cifar10")]  # D: (.695,.3) dominates its other points
    assert lora["auc"] == pytest.approx(0.34) and lora["best_run_id"] == "lora-cifar10-C"
    assert lora["auc_trial_mean"] == pytest.approx((0.34 + 0.695 * 0.3) / 2)
    trials = _by(trial_aucs(table), "run_id")
    assert trials[("full-cifar10-A",)]["auc"] == pytest.approx(0.23)
    assert trials[("linear-cifar10-E",)]["auc"] == pytest.approx(0.05)


def test_auc_table_step_budget(table):
    rows = _by(auc_table(table, step_budget=10), "strategy", "dataset")
    # steps 0 and 10 only: full (.6,.3),(.5,.4) -> .5*.4 + .1*.3 = .23; lora (.3,.5),(.2,.1) -> .15
    assert rows[("full", "cifar10")]["auc"] == pytest.approx(0.23)
    assert rows[("lora", "cifar10")]["auc"] == pytest.approx(0.15)
    assert rows[("full", "cifar10")]["n_points"] == 4
    rows = _by(auc_table(table, step_budget=0), "strategy", "dataset")
    assert all(r["auc"] == 0.0 for r in rows.values())  # every step-0 point has robustness 0
    assert all(math.isnan(r["pct_above_average"]) for r in rows.values())  # mean AUC 0 -> undefined


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="area"), "unknown AUC kind"),
    (dict(pooling="mean"), "unknown pooling"),
    (dict(step_budget=-1), "step_budget"),
    (dict(step_budget=1.5), "step_budget"),
])
def test_auc_table_bad_options(table, kwargs, message):
    with pytest.raises(ValueError, match=message):
        auc_table(table, **kwargs)


def test_rq1_per_trial_and_summary(table):
    trials = _by(rq1_trials(table), "run_id")
    a = trials[("full-cifar10-A",)]
    assert (a["peak_robustness"], a["peak_step"], a["final_step"], a["final_robustness"]) == (0.3, 10, 1000, 0.1)
    assert a["drop"] == pytest.approx(0.2) and a["converged_step"] == 1000 and a["peak_before_convergence"]
    c = trials[("lora-cifar10-C",)]
    assert c["peak_step"] == 10  # tie (.5 at steps 10 and 100): earliest
    d = trials[("lora-cifar10-D",)]
    assert d["peak_step"] == 1000 and d["drop"] == 0 and not d["peak_before_convergence"]
    e = trials[("linear-cifar10-E",)]  # acc .5 reached at step 100 -> converged there; peak .1 at step 10
    assert e["converged_step"] == 100 and e["peak_step"] == 10 and e["peak_before_convergence"]
    # a wider tolerance moves convergence earlier: A reaches .8 >= .9 - .1 at step 100
    assert _by(rq1_trials(table, tol=0.1), "run_id")[("full-cifar10-A",)]["converged_step"] == 100
    assert _by(rq1_trials(table, tol=0.3), "run_id")[("full-cifar10-A",)]["converged_step"] == 10
    assert not _by(rq1_trials(table, tol=0.3), "run_id")[("full-cifar10-A",)]["peak_before_convergence"]

    summary = _by(rq1_table(table), "strategy", "dataset")
    full = summary[("full", "cifar10")]
    assert full["run_id"] == "full-cifar10-A"  # best final accuracy .9 > .8
    assert full["mean_peak_robustness"] == pytest.approx(0.35)
    assert full["mean_final_robustness"] == pytest.approx(0.15)
    assert full["mean_drop"] == pytest.approx(0.2)
    assert full["n_peak_before_convergence"] == 2 and full["n_runs"] == 2 and full["n_points"] == 8
    assert full["lr"] == 1e-3
    assert summary[("lora", "cifar10")]["run_id"] == "lora-cifar10-C"  # .7 > .695
    assert summary[("lora", "cifar10")]["n_peak_before_convergence"] == 1
    assert summary[("full", "digits")]["peak_robustness"] == pytest.approx(0.15)
    with pytest.raises(ValueError, match="tolerance"):
        rq1_trials(table, tol=-0.1)


def test_rq3_correlations(table):
    rows = _by(rq3_table(table), "strategy")
    full = rows[("full",)]
    assert full["n_points"] == 16 and full["n_ood_points"] == 8  # digits has no OOD split
    assert full["ood_clean_pearson"] == pytest.approx(1.0) and full["ood_clean_spearman"] == pytest.approx(1.0)
    assert full["ood_note"] is None
    lin = rows[("linear",)]
    assert math.isnan(lin["ood_clean_pearson"]) and math.isnan(lin["ood_clean_spearman"])
    assert "test_ood_accuracy is constant" in lin["ood_note"]
    acc = np.array([0.1, 0.6, 0.8, 0.9, 0.1, 0.5, 0.7, 0.8] * 2)
    rob = np.array([0.0, 0.3, 0.2, 0.1, 0.0, 0.4, 0.3, 0.2] + [0.0, 0.15, 0.1, 0.05, 0.0, 0.2, 0.15, 0.1])
    assert full["pgd_clean_pearson"] == pytest.approx(np.corrcoef(rob, acc)[0, 1])
    assert full["pgd_clean_spearman"] == pytest.approx(scipy.stats.spearmanr(rob, acc).statistic)
    by_ds = _by(rq3_table(table, by=("strategy", "dataset")), "strategy", "dataset")
    assert by_ds[("full", "digits")]["n_ood_points"] == 0
    assert by_ds[("full", "digits")]["ood_note"] == "no OOD accuracy (no OOD split)"
    assert math.isnan(by_ds[("full", "digits")]["ood_clean_pearson"])


@pytest.mark.parametrize("x, y, pearson, note", [
    ([1, 2, 3], [2, 4, 6], 1.0, None),
    ([1, 2, 3], [3, 2, 1], -1.0, None),
    ([1, 1, 1], [1, 2, 3], math.nan, "x is constant"),
    ([1, 2], [5, 5], math.nan, "y is constant"),
    ([0.5], [0.5], math.nan, "fewer than 2 points (1)"),
    ([], [], math.nan, "fewer than 2 points (0)"),
])
def test_correlation_edge_cases(x, y, pearson, note):
    c = correlation(x, y)
    assert c["note"] == note
    if math.isnan(pearson):
        assert math.isnan(c["pearson"]) and math.isnan(c["spearman"])
    else:
        assert c["pearson"] == pytest.approx(pearson) and c["spearman"] == pytest.approx(pearson)


def test_spearman_ties_match_scipy():
    x, y = [1, 2, 2, 3, 3, 3, 4], [0.1, 0.4, 0.2, 0.2, 0.9, 0.5, 0.3]
    assert correlation(x, y)["spearman"] == pytest.approx(scipy.stats.spearmanr(x, y).statistic)


# ---------------------------------------------------------------------------------------------------
# Strategy order: a parameter (the platform passes its registry's order), alphabetical without one


def test_strategy_order_given_is_the_order_used(table, tmp_path):
    from analysis.frame import order_strategies, pivot
    from analysis.report import analyze

    order = ("lora", "full")  # linear is not listed: it follows the listed ones
    expected = ["lora", "full", "linear"]
    assert order_strategies(["full", "linear", "lora", "full"], order) == expected
    assert order_strategies(["lora", "linear", "full"]) == ["full", "linear", "lora"]  # None: alphabetical
    assert [r["strategy"] for r in auc_table(table, strategy_order=order)] == [s for s in expected for _ in DATASETS]
    assert [r["strategy"] for r in trial_aucs(table, strategy_order=order)][::4] == expected
    assert [r["strategy"] for r in rq1_table(table, strategy_order=order)][::2] == expected
    assert [r["strategy"] for r in rq1_trials(table, strategy_order=order)][::4] == expected
    assert [r["strategy"] for r in rq3_table(table, strategy_order=order)] == expected
    assert pivot(auc_table(table), "auc", order)[0] == expected
    data = analyze(table, tmp_path, figures=False, strategy_order=order).data
    assert data["summary"]["strategies"] == expected
    assert [r["strategy"] for r in data["auc"]][::2] == [r["strategy"] for r in data["rq3"]] == expected
    md = (tmp_path / "report.md").read_text()
    assert md.index("| lora | 300,000 |") < md.index("| full | 86,000,000 |") < md.index("| linear | 7,695 |")
    assert analyze(table, tmp_path, figures=False).data["summary"]["strategies"] == ["full", "linear", "lora"]


def test_report_states_how_many_images_each_metric_was_measured_on(table, tmp_path):
    from analysis.report import analyze

    old = analyze(table, tmp_path / "old", figures=False).data["conventions"]["images_per_metric"]
    assert old.startswith("not recorded")  # results written before the counts were stored
    n = table.num_rows
    counted = table.append_column("train_images", pa.array([200] * n)).append_column(
        "test_images", pa.array([367] * n)).append_column("pgd_images", pa.array([200] * (n - 1) + [None])
    ).append_column("ood_images/shift", pa.array([150] * n))
    stated = analyze(counted, tmp_path / "new", figures=False).data["conventions"]["images_per_metric"]
    assert stated.startswith("train_clean_acc on 200; test_clean_acc on 367; pgd_adv_acc on 200 (1 point(s) without "
                             "a count); OOD shift on 150 images")
    assert f"Images per metric: {stated}." in (tmp_path / "new" / "report.md").read_text()


def test_colours_belong_to_the_name_not_to_the_order(table, tmp_path):
    from analysis import plots

    before = {s: plots.strategy_color(s) for s in ("full", "lora", "linear", "my_method")}
    for order in (None, ("lora", "full"), ("my_method",)):
        rows = auc_table(table, strategy_order=order)
        plots.plot_auc_heatmap(rows, tmp_path / "h.png", strategy_order=order)
        plots.plot_curves(table, "digits", tmp_path / "c.png", strategy_order=order)
        plots.plot_frontiers(table, "digits", tmp_path / "f.png", auc_rows=rows, strategy_order=order)
    assert {s: plots.strategy_color(s) for s in before} == before


def test_the_rft_analyze_command_orders_strategies_as_the_registry(tmp_path, capsys):
    from rft_ray.cli.analyze import main
    from rft_ray.models.strategies import strategy_names

    rows = [{**r, "strategy": "ia3", "run_id": r["run_id"].replace("linear", "ia3")} if r["strategy"] == "linear"
            else r for r in synthetic_rows()]
    _write_store(tmp_path / "s", rows)
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "o"), "--no-figures", "--json"]) == 0
    strategies = json.loads(capsys.readouterr().out)["summary"]["strategies"]
    assert strategies == [s for s in strategy_names() if s in {"full", "lora", "ia3"}] == ["full", "lora", "ia3"]


# ---------------------------------------------------------------------------------------------------
# The sweep's summary table


def _summary_store_table(tmp_path) -> pa.Table:
    from rft_ray.results.record import EvalRecord
    from rft_ray.results.store import ResultStore

    store = ResultStore(tmp_path / "store")
    common = dict(strategy="lora", dataset="digits", model="m", seed=0, total_steps=40, epoch=0.0, examples_seen=0,
                  train_loss=0.1, train_clean_acc=0.5, pgd_eps=0.01, test_ood_accuracy=0.3, trainable_params=10,
                  total_params=100, wall_seconds=1.0, eval_seconds=0.1)
    for run, lr, points in (("a", 1e-3, [(0, 0.2, 0.2), (40, 0.8, 0.1)]), ("b", 3e-3, [(0, 0.2, 0.2), (40, 0.6, 0.3)]),
                            ("c", 1e-2, [(0, 0.9, 0.5)])):  # c never finished
        store.write_run(run, [EvalRecord(run_id=run, lr=lr, weight_decay=0.0, step=s, test_clean_acc=acc,
                                         pgd_adv_acc=pgd, **common) for s, acc, pgd in points])
    return store.read()


def test_sweep_summary_of_a_store(tmp_path):
    from analysis.summary import summary_table_markdown, sweep_summary

    [row] = sweep_summary(_summary_store_table(tmp_path), select_on="test")
    assert (row["trials"], row["complete"]) == (3, 2)
    assert (row["final_acc"], row["final_acc_lr"]) == (0.8, 1e-3)  # among complete runs only
    assert (row["final_pgd"], row["final_pgd_lr"]) == (0.3, 3e-3)
    assert (row["peak_acc"], row["peak_pgd"]) == (0.9, 0.5)
    assert row["best_ood"] == 0.3
    assert math.isclose(row["frontier_auc"], 0.9 * 0.5)  # (0.9, 0.5) dominates every other point
    assert summary_table_markdown([row]).splitlines() == [
        "| dataset | strategy | trials (complete) | best final acc (lr, wd) | best final PGD acc (lr, wd) | "
        "peak acc | peak PGD | best OOD | frontier AUC |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        "| digits | lora | 3 (2) | 0.800 (0.001, 0) | 0.300 (0.003, 0) | 0.900 | 0.500 | 0.300 | 0.4500 |",
    ]
    assert json.loads(json.dumps(row)) == row  # plain Python values (summary.json)


def test_sweep_summary_order_and_shared_numbers(table):
    from analysis.summary import summary_table_markdown, sweep_summary

    rows = sweep_summary(table, strategy_order=("lora", "full"), select_on="test")
    assert [(r["dataset"], r["strategy"]) for r in rows] == [(d, s) for d in DATASETS for s in ("lora", "full", "linear")]
    assert [r["strategy"] for r in sweep_summary(table, select_on="test")][:3] == ["full", "linear", "lora"]  # None: alphabetical
    by = _by(rows, "strategy", "dataset")
    full = by[("full", "cifar10")]
    assert (full["trials"], full["complete"], full["final_acc"], full["final_acc_lr"]) == (2, 2, 0.9, 1e-3)
    assert (full["final_pgd"], full["final_pgd_lr"], full["peak_acc"], full["peak_pgd"]) == (0.2, 1e-4, 0.9, 0.4)
    assert full["best_ood"] == pytest.approx(0.5 * 0.9 + 0.1)
    assert math.isnan(by[("full", "digits")]["best_ood"])  # digits has no OOD split
    assert "| 0.900 | 0.200 | not measured | 0.1450 |" in summary_table_markdown(rows)
    for r in auc_table(table):  # the frontier AUC is the pooled hypervolume AUC of the AUC table
        assert by[(r["strategy"], r["dataset"])]["frontier_auc"] == pytest.approx(r["auc"], abs=1e-12)
    assert sweep_summary(table.slice(0, 0), select_on="test") == []


# ---------------------------------------------------------------------------------------------------
# Bad rows


def _with(table: pa.Table, column: str, index: int, value) -> pa.Table:
    values = table.column(column).to_pylist()
    values[index] = value
    position = table.column_names.index(column)
    return table.set_column(position, pa.field(column, table.schema.field(column).type), pa.array(values, table.schema.field(column).type))


def _auc_of(table):
    return {(r["strategy"], r["dataset"]): r["auc"] for r in auc_table(table)}


# row 3 is full-cifar10-A step 1000 (.9, .1): alone on the frontier, so dropping it changes the AUC
@pytest.mark.parametrize("column, value, reason", [
    ("test_clean_acc", float("nan"), "test_clean_acc is NaN or null"),
    ("test_clean_acc", None, "test_clean_acc is NaN or null"),
    ("pgd_adv_acc", 1.5, "pgd_adv_acc infinite or outside [0, 1]"),
    ("pgd_adv_acc", -0.2, "pgd_adv_acc infinite or outside [0, 1]"),
    ("test_clean_acc", float("inf"), "test_clean_acc infinite or outside [0, 1]"),
    ("strategy", None, "strategy missing or empty"),
    ("dataset", "", "dataset missing or empty"),
    ("step", None, "step missing, negative or not a whole number"),
    ("step", -5, "step missing, negative or not a whole number"),
])
def test_bad_rows_dropped_and_counted(table, column, value, reason):
    bad = _with(table, column, 3, value)
    with pytest.warns(DroppedRowsWarning, match="1 of 48 rows dropped"):
        clean, report = clean_table(bad)
    assert report.dropped == {reason: 1} and report.n_kept_rows == 47 and clean.num_rows == 47
    expected = _auc_of(table.filter(pa.array([i != 3 for i in range(table.num_rows)])))
    with pytest.warns(DroppedRowsWarning):
        assert _auc_of(bad) == expected
    assert expected[("full", "cifar10")] != pytest.approx(0.29)  # the drop is visible, not silent
    with pytest.raises(TableError, match="strict"):
        clean_table(bad, strict=True)


def test_bad_ood_value_ignored_not_row(table):
    bad = _with(table, "test_ood_accuracy", 2, 7.0)
    with pytest.warns(DroppedRowsWarning):
        clean, report = clean_table(bad)
    assert clean.num_rows == 48 and report.ignored_values == {"test_ood_accuracy infinite or outside [0, 1]": 1}
    with pytest.warns(DroppedRowsWarning):
        assert _by(rq3_table(bad), "strategy")[("full",)]["n_ood_points"] == 7
    with pytest.raises(TableError, match="test_ood_accuracy"):
        clean_table(bad, strict=True)


def test_the_columns_analysis_reads_are_record_columns():
    from analysis.cleaning import ANALYSIS_COLUMNS, KEY_COLUMNS, REQUIRED_COLUMNS
    from analysis.summary import SUMMARY_COLUMNS
    from rft_ray.results.record import REQUIRED_COLUMNS as RECORD_COLUMNS

    for name in (*REQUIRED_COLUMNS, *ANALYSIS_COLUMNS, *SUMMARY_COLUMNS):
        assert name in RECORD_COLUMNS, name  # one schema: the record's
    assert all(RECORD_COLUMNS[name] == "string" for name in KEY_COLUMNS)


def test_clean_table_is_silent_on_good_input(table):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clean, report = clean_table(table)
    assert report.clean and report.lines() == ["all 48 rows used; none dropped"] and clean.num_rows == 48


def test_missing_column_named_with_present_ones(table):
    with pytest.raises(TableError, match=r"missing required column\(s\) pgd_adv_acc; columns present: run_id"):
        auc_table(table.drop_columns(["pgd_adv_acc"]))
    with pytest.raises(TableError, match="test_ood_accuracy"):
        rq3_table(table.drop_columns(["test_ood_accuracy"]))
    with pytest.raises(TableError, match=r"\(none: the table is empty\)"):
        auc_table(pa.table({}))


def test_wrong_type_named(table):
    position = table.column_names.index("test_clean_acc")
    bad = table.set_column(position, "test_clean_acc", pa.array([str(v) for v in table.column("test_clean_acc").to_pylist()]))
    with pytest.raises(TableError, match="test_clean_acc must be numeric"):
        auc_table(bad)


def test_duplicates(table):
    doubled = pa.concat_tables([table, table.slice(0, 3)])
    with pytest.warns(DroppedRowsWarning):
        clean, report = clean_table(doubled)
    assert report.dropped == {"duplicate row of one (run_id, step)": 3} and clean.num_rows == 48
    with pytest.warns(DroppedRowsWarning):
        assert _auc_of(doubled) == _auc_of(table)
    conflicting = pa.concat_tables([table, _with(table, "pgd_adv_acc", 1, 0.9).slice(1, 1)])
    with pytest.raises(TableError, match="two different rows for step 10"):
        clean_table(conflicting)


def test_run_id_under_two_strategies(table):
    bad = _with(table, "strategy", 3, "lora")
    with pytest.raises(TableError, match="appears under two strategy/dataset pairs"):
        clean_table(bad)


def test_all_rows_bad(table):
    bad = table.set_column(table.column_names.index("pgd_adv_acc"), "pgd_adv_acc",
                           pa.array([float("nan")] * table.num_rows))
    with pytest.raises(TableError, match="no usable rows.*pgd_adv_acc is NaN or null: 48"):
        clean_table(bad)


# ---------------------------------------------------------------------------------------------------
# End to end: a real ResultStore -> analyze() -> files; the command line


def _write_store(root: Path, rows) -> None:
    from rft_ray.results.record import EvalRecord
    from rft_ray.results.store import ResultStore

    store = ResultStore(root)
    runs: dict[str, list] = {}
    for row in rows:
        fields = {k: v for k, v in row.items() if k != "_ood"}
        runs.setdefault(row["run_id"], []).append(EvalRecord(**fields, ood_acc=row["_ood"]))
    for run_id, records in runs.items():
        store.write_run(run_id, records)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store") / "results"
    _write_store(root, synthetic_rows())
    return root


@pytest.fixture(scope="module")
def analysed(store_dir, tmp_path_factory):
    from analysis.report import analyze

    out = tmp_path_factory.mktemp("out")
    provenance = {"spec": "experiments/smoke.yaml", "seed": 0, "commit": "abc123", "wall time": "12 s"}
    return analyze(str(store_dir), str(out), provenance=provenance), out


def test_analyze_writes_every_file(analysed):
    result, out = analysed
    names = sorted(str(Path(p).relative_to(out)) for p in result.files)
    assert names == sorted(["report.md", "report.html", "analysis.json", "figures/auc_heatmap.png"]
                           + [f"figures/{k}_{d}.png" for k in ("curves", "frontiers") for d in DATASETS])
    for p in result.files:
        assert Path(p).is_file() and Path(p).stat().st_size > 0
    for p in result.files:
        if p.endswith(".png"):
            assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_analyze_json_equals_pure_functions(analysed, table):
    result, out = analysed
    data = json.loads((out / "analysis.json").read_text())
    assert data == result.data
    assert data["summary"]["n_runs"] == 12 and data["summary"]["n_points"] == 48
    assert data["summary"]["best_strategy"] == {"cifar10": ["lora"], "digits": ["lora"]}
    assert data["cleaning"]["n_dropped_rows"] == 0
    expected_auc = auc_table(table)
    for got, want in zip(data["auc"], expected_auc, strict=True):
        # the AUC intervals analyze adds from per-image verdicts; this store has none (results without them)
        got = dict(got)
        assert got.pop("auc_ci") is None and got.pop("best_resolved") is None
        assert got.keys() == want.keys()
        for key in want:
            if isinstance(want[key], float):
                assert got[key] == pytest.approx(want[key], abs=1e-12)
            else:
                assert got[key] == want[key]
    for got, want in zip(data["rq1"], rq1_table(table), strict=True):
        assert {k: got[k] for k in ("strategy", "dataset", "run_id", "peak_step", "converged_step")} == \
               {k: want[k] for k in ("strategy", "dataset", "run_id", "peak_step", "converged_step")}
        assert got["drop"] == pytest.approx(want["drop"])
    lin = next(r for r in data["rq3"] if r["strategy"] == "linear")
    assert lin["ood_clean_pearson"] is None and "constant" in lin["ood_note"]  # NaN -> null in JSON
    full = next(r for r in data["rq3"] if r["strategy"] == "full")
    assert full["ood_clean_pearson"] == pytest.approx(1.0)
    assert data["conventions"]["auc_kind"] == "hypervolume" and data["conventions"]["pooling"] == "pooled"


def test_report_content(analysed):
    result, out = analysed
    md = (out / "report.md").read_text()
    for text in ("hypervolume", "pooled", "commit: abc123", "seed: 0", "wall time: 12 s", "48 rows read",
                 "**0.3400 (+48.9%) (best)**", "converged", "step + 1", "figures/frontiers_cifar10.png", "| full |"):
        assert text in md, text
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "<b>0.3400 (+48.9%) (best)</b>" in html
    assert 'src="figures' not in html  # self-contained


def test_analyze_per_trial_trapezoid_budget_from_table(table, tmp_path):
    from analysis.report import analyze

    result = analyze(table, tmp_path, kind="trapezoid", pooling="per_trial", step_budget=100, figures=False)
    assert result.data["auc"] == [{**row, "auc_ci": None, "best_resolved": None} for row in json.loads(json.dumps(
        auc_table(table, kind="trapezoid", pooling="per_trial", step_budget=100)))]  # no verdicts: no intervals
    assert len(result.data["auc_trials"]) == 12
    assert "per trial" in (tmp_path / "report.md").read_text()
    assert sorted(Path(p).name for p in result.files) == ["analysis.json", "report.html", "report.md"]


def test_analyze_reports_dropped_rows(tmp_path):
    rows = synthetic_rows()
    rows[2]["test_clean_acc"] = float("nan")
    rows[5]["pgd_adv_acc"] = 1.2
    from analysis.report import analyze

    with pytest.warns(DroppedRowsWarning, match="2 of 48 rows dropped"):
        result = analyze(synthetic_table(rows), tmp_path, figures=False)
    assert result.data["cleaning"]["dropped"] == {"test_clean_acc is NaN or null": 1,
                                                  "pgd_adv_acc infinite or outside [0, 1]": 1}
    assert "Dropped: test_clean_acc is NaN or null: 1 row(s)." in (tmp_path / "report.md").read_text()
    with pytest.raises(TableError, match=r"test_clean_acc is NaN or null: 1 row\(s\); pgd_adv_acc infinite or "
                                         r"outside \[0, 1\]: 1 row\(s\)"):
        analyze(synthetic_table(rows), tmp_path, figures=False, strict=True)


def test_main_json_stdout(store_dir, tmp_path, capsys):
    from rft_ray.cli.analyze import main

    code = main(["--json", "--no-figures", str(store_dir), "--out", str(tmp_path / "o"), "--provenance", "seed=3"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(captured.out)
    assert data["provenance"] == {"seed": "3"}
    assert data == json.loads((tmp_path / "o" / "analysis.json").read_text())


def test_main_human_output(store_dir, tmp_path, capsys):
    from rft_ray.cli.analyze import main

    assert main([str(store_dir), "--out", str(tmp_path), "--no-figures", "--per-trial", "--auc", "trapezoid"]) == 0
    out = capsys.readouterr().out
    assert "best on cifar10: lora" in out and "report.html" in out


@pytest.mark.parametrize("argv, message", [
    (["{missing}"], "does not exist"),
    (["{empty}"], "holds no evaluation records"),
    (["{file}"], "is a file"),
    (["{store}", "--auc", "area"], "invalid choice"),
    (["{store}", "--step-budget", "-3"], "--step-budget must be >= 0"),
    (["{store}", "--step-budget", "x"], "invalid int value"),
    (["{store}", "--provenance", "novalue"], "KEY=VALUE"),
    (["{store}", "--tol", "2"], "tolerance"),
    ([], "RESULTS"),
])
def test_main_bad_input_returns_2_without_traceback(argv, message, store_dir, tmp_path, capsys):
    from rft_ray.cli.analyze import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    paths = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "file": tmp_path / "file", "store": store_dir}
    argv = [a.format(**paths) for a in argv] + ["--out", str(tmp_path / "out"), "--no-figures"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert err.count("rft analyze: error:") == 1 and message in err
    before = lines[:next(i for i, line in enumerate(lines) if line.startswith("rft analyze: error:"))]
    assert all(line.startswith(("usage:", " ")) for line in before)  # only argparse's usage text precedes it


def test_main_bad_store_rows(tmp_path, capsys):
    from rft_ray.cli.analyze import main

    rows = synthetic_rows()
    rows[0]["pgd_adv_acc"] = 3.0
    _write_store(tmp_path / "s", rows)
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "o"), "--no-figures", "--strict"]) == 2
    assert "pgd_adv_acc infinite or outside [0, 1]: 1 row(s)" in capsys.readouterr().err
    assert main([str(tmp_path / "s"), "--out", str(tmp_path / "o"), "--no-figures"]) == 0
    assert "warning: result table: 1 of 48 rows dropped" in capsys.readouterr().err


def test_plots_per_trial_budget_and_colours(table, tmp_path):
    from analysis import plots

    assert plots.strategy_color("lora") == "#d62728"
    assert plots.strategy_color("my_method") == plots.strategy_color("my_method")  # stable for unknown names
    assert len({plots.strategy_color(s) for s in plots.STRATEGY_COLORS}) == len(plots.STRATEGY_COLORS)
    rows = auc_table(table, kind="trapezoid", pooling="per_trial", step_budget=10)
    path = plots.plot_frontiers(table, "digits", tmp_path / "f.png", kind="trapezoid", step_budget=10, auc_rows=rows)
    assert Path(path).read_bytes()[:4] == b"\x89PNG"
    one = [r for r in rows if r["dataset"] == "digits" and r["strategy"] == "full"]
    assert Path(plots.plot_auc_heatmap(one, tmp_path / "h.png")).is_file()  # one cell, constant colour scale
    with pytest.raises(ValueError, match="no points for dataset 'nope'"):
        plots.plot_curves(table, "nope", tmp_path / "c.png")


def test_main_help_returns_0(capsys):
    from rft_ray.cli.analyze import main

    assert main(["--help"]) == 0
    assert "--step-budget" in capsys.readouterr().out


def test_radius_identity_is_the_platforms_same_radius(table):
    from analysis.radius import distinct_radii, select_eps
    from rft_ray.config.metrics import RADIUS_REL_TOL

    eps = 1 / 255
    assert select_eps(table, eps * (1 + RADIUS_REL_TOL / 2)).num_rows == table.num_rows
    with pytest.raises(TableError, match="no results at PGD eps"):
        select_eps(table, eps * (1 + 3 * RADIUS_REL_TOL))
    assert distinct_radii([eps, eps * (1 + RADIUS_REL_TOL / 2), 2 * eps]) == [round(eps, 9), round(2 * eps, 9)]


def test_results_at_several_pgd_radii_are_never_pooled(tmp_path):
    from analysis.report import analyze
    from rft_ray.cli.analyze import main
    from rft_ray.results.record import EvalRecord
    from rft_ray.results.store import ResultStore

    def record(run_id, eps, step, acc, rob):
        return EvalRecord(run_id=run_id, strategy="lora", dataset="d", model="m", lr=1e-3, weight_decay=0.0, seed=0,
                          step=step, total_steps=10, epoch=0.0, examples_seen=0, train_loss=0.1,
                          train_clean_acc=acc, test_clean_acc=acc, pgd_adv_acc=rob, pgd_eps=eps,
                          test_ood_accuracy=acc, trainable_params=1, total_params=2, wall_seconds=1.0,
                          eval_seconds=0.1)

    store = ResultStore(tmp_path / "store")
    store.write_run("a", [record("a", 1 / 255, 0, 0.5, 0.4), record("a", 1 / 255, 10, 0.8, 0.5)])
    store.write_run("b", [record("b", 8 / 255, 0, 0.5, 0.1), record("b", 8 / 255, 10, 0.9, 0.0)])
    with pytest.raises(ValueError, match=r"2 radii \(1/255, 8/255\).*--eps"):
        analyze(tmp_path / "store", tmp_path / "out", figures=False)
    result = analyze(tmp_path / "store", tmp_path / "out", figures=False, eps=1 / 255)
    assert result.data["auc"][0]["auc"] == pytest.approx(0.8 * 0.5)
    assert result.data["conventions"]["pgd_eps"] == [round(1 / 255, 9)]
    assert main([str(tmp_path / "store"), "--out", str(tmp_path / "o2"), "--eps", "8/255", "--no-figures"]) == 0
    assert main([str(tmp_path / "store"), "--out", str(tmp_path / "o3"), "--eps", "3/255", "--no-figures"]) == 2
