"""`output.keep_checkpoints`: weights kept at evaluation points in the result store (none | frontier | all), listed
from their headers, loadable from any filesystem the store reaches, and the cost of attacking them later in
`rft estimate`. The keeper's front and resume behaviour are in tests/test_tracking.py."""
from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_run

from rft_ray.config import SpecError
from rft_ray.cost.counts import plan_from_dict
from rft_ray.cost.estimate import estimate, format_report, hours, resolve_costs, to_json
from rft_ray.cost.stronger import expected_front_size
from rft_ray.results.attacks import record_attack_results
from rft_ray.results.checkpoints import checkpoint_metadata, describe_checkpoints, list_checkpoints
from rft_ray.results.record import EvalRecord
from rft_ray.results.store import ResultStore, StoreError
from rft_ray.specs import run_spec
from rft_ray.training.weights import CheckpointKeeper, front_steps, load_finetuned

EVERY_20 = {"training.steps": 40, "evaluation.schedule": [{"until": None, "every": 20}]}


def test_keep_checkpoints_is_a_checked_output_field():
    assert run_spec(tiny_run(Path("/tmp/unused"))).output.keep_checkpoints == "frontier"
    with pytest.raises(SpecError, match="output.keep_checkpoints") as info:
        run_spec(tiny_run(Path("/tmp/unused"), **{"output.keep_checkpoints": "best"}))
    assert "frontier" in str(info.value) and "'best'" in str(info.value)


def test_rft_run_keeps_lists_and_replaces_checkpoints_per_mode(tmp_path, capsys):
    from rft_ray.cli import main

    spec_file = tmp_path / "run.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_run(tmp_path, **EVERY_20, **{"output.run_id": "r1"})))
    store = ResultStore(tmp_path / "store")

    assert main(["run", "--spec", str(spec_file), "--quiet", "--keep-checkpoints", "all"]) == 0
    folder = tmp_path / "store" / "checkpoints" / "r1"
    assert sorted(store.checkpoints("r1")) == [0, 20, 40]
    assert f"checkpoints (all): 3 kept, steps 0, 20, 40, in {folder}" in capsys.readouterr().out
    records = {r.step: r for r in store.read_run("r1")}
    kept = list_checkpoints(store)
    assert [(c.run_id, c.step) for c in kept] == [("r1", 0), ("r1", 20), ("r1", 40)]
    for c in kept:  # the metrics come from each file's header, as the run measured them
        assert (c.test_clean_acc, c.pgd_adv_acc) == (records[c.step].test_clean_acc, records[c.step].pgd_adv_acc)
        assert c.strategy == "lora" and c.size_bytes == Path(c.path).stat().st_size > 0
        assert Path(c.path).parent == folder
    assert describe_checkpoints(kept).count("\n") == 2 and "step      20" in describe_checkpoints(kept)

    # What `rft attack` and `rft interpolate` measured on these weights: a resumed run (here: finished already)
    # keeps it, a run trained again from scratch under the same id deletes it, as it was measured on old weights.
    record_attack_results(store.fs, store.path, "r1", [{"run_id": "r1", "step": 20, "aa_adv_acc/4/255": 0.5}])
    interpolated = ResultStore(tmp_path / "store" / "interpolated")
    interpolated.write_run("r1.wise-step20", [dataclasses.replace(records[20], run_id="r1.wise-step20",
                                                                  wise_alpha=0.5, source_run_id="r1")])
    derived = {"checkpoints": [f"checkpoints/r1/step-{s}.safetensors" for s in (0, 20, 40)],
               "attacks": ["attacks/r1.parquet"], "interpolated": ["interpolated/r1.wise-step20.parquet"]}
    assert main(["run", "--spec", str(spec_file), "--quiet", "--keep-checkpoints", "all"]) == 0
    assert store.derived_files("r1") == derived
    capsys.readouterr()

    # The same run id again, from scratch, keeping its (validation) front: the earlier run's other files go, as
    # its rows do.
    assert main(["run", "--spec", str(spec_file), "--quiet", "--restart"]) == 0
    assert set(store.checkpoints("r1")) == front_steps(store.read_run("r1"), "validation")
    assert {**store.derived_files("r1"), "checkpoints": []} == {"checkpoints": [], "attacks": [], "interpolated": []}
    assert interpolated.run_ids() == [] and "aa_adv_acc/4/255" not in store.read().column_names
    assert "checkpoints (frontier, on the validation front):" in capsys.readouterr().out
    assert main(["run", "--spec", str(spec_file), "--quiet", "--restart", "--keep-checkpoints", "none"]) == 0
    assert store.checkpoints("r1") == {} and list_checkpoints(store) == []
    assert "checkpoints (none): 0 kept\n" in capsys.readouterr().out


class Context:
    """What the keeper reads of a running run (`RunContext`): its spec, model and class names."""

    def __init__(self, spec, model):
        self.spec, self.model, self.class_names = spec, model, [str(i) for i in range(10)]


def _records(run_id: str, points: list[tuple[int, float, float]],
             validation: list[tuple[float, float]] | None = None) -> list[EvalRecord]:
    """Records of (step, test clean, PGD) points, with (val clean, val PGD) metrics where `validation` gives them."""
    vals = validation or [(None, None)] * len(points)
    base = dict(run_id=run_id, strategy="lora", dataset="digits", model="m", lr=1e-3, weight_decay=0.0, seed=0,
                total_steps=60, epoch=0.0, examples_seen=0, train_loss=0.1, train_clean_acc=0.5, pgd_eps=4 / 255,
                test_ood_accuracy=0.3, trainable_params=10, total_params=100, wall_seconds=1.0, eval_seconds=0.5)
    return [EvalRecord(step=s, test_clean_acc=a, pgd_adv_acc=r, val_clean_acc=va, val_pgd_adv_acc=vr, **base)
            for (s, a, r), (va, vr) in zip(points, vals)]


def test_an_object_store_keeps_lists_and_loads_checkpoints(tmp_path):
    """Through pyarrow's in-memory filesystem (as s3:// would be): no local path anywhere."""
    from rft_ray.models.backbones import create_classifier
    from rft_ray.models.strategies import create_strategy

    spec = run_spec(tiny_run(tmp_path, **{"output.run_id": "remote"}))
    model = create_classifier(spec.model, 10, seed=0)
    create_strategy(spec.strategy.name, spec.strategy.options).apply(model)
    store = ResultStore("mock:///bucket/store")
    assert not store.local
    keeper = CheckpointKeeper(store, "remote", "frontier")
    keeper.on_run_start(Context(spec, model))
    points = [(0, 0.1, 0.1), (20, 0.5, 0.4), (40, 0.6, 0.3), (60, 0.7, 0.35)]
    records = _records("remote", points)
    for i in range(len(records)):
        with torch.no_grad():  # each point's weights differ, so a file holds its own point's
            next(p for p in model.parameters() if p.requires_grad).fill_(float(records[i].step))
        keeper.records_changed(records[: i + 1])
    assert sorted(store.checkpoints("remote")) == [20, 60]  # 0 and 40 fell off the front
    assert store.checkpoints("remote")[60] == "bucket/store/checkpoints/remote/step-60.safetensors"
    kept = list_checkpoints(store, ["remote"])
    assert [(c.step, c.test_clean_acc, c.pgd_adv_acc) for c in kept] == [(20, 0.5, 0.4), (60, 0.7, 0.35)]
    loaded = load_finetuned(kept[1].path, filesystem=store.fs)
    first = next(name for name, p in model.named_parameters() if p.requires_grad)
    assert torch.all(dict(loaded.named_parameters())[first] == 60.0) and not loaded.training

    # Anything else in the folder is no checkpoint of ours: the listing names the file it cannot read.
    with store.fs.open_output_stream(store.checkpoint_path("remote", 80)) as out:
        out.write(b"not safetensors")
    with pytest.raises(StoreError, match="step-80.safetensors is not a safetensors file"):
        checkpoint_metadata(store.fs, store.checkpoint_path("remote", 80))


# Test front: steps 20 and 60. Validation front: steps 0 and 40 (what a selection on validation may pick).
TEST_POINTS = [(0, 0.1, 0.1), (20, 0.5, 0.4), (40, 0.6, 0.3), (60, 0.7, 0.35)]
VAL_POINTS = [(0.2, 0.5), (0.4, 0.3), (0.6, 0.4), (0.5, 0.2)]


def _keep_points(store, run_id: str, select_on: str, validation, tmp_path) -> None:
    from rft_ray.models.backbones import create_classifier
    from rft_ray.models.strategies import create_strategy

    spec = run_spec(tiny_run(tmp_path, **{"output.run_id": run_id}))
    model = create_classifier(spec.model, 10, seed=0)
    create_strategy(spec.strategy.name, spec.strategy.options).apply(model)
    keeper = CheckpointKeeper(store, run_id, "frontier", select_on)
    keeper.on_run_start(Context(spec, model))
    records = _records(run_id, TEST_POINTS, validation)
    for i in range(len(records)):
        keeper.records_changed(records[: i + 1])
    store.write_run(run_id, records)


@pytest.mark.parametrize("select_on, validation, front, steps", [
    ("validation", VAL_POINTS, "validation", [0, 40]),
    ("test", VAL_POINTS, "test", [20, 60]),  # search.select_on: test (the paper's test-only curves)
    ("validation", None, "test", [20, 60]),  # the run measured no validation: every selection reads test
])
def test_frontier_keeps_the_front_of_the_split_selections_read(tmp_path, select_on, validation, front, steps):
    """keep_checkpoints: frontier keeps the run's validation front when it selects on validation and measured
    it, else its test front; the listing says which, and `--on frontier` (rft attack, rft interpolate) finds a
    kept file for every point of that front."""
    from rft_ray.results.checkpoints import front_split, select_kept_points

    store = ResultStore(tmp_path / "store")
    _keep_points(store, "r", select_on, validation, tmp_path)
    records = store.read_run("r")
    assert front_steps(records, "test") == {20, 60}  # the two fronts differ: the kept steps show which was kept
    assert front_steps(records, "validation") == ({0, 40} if validation else set())
    assert front_split(records, select_on) == front and sorted(store.checkpoints("r")) == steps
    kept = list_checkpoints(store)
    assert [(c.step, c.front) for c in kept] == [(s, front) for s in steps]
    assert describe_checkpoints(kept).count(f"{'val' if front == 'validation' else 'test'} front") == len(steps)
    points, notes = select_kept_points(store, "frontier")
    assert [p.step for p in points] == steps and notes == []
    if validation:  # the validation metrics are in the file's metadata beside the test ones
        metadata = checkpoint_metadata(store.fs, kept[0].path)
        assert (float(metadata["val_clean_acc"]), metadata["front"]) == (VAL_POINTS[steps[0] // 20][0], front)
    # rft best, choosing on the split the run kept, finds the kept file of the knee it picks
    from rft_ray.cli.best import best_points

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # select_on test is warned as optimistic
        [group] = best_points(str(tmp_path / "store"), select_on=front)["groups"]
    knee = group["knee"]
    assert knee["step"] in steps and knee["checkpoint"] == store.checkpoint_path("r", knee["step"])


def test_mode_none_keeps_nothing_and_unknown_modes_are_refused(tmp_path):
    store = ResultStore(tmp_path / "store")
    Path(store.checkpoint_folder("r")).mkdir(parents=True)
    Path(store.checkpoint_path("r", 5)).write_bytes(b"left by an earlier run")
    CheckpointKeeper(store, "r", "none").records_changed(_records("r", [(0, 0.1, 0.1)]))
    assert store.checkpoints("r") == {}
    with pytest.raises(ValueError, match="output.keep_checkpoints must be one of none, frontier, all, got 'best'"):
        CheckpointKeeper(store, "r", "best")


# ---------------------------------------------------------------------------------------------------
# rft estimate: an AutoAttack pass on the frontier points, on its own line


GIVEN = {"train_s_per_image": 0.01, "eval_s_per_image": 0.002, "pgd_s_per_iteration_image": 0.005,
         "trial_overhead_s": 0.0}


def test_estimate_counts_an_autoattack_pass_on_the_frontier_points_apart_from_the_total():
    data = tiny_run(Path("/tmp/unused"), **{"evaluation.pgd.examples": 30})  # 60 steps, a point every 20: 4 points
    plan = plan_from_dict(data, "tiny")
    costs = resolve_costs(plan, dict(GIVEN), {})
    result = estimate(plan, costs)
    aa = result["stronger_attack"]
    front = 1 + 1 / 2 + 1 / 3 + 1 / 4
    assert expected_front_size(4) == pytest.approx(front) and aa.frontier_points == pytest.approx(front)
    assert aa.all_points == 4 and aa.images_per_point == [30]
    assert aa.best_passes_frontier == pytest.approx(front * 30 * 100)  # APGD-CE's 100 iterations
    assert aa.worst_passes_frontier == pytest.approx(front * 30 * (100 + 900 + 900))  # + APGD-T, FAB-T
    assert aa.worst_queries_frontier == pytest.approx(front * 30 * 5000)  # Square
    assert aa.worst_hours_frontier * 3600 == pytest.approx(front * 30 * (1900 * 0.005 + 5001 * 0.002))
    assert aa.best_hours_all * 3600 == pytest.approx(4 * 30 * (100 * 0.005 + 0.002))
    assert result["ours"].total == hours(plan, costs, 0.9, 0.3).total  # never added to the training totals

    text = format_report(plan, costs, result)
    assert "not in the totals above" in text and "if every image survives all four (1900/image, 633x PGD-3)" in text
    assert "each trial's front assumed H_P of its P points; up to all 4" in text
    out = to_json(plan, costs, result)["stronger_attack"]
    assert out["in_training_total"] is False and out["gradient_passes_frontier"]["worst"] == pytest.approx(
        front * 30 * 1900)
    assert json.dumps(out)  # plain JSON

    none = plan_from_dict(tiny_run(Path("/tmp/unused"), **{"output.keep_checkpoints": "none"}), "tiny")
    assert "output.keep_checkpoints is none in" in format_report(none, resolve_costs(none, dict(GIVEN), {}),
                                                                 estimate(none, resolve_costs(none, dict(GIVEN), {})))


def test_a_sweep_sets_keep_checkpoints_for_its_trials_in_base_output(tmp_path):
    from rft_ray.specs import experiment_spec
    from rft_ray.sweep.search import param_space
    from rft_ray.sweep.trial import trial_run_spec

    run = tiny_run(tmp_path)
    base = {k: v for k, v in run.items() if k not in ("strategy", "output")}
    base["training"] = {k: v for k, v in base["training"].items() if k != "lr"}  # the search sets it
    data = {"name": "kept", "base": {**base, "output": {"keep_checkpoints": "all"}}, "strategies": ["lora"],
            "search": {"mode": "grid", "grid": {"lr": [1e-3], "weight_decay": [0.0]},
                       "objectives": [{"metric": "test_clean_acc"}]},
            "storage": {"path": str(tmp_path / "sweep")}}
    experiment = experiment_spec(data)
    [group] = experiment.groups
    config = param_space(experiment, group, {"cpus_per_trial": 1, "gpus_per_trial": 0})
    trial = trial_run_spec({**config, "lr": 1e-3, "weight_decay": 0.0}, f"{group.name}-t1")
    assert trial.output.keep_checkpoints == "all" and trial.output.results == experiment.store_root
    assert plan_from_dict(data, "kept").groups[0].keep_checkpoints == "all"
    with pytest.raises(SpecError, match="base.output: may set keep_checkpoints only"):
        experiment_spec({**data, "base": {**base, "output": {"keep_checkpoints": "all", "results": "elsewhere"}}})


def test_a_phased_strategys_points_load_in_their_phase(tmp_path):
    """LP-FT keeps the head only at its probe points and every parameter after: both load back."""
    from rft_ray.models.backbones import create_classifier
    from rft_ray.models.strategies import create_strategy

    spec = run_spec(tiny_run(tmp_path, **{"strategy": {"name": "lp_ft"}, "output.run_id": "lpft"}))
    model = create_classifier(spec.model, 10, seed=0)
    strategy = create_strategy(spec.strategy.name, spec.strategy.options)
    strategy.apply(model)
    store = ResultStore(tmp_path / "store")
    keeper = CheckpointKeeper(store, "lpft", "all")
    keeper.on_run_start(Context(spec, model))
    records = _records("lpft", [(10, 0.5, 0.2), (60, 0.8, 0.1)])
    for index, count in ((0, 1), (1, 2)):
        strategy.enter_phase(model, index)
        with torch.no_grad():
            model.head.weight.fill_(float(index + 1))
        keeper.records_changed(records[:count])
    probe, finetune = (load_finetuned(store.checkpoint_path("lpft", step)) for step in (10, 60))
    assert torch.all(probe.head.weight == 1.0) and torch.all(finetune.head.weight == 2.0)
    from rft_ray.training.weights import read_weights

    head = {name for name, param in model.named_parameters() if any(param is p for p in model.head.parameters())}
    assert set(read_weights(store.checkpoint_path("lpft", 10))[0]) == head and len(head) == 2
    assert len(read_weights(store.checkpoint_path("lpft", 60))[0]) == len(list(model.parameters()))
