"""Knee selection (analysis/knee.py): the knee of hand-made fronts (obvious knee, straight, concave, ties, one
and two points), the most robust point at an accuracy floor, per-run and per-group pooling, and where the
choices are reported: the sweep summary, MLflow metrics, the analysis report and `rft best STORE`."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from analysis.knee import (
    check_min_acc,
    floor_index,
    group_knees,
    knee_distances,
    knee_index,
    trial_knees,
)
from rft_ray.results.record import EvalRecord
from rft_ray.results.store import ResultStore

# ---------------------------------------------------------------------------------------------------
# The knee of hand-made fronts


def test_a_convex_front_has_its_knee_at_the_bulge():
    acc = [0.2, 0.7, 0.8, 0.5, 0.6]
    rob = [0.8, 0.7, 0.2, 0.5, 0.3]  # (0.5, 0.5) and (0.6, 0.3) are dominated by (0.7, 0.7)
    index, distance = knee_index(acc, rob, step=[0, 10, 20, 30, 40])
    assert index == 1
    # Normalised by the front's ranges (0.6 on both axes): (0.5/0.6 + 0.5/0.6 - 1) / sqrt(2).
    assert distance == pytest.approx((2 * 0.5 / 0.6 - 1) / math.sqrt(2))


def test_the_knee_and_its_distance_do_not_depend_on_the_axes_scales():
    """PGD accuracy is often far below clean accuracy; the distance is in units of each axis' range."""
    acc = np.array([0.5, 0.8, 0.85, 0.9])
    rob = np.array([0.05, 0.045, 0.03, 0.01])  # x = 0, 0.75, 0.875, 1; y = 1, 0.875, 0.5, 0
    index, distance = knee_index(acc, rob, [0, 1, 2, 3])
    assert (index, distance) == (1, pytest.approx((0.75 + 0.875 - 1) / math.sqrt(2)))
    assert knee_index(acc / 2, rob * 10, [0, 1, 2, 3]) == (1, pytest.approx(distance))
    np.testing.assert_allclose(knee_distances(np.column_stack([acc, rob])),
                               np.array([0, 0.625, 0.375, 0]) / math.sqrt(2), atol=1e-12)


def test_a_straight_front_ties_everywhere_and_the_earliest_step_wins():
    acc, rob = [0.2, 0.5, 0.8], [0.8, 0.5, 0.2]
    index, distance = knee_index(acc, rob, step=[30, 10, 20])
    assert (index, distance) == (1, pytest.approx(0.0, abs=1e-12))
    assert knee_index(acc, rob, step=[30, 40, 20])[0] == 2


def test_a_concave_front_has_its_knee_at_an_extreme():
    """A dent below the line joining the extremes is the worst trade-off, never the knee."""
    acc, rob = [0.2, 0.5, 0.8], [0.8, 0.3, 0.2]
    distances = knee_distances(np.column_stack([acc, rob]))
    assert distances[1] < 0 and distances[0] == distances[2] == 0
    assert knee_index(acc, rob, step=[20, 0, 10])[0] == 2  # the earlier of the two extremes
    assert knee_index(acc, rob, step=[5, 0, 10])[0] == 0


def test_equally_distant_front_points_go_to_the_earliest_step_then_the_smaller_run_id():
    acc, rob = [0.0, 0.3, 0.9, 1.0], [1.0, 0.9, 0.3, 0.0]  # (0.3, 0.9) and (0.9, 0.3) mirror each other
    assert knee_index(acc, rob, step=[0, 20, 10, 30])[0] == 2
    assert knee_index(acc, rob, step=[0, 10, 20, 30])[0] == 1
    assert knee_index(acc, rob, step=[0, 10, 10, 30], run_id=["a", "z", "b", "a"])[0] == 2


def test_one_front_point_reached_by_several_evaluation_points():
    """The same values at two steps or in two runs are one front point; the earliest, then smaller run id."""
    acc, rob = [0.2, 0.6, 0.6, 0.6, 0.9], [0.9, 0.7, 0.7, 0.7, 0.1]
    assert knee_index(acc, rob, step=[0, 40, 20, 20, 60], run_id=["a", "a", "c", "b", "a"])[0] == 3


def test_one_and_two_point_fronts():
    assert knee_index([], [], []) is None
    assert knee_index([0.4], [0.3], [7]) == (0, 0.0)
    # (0.9, 0.5) dominates the others: the front is one point.
    assert knee_index([0.5, 0.9, 0.3], [0.5, 0.5, 0.2], [0, 10, 20]) == (1, 0.0)
    # Two points: both are extremes (distance 0): the one measured first.
    assert knee_index([0.2, 0.8], [0.8, 0.2], [20, 10]) == (1, 0.0)
    assert knee_index([0.2, 0.8], [0.8, 0.2], [10, 20]) == (0, 0.0)


def test_bad_points_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        knee_index([0.5, float("nan")], [0.1, 0.2], [0, 1])
    with pytest.raises(ValueError, match="one value per point"):
        knee_index([0.5, 0.6], [0.1, 0.2], [0])


# ---------------------------------------------------------------------------------------------------
# The most robust point at an accuracy floor


def test_the_most_robust_point_at_the_floor():
    acc = [0.95, 0.90, 0.92, 0.85, 0.91]
    rob = [0.10, 0.30, 0.30, 0.60, 0.25]
    assert floor_index(acc, rob, [0, 1, 2, 3, 4], min_acc=0.9) == 2  # 0.30 tie: the higher accuracy
    assert floor_index(acc, rob, [0, 1, 2, 3, 4], min_acc=0.8) == 3
    assert floor_index(acc, rob, [0, 1, 2, 3, 4], min_acc=0.95) == 0  # exactly at the floor counts
    assert floor_index(acc, rob, [0, 1, 2, 3, 4], min_acc=0.96) is None  # none reaches it
    assert floor_index([0.9, 0.9], [0.3, 0.3], [20, 10], ["a", "b"], min_acc=0.5) == 1  # then the earliest step
    assert floor_index([], [], [], min_acc=0.5) is None


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf"), "0.9", True])
def test_the_floor_must_be_a_fraction(bad):
    with pytest.raises(ValueError, match=r"min_acc .* must be a fraction in \[0, 1\]"):
        check_min_acc(bad)
    assert check_min_acc(None) is None and check_min_acc(1) == 1.0


# ---------------------------------------------------------------------------------------------------
# Result tables: per run and per group (pooled)

COMMON = dict(model="m", seed=0, total_steps=40, epoch=0.0, examples_seen=0, train_loss=0.1, train_clean_acc=0.5,
              pgd_eps=1 / 255, test_ood_accuracy=0.3, trainable_params=10, total_params=100, wall_seconds=1.0,
              eval_seconds=0.1)
# run -> (strategy, lr, weight decay, [(step, clean acc, PGD acc)]). Alone, run a's knee is (0.8, 0.6) on its
# front (0.3, 0.7), (0.8, 0.6), (0.9, 0.1), and b's (0.95, 0.45) dominates its other points. Pooled, b's
# (0.95, 0.45) replaces a's (0.9, 0.1) as the accurate extreme of the front; full's front has two points.
RUNS = {"lora-digits-a": ("lora", 1e-3, 0.0, [(0, 0.3, 0.7), (20, 0.8, 0.6), (40, 0.9, 0.1)]),
        "lora-digits-b": ("lora", 3e-3, 0.01, [(0, 0.5, 0.2), (20, 0.95, 0.45), (40, 0.95, 0.05)]),
        "full-digits-c": ("full", 1e-4, 0.05, [(0, 0.4, 0.4), (40, 0.92, 0.35)])}


def write_store(root) -> ResultStore:
    store = ResultStore(root)
    for run, (strategy, lr, wd, points) in RUNS.items():
        store.write_run(run, [EvalRecord(run_id=run, strategy=strategy, dataset="digits", lr=lr, weight_decay=wd,
                                         step=s, test_clean_acc=a, pgd_adv_acc=p, **COMMON) for s, a, p in points])
    return store


def test_per_run_and_pooled_per_group(tmp_path):
    table = write_store(tmp_path / "store").read()
    trials = {r["run_id"]: r for r in trial_knees(table, min_acc=0.9, strategy_order=("full", "lora"), select_on="test")}
    own = trials["lora-digits-a"]["knee"]
    assert (own["step"], own["test_clean_acc"]) == (20, 0.8)
    assert own["knee_distance"] == pytest.approx((0.5 / 0.6 + 0.5 / 0.6 - 1) / math.sqrt(2))
    assert trials["lora-digits-b"]["knee"]["step"] == 20 and trials["lora-digits-b"]["knee"]["knee_distance"] == 0
    assert trials["full-digits-c"]["knee"]["step"] == 0  # a two-point front: the earlier point
    assert trials["lora-digits-a"]["at_floor"] == {"run_id": "lora-digits-a", "step": 40, "lr": 1e-3,
                                                   "weight_decay": 0.0, "test_clean_acc": 0.9, "pgd_adv_acc": 0.1,
                                                   "test_clean_acc_ci": None, "pgd_adv_acc_ci": None}  # no counts
    assert trials["full-digits-c"]["at_floor"]["step"] == 40

    groups = group_knees(table, min_acc=0.9, strategy_order=("full", "lora"), select_on="test")
    assert [(g["strategy"], g["n_runs"], g["n_points"], g["front_points"]) for g in groups] == [
        ("full", 1, 2, 2), ("lora", 2, 6, 3)]
    lora = groups[1]
    assert {k: lora["knee"][k] for k in ("run_id", "step", "lr", "weight_decay")} == {
        "run_id": "lora-digits-a", "step": 20, "lr": 1e-3, "weight_decay": 0.0}
    # On the pooled front (0.3, 0.7), (0.8, 0.6), (0.95, 0.45): x = 0.5 / 0.65, y = 0.15 / 0.25.
    assert lora["knee"]["knee_distance"] == pytest.approx((0.5 / 0.65 + 0.15 / 0.25 - 1) / math.sqrt(2))
    assert {k: lora["at_floor"][k] for k in ("run_id", "step", "lr", "weight_decay", "pgd_adv_acc")} == {
        "run_id": "lora-digits-b", "step": 20, "lr": 3e-3, "weight_decay": 0.01, "pgd_adv_acc": 0.45}
    assert group_knees(table, min_acc=0.99, select_on="test")[1]["at_floor"] is None
    assert group_knees(table, select_on="test")[1]["at_floor"] is None and group_knees(table, select_on="test")[1]["min_acc"] is None


# ---------------------------------------------------------------------------------------------------
# Reported: the sweep summary, MLflow, the report


def test_the_sweep_summary_carries_each_groups_knee_and_floor_point(tmp_path):
    from analysis.summary import (
        knee_table_markdown,
        summary_table_markdown,
        sweep_summary,
    )
    from rft_ray.sweep.report import summarize_store

    table = write_store(tmp_path / "store").read()
    full, lora = sweep_summary(table, select_on="test")
    assert (lora["knee_run_id"], lora["knee_step"], lora["knee_clean_acc"], lora["knee_pgd_acc"],
            lora["knee_lr"], lora["knee_wd"]) == ("lora-digits-a", 20, 0.8, 0.6, 1e-3, 0.0)
    assert "floor_run_id" not in lora  # no floor asked
    assert json.loads(json.dumps(lora)) == lora  # summary.json
    assert summary_table_markdown([full, lora]).count("\n") == 3  # the summary table itself is unchanged

    floored = sweep_summary(table, min_acc=0.93, select_on="test")
    lora_floor = (floored[1]["floor_run_id"], floored[1]["floor_step"], floored[1]["floor_pgd_acc"])
    assert lora_floor == ("lora-digits-b", 20, 0.45)
    assert floored[0]["floor_run_id"] is None and floored[0]["floor_min_acc"] == 0.93  # full reaches 0.92 only
    lines = knee_table_markdown(floored).splitlines()
    assert "most robust at clean acc >= 0.930" in lines[0]
    assert lines[2].startswith("| digits | full | 0.400 | 0.400 | full-digits-c | 0 | 0.0001 | 0.05 |")
    assert "no point reaches it" in lines[2]
    assert lines[3].endswith("| 0.950 | 0.450 | lora-digits-b | 20 | 0.003 | 0.01 |")
    assert "knee: clean acc" in knee_table_markdown(summarize_store(str(tmp_path / "store"), select_on="test"))


def test_search_min_acc_reaches_the_sweep_summary_mlflow_and_the_report(tmp_path):
    """search.min_acc: the floor of the summary rows, the parent run's <group>/floor_* metrics and the report."""
    from types import SimpleNamespace

    from analysis.summary import sweep_summary
    from rft_ray.specs import experiment_spec
    from rft_ray.sweep.report import write_analysis, write_summary
    from rft_ray.tracking.metrics import group_metrics

    experiment = experiment_spec({"name": "floor", "base": {"training": {"steps": 40}},
                                  "search": {"num_samples": 2, "min_acc": 0.93, "select_on": "test"},
                                  "storage": {"path": str(tmp_path / "sweep")}})
    assert experiment.search.min_acc == 0.93
    write_store(experiment.store_root)
    rows, markdown, _ = write_summary(experiment, [], tmp_path / "local")
    full, lora = rows
    assert (lora["floor_min_acc"], lora["floor_run_id"], lora["floor_step"], lora["floor_pgd_acc"]) == (
        0.93, "lora-digits-b", 20, 0.45)
    assert full["floor_run_id"] is None and "most robust at clean acc >= 0.930" in markdown
    assert json.loads((tmp_path / "local" / "summary.json").read_text())["summary"][1]["floor_step"] == 20

    metrics = group_metrics(rows, [SimpleNamespace(strategy="lora", dataset="digits", name="lora-digits")])
    assert (metrics["lora-digits/floor_clean_acc"], metrics["lora-digits/floor_pgd_acc"],
            metrics["lora-digits/floor_step"]) == (0.95, 0.45, 20.0)
    assert not any(k.startswith("full-digits/floor_") for k in metrics)  # full never reaches 0.93
    assert not any("/floor_" in k for k in group_metrics(sweep_summary(write_store(tmp_path / "s").read(), select_on="test")))

    folder, _ = write_analysis(experiment, tmp_path / "analysis", None, 1.0)
    assert folder == str(tmp_path / "analysis")
    data = json.loads((tmp_path / "analysis" / "analysis.json").read_text())
    assert data["min_acc"] == 0.93 and data["knees"][1]["at_floor"]["run_id"] == "lora-digits-b"


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan"), "high", True])
def test_search_min_acc_must_be_a_fraction(bad):
    from rft_ray.config import SpecError
    from rft_ray.specs import experiment_spec

    with pytest.raises(SpecError) as caught:
        experiment_spec({"name": "floor", "base": {"training": {"steps": 40}}, "search": {"min_acc": bad}})
    assert caught.value.field_path == "search.min_acc", str(caught.value)
    assert "fraction in [0, 1]" in str(caught.value) or "min_acc" in str(caught.value)


def test_mlflow_group_metrics_and_trial_metrics_carry_the_knee(tmp_path):
    from analysis.summary import sweep_summary
    from rft_ray.tracking.metrics import group_metrics, trial_metrics

    store = write_store(tmp_path / "store")
    metrics = group_metrics(sweep_summary(store.read(), select_on="test"))
    assert metrics["lora-digits/knee_clean_acc"] == 0.8 and metrics["lora-digits/knee_pgd_acc"] == 0.6
    assert metrics["lora-digits/knee_step"] == 20 and metrics["full-digits/knee_clean_acc"] == 0.4
    records = store.read_run("lora-digits-a")
    # At each evaluation point a trial reports the knee of its points so far; at its end, its own knee.
    assert trial_metrics(records[:1], [], "test")["knee_step"] == 0
    assert trial_metrics(records[:2], [], "test")["knee_step"] == 0  # a two-point front: the earlier point
    final = trial_metrics(records, [], "test")
    assert (final["knee_step"], final["knee_clean_acc"], final["knee_pgd_acc"]) == (20, 0.8, 0.6)


def test_the_backfilled_parent_and_trial_runs_carry_the_knee(tmp_path):
    """Through `rft sync-mlflow` (the live sweep logs the same `group_metrics` and `trial_metrics`)."""
    from mlflow.tracking import MlflowClient

    from rft_ray.specs import experiment_spec
    from rft_ray.sweep.state import SweepFolder
    from rft_ray.tracking.backfill import sync_mlflow

    experiment = experiment_spec({"name": "knees", "base": {"training": {"steps": 40}},
                                  "search": {"num_samples": 2, "objectives": [{"metric": "test_clean_acc"}],
                                             "select_on": "test"},
                                  "storage": {"path": str(tmp_path / "sweep")}})
    store = ResultStore(experiment.store_root)
    _, lr, wd, points = RUNS["lora-digits-a"]
    store.write_run("lora-digits-a", [EvalRecord(run_id="lora-digits-a", strategy="lora", dataset="digits", lr=lr,
                                                 weight_decay=wd, step=s, test_clean_acc=a, pgd_adv_acc=p, **COMMON)
                                      for s, a, p in points])
    root = experiment.storage_root
    trials = [{"trial_id": "a", "run_id": "lora-digits-a", "status": "completed"}]
    SweepFolder(root).write_state({"name": "knees", "fingerprint": experiment.fingerprint(),
                                   "spec": experiment.to_dict(), "parent_run_id": None, "finished": "now",
                                   "groups": {"lora-digits": {"trials": trials}}})
    report = sync_mlflow(root, SweepFolder(root).read_state(), log=lambda message: None)
    client = MlflowClient(tracking_uri=report.uri)
    parent = client.get_run(report.parent_run_id).data.metrics
    assert (parent["lora-digits/knee_clean_acc"], parent["lora-digits/knee_pgd_acc"]) == (0.8, 0.6)
    [child] = [r for r in client.search_runs([report.experiment_id]) if r.data.tags.get("run_id") == "lora-digits-a"]
    history = sorted((m.step, m.value) for m in client.get_metric_history(child.info.run_id, "knee_step"))
    assert history == [(0, 0.0), (20, 0.0), (40, 20.0)] and child.data.metrics["knee_pgd_acc"] == 0.6


def test_the_report_has_a_knee_section_with_the_floor_from_analyze(tmp_path):
    from analysis.report import analyze
    from rft_ray.cli.analyze import main as analyze_main

    write_store(tmp_path / "store")
    data = analyze(str(tmp_path / "store"), tmp_path / "out", figures=False, min_acc=0.9, select_on="test").data
    assert data["min_acc"] == 0.9 and [g["strategy"] for g in data["knees"]] == ["full", "lora"]
    assert data["knees"][1]["at_floor"]["run_id"] == "lora-digits-b" and len(data["knee_trials"]) == 3
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Knee of the frontier and the most robust point at clean accuracy >= 0.9" in report
    assert "| lora | digits | 6 | 3 | lora-digits-a | 20 | 0.8000 | 0.6000 | 0.001 | 0 |" in report
    plain = analyze(str(tmp_path / "store"), tmp_path / "plain", figures=False, select_on="test").data
    assert plain["min_acc"] is None and plain["knees"][1]["at_floor"] is None
    assert "No accuracy floor was set" in (tmp_path / "plain" / "report.md").read_text()
    budget = analyze(str(tmp_path / "store"), tmp_path / "budget", figures=False, step_budget=0, select_on="test").data
    assert {g["knee"]["step"] for g in budget["knees"]} == {0}  # only the points the AUC uses

    assert analyze_main([str(tmp_path / "store"), "--out", str(tmp_path / "o"), "--no-figures",
                         "--min-acc", "0.95", "--select-on", "test"]) == 0
    assert json.loads((tmp_path / "o" / "analysis.json").read_text())["min_acc"] == 0.95
    assert analyze_main([str(tmp_path / "store"), "--out", str(tmp_path / "o"), "--min-acc", "1.5"]) == 2


# ---------------------------------------------------------------------------------------------------
# `rft best STORE`


def test_rft_best_prints_each_group_with_its_checkpoint(tmp_path, capsys):
    from rft_ray.cli import main

    store = write_store(tmp_path / "sweep" / "store")
    # Kept weights of two points; `rft best` only lists the files, so their content does not matter here.
    kept = store.checkpoint_path("lora-digits-b", 20)
    (tmp_path / "sweep" / "store" / "checkpoints" / "lora-digits-b").mkdir(parents=True)
    open(kept, "wb").close()
    assert store.checkpoints("lora-digits-b") == {20: kept}

    assert main(["best", "--select-on", "test", str(tmp_path / "sweep" / "store"), "--min-acc", "0.9"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"store {tmp_path / 'sweep' / 'store'}; clean-accuracy floor 0.9; PGD eps 1/255; selected on "
                      "test (optimistic: the test images chose the point; no held-out number)")
    lora = out.index("lora on digits (2 runs, 6 evaluation points, 3 on the Pareto front):")
    assert out[lora + 1] == ("  knee: run lora-digits-a step 20: clean acc 0.8000, PGD acc 0.6000; lr 0.001, "
                             "weight decay 0")
    assert out[lora + 2] == "    checkpoint: no checkpoint kept for this step"
    assert out[lora + 3].startswith("  most robust at clean acc >= 0.9: run lora-digits-b step 20: clean acc 0.9500, "
                                    "PGD acc 0.4500; lr 0.003, weight decay 0.01")
    assert out[lora + 4] == f"    checkpoint: {kept}"

    # A sweep folder (sweep.json and store/) reads its store; --json; filters; a floor no point reaches.
    (tmp_path / "sweep" / "sweep.json").write_text("{}")
    assert main(["best", "--select-on", "test", str(tmp_path / "sweep"), "--min-acc", "0.99", "--strategy", "lora", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["store"] == f"{tmp_path / 'sweep'}/store" and result["min_acc"] == 0.99
    [group] = result["groups"]
    assert group["at_floor"] is None and group["knee"]["checkpoint"] is None and group["knee"]["step"] == 20
    assert main(["best", "--select-on", "test", str(tmp_path / "sweep"), "--min-acc", "0.99", "--dataset", "digits"]) == 0
    text = capsys.readouterr().out
    assert text.count("most robust at clean acc >= 0.99: no point reaches clean accuracy 0.99") == 2


def test_rft_best_analyses_one_pgd_radius(tmp_path, capsys):
    """Robust accuracy at another radius is another axis: never pooled, chosen with --eps like rft analyze."""
    from rft_ray.cli import main

    store = write_store(tmp_path / "store")
    wide = {**COMMON, "pgd_eps": 8 / 255}
    # Pooled with the 1/255 runs, this run's (0.99, 0.9) would be the lora knee and floor point.
    store.write_run("lora-digits-w", [EvalRecord(run_id="lora-digits-w", strategy="lora", dataset="digits", lr=1e-2,
                                                 weight_decay=0.0, step=s, test_clean_acc=a, pgd_adv_acc=p, **wide)
                                      for s, a, p in [(0, 0.2, 0.1), (40, 0.99, 0.9)]])
    assert main(["best", "--select-on", "test", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rft best: error: ") and "2 radii (1/255, 8/255)" in err and "--eps" in err, err

    assert main(["best", "--select-on", "test", str(tmp_path / "store"), "--eps", "1/255", "--min-acc", "0.9", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    lora = result["groups"][1]
    assert result["pgd_eps"] == [round(1 / 255, 9)] and lora["n_runs"] == 2
    assert (lora["knee"]["run_id"], lora["at_floor"]["run_id"]) == ("lora-digits-a", "lora-digits-b")
    assert main(["best", "--select-on", "test", str(tmp_path / "store"), "--eps", "8/255"]) == 0
    out = capsys.readouterr().out
    assert "PGD eps 8/255" in out.splitlines()[0] and "run lora-digits-w step 40" in out and "full" not in out
    assert main(["best", "--select-on", "test", str(tmp_path / "store"), "--eps", "2/255"]) == 2
    assert "no results at PGD eps 2/255; the results hold 1/255, 8/255" in capsys.readouterr().err
    assert main(["best", "--select-on", "test", str(tmp_path / "store"), "--eps", "two"]) == 2
    assert "--eps takes a number or a fraction" in capsys.readouterr().err
    # A filter that leaves one radius needs no --eps.
    assert main(["best", "--select-on", "test", str(tmp_path / "store"), "--strategy", "full"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["{missing}"], "does not exist"),
    (["{empty}"], "holds no evaluation records"),
    (["{store}", "--min-acc", "1.5"], r"must be a fraction in \[0, 1\]"),
    (["{store}", "--strategy", "bitfit"], "no rows of that strategy; it has full, lora"),
    (["{store}", "--strategy", "full", "--dataset", "cifar10"], "no rows of that dataset"),
])
def test_rft_best_refuses_bad_input_with_exit_2(tmp_path, capsys, argv, message):
    import re

    from rft_ray.cli import main

    write_store(tmp_path / "store")
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "store": tmp_path / "store"}
    assert main(["best"] + [a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rft best: error: ") and err.count("\n") == 1 and re.search(message, err), err


# ---------------------------------------------------------------------------------------------------
# Chosen on validation (the default), test reported


def write_validated_store(root) -> ResultStore:
    """RUNS with validation metrics that rank the points differently from test: validation's clean accuracy is
    test's mirrored around 0.65, so the accurate extreme of validation's front is another point than test's."""
    store = ResultStore(root)
    for run, (strategy, lr, wd, points) in RUNS.items():
        store.write_run(run, [EvalRecord(run_id=run, strategy=strategy, dataset="digits", lr=lr, weight_decay=wd,
                                         step=s, test_clean_acc=a, pgd_adv_acc=p, val_clean_acc=round(1.3 - a, 6),
                                         val_pgd_adv_acc=p, **COMMON) for s, a, p in points])
    return store


def test_the_knee_and_floor_are_chosen_on_validation_and_report_test(tmp_path):
    table = write_validated_store(tmp_path / "store").read()
    lora = group_knees(table, min_acc=0.9, strategy_order=("full", "lora"))[1]
    # Validation points of lora: (1.0, 0.7) dominates every other, so it is the knee; test's knee was step 20.
    assert {k: lora["knee"][k] for k in ("run_id", "step", "val_clean_acc", "val_pgd_adv_acc", "test_clean_acc",
                                         "pgd_adv_acc")} == {"run_id": "lora-digits-a", "step": 0, "val_clean_acc": 1.0,
                                                             "val_pgd_adv_acc": 0.7, "test_clean_acc": 0.3,
                                                             "pgd_adv_acc": 0.7}
    # The floor is on validation's clean accuracy: >= 0.9 leaves (1.0, 0.7) only (test's floor point differed).
    assert (lora["at_floor"]["step"], lora["at_floor"]["val_clean_acc"]) == (0, 1.0)
    on_test = group_knees(table, min_acc=0.9, strategy_order=("full", "lora"), select_on="test")[1]
    assert on_test["knee"]["step"] == 20 and "val_clean_acc" not in on_test["knee"]


def test_the_summary_chooses_best_final_on_validation_and_says_so(tmp_path):
    from analysis.summary import knee_table_markdown, summary_table_markdown, sweep_summary

    rows = sweep_summary(write_validated_store(tmp_path / "store").read(), strategy_order=("full", "lora"))
    full, lora = rows
    # Final points of lora: a (test 0.9, val 0.4) and b (test 0.95, val 0.35): validation picks a.
    assert (lora["final_acc"], lora["final_acc_val"], lora["final_acc_lr"]) == (0.9, pytest.approx(0.4), 1e-3)
    assert lora["select_on"] == "validation" and lora["peak_acc"] == 0.95  # peaks describe the test points
    assert "best final test acc (val acc it was chosen on)" in summary_table_markdown(rows)
    assert "0.900 (0.400)" in summary_table_markdown(rows)
    assert "knee: val clean acc | val PGD acc | test clean acc | test PGD acc" in knee_table_markdown(rows)


def test_the_summarys_best_ood_says_not_measured_where_validation_ood_was_off(tmp_path):
    """evaluation.validation.ood is off by default: nothing measured what would choose the best OOD run, so the
    cell says so instead of 'nan (nan)'; where val_ood_accuracy was measured, the cell is 'test (val)'."""
    from analysis.summary import summary_table_markdown, sweep_summary

    store = write_validated_store(tmp_path / "store")
    table = summary_table_markdown(sweep_summary(store.read(), strategy_order=("full", "lora")))
    assert "| best test OOD (val OOD) |" in table.splitlines()[0] and "nan" not in table
    assert [line.split(" | ")[7] for line in table.splitlines()[2:]] == ["not measured"] * 2
    for run, val_ood in (("lora-digits-a", 0.5), ("lora-digits-b", 0.6)):  # measured for lora: b's is the best
        store.write_run(run, [dataclasses.replace(r, val_ood_accuracy=val_ood, test_ood_accuracy=val_ood - 0.35)
                              for r in store.read_run(run)])
    table = summary_table_markdown(sweep_summary(store.read(), strategy_order=("full", "lora")))
    assert [line.split(" | ")[7] for line in table.splitlines()[2:]] == ["not measured", "0.250 (0.600)"]


def test_rft_best_chooses_on_validation_by_default_and_refuses_results_without_it(tmp_path, capsys):
    from rft_ray.cli import main

    write_validated_store(tmp_path / "store")
    assert main(["best", str(tmp_path / "store"), "--strategy", "lora"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("; selected on validation; test reported")
    assert out[2] == ("  knee: run lora-digits-a step 0: val clean acc 1.0000, val PGD acc 0.7000; test clean acc "
                      "0.3000, PGD acc 0.7000; lr 0.001, weight decay 0")
    write_store(tmp_path / "old")  # written before validation was measured
    assert main(["best", str(tmp_path / "old")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rft best: error: ") and "no validation metrics (val_clean_acc, val_pgd_adv_acc" in err
    assert "--select-on test" in err
    assert main(["best", str(tmp_path / "old"), "--select-on", "test"]) == 0
    assert "rft best: warning: --select-on is test" in capsys.readouterr().err
    # Per-domain OOD is measured on test only: no validation counterpart to choose on.
    assert main(["best", str(tmp_path / "store"), "--robustness", "ood:contrast"]) == 2
    assert "measured on test images only" in capsys.readouterr().err


def test_the_report_says_why_it_has_no_knee_without_validation(tmp_path):
    from analysis.report import analyze

    write_store(tmp_path / "store")
    data = analyze(str(tmp_path / "store"), tmp_path / "out", figures=False).data
    assert data["knees"] is None and "no validation metrics" in data["knee_unavailable"]
    assert "Not chosen: " in (tmp_path / "out" / "report.md").read_text()
    validated = analyze(str(write_validated_store(tmp_path / "v").root), tmp_path / "vout", figures=False).data
    assert validated["knees"][1]["knee"]["val_clean_acc"] == 1.0
    assert "(selected on validation; test reported)" in (tmp_path / "vout" / "report.md").read_text()
