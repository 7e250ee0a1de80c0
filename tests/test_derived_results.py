"""What is measured on a run's weights beside its own file (attack results, interpolated files, kept checkpoints):
forgotten when the run starts again from scratch, set aside with an orphaned sweep run, chosen by one selector
(`select_kept_points`) for `rft attack` and `rft interpolate`, and listed by `rft checkpoints`."""
from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import cli_error

from rft_ray.cli import main
from rft_ray.results.attacks import record_attack_results
from rft_ray.results.checkpoints import front_steps, select_kept_points
from rft_ray.results.record import EvalRecord
from rft_ray.results.store import INTERPOLATED_DIR, ResultStore, StoreError
from rft_ray.results.verdicts import RunVerdicts, Subset


def _records(run_id: str, points: list[tuple[int, float, float]]) -> list[EvalRecord]:
    base = dict(run_id=run_id, strategy="lora", dataset="digits", model="m", lr=1e-3, weight_decay=0.0, seed=0,
                total_steps=60, epoch=0.0, examples_seen=0, train_loss=0.1, train_clean_acc=0.5, pgd_eps=4 / 255,
                test_ood_accuracy=0.3, trainable_params=10, total_params=100, wall_seconds=1.0, eval_seconds=0.5)
    return [EvalRecord(step=s, test_clean_acc=a, pgd_adv_acc=r, **base) for s, a, r in points]


def _keep(store: ResultStore, run_id: str, step: int, metrics: tuple[float, float] = (0.5, 0.4)) -> str:
    """A kept weights file as CheckpointKeeper writes its header (a tensor and the point's metadata)."""
    from safetensors.torch import save

    path = store.checkpoint_path(run_id, step)
    store.fs.create_dir(store.checkpoint_folder(run_id), recursive=True)
    metadata = {"format": "rft-ray frontier weights 1", "run_id": run_id, "step": str(step), "num_classes": "10",
                "spec": json.dumps({"strategy": {"name": "lora"}}), "test_clean_acc": repr(metrics[0]),
                "pgd_adv_acc": repr(metrics[1])}
    with store.fs.open_output_stream(path) as out:
        out.write(save({"w": torch.zeros(4)}, metadata=metadata))
    return path


def _plant_derived(store: ResultStore, run_id: str, steps: list[int]) -> None:
    """`rft attack` results and `rft interpolate` files of the run's points, as those commands write them."""
    record_attack_results(store.fs, store.path, run_id,
                          [{"run_id": run_id, "step": s, "aa_adv_acc/4/255": 0.125} for s in steps])
    store.fs.create_dir(f"{store.path}/{INTERPOLATED_DIR}", recursive=True)
    for step in steps:  # through the store's own filesystem (a mock:// URI opened again would be another one)
        name = f"{run_id}.wise-step{step}"
        rows = [dataclasses.replace(r, run_id=name, wise_alpha=1.0, source_run_id=run_id).to_row()
                for r in _records(run_id, [(step, 0.5, 0.4)])]
        pq.write_table(pa.Table.from_pylist(rows), f"{store.path}/{INTERPOLATED_DIR}/{name}.parquet",
                       filesystem=store.fs)


# ---------------------------------------------------------------------------------------------------
# Forgetting and setting aside


@pytest.mark.parametrize("root", ["local", "mock:///bucket/store"])
def test_forget_derived_deletes_only_that_runs_attack_and_interpolated_files(tmp_path, root):
    store = ResultStore(tmp_path / "store" if root == "local" else root)
    for run_id in ("r1", "r10"):  # r10 starts like r1: its files must survive
        store.write_run(run_id, _records(run_id, [(0, 0.1, 0.1), (20, 0.5, 0.4)]))
        _keep(store, run_id, 20)
        _plant_derived(store, run_id, [0, 20])
    assert store.derived_files("r1") == {
        "checkpoints": ["checkpoints/r1/step-20.safetensors"], "attacks": ["attacks/r1.parquet"],
        "interpolated": ["interpolated/r1.wise-step0.parquet", "interpolated/r1.wise-step20.parquet"]}
    before = store.read().to_pylist()
    assert [r["aa_adv_acc/4/255"] for r in before] == [0.125] * 4

    assert store.forget_derived("r1") == ["attacks/r1.parquet", "interpolated/r1.wise-step0.parquet",
                                          "interpolated/r1.wise-step20.parquet"]
    after = {(r["run_id"], r["step"]): r.get("aa_adv_acc/4/255") for r in store.read().to_pylist()}
    assert after == {("r1", 0): None, ("r1", 20): None, ("r10", 0): 0.125, ("r10", 20): 0.125}
    assert store.derived_files("r10")["interpolated"] == ["interpolated/r10.wise-step0.parquet",
                                                          "interpolated/r10.wise-step20.parquet"]
    assert store.derived_files("r1") == {"checkpoints": ["checkpoints/r1/step-20.safetensors"], "attacks": [],
                                         "interpolated": []}  # the weights are CheckpointKeeper's to replace
    assert store.forget_derived("r1") == []  # nothing left: no error


def test_analysis_reads_its_interpolated_folder_name_from_the_store_layout():
    from analysis.wise import WISE_SUBSTORE, wise_root, wise_run_id, wise_steps

    assert WISE_SUBSTORE == INTERPOLATED_DIR and wise_root("s3://b/store") == f"s3://b/store/{INTERPOLATED_DIR}"
    assert wise_steps([wise_run_id("r1", 20), wise_run_id("r10", 5)], "r1") == {20: "r1.wise-step20"}


def test_an_orphaned_sweep_run_is_set_aside_with_its_checkpoints_attacks_and_interpolations(tmp_path):
    from rft_ray.sweep.group import _set_aside_orphans
    from rft_ray.sweep.state import SweepFolder

    sweep = tmp_path / "sweep"
    store = ResultStore(sweep / "store")
    for run_id in ("g-aaa", "g-bbb"):  # g-bbb's trial is known to Tune, g-aaa's was lost
        store.write_run(run_id, _records(run_id, [(0, 0.1, 0.1), (20, 0.5, 0.4)]))
        _keep(store, run_id, 0)
        _keep(store, run_id, 20)
        _plant_derived(store, run_id, [20])
        store.write_verdicts(run_id, RunVerdicts({0: {"test_clean_acc": np.array([True, False])}},
                                                 {"test_clean_acc": "test"}, {"test": Subset.of([3, 7], [0, 1])}))
    # `rft interpolate`'s store keeps its own subset identities (here images the runs' own sidecars never name)
    ResultStore(sweep / "store" / "interpolated").write_verdicts("g-aaa.wise-step20", RunVerdicts(
        {(20, 0.5): {"test_clean_acc": np.array([False, True, True])}}, {"test_clean_acc": "test"},
        {"test": Subset.of([1, 4, 9], [2, 0, 1])}))
    known = SimpleNamespace(trial_id="bbb")  # of a TrialSummary, _set_aside_orphans reads the trial id
    moved = _set_aside_orphans(SweepFolder(str(sweep)), SimpleNamespace(store_root=str(sweep / "store")),
                               SimpleNamespace(name="g"), [known])
    assert moved == ["g-aaa"]
    assert store.run_ids() == ["g-bbb"] and store.derived_files("g-aaa") == {
        "checkpoints": [], "attacks": [], "interpolated": []}
    assert [r["run_id"] for r in store.read().to_pylist()] == ["g-bbb", "g-bbb"]
    assert sorted(store.derived_files("g-bbb")["checkpoints"]) == ["checkpoints/g-bbb/step-0.safetensors",
                                                                  "checkpoints/g-bbb/step-20.safetensors"]
    orphans = ResultStore(sweep / "orphans")  # the same layout: a store of its own
    assert orphans.run_ids() == ["g-aaa"] and sorted(orphans.checkpoints("g-aaa")) == [0, 20]
    assert orphans.derived_files("g-aaa")["attacks"] == ["attacks/g-aaa.parquet"]
    assert orphans.derived_files("g-aaa")["interpolated"] == ["interpolated/g-aaa.wise-step20.parquet",
                                                              "interpolated/verdicts/g-aaa.wise-step20.parquet"]
    assert [r["aa_adv_acc/4/255"] for r in orphans.read().to_pylist() if r["step"] == 20] == [0.125]
    # the per-image verdicts go with their run
    assert not store.has_verdicts("g-aaa") and store.has_verdicts("g-bbb")
    assert orphans.read_verdicts("g-aaa").points[0]["test_clean_acc"].tolist() == [True, False]
    interpolated = ResultStore(sweep / "orphans" / "interpolated").read_verdicts("g-aaa.wise-step20")
    assert interpolated.points[(20, 0.5)]["test_clean_acc"].tolist() == [False, True, True]


# ---------------------------------------------------------------------------------------------------
# One selector of kept points


def test_select_final_is_the_last_kept_step_and_says_when_it_is_not_the_last_point(tmp_path):
    store = ResultStore(tmp_path / "store")
    store.write_run("a", _records("a", [(0, 0.1, 0.1), (20, 0.5, 0.4), (40, 0.6, 0.3), (60, 0.55, 0.2)]))
    for step in (0, 20, 40):
        _keep(store, "a", step)
    store.write_run("b", _records("b", [(0, 0.1, 0.1)]))  # kept nothing
    points, notes = select_kept_points(store, "final")
    assert [(p.run_id, p.step) for p in points] == [("a", 40)]
    assert (points[0].clean_acc, points[0].pgd_acc, points[0].path) == (0.6, 0.3, store.checkpoint_path("a", 40))
    assert any("run a: its last point, step 60, has no kept weights; taking its last kept step, 40" in n
               for n in notes), notes
    assert any(n.startswith("run b: no kept weights") for n in notes), notes


def test_select_frontier_notes_front_points_without_a_file_and_all_takes_files_without_rows(tmp_path):
    store = ResultStore(tmp_path / "store")
    store.write_run("a", _records("a", [(0, 0.1, 0.1), (20, 0.5, 0.4), (40, 0.6, 0.3), (60, 0.55, 0.2)]))
    _keep(store, "a", 40)
    _keep(store, "a", 80)  # a file whose step has no row
    points, notes = select_kept_points(store, "frontier", runs="a*")
    assert [p.step for p in points] == [40]
    assert notes == ["run a: step 20 is on its test frontier but has no kept weights file (kept: steps 40, 80)"]
    points, notes = select_kept_points(store, "all")
    assert [(p.step, p.record is None, math.isnan(p.clean_acc)) for p in points] == [(40, False, False),
                                                                                      (80, True, True)]
    with pytest.raises(StoreError, match=r"--runs 'z\*' matches no run in result store .* \(runs there: a\)"):
        select_kept_points(store, "all", runs="z*")
    with pytest.raises(StoreError, match="--on must be one of frontier, all, final, got 'best'"):
        select_kept_points(store, "best")


def test_interpolate_and_attack_choose_the_same_points_with_the_same_notes(tmp_path):
    from rft_ray.attack.runner import plan_points
    from rft_ray.training.interpolate import InterpolationError, choose_checkpoints

    store = ResultStore(tmp_path / "store")
    store.write_run("a", _records("a", [(0, 0.1, 0.1), (20, 0.5, 0.4), (40, 0.6, 0.3), (60, 0.55, 0.2)]))
    for step in (0, 40):
        _keep(store, "a", step)
    for on in ("final", "frontier", "all"):
        attack, attack_notes = plan_points(store, on)
        interpolate, interpolate_notes = choose_checkpoints(store, "*", on)
        assert [(p.run_id, p.step, p.path) for p in interpolate] == [(p.run_id, p.step, p.path) for p in attack], on
        assert interpolate_notes == attack_notes, on
    # interpolate's final used to skip a run whose last point kept no file: now its last kept step, with a note
    assert [p.step for p in choose_checkpoints(store, "*", "final")[0]] == [40]
    assert "taking its last kept step, 40" in choose_checkpoints(store, "*", "final")[1][0]
    with pytest.raises(InterpolationError, match="no run in result store"):
        choose_checkpoints(store, "nope", "all")


def test_front_steps_is_the_front_analysis_draws():
    from analysis.frontier import pareto_frontier

    rng = random.Random(3)
    for _ in range(200):
        points = [(s * 10, rng.choice([0.1, 0.2, 0.3, 0.5]), rng.choice([0.0, 0.1, 0.3, float("nan")]))
                  for s in range(rng.randint(0, 9))]
        records = _records("r", points)
        finite = [(a, b) for _, a, b in points if not math.isnan(b)]
        front = {tuple(p) for p in pareto_frontier(finite).tolist()} if finite else set()
        chosen = front_steps(records)
        assert {(a, b) for s, a, b in points if s in chosen} == front
        for step in chosen:  # the earliest of points measured alike
            a, b = next((a, b) for s, a, b in points if s == step)
            assert step == min(s for s, x, y in points if (x, y) == (a, b))


# ---------------------------------------------------------------------------------------------------
# rft checkpoints


def test_cli_checkpoints_lists_filters_and_prints_json(tmp_path, capsys):
    store = ResultStore(tmp_path / "store")
    for run_id, step, metrics in (("lora-a", 20, (0.5, 0.25)), ("lora-a", 40, (0.625, 0.125)),
                                  ("full-b", 10, (0.75, 0.5))):
        _keep(store, run_id, step, metrics)
    assert main(["checkpoints", str(tmp_path / "store")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines[:3]] == [["full-b", "step", "10"], ["lora-a", "step", "20"],
                                                        ["lora-a", "step", "40"]]
    assert "clean 0.625  PGD 0.125" in lines[2] and lines[2].endswith(store.checkpoint_path("lora-a", 40))
    assert lines[3].startswith("3 kept checkpoint(s) of 2 run(s)")

    assert main(["checkpoints", str(tmp_path / "store"), "--runs", "lora-*", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(c["run_id"], c["step"], c["test_clean_acc"], c["pgd_adv_acc"]) for c in listed] == [
        ("lora-a", 20, 0.5, 0.25), ("lora-a", 40, 0.625, 0.125)]
    assert listed[0]["size_bytes"] == Path(listed[0]["path"]).stat().st_size > 0

    assert main(["checkpoints", str(tmp_path / "store"), "--runs", "vit-*"]) == 0
    assert "no kept checkpoints of runs matching 'vit-*'" in capsys.readouterr().out
    assert main(["checkpoints", str(tmp_path / "missing")]) == 2
    assert "does not exist" in cli_error(capsys.readouterr().err)
