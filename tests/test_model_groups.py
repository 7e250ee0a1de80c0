"""Runs of different models are never pooled (analysis.models), and the frontier's robustness axis is chosen
(analysis.axis): the analysis, the sweep summary, `rft best` and the MLflow group metrics."""
from __future__ import annotations

import json

import pytest

from analysis.knee import group_knees
from analysis.summary import sweep_summary
from rft_ray.results.record import EvalRecord
from rft_ray.results.store import ResultStore

COMMON = dict(strategy="full", dataset="mydata", lr=1e-3, weight_decay=0.0, seed=0, total_steps=40, epoch=0.0,
              examples_seen=0, train_loss=0.1, train_clean_acc=0.5, pgd_eps=1 / 255, trainable_params=10,
              total_params=100, wall_seconds=1.0, eval_seconds=0.1)
# run -> (model, [(step, clean, PGD, OOD pooled, OOD on "sketch")]). Pooled over both models, vit_b's points
# would dominate vit_s's and the group's median parameters would mix two models.
RUNS = {"full-mydata-vit_s": ("vit_s", [(0, 0.3, 0.30, 0.2, 0.1), (40, 0.6, 0.10, 0.5, 0.4)]),
        "full-mydata-vit_b": ("vit_b", [(0, 0.5, 0.50, 0.3, 0.2), (20, 0.9, 0.40, 0.35, 0.6), (40, 0.95, 0.05, 0.8, 0.3)])}


def write_store(root, runs=RUNS) -> ResultStore:
    store = ResultStore(root)
    for run, (model, points) in runs.items():
        store.write_run(run, [EvalRecord(run_id=run, model=model, step=s, test_clean_acc=a, pgd_adv_acc=p,
                                         test_ood_accuracy=o, ood_acc={"sketch": d}, **COMMON)
                              for s, a, p, o, d in points])
    return store


def test_a_store_of_two_models_is_grouped_by_model_everywhere(tmp_path):
    from analysis.report import analyze
    from rft_ray.tracking.metrics import group_metrics

    table = write_store(tmp_path / "store").read()
    knees = group_knees(table, select_on="test")
    assert [(g["dataset"], g["n_runs"], g["knee"]["run_id"]) for g in knees] == [
        ("mydata/vit_b", 1, "full-mydata-vit_b"), ("mydata/vit_s", 1, "full-mydata-vit_s")]
    summary = sweep_summary(table, select_on="test")
    assert [(r["dataset"], r["final_acc"]) for r in summary] == [("mydata/vit_b", 0.95), ("mydata/vit_s", 0.6)]
    metrics = group_metrics(summary)
    assert metrics["full-mydata_vit_s/best_final_acc"] == 0.6 and metrics["full-mydata_vit_b/best_final_acc"] == 0.95
    result = analyze(tmp_path / "store", tmp_path / "out", figures=False)
    assert result.data["summary"]["models"] == ["vit_b", "vit_s"]
    assert result.data["summary"]["datasets"] == ["mydata/vit_b", "mydata/vit_s"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Models: vit_b, vit_s. The results hold runs of 2 models, which are never pooled" in report
    # One model: the dataset keeps its name, and the report names the model.
    single = write_store(tmp_path / "one", {"full-mydata-vit_s": RUNS["full-mydata-vit_s"]})
    assert [g["dataset"] for g in group_knees(single.read(), select_on="test")] == ["mydata"]
    analyze(tmp_path / "one", tmp_path / "out1", figures=False)
    assert "Model: vit_s." in (tmp_path / "out1" / "report.md").read_text()


def test_rft_best_picks_a_model_and_a_robustness_axis(tmp_path, capsys):
    from rft_ray.cli import main

    write_store(tmp_path / "store")
    assert main(["best", "--select-on", "test", str(tmp_path / "store"), "--json"]) == 0
    groups = json.loads(capsys.readouterr().out)["groups"]
    assert [g["dataset"] for g in groups] == ["mydata/vit_b", "mydata/vit_s"]
    assert main(["best", "--select-on", "test", str(tmp_path / "store"), "--model", "vit_b", "--json"]) == 0
    [group] = json.loads(capsys.readouterr().out)["groups"]
    assert group["dataset"] == "mydata" and group["knee"]["step"] == 20  # PGD: (0.9, 0.40) is the knee

    # On the pooled OOD axis vit_b's (0.95, 0.8) at step 40 dominates its other points: knee and floor point.
    assert main(["best", "--select-on", "test", str(tmp_path / "store"), "--model", "vit_b", "--robustness", "ood", "--min-acc", "0.9"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("; robustness: OOD accuracy (pooled over the OOD domains); selected on test (optimistic: "
                           "the test images chose the point; no held-out number)")
    assert out[2].startswith("  knee: run full-mydata-vit_b step 40: clean acc 0.9500, ood acc 0.8000")
    assert "step 40: clean acc 0.9500, ood acc 0.8000" in out[4]  # the most robust at the floor, on OOD
    assert main(["best", "--select-on", "test", str(tmp_path / "store"), "--model", "vit_b", "--robustness", "ood:sketch", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["robustness"] == "ood:sketch" and result["groups"][0]["knee"]["pgd_adv_acc"] == 0.6

    for argv, message in ((["--robustness", "ood:fog"], "no ood_acc/fog column .* their OOD domains: sketch"),
                          (["--robustness", "fgsm"], "choose pgd .*, ood .* or ood:<domain>"),
                          (["--robustness", "ood", "--eps", "1/255"], "--eps chooses a PGD radius"),
                          (["--model", "vit_l"], "--model 'vit_l': the store has no rows of that model")):
        assert main(["best", "--select-on", "test", str(tmp_path / "store"), *argv]) == 2
        import re

        assert re.search(message, capsys.readouterr().err)


def test_rft_analyze_on_the_ood_axis_says_so(tmp_path):
    from rft_ray.cli.analyze import main as analyze_main

    write_store(tmp_path / "store", {"full-mydata-vit_b": RUNS["full-mydata-vit_b"]})
    assert analyze_main([str(tmp_path / "store"), "--out", str(tmp_path / "o"), "--no-figures",
                         "--robustness", "ood:sketch", "--select-on", "test"]) == 0
    data = json.loads((tmp_path / "o" / "analysis.json").read_text())
    assert data["conventions"]["robustness_column"] == "ood_acc/sketch" and data["conventions"]["pgd_eps"] == []
    assert data["knees"][0]["knee"]["pgd_adv_acc"] == pytest.approx(0.6)
    assert "Robustness: OOD accuracy on sketch (ood_acc/sketch; --robustness ood:sketch)" in (
        tmp_path / "o" / "report.md").read_text()
    assert analyze_main([str(tmp_path / "store"), "--out", str(tmp_path / "o"), "--robustness", "clean"]) == 2
