"""`rft estimate`: the counting (trials, steps, evaluation points, PGD passes) and the hour arithmetic.

Fast: every test gives its costs, so nothing is calibrated and no model is built, but the one test of
calibration itself (a tiny model, a few steps).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from rft_ray.config import RunSpec, SpecError
from rft_ray.cost.counts import load_plan, plan_from_dict
from rft_ray.cost.estimate import (
    hours,
    pgd_forwards_per_image,
    pgd_passes_per_image,
    resolve_costs,
)
from rft_ray.evaluation.schedule import EvalSchedule
from rft_ray.specs import experiment_spec

ROOT = Path(__file__).resolve().parents[1]
GIVEN = {"train_s_per_image": 0.01, "eval_s_per_image": 0.002, "pgd_s_per_iteration_image": 0.005,
         "trial_overhead_s": 30.0}


def run_dict(**overrides):
    from rft_ray.config import apply_overrides

    spec = {
        "model": {"name": "rft_vit_cifar_patch8_32", "source": "random", "image_size": 16},
        "dataset": {"name": "digits", "corruptions": ["contrast", "gaussian_noise"]},
        "training": {"steps": 60, "batch_size": 16},
        "evaluation": {"schedule": [{"until": None, "every": 20}], "train_examples": 40, "test_examples": 40,
                       "ood_examples": 20, "pgd": {"steps": 3, "examples": 30}},
    }
    return apply_overrides(spec, overrides)


def test_demo_counts():
    plan = load_plan(ROOT / "experiments" / "demo.yaml")
    assert plan.kind == "experiment" and len(plan.groups) == 7
    assert plan.trials == 14  # 7 strategies x num_samples 2
    for g in plan.groups:
        assert g.steps == 250 and g.batch_size == 32
        assert g.points == 6  # 0, 50, ..., 250
        assert g.sizes.source == "data"  # scikit-learn's digits are always here
        # train subset 200 + test subset 300 (of 450) + 4 corruption domains x 100
        assert g.clean_images_per_point == 200 + 300 + 4 * 100
        assert g.pgd_images_per_point == 200 and g.pgd_steps == 15 and g.pgd_radii == 1
    assert plan.points == 14 * 6
    assert plan.steps == 14 * 250


def test_paper_counts_from_known_sizes():
    plan = load_plan(ROOT / "experiments" / "paper.yaml")
    assert plan.trials == 210 and len(plan.groups) == 35
    assert plan.concurrency == 8
    cifar = next(g for g in plan.groups if g.dataset == "cifar10" and g.strategy == "lora")
    # the paper_code recipe holds out 10% for validation, as the paper's code
    assert cifar.sizes.source == "known" and (cifar.sizes.train, cifar.sizes.test) == (45_000, 10_000)
    assert cifar.trials == 6 and cifar.pgd_verdict == "final_iterate"
    assert cifar.steps == 20 * (45_000 // 128)  # epochs x full batches (drop_last)
    expected_points = EvalSchedule.from_spec(RunSpec.from_dict({"recipe": "paper_code"}).evaluation).points(cifar.steps)
    # the paper's code's schedule: 0, 50, 100, every 30 to 300, every 200 to 1000, 2000, 4000, the final step
    assert cifar.points == len(expected_points) == 3 + 7 + 4 + 1 + 1 + 1
    assert cifar.clean_images_per_point == 1000 + 10_000 + 4 * 1000  # test_examples null: the whole test split
    assert cifar.pgd_images_per_point == 1000
    assert cifar.pgd_iteration_images_full == cifar.points * 1000 * 15
    assert cifar.sizes.val == 5_000 and (cifar.val_clean_images_per_point, cifar.val_pgd_images_per_point) == (500, 200)
    caltech = next(g for g in plan.groups if g.dataset == "caltech256")
    test = round(0.2 * 30_607)  # with the clutter class, as the paper
    assert caltech.sizes.test == test and caltech.sizes.train == 30_607 - test - round(0.1 * (30_607 - test))
    full = next(g for g in plan.groups if g.strategy == "full" and g.dataset == "cifar10")
    assert full.trials == 6  # its own 3 x 2 grid


def test_class_selection_scales_known_sizes():
    # The case study online: 10 of CIFAR-100's 100 classes -> 5,000 train (4,500 after the 10% validation
    # split) and 1,000 test images; PGD on 200 of them at 2 radii.
    plan = load_plan(ROOT / "experiments" / "cifar_transfer.yaml")
    g = plan.groups[0]
    assert g.sizes.source == "known" and (g.sizes.train, g.sizes.test) == (4_500, 1_000)
    assert plan.trials == 28 and g.points == 15 and g.pgd_radii == 2 and g.pgd_images_per_point == 200


def test_run_spec_counts(tmp_path):
    plan = plan_from_dict(run_dict(), "tiny")
    assert plan.kind == "run" and plan.trials == 1 and not plan.under_ray
    g = plan.groups[0]
    assert g.steps == 60 and g.points == 4  # 0, 20, 40, 60
    assert g.clean_images_per_point == 40 + 40 + 2 * 20
    assert g.pgd_images_per_point == 30 and g.train_images == 60 * 16
    # validation on by default (500 clean, 200 PGD): the digits' whole validation split, smaller than both
    from rft_ray.config import DatasetSpec
    from rft_ray.data import create_bundle

    assert g.sizes.val == len(create_bundle(DatasetSpec(name="digits"), 8).val) > 0  # 10% of each class
    assert g.val_clean_images_per_point == g.val_pgd_images_per_point == g.sizes.val


def test_validation_counts_follow_evaluation_validation():
    sized = {"evaluation.validation.examples": 40, "evaluation.validation.pgd_examples": 20}
    g = plan_from_dict(run_dict(**sized, **{"evaluation.validation.ood": True,
                                            "evaluation.validation.ood_examples": 10}), "x").groups[0]
    assert g.sizes.val_ood == {"contrast": g.sizes.val, "gaussian_noise": g.sizes.val}  # corrupted validation images
    assert (g.val_clean_images_per_point, g.val_pgd_images_per_point) == (40 + 2 * 10, 20)
    off = plan_from_dict(run_dict(**{"evaluation.validation.enabled": False}), "x").groups[0]
    assert (off.val_clean_images_per_point, off.val_pgd_images_per_point) == (0, 0)
    empty = plan_from_dict(run_dict(**{"dataset.val_fraction": 0.0}), "x").groups[0]
    assert empty.sizes.val == 0 and (empty.val_clean_images_per_point, empty.val_pgd_images_per_point) == (0, 0)


def test_epochs_and_limits():
    g = plan_from_dict(run_dict(**{"training.steps": None, "training.epochs": 2, "dataset.train_limit": 500,
                                   "dataset.val_fraction": 0.0}), "x").groups[0]
    assert g.sizes.train == 500 and g.steps == 2 * (500 // 16)


def test_extra_eps_counts_a_pass_per_radius():
    g = plan_from_dict(run_dict(**{"evaluation.pgd.extra_eps": ["2/255", "4/255"]}), "x").groups[0]
    assert g.pgd_radii == 3
    assert g.pgd_iteration_images_full == g.points * 30 * 3 * 3


def test_early_exit_passes():
    assert pgd_passes_per_image(15) == 15
    assert pgd_forwards_per_image() == 1
    # Nothing breaks (a = r = 1): every iteration on every image, plus the clean pass.
    assert pgd_passes_per_image(15, 1.0, 1.0) == 15
    assert pgd_forwards_per_image(1.0, 1.0) == 2
    # Images wrong on the clean input are never attacked.
    assert pgd_passes_per_image(10, 0.5, 0.5) == 5
    # Survivors fall linearly from a to r: the iterations see a, ..., the mean is about (a + r) / 2.
    assert pgd_passes_per_image(15, 0.9, 0.3) == pytest.approx(15 * 0.9 - 0.6 * 14 / 2)
    with pytest.raises(ValueError, match=r"need 0 <= robust accuracy <= clean accuracy <= 1, got clean 0\.3 "
                                         r"and robust 0\.9"):
        pgd_passes_per_image(15, 0.3, 0.9)


def test_hours_arithmetic():
    plan = plan_from_dict(run_dict(), "tiny")
    costs = resolve_costs(plan, dict(GIVEN), {})
    c = costs[plan.groups[0].group]
    assert c.trial_overhead_s == 30.0
    full = hours(plan, costs)
    assert full.training * 3600 == pytest.approx(60 * 16 * 0.01)
    assert full.clean_eval * 3600 == pytest.approx(4 * 120 * 0.002)
    assert full.pgd * 3600 == pytest.approx(4 * 30 * (3 * 0.005 + 0.002))
    assert full.overhead * 3600 == pytest.approx(30.0)
    ours = hours(plan, costs, 0.8, 0.2)
    assert ours.pgd < full.pgd and ours.training == full.training
    assert ours.pgd * 3600 == pytest.approx(4 * 30 * (pgd_passes_per_image(3, 0.8, 0.2) * 0.005 + 1.2 * 0.002))
    val = plan.groups[0].sizes.val  # validation: all of the split clean and under PGD (the defaults exceed it)
    assert full.validation * 3600 == pytest.approx(4 * val * (0.002 + 3 * 0.005 + 0.002))
    assert full.total == pytest.approx(full.training + full.clean_eval + full.pgd + full.validation + full.overhead)


def test_flags_win_over_the_costs_section_and_strategies_over_the_top_level():
    data = yaml.safe_load((ROOT / "experiments" / "demo.yaml").read_text())
    data["costs"] = {**GIVEN, "strategies": {"linear": {"train_s_per_image": 0.001}}}
    plan = plan_from_dict(data, "demo")
    costs = resolve_costs(plan, plan.costs_section, {"eval_s_per_image": 0.004})
    linear = next(g for g in plan.groups if g.strategy == "linear")
    lora = next(g for g in plan.groups if g.strategy == "lora")
    assert costs[linear.group].train_s_per_image == 0.001 and costs[lora.group].train_s_per_image == 0.01
    assert costs[lora.group].eval_s_per_image == 0.004


def test_experiment_spec_accepts_a_costs_section():

    data = yaml.safe_load((ROOT / "experiments" / "demo.yaml").read_text())
    data["costs"] = dict(GIVEN)
    assert experiment_spec(data).costs["train_s_per_image"] == 0.01


def test_bad_costs_are_named():
    plan = plan_from_dict(run_dict(), "tiny")
    with pytest.raises(SpecError, match="costs: unknown field"):
        resolve_costs(plan, {"train_s_per_img": 1}, {})
    with pytest.raises(SpecError, match="costs.eval_s_per_image"):
        resolve_costs(plan, {**GIVEN, "eval_s_per_image": "fast"}, {})


def test_cli_json(tmp_path, capsys):
    from rft_ray.cli import main

    spec = tmp_path / "run.yaml"
    spec.write_text(yaml.safe_dump(run_dict()))
    assert main(["estimate", str(spec), "--json", "--train-s-per-image", "0.01", "--eval-s-per-image", "0.002",
                 "--pgd-s-per-iteration-image", "0.005"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["trials"] == 1 and out["evaluation_points"] == 4 and out["training_steps"] == 60
    assert out["hours_early_exit"]["total"] < out["hours_full_pgd"]["total"]


def test_cli_text_for_the_paper(capsys):
    from rft_ray.cli import main

    assert main(["estimate", str(ROOT / "experiments" / "paper.yaml"), "--train-s-per-image", "0.003",
                 "--eval-s-per-image", "0.001", "--pgd-s-per-iteration-image", "0.002"]) == 0
    out = capsys.readouterr().out
    assert "210 trial(s)" in out and "accelerator-hours" in out and "robust accuracy 0.30" in out
    # the paper's recipe judges the final iterate of every image: no early exit, so the full column is its cost
    assert "PGD verdict final_iterate (no early exit) in 35 of 35 group(s): the full PGD column is this spec" in out
    full_total = re.search(r"total at robust accuracy .*\(full PGD: ([\d,.]+ h)\)", out).group(1)
    wall = re.search(r"wall clock at 8 trial\(s\) at once: about ([\d,.]+ h) \(early-exit PGD", out).group(1)
    assert float(wall[:-2].replace(",", "")) == pytest.approx(float(full_total[:-2].replace(",", "")) / 8, rel=0.02)


def test_known_sizes_come_from_the_dataset_entry():
    away = {"dataset.root": "/nonexistent/rft-data", "dataset.corruptions": []}
    g = plan_from_dict(run_dict(**away, **{"dataset.name": "domainnet", "dataset.options": {
        "domain": "clipart", "ood_domains": ["real", "sketch"]}}), "x").groups[0]
    assert g.sizes.source == "known" and g.sizes.test == 14_604
    assert g.sizes.ood == {"real": 52_041, "sketch": 20_916}  # each OOD domain's official test split
    with pytest.raises(SpecError, match="cannot count dataset 'parquet'"):
        plan_from_dict(run_dict(**away, **{"dataset.name": "parquet", "dataset.options": {"train": "x.parquet"}}), "x")


def test_calibration_times_the_engines_own_steps(monkeypatch):
    """Calibration runs the loop's train_step, the evaluator's clean forward and the attack's PGD iteration."""
    import rft_ray.evaluation.robustness as robustness
    import rft_ray.training.loop as loop
    from rft_ray.cost.calibrate import calibrate
    from rft_ray.specs import run_spec

    calls = []
    for module, name in ((loop, "train_step"), (robustness, "clean_correct"), (robustness, "pgd_iteration")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    run = run_spec(run_dict(**{"training.augment": "crop_flip", "training.grad_clip": 1.0}))
    costs = calibrate(run, threads=1, repeats=1, max_batch=4, budget_s=0.5)
    assert {"train_step", "clean_correct", "pgd_iteration"} <= set(calls)
    for seconds in (costs.train_s_per_image, costs.eval_s_per_image, costs.pgd_s_per_iteration_image):
        assert 0 < seconds < 60


class FakeClock:
    """A clock whose timed intervals are scripted: each pair of calls (start, end) lasts the next duration."""

    def __init__(self, durations):
        self.durations, self.now, self.calls = list(durations), 0.0, 0

    def __call__(self) -> float:
        self.calls += 1
        if self.calls % 2 == 0:
            self.now += self.durations.pop(0)
        return self.now


def test_a_timing_is_the_median_of_repeats_after_warm_ups_with_its_spread():
    import torch

    from rft_ray.cost.calibrate import time_per_image

    runs = []
    clock = FakeClock([0.4, 0.2, 0.3, 0.9, 0.25])
    timing = time_per_image(lambda images, labels: runs.append(len(images)), (torch.zeros(2, 1), torch.zeros(2)),
                            torch.device("cpu"), repeats=5, warmups=2, clock=clock)
    assert runs == [2] * 7 and clock.calls == 10  # 2 untimed warm-ups, then 5 timed repeats
    assert timing.seconds == pytest.approx((0.2, 0.1, 0.15, 0.45, 0.125))  # per image of the batch of 2
    assert timing.median == pytest.approx(0.15) and timing.spread == pytest.approx(4.5)


def test_calibration_takes_medians_and_refuses_repeats_more_than_2x_apart():
    """Through `calibrate` itself (the tiny model's real steps, timed by a scripted clock): steady repeats give
    their medians and the spread in the source; one step whose repeats disagree by > 2x is refused, naming it."""
    from rft_ray.cost.calibrate import CalibrationError, calibrate
    from rft_ray.specs import run_spec

    run = run_spec(run_dict())
    steady = [1.0, 1.2, 0.9, 1.1, 1.0]  # per batch: median 1.0, spread 1.33x
    costs = calibrate(run, threads=1, repeats=5, warmups=1, max_batch=4,
                      clock=FakeClock([0.002] * 5 + steady + [2 * d for d in steady] + [3 * d for d in steady]))
    assert costs.train_s_per_image == pytest.approx(1.0 / 4)  # max_batch 4: the median per image
    assert costs.eval_s_per_image == pytest.approx(2.0 / 8) and costs.pgd_s_per_iteration_image == pytest.approx(3.0 / 8)
    assert "the median of 5 timed repeats after 1 warm-ups, slowest/fastest train 1.33x, clean 1.33x, pgd 1.33x" \
        in costs.source
    busy = [0.9, 1.0, 0.3, 1.0, 1.1]  # a 3.7x spread, as on the busy machine
    with pytest.raises(CalibrationError, match=r"5 timed clean steps took .* 3\.7x apart \(more than 2x\)"):
        calibrate(run, threads=1, repeats=5, warmups=1, max_batch=4,
                  clock=FakeClock([0.002] * 5 + steady + busy + steady))


# ---------------------------------------------------------------------------------------------------
# Training-step memory against a GPU (rft_ray.cost.memory: computed)


def test_step_memory_parts_follow_the_strategy_and_the_batch():
    from rft_ray.cost.memory import GIB, StepMemory, step_memory

    def memory(strategy: str, batch: int, precision: str = "fp32") -> StepMemory:
        run = run_dict()
        run["strategy"] = {"name": strategy}
        run["training"].update(batch_size=batch, precision=precision)
        return step_memory(RunSpec.from_dict(run))

    full, linear = memory("full", 32), memory("linear", 32)
    assert full.weights == linear.weights > 0
    assert full.gradients == pytest.approx(full.weights)  # every parameter trains, fp32
    assert full.optimizer == pytest.approx(2 * full.gradients)  # AdamW's two moments
    assert linear.gradients < full.gradients / 10 and linear.activations < full.activations / 3
    # saved activations: a fixed part and a part per image, so equal steps of batch add equal memory
    a32, a64, a96 = (memory("full", b).activations for b in (32, 64, 96))
    assert a96 - a64 == pytest.approx(a64 - a32) and a64 > a32
    assert memory("full", 32, "bf16").activations < a32  # bf16 autocast saves half-size matmul inputs
    assert full.total * GIB > (full.weights + full.gradients + full.optimizer + full.activations) * GIB


def test_memory_per_gpu_with_ddp_and_fsdp_workers_against_a_hand_computed_case():
    """A model of 2^31 fp32 parameters, all trained (8 GiB each of weights and gradients, 16 GiB of AdamW), 0.5 GiB
    of saved activations per image and 1 GiB fixed, its largest block 0.25 GiB (all trained), 0.5 GiB outside
    the blocks; global batch 32."""
    from rft_ray.cost.memory import CUDA_OVERHEAD_GIB, GIB, ModelCounts, per_gpu

    counts = ModelCounts(per_image=0.5 * GIB, fixed=1 * GIB, weights=8 * GIB, trainable=2 * GIB,
                         block=GIB // 4, block_trainable=GIB // 16, root=GIB // 2, precision="fp32")
    one = per_gpu("full", counts, 32)
    assert (one.weights, one.gradients, one.optimizer, one.activations, one.buckets, one.gathered) == \
        (8, 8, 16, 0.5 * 32 + 1, 0, 0)
    assert one.total == 49 + CUDA_OVERHEAD_GIB
    ddp = per_gpu("full", counts, 32, workers=4)  # a whole model each, 8 images each, buckets as large as gradients
    assert (ddp.weights, ddp.gradients, ddp.optimizer, ddp.activations, ddp.buckets, ddp.gathered) == \
        (8, 8, 16, 0.5 * 8 + 1, 8, 0)
    assert ddp.total == 45 + CUDA_OVERHEAD_GIB
    fsdp = per_gpu("full", counts, 32, workers=4, sharding="fsdp")  # a quarter each; root + 2 blocks gathered
    assert (fsdp.weights, fsdp.gradients, fsdp.optimizer, fsdp.activations, fsdp.buckets) == (2, 2, 4, 5, 0)
    assert fsdp.gathered == 0.5 + 2 * (0.25 + 0.25)
    assert fsdp.total == 14.5 + CUDA_OVERHEAD_GIB
    assert per_gpu("full", counts, 32, workers=1, sharding="fsdp") == one  # one worker holds the whole model
    assert "per GPU of 4 workers (fsdp: weights, gradients and AdamW sharded, batch 8 each)" in fsdp.parts()
    assert "DDP buckets 8.00" in ddp.parts() and "FSDP gathered units 1.50" in fsdp.parts()


def test_step_memory_of_an_fsdp_spec_shards_the_counted_model():
    from rft_ray.cost.memory import step_memory

    run = run_dict()
    run["strategy"] = {"name": "full"}
    run["training"].update(batch_size=32, sharding="fsdp")
    one, four = step_memory(RunSpec.from_dict(run)), step_memory(RunSpec.from_dict(run), workers=4)
    assert four.weights == pytest.approx(one.weights / 4) and four.optimizer == pytest.approx(one.optimizer / 4)
    # 4 equal blocks, all trained: root + 2 x (a block's weights + its gradients) = root + 4 blocks = the model
    assert four.gathered == pytest.approx(one.weights) and four.buckets == 0
    assert four.activations < one.activations  # 8 images each instead of 32


VIT_LARGE = str(Path(__file__).resolve().parents[1] / "experiments" / "vit_large.yaml")
GIVEN_COSTS = ["--train-s-per-image", "0.01", "--eval-s-per-image", "0.002", "--pgd-s-per-iteration-image", "0.005"]


def test_the_vit_large_spec_is_estimated_with_four_workers_per_trial(capsys):
    from rft_ray.cli import main

    assert main(["estimate", VIT_LARGE, *GIVEN_COSTS, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["workers_per_trial"] == 4 and plan["trials"] == 16
    assert sorted(g["strategy"] for g in plan["groups"]) == ["full", "linear", "lora", "lp_ft"]


@pytest.mark.slow
def test_vit_large_training_steps_per_a10g_of_four_workers(capsys):
    """The figures in experiments/vit_large.yaml's header: counted on this CPU (a ViT-L forward at 224 px)."""
    from rft_ray.cli import main

    assert main(["estimate", VIT_LARGE, *GIVEN_COSTS, "--gpu", "a10g", "--json"]) == 0
    steps = {s["strategy"]: s for s in json.loads(capsys.readouterr().out)["training_step_memory"]["strategies"]}
    assert {name: (s["workers"], s["sharding"]) for name, s in steps.items()} == {
        "full": (4, "fsdp"), "lp_ft": (4, "fsdp"), "lora": (4, "ddp"), "linear": (4, "ddp")}
    full = steps["full"]
    assert full["weights"] == pytest.approx(303.3e6 * 4 / 4 / 2**30, rel=0.01)  # a quarter of ViT-L's fp32 weights
    assert full["optimizer"] == pytest.approx(2 * full["gradients"]) and full["buckets"] == 0
    lora = steps["lora"]  # a whole model each: the backbone (4 fsdp shards) and its LoRA matrices (its gradients)
    assert lora["gradients"] > 0 and lora["buckets"] == pytest.approx(lora["gradients"])
    assert lora["weights"] == pytest.approx(4 * full["weights"] + lora["gradients"], abs=1e-3)
    assert all(s["verdict"] == "fits" for s in steps.values()), steps


def test_gpu_names_and_verdicts():
    from rft_ray.cost.memory import gpu_memory_gib, verdict

    assert gpu_memory_gib("A10G") == ("A10G", pytest.approx(22.35, abs=0.01))
    assert gpu_memory_gib("22") == ("22 GiB GPU", 22.0)
    with pytest.raises(ValueError, match="unknown GPU 'rtx9000': give one of t4, a10g"):
        gpu_memory_gib("rtx9000")
    assert verdict(10, 22) == "fits" and verdict(21, 22) == "tight" and verdict(23, 22) == "does not fit"


def test_cli_says_whether_each_strategys_step_fits_the_chosen_gpu(tmp_path, capsys):
    from rft_ray.cli import main

    spec = tmp_path / "run.yaml"
    spec.write_text(yaml.safe_dump(run_dict()))
    given = ["--train-s-per-image", "0.01", "--eval-s-per-image", "0.002", "--pgd-s-per-iteration-image", "0.005"]
    assert main(["estimate", str(spec), *given, "--gpu", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "training step memory on 0.5 GiB GPU, computed (not measured on a GPU)" in out
    assert re.search(r"^  lora +batch 16 +\d+\.\d GiB  does not fit", out, re.MULTILINE)  # the CUDA overhead alone
    assert main(["estimate", str(spec), *given, "--gpu", "h200", "--json"]) == 0
    memory = json.loads(capsys.readouterr().out)["training_step_memory"]
    assert memory["gpu"] == "H200" and memory["computed"] is True
    assert [(s["strategy"], s["verdict"]) for s in memory["strategies"]] == [("lora", "fits")]
    assert main(["estimate", str(spec), *given, "--gpu", "rtx9000"]) != 0
    assert "--gpu: unknown GPU 'rtx9000'" in capsys.readouterr().err
