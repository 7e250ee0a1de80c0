"""What makes the platform's numbers comparable with the paper's: unbiased evaluation subsets, the PGD
verdicts, the training recipe (decay groups, schedules, the paper_code preset) and OOD pooling."""
import math

import numpy as np
import pytest
import torch
import torchattacks
from conftest import tiny_run
from test_robustness import trained_model

from rft_ray.config import ModelSpec, RunSpec, SpecError, TrainingSpec
from rft_ray.data.base import ArrayImageSet, DataBundle, stratified_indices
from rft_ray.evaluation.evaluator import EvalSets, pooled_ood_accuracy
from rft_ray.evaluation.robustness import PGDConfig, pgd_robust
from rft_ray.models.backbones import create_classifier
from rft_ray.models.strategies import create_strategy
from rft_ray.training.optim import build_optimizer, lr_factor, parameter_groups
from rft_ray.training.setup import autocast_dtype

CPU = torch.device("cpu")


# -- evaluation subsets ---------------------------------------------------------------------------------------


def class_ordered(classes: int, per_class: int, size: int = 4) -> ArrayImageSet:
    """A split stored class by class (as CIFAR exports, CUB-200 or DomainNet are), every image distinct."""
    labels = np.repeat(np.arange(classes), per_class)
    pixels = (np.arange(len(labels))[:, None, None, None] % 251 * np.ones((1, size, size, 3))).astype(np.uint8)
    return ArrayImageSet(pixels, labels, size)


def test_pgd_images_cover_every_class_of_a_class_ordered_split():
    """CUB-200-like: 200 classes stored in order. The old head-of-a-sorted-sample attacked 35 of them."""
    test = class_ordered(classes=200, per_class=29)
    spec = RunSpec.from_dict({"dataset": {"split_seed": 3}, "evaluation": {
        "train_examples": 400, "test_examples": 1000, "ood_examples": 200, "pgd": {"examples": 200}}})
    bundle = DataBundle(train=class_ordered(200, 10), val=class_ordered(200, 0), test=test,
                        ood={"blur": class_ordered(200, 5)}, class_names=[str(c) for c in range(200)], image_size=4)
    sets = EvalSets.from_bundle(bundle, spec)
    test_counts = np.bincount(sets.test.labels.numpy(), minlength=200)
    pgd_counts = np.bincount(sets.test.labels[sets.pgd_index].numpy(), minlength=200)
    assert len(sets.test) == 1000 and set(test_counts) == {5}  # 1000 of 5800: exactly 5 per class
    assert len(sets.pgd_index) == 200 and set(pgd_counts) == {1}  # every class attacked, once
    assert len(set(sets.pgd_index.tolist())) == 200  # distinct images of the test subset
    assert set(np.bincount(sets.train.labels.numpy(), minlength=200)) == {2}
    assert set(np.bincount(sets.ood["blur"].labels.numpy(), minlength=200)) == {1}
    assert sets.ood_sizes == {"blur": 1000}
    again = EvalSets.from_bundle(bundle, spec)
    assert torch.equal(again.pgd_index, sets.pgd_index) and torch.equal(again.test.images, sets.test.images)


@pytest.mark.parametrize("sizes, count", [([50, 30, 20], 17), ([1, 1, 98], 10), ([7] * 13, 20), ([400, 3], 2)])
def test_stratified_sample_keeps_each_class_within_one_of_its_share(sizes, count):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    rng = np.random.default_rng(0)
    for stored in (labels, rng.permutation(labels)):  # class order or shuffled: the same proportions
        index = stratified_indices(stored, count, seed=1, salt="t")
        assert len(index) == count == len(set(index.tolist())) and np.all(np.diff(index) > 0)
        share = np.asarray(sizes) * count / len(labels)
        taken = np.bincount(stored[index], minlength=len(sizes))
        assert np.all(np.floor(share) <= taken) and np.all(taken <= np.ceil(share))
    assert not np.array_equal(stratified_indices(labels, count, 1, "t"), stratified_indices(labels, count, 2, "t")) \
        or count <= len(sizes)
    assert np.array_equal(stratified_indices(labels, None, 1, "t"), np.arange(len(labels)))


# -- PGD verdicts ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_and_data():
    return trained_model(40)


@pytest.mark.parametrize("eps", [8 / 255, 12 / 255, 16 / 255])
def test_final_iterate_is_torchattacks_image_for_image_and_any_iterate_never_above_it(model_and_data, eps):
    model, images, labels = model_and_data
    labels = labels.clone()
    labels[::7] = (labels[::7] + 1) % 4  # clean errors too: final_iterate attacks and judges them like torchattacks
    final = PGDConfig(eps=eps, alpha=eps / 4, steps=10, verdict="final_iterate")
    ours = pgd_robust(model, images, labels, final, batch_size=64, device=CPU, seed=5)
    attack = torchattacks.PGD(model, eps=final.eps, alpha=final.alpha, steps=final.steps, random_start=True)
    torch.manual_seed(5)  # our generator seeded 5 draws torchattacks' random start, batch by batch
    theirs = []
    for start in range(0, len(images), 64):
        x, y = images[start:start + 64], labels[start:start + 64]
        adversarial = attack(x, y)
        with torch.no_grad():
            theirs.append(model(adversarial).argmax(1) == y)
    theirs = torch.cat(theirs)
    assert 0 < theirs.sum() < len(images)
    assert torch.equal(ours, theirs)
    any_iterate = pgd_robust(model, images, labels, PGDConfig(eps=eps, alpha=eps / 4, steps=10), 64, CPU, seed=5)
    assert not (any_iterate & ~ours).any()  # per image: robust under any_iterate implies robust at the last iterate


def test_pgd_verdict_is_a_spec_choice_with_any_iterate_the_default():
    assert RunSpec.from_dict({}).evaluation.pgd.verdict == "any_iterate"
    with pytest.raises(SpecError, match=r"evaluation.pgd.verdict: must be one of 'any_iterate', 'final_iterate'"):
        RunSpec.from_dict({"evaluation": {"pgd": {"verdict": "last"}}})


# -- training recipe ------------------------------------------------------------------------------------------


def vit(strategy: str):
    model = create_classifier(ModelSpec(name="rft_vit_cifar_patch8_32", source="random", image_size=16), 4, seed=0)
    create_strategy(strategy, {}).apply(model)
    return model


def exempt_names(model, training: TrainingSpec) -> set[str]:
    groups = parameter_groups(model, training)
    ids = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def test_weight_decay_groups_exempt_biases_norms_and_embeddings():
    model = vit("full")
    default = exempt_names(model, TrainingSpec())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {f"backbone.{n}" for n in ("pos_embed", "cls_token", "norm.weight", "norm.bias", "head.bias")} <= default
    assert all(n.endswith(("bias", "pos_embed", "cls_token")) or ".norm" in n for n in default)
    assert {n for n in trainable - default if n.endswith("weight")} and not any(
        n.endswith("bias") for n in trainable - default)
    hugging_face = exempt_names(model, TrainingSpec(no_weight_decay=["bias", "norm"]))
    assert hugging_face == default - {"backbone.pos_embed", "backbone.cls_token"}
    assert exempt_names(model, TrainingSpec(no_weight_decay=[])) == set()
    groups = parameter_groups(model, TrainingSpec(weight_decay=0.05))
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert sum(len(g["params"]) for g in groups) == len(trainable)  # every trainable parameter, once
    # BitFit trains biases (and the head): with the default groups only the head's weight is decayed.
    bitfit = vit("bitfit")
    assert {n for n, p in bitfit.named_parameters() if p.requires_grad} - exempt_names(bitfit, TrainingSpec()) \
        == {"backbone.head.weight"}


def hugging_face_factor(schedule: str, warmup: int, total: int, step: int) -> float:
    """transformers' get_linear/cosine_schedule_with_warmup, after the warm-up."""
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 1 - progress) if schedule == "linear" else max(0.0, 0.5 * (1 + math.cos(math.pi * progress)))


@pytest.mark.parametrize("schedule, warmup", [("linear", 0), ("cosine", 800), ("cosine", 0)])
def test_lr_schedules_match_the_hugging_face_trainer_after_warm_up(schedule, warmup):
    training = TrainingSpec(lr_schedule=schedule, warmup_steps=warmup, warmup_fraction=0.3)
    factor = lr_factor(training, 3000)
    for step in range(warmup, 3000, 7):
        assert factor(step) == pytest.approx(hugging_face_factor(schedule, warmup, 3000, step), abs=1e-12)
    if warmup:  # warmup_steps replaces warmup_fraction; the ramp reaches the full lr on its last step
        assert factor(0) == pytest.approx(1 / 800) and factor(799) == 1.0 and factor(400) == pytest.approx(401 / 800)
    constant = lr_factor(TrainingSpec(lr_schedule="constant", warmup_fraction=0.1), 100)
    assert [constant(s) for s in (0, 9, 10, 99)] == [0.1, 1.0, 1.0, 1.0]


def test_optimizer_steps_follow_the_schedule_and_clip():
    model = vit("lora")
    training = TrainingSpec(lr=1e-2, lr_schedule="linear", warmup_steps=0, grad_clip=1.0)
    optimizer, scheduler, trainable = build_optimizer(model, training, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([1e-2 * (1 - s / 10) for s in range(10)])
    assert {id(p) for p in trainable} == {id(p) for g in optimizer.param_groups for p in g["params"]}


def test_fp32_precision_is_honoured_on_a_gpu():
    gpu = torch.device("cuda")
    assert autocast_dtype("fp32", gpu, bf16_ok=True) is None
    assert autocast_dtype("auto", gpu, bf16_ok=True) is torch.bfloat16
    assert autocast_dtype("auto", CPU) is None and autocast_dtype("bf16", CPU) is torch.bfloat16


def test_bf16_only_on_gpus_that_have_it():
    """auto falls back to fp32 on a GPU without bf16 (T4, V100); an explicit bf16 there, for training or PGD,
    is an error naming the field."""
    from rft_ray.training.setup import check_pgd_precision

    gpu = torch.device("cuda")
    assert autocast_dtype("auto", gpu, bf16_ok=False) is None
    with pytest.raises(SpecError, match="no bf16 support") as err:
        autocast_dtype("bf16", gpu, bf16_ok=False)
    assert err.value.field_path == "training.precision"
    with pytest.raises(SpecError, match="no bf16 support") as err:
        check_pgd_precision("bf16", gpu, bf16_ok=False)
    assert err.value.field_path == "evaluation.pgd.precision"
    check_pgd_precision("bf16", gpu, bf16_ok=True)
    check_pgd_precision("tf32", gpu, bf16_ok=False)
    assert autocast_dtype("auto", gpu) is None or torch.cuda.is_bf16_supported()  # this machine's own answer


def test_paper_code_recipe_fills_what_the_spec_leaves_out_per_strategy():
    full = RunSpec.from_dict({"recipe": "paper_code", "strategy": {"name": "full"}})
    lora = RunSpec.from_dict({"recipe": "paper_code", "strategy": {"name": "lora"}})
    assert (full.training.lr, full.training.lr_schedule, full.training.warmup_steps) == (2e-5, "linear", 0)
    assert (lora.training.lr, lora.training.lr_schedule, lora.training.warmup_steps) == (5e-3, "cosine", 800)
    # finetune.py:494-495: "2e-5 ... for finetuning, 5e-3 for others", "0.01 ... for finetuning, 0 for others"
    assert (full.training.weight_decay, lora.training.weight_decay) == (0.01, 0.0)
    for spec in (full, lora):
        t, e = spec.training, spec.evaluation
        assert (t.batch_size, t.grad_clip, t.precision, t.no_weight_decay) == (128, 1.0, "fp32", ["bias", "norm"])
        assert (e.schedule, e.pgd.verdict, e.ood_pooling, e.pgd.steps) == ("paper_code", "final_iterate", "by_size", 15)
        assert e.pgd.eps == pytest.approx(1 / 255) and e.pgd.alpha == pytest.approx(0.25 / 255)
        assert RunSpec.from_dict(spec.to_dict()) == spec
    given = RunSpec.from_dict({"recipe": "paper_code", "strategy": {"name": "full"},
                               "training": {"lr": 1e-4, "grad_clip": None}, "evaluation": {"pgd": {"steps": 5}}})
    assert (given.training.lr, given.training.grad_clip, given.evaluation.pgd.steps) == (1e-4, None, 5)
    assert given.evaluation.pgd.verdict == "final_iterate"  # the rest still from the preset
    assert RunSpec.from_dict({}).training.no_weight_decay == ["bias", "norm", "pos_embed", "cls_token"]
    with pytest.raises(SpecError, match=r"^recipe: must be one of 'default', 'paper_code'"):
        RunSpec.from_dict({"recipe": "paper"})


# -- OOD pooling ----------------------------------------------------------------------------------------------


def test_ood_pooling_equal_or_by_domain_size():
    correct = {"a": torch.tensor([True, True, False, False]), "b": torch.tensor([True] * 4), "none": torch.zeros(0)}
    sizes = {"a": 3000, "b": 1000, "none": 50}
    assert pooled_ood_accuracy(correct, sizes, "equal") == pytest.approx(0.75)
    assert pooled_ood_accuracy(correct, sizes, "by_size") == pytest.approx((0.5 * 3000 + 1.0 * 1000) / 4000)
    assert math.isnan(pooled_ood_accuracy({}, {}, "equal"))


def test_a_run_records_its_pooling_choice(tmp_path):
    from rft_ray.specs import run_spec
    from rft_ray.training.loop import train_loop

    records = {}
    for pooling in ("equal", "by_size"):
        spec = run_spec(tiny_run(tmp_path / pooling, **{"training.steps": 1, "evaluation.ood_pooling": pooling,
                                                        "evaluation.ood_examples": 15}))
        records[pooling] = train_loop(spec, [])[-1]
    for record in records.values():  # corruption domains share the test split's size: both poolings agree here
        assert record.test_ood_accuracy == pytest.approx(sum(record.ood_acc.values()) / len(record.ood_acc))
        assert record.ood_images == {"contrast": 15, "gaussian_noise": 15}


def test_gradient_norm_is_clipped_before_the_update():
    from rft_ray.training.loop import train_step

    model = vit("full")
    training = TrainingSpec(grad_clip=1e-3, lr=1e-3)
    optimizer, scheduler, trainable = build_optimizer(model, training, total_steps=4)
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    labels = torch.arange(8) % 4
    train_step(model, images, labels, optimizer, scheduler, trainable, training, 0, CPU, None)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in trainable]))
    assert norm == pytest.approx(1e-3, rel=1e-3)  # a fresh model's gradient is far larger: clipped to the limit


# -- the paper's specs ----------------------------------------------------------------------------------------


def test_paper_specs_use_the_papers_checkpoint_recipe_and_learning_rates():
    from rft_ray.specs import load_experiment, load_run_spec

    one = load_run_spec("experiments/run_cifar10_lora.yaml")
    assert (one.model.name, one.recipe, one.training.lr, one.training.weight_decay, one.training.epochs) == (
        "vit_base_patch16_224.orig_in21k", "paper_code", 5e-4, 1e-2, 20)
    assert (one.evaluation.test_examples, one.evaluation.pgd.examples, one.evaluation.pgd.verdict) == (
        None, None, "final_iterate")
    for path in ("experiments/paper.yaml", "experiments/domainnet_ood.yaml"):
        experiment = load_experiment(path)
        for group in experiment.groups:
            spec = RunSpec.from_dict(group.run)
            assert (spec.model.name, spec.recipe) == ("vit_base_patch16_224.orig_in21k", "paper_code"), group.name
    paper = load_experiment("experiments/paper.yaml")
    grids = {g.strategy: g.grid.lr for g in paper.groups}
    assert 2e-5 in grids["full"] and all({5e-3, 5e-4} <= set(lrs) for name, lrs in grids.items() if name != "full")
    caltech = next(g for g in paper.groups if g.dataset == "caltech256")
    assert RunSpec.from_dict(caltech.run).dataset.options == {"include_clutter": True}


# -- PGD arithmetic -------------------------------------------------------------------------------------------


def test_pgd_precision_and_batch_size_are_spec_choices(model_and_data):
    spec = RunSpec.from_dict({"evaluation": {"pgd": {"precision": "bf16", "batch_size": 32}}})
    assert (spec.evaluation.pgd.precision, spec.evaluation.pgd.batch_size) == ("bf16", 32)
    assert RunSpec.from_dict({}).evaluation.pgd.precision == "auto"
    assert RunSpec.from_dict({"recipe": "paper_code"}).evaluation.pgd.precision == "fp32"
    with pytest.raises(SpecError, match=r"evaluation.pgd.precision: must be one of 'auto', 'fp32', 'tf32', 'bf16'"):
        RunSpec.from_dict({"evaluation": {"pgd": {"precision": "fp16"}}})
    model, images, labels = model_and_data
    config = dict(eps=12 / 255, alpha=3 / 255, steps=5)
    fp32 = pgd_robust(model, images, labels, PGDConfig(**config, precision="fp32"), 64, CPU, seed=4)
    # on a CPU, tf32 and auto are float32: the same verdicts, bit for bit; bf16 autocast is a different arithmetic
    for precision in ("tf32", "auto"):
        assert torch.equal(pgd_robust(model, images, labels, PGDConfig(**config, precision=precision), 64, CPU,
                                      seed=4), fp32)
    bf16 = pgd_robust(model, images, labels, PGDConfig(**config, precision="bf16"), 64, CPU, seed=4)
    assert bf16.shape == fp32.shape and (bf16 != fp32).float().mean() < 0.1  # close, not necessarily equal
