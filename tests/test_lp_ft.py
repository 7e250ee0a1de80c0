"""LP-FT (`lp_ft`): linear probing, then full fine-tuning from the probed head, each phase with its own
learning rate, optimizer state and schedule; the evaluation schedule restarts at the boundary."""
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import tiny_run

from rft_ray.cli import main
from rft_ray.config import ModelSpec, RunSpec, SpecError, TrainingSpec
from rft_ray.evaluation.schedule import PRESETS, EvalSchedule, Segment
from rft_ray.models.backbones import create_classifier
from rft_ray.models.strategies import PAPER_STRATEGIES, Phase, create_strategy, strategy_names
from rft_ray.specs import run_spec
from rft_ray.training.checkpoint import CHECKPOINT_FILE
from rft_ray.training.loop import train_loop
from rft_ray.training.optim import PhasedTraining, lr_factor

HEAD = {"backbone.head.weight", "backbone.head.bias"}
# tiny_run with lp_ft: 60 steps, probing the first 30 (probe_fraction 0.5) at 30 x 1e-4, then fine-tuning at 1e-4;
# a 10% warm-up (3 steps per phase) then cosine; evaluation every 20 steps, restarting at step 30.
LP_FT = {"strategy.name": "lp_ft", "training.lr": 1e-4, "training.augment": "crop_flip"}
STEPS = [0, 20, 30, 50, 60]


def small_model():
    return create_classifier(ModelSpec(source="random"), num_classes=7, seed=0)


def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_registered_after_the_papers_seven():
    assert strategy_names() == [*PAPER_STRATEGIES, "lp_ft"]


def test_phases_split_the_steps_and_take_their_own_learning_rates():
    assert create_strategy("lp_ft").phases(60, 1e-4) == [Phase("probe", 0, 30, pytest.approx(3e-3)),
                                                         Phase("finetune", 30, 30, 1e-4)]
    given = create_strategy("lp_ft", {"probe_steps": 10, "probe_lr": 5e-3}).phases(60, 1e-4)
    assert [(p.start, p.end, p.lr) for p in given] == [(0, 10, 5e-3), (10, 60, 1e-4)]
    fraction = create_strategy("lp_ft", {"probe_fraction": 0.25, "probe_lr_factor": 10}).phases(100, 1e-4)
    assert [(p.start, p.steps) for p in fraction] == [(0, 25), (25, 75)] and fraction[0].lr == pytest.approx(1e-3)
    # Rounding never leaves a phase empty.
    assert [p.steps for p in create_strategy("lp_ft", {"probe_fraction": 0.01}).phases(10, 1e-4)] == [1, 9]
    assert [p.steps for p in create_strategy("lp_ft", {"probe_fraction": 0.99}).phases(10, 1e-4)] == [9, 1]
    assert create_strategy("full").phases(60, 1e-4) == [Phase("train", 0, 60, 1e-4)]


@pytest.mark.parametrize("options, field, reason", [
    ({"probe_fraction": 0}, "probe_fraction", r"must be in \(0, 1\)"),
    ({"probe_fraction": 1.0}, "probe_fraction", r"must be in \(0, 1\)"),
    ({"probe_steps": 0}, "probe_steps", r"must be in \[1, 10000000\] or null, got 0"),
    ({"probe_lr": -1e-3}, "probe_lr", r"must be in \(0, 10\) or null"),
    ({"probe_lr_factor": 0}, "probe_lr_factor", r"must be in \(0, 1000\], got 0"),
])
def test_bad_options_name_the_option(options, field, reason):
    with pytest.raises(SpecError, match=rf"^strategy\.options\.{field}: {reason}"):
        run_spec({"strategy": {"name": "lp_ft", "options": options}})


def test_an_unknown_option_or_a_probe_without_fine_tuning_is_refused():
    with pytest.raises(SpecError, match="probe_step.*Did you mean 'probe_steps'"):
        create_strategy("lp_ft", {"probe_step": 10})
    with pytest.raises(SpecError, match=r"^strategy\.options\.probe_steps: probe_steps 60 leaves no step to "
                                        r"fine-tune: the run has 60 steps"):
        create_strategy("lp_ft", {"probe_steps": 60}).phases(60, 1e-4)
    # A run spec with training.steps is checked when it is read, before any data is loaded or Ray starts.
    with pytest.raises(SpecError, match=r"^strategy\.options\.probe_steps: probe_steps 80 leaves no step"):
        run_spec(tiny_run(Path("/tmp/unused"), **LP_FT, **{"strategy.options": {"probe_steps": 80}}))
    with pytest.raises(SpecError, match=r"^training\.steps: lp_ft needs at least 2 steps"):
        create_strategy("lp_ft").phases(1, 1e-4)


def test_probing_trains_the_head_and_fine_tuning_every_parameter():
    model, strategy = small_model(), create_strategy("lp_ft")
    strategy.apply(model)
    assert trainable(model) == HEAD
    strategy.enter_phase(model, 1)
    assert trainable(model) == {n for n, _ in model.named_parameters()}
    counts = strategy.phase_counts(model)
    assert [c.trainable for c in counts] == [128 * 7 + 7, counts[1].total]
    assert trainable(model) == HEAD  # phase_counts leaves the model in phase 0
    with pytest.raises(ValueError, match="no phase 2"):
        strategy.enter_phase(model, 2)


def test_phased_training_enters_each_phase_with_a_fresh_optimizer_at_its_first_step():
    model = small_model()
    create_strategy("lp_ft").apply(model)
    training = TrainingSpec(steps=10, lr=1e-4, warmup_fraction=0.0, lr_schedule="constant")
    phases = PhasedTraining(model, create_strategy("lp_ft", {"probe_steps": 4}), training, 10)
    assert phases.restarts == [4]
    phases.enter(0)
    assert {id(p) for p in phases.trainable} == {id(p) for p in model.head.parameters()}
    assert [g["lr"] for g in phases.optimizer.param_groups] == [pytest.approx(3e-3)] * 2
    probing = phases.optimizer
    assert [phases.advance(s) for s in (1, 3, 5)] == [False, False, False] and phases.optimizer is probing
    assert phases.advance(4) and phases.index == 1 and phases.optimizer is not probing
    assert len(phases.trainable) == len(list(model.parameters())) and not phases.optimizer.state
    assert [g["lr"] for g in phases.optimizer.param_groups] == [1e-4] * 2
    assert not phases.advance(4)  # no third phase
    one = PhasedTraining(model, create_strategy("full"), training, 10)
    one.enter(0)
    assert one.restarts == [] and not any(one.advance(s) for s in range(11))


def test_the_schedule_is_dense_again_after_each_restart():
    schedule = EvalSchedule([Segment(10, 5), Segment(None, 50)], restarts=[30])
    assert schedule.points(100) == [0, 5, 10, 30, 35, 40, 80, 100]
    assert EvalSchedule([Segment(10, 5), Segment(None, 50)]).points(100) == [0, 5, 10, 50, 100]
    # The paper's schedule over 250 steps, probing half: every 50 steps in each phase, from its start.
    assert EvalSchedule(PRESETS["default"], restarts=[125]).points(250) == [0, 50, 100, 125, 175, 225, 250]
    spec = run_spec(tiny_run(Path("/tmp/unused"), **LP_FT))
    assert EvalSchedule.from_spec(spec.evaluation, restarts=[30]).points(60) == STEPS
    with pytest.raises(ValueError, match="restarts are steps after the first"):
        EvalSchedule([Segment(None, 5)], restarts=[0])


class Watch:
    """Loop plugin: per step the learning rates, what trains and whether the optimizer is fresh; the
    parameters at every evaluation point and before the first fine-tuning step."""

    def __init__(self):
        self.lrs, self.trainable, self.fresh, self.params = {}, {}, {}, {}

    def on_run_start(self, context):
        self.context = context

    def snapshot(self):
        return {n: p.detach().clone() for n, p in self.context.model.named_parameters()}

    def on_step_start(self, step, context):
        self.lrs[step] = [group["lr"] for group in context.optimizer.param_groups]
        self.trainable[step] = trainable(context.model)
        self.fresh[step] = len(context.optimizer.state) == 0
        if step == 31:
            self.params["before 31"] = self.snapshot()

    def records_changed(self, records, checkpoint_dir):
        self.params[records[-1].step] = self.snapshot()


def test_a_run_probes_then_fine_tunes_from_the_probed_head(tmp_path):
    spec = run_spec(tiny_run(tmp_path, **LP_FT))
    watch = Watch()
    records = train_loop(spec, [watch])
    assert [r.step for r in records] == STEPS  # dense again after the boundary: 30, then 30 + 20
    every = {n for n in watch.params[0]}
    head = 128 * 10 + 10  # the tiny ViT's width 128, digits' 10 classes
    total = records[0].total_params
    # The current phase's count: the boundary point (30) measures the probed model, still in phase 0.
    assert [r.trainable_params for r in records] == [head, head, head, total, total]
    assert all(r.total_params == total for r in records)
    assert all(watch.trainable[s] == HEAD for s in range(1, 31))
    assert all(watch.trainable[s] == every for s in range(31, 61))
    # Each phase: a fresh AdamW at its first step, and its own warm-up then cosine over its own 30 steps.
    assert [s for s in range(1, 61) if watch.fresh[s]] == [1, 31]
    factor = lr_factor(spec.training, 30)
    for s in range(1, 61):
        expected = 3e-3 * factor(s - 1) if s <= 30 else 1e-4 * factor(s - 31)
        assert watch.lrs[s] == pytest.approx([expected] * 2, rel=1e-9), s  # decayed and exempt groups
    assert watch.lrs[31] == pytest.approx([1e-4 / 3] * 2)  # the fine-tuning warm-up starts afresh
    start, boundary, end = watch.params[0], watch.params[30], watch.params[60]
    backbone = every - HEAD
    assert all(torch.equal(boundary[n], start[n]) for n in backbone)  # probing moves the head only
    assert all(not torch.equal(boundary[n], start[n]) for n in HEAD)
    assert all(torch.equal(watch.params["before 31"][n], boundary[n]) for n in every)  # fine-tuning starts there
    moved = [n for n in backbone if not torch.equal(end[n], boundary[n])]
    assert len(moved) == len(backbone)  # fine-tuning moves every parameter


def metrics(records):
    keys = ["step", "train_loss", "train_clean_acc", "test_clean_acc", "pgd_adv_acc", "test_ood_accuracy",
            "trainable_params"]
    return [{k: (None if isinstance(getattr(r, k), float) and math.isnan(getattr(r, k)) else getattr(r, k))
             for k in keys} for r in records]


class Interrupt(Exception):
    pass


class StopAfter:
    def __init__(self, points):
        self.points, self.seen = points, 0

    def records_changed(self, records, checkpoint_dir):
        self.seen += 1
        if self.seen == self.points:
            raise Interrupt()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return metrics(train_loop(run_spec(tiny_run(tmp_path_factory.mktemp("whole"), **LP_FT)), []))


@pytest.mark.parametrize("points_before_kill, phase", [(2, 0), (3, 0), (4, 1)])
def test_resume_in_either_phase_gives_the_uninterrupted_records(tmp_path, uninterrupted, points_before_kill, phase):
    """Killed after step 20 (probing), 30 (the boundary: the checkpoint holds the probe's state) or 50
    (fine-tuning), the resumed run produces the same records as one never stopped."""
    spec = run_spec(tiny_run(tmp_path, **LP_FT))
    checkpoints = tmp_path / "ckpt" / spec.run_id
    with pytest.raises(Interrupt):
        train_loop(spec, StopAfter(points_before_kill), checkpoint_dir=checkpoints)
    saved = torch.load(checkpoints / CHECKPOINT_FILE, weights_only=True)
    assert (saved["step"], saved["phase"]) == (STEPS[points_before_kill - 1], phase)
    every = {n for n, _ in small_model().named_parameters()}
    assert set(saved["trainable"]) == (HEAD if phase == 0 else every)
    resumed = train_loop(spec, [], checkpoint_dir=checkpoints, resume_from=checkpoints)
    assert metrics(resumed) == uninterrupted
    assert [r["step"] for r in uninterrupted] == STEPS


def test_strategies_command_counts_each_phase(capsys):
    assert main(["strategies", "--model", "vit_base_patch16_224", "--json"]) == 0
    rows = {r["strategy"]: r for r in json.loads(capsys.readouterr().out)["strategies"]}
    lp_ft = rows["lp_ft"]
    assert [(p["phase"], p["trainable"]) for p in lp_ft["phases"]] == [
        ("probe", rows["linear"]["trainable"]), ("finetune", rows["full"]["trainable"])]
    assert lp_ft["trainable"] == lp_ft["total"] == rows["full"]["total"]  # the phase training most
    assert rows["lora"]["phases"] == [{"phase": "train", "trainable": rows["lora"]["trainable"],
                                       "share_percent": rows["lora"]["share_percent"]}]
    assert main(["strategies", "--model", "vit_base_patch16_224"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("lp_ft"))
    assert line.endswith("(phases: probe 7,690 / finetune 85,806,346)")


def test_the_paper_code_recipe_gives_lp_ft_full_fine_tunings_step():
    spec = RunSpec.from_dict({"recipe": "paper_code", "strategy": {"name": "lp_ft"}})
    assert (spec.training.lr, spec.training.lr_schedule, spec.training.warmup_steps) == (2e-5, "linear", 0)
    assert TrainingSpec().lr != 2e-5


def test_cost_estimate_counts_the_restarted_points(tmp_path):
    from rft_ray.cost.counts import count_run

    lp_ft = count_run(run_spec(tiny_run(tmp_path, **LP_FT)))
    lora = count_run(run_spec(tiny_run(tmp_path)))
    assert (lp_ft.points, lora.points) == (len(STEPS), 4)


def test_wise_ft_of_a_fine_tuning_point_starts_from_the_probed_model_at_the_boundary(tmp_path):
    """rft interpolate --head interpolate: alpha 0 of a fine-tuning-phase point is the boundary point (the probed
    model), measured exactly as the run measured it; without the boundary's weights it is refused."""
    from rft_ray.training.interpolate import InterpolationError, interpolate_store
    from rft_ray.training.runner import run_in_process

    spec = run_spec(tiny_run(tmp_path, **LP_FT, **{"output.keep_checkpoints": "all", "output.run_id": "lpft"}))
    records = {r.step: r for r in run_in_process(spec, progress=False).records}
    store = tmp_path / "store"
    rows = interpolate_store(str(store), [0.0], on="final", head="interpolate", log=lambda m: None)
    [start] = rows
    assert start.step == 60
    for key in ("test_clean_acc", "pgd_adv_acc", "val_clean_acc", "val_pgd_adv_acc", "test_ood_accuracy"):
        assert getattr(start, key) == getattr(records[30], key), key  # the probed model, not step 0's
    assert records[30].test_clean_acc != records[0].test_clean_acc  # (which would differ)
    (store / "checkpoints" / "lpft" / "step-30.safetensors").unlink()
    with pytest.raises(InterpolationError, match="phase boundary, step 30, whose weights were not kept"):
        interpolate_store(str(store), [0.0], on="final", head="interpolate", log=lambda m: None)
    assert interpolate_store(str(store), [0.0], on="final", log=lambda m: None)  # the fine-tuned head needs none
