"""FSDP (`training.sharding: fsdp`, `rft_ray.training.sharding`): two gloo workers training a sharded copy of the
model give the records of one process (and of DDP), through lp_ft's change of phase too; its checkpoints cross
to and from a single process; the spec refuses it where it does not apply.

The runs are those of `test_data_parallel`: random-init 16px ViT (rft_vit_cifar_patch8_32, 4 blocks) on digits,
24 steps with crop-and-flip, evaluated every 8, in two spawned processes joined by a gloo process group.
"""
import pytest
import torch
from test_data_parallel import assert_checkpoints_cross, assert_same_records, parallel_run, run_workers

from rft_ray.config import SpecError
from rft_ray.models.backbones import create_classifier
from rft_ray.specs import experiment_spec, run_spec
from rft_ray.training.loop import train_loop
from rft_ray.training.sharding import transformer_blocks

FSDP = {"training.sharding": "fsdp"}


# ---------------------------------------------------------------------------------------------------
# The spec


@pytest.mark.parametrize("strategy", ["lora", "linear", "bitfit", "ia3", "adapter", "compacter"])
def test_fsdp_is_refused_for_strategies_that_train_few_parameters(strategy):
    with pytest.raises(SpecError) as err:
        run_spec({"strategy": {"name": strategy}, "training": {"sharding": "fsdp"}})
    assert err.value.field_path == "training.sharding"
    assert f"strategy.name {strategy!r}" in str(err.value) and "(full, lp_ft)" in str(err.value)
    assert run_spec({"strategy": {"name": strategy}}).training.sharding == "ddp"


def test_fsdp_is_accepted_for_full_and_lp_ft_and_per_strategy_in_an_experiment():
    for strategy in ("full", "lp_ft"):
        assert run_spec({"strategy": {"name": strategy}, "training": {"sharding": "fsdp"}}).training.sharding == "fsdp"
    experiment = experiment_spec({"strategies": [{"name": "full", "sharding": "fsdp"}, "lora"],
                                  "resources": {"workers_per_trial": 4}, "base": {"training": {"batch_size": 32}}})
    assert [run_spec(g.run).training.sharding for g in experiment.groups] == ["fsdp", "ddp"]
    with pytest.raises(SpecError) as err:
        experiment_spec({"strategies": ["full", {"name": "lora", "sharding": "fsdp"}]})
    assert err.value.field_path == "strategies[1].sharding"
    with pytest.raises(SpecError) as err:
        experiment_spec({"strategies": ["full", "lora"], "base": {"training": {"sharding": "fsdp"}}})
    assert err.value.field_path == "base.training.sharding" and "'lora'" in str(err.value)


def test_fsdp_with_compile_is_refused_naming_both_fields():
    with pytest.raises(SpecError) as err:
        run_spec({"strategy": {"name": "full"}, "training": {"sharding": "fsdp", "compile": True}})
    assert err.value.field_path == "training.compile" and "training.sharding fsdp" in str(err.value)


def test_fsdp_units_are_the_transformer_blocks(tmp_path):
    spec = run_spec(parallel_run(tmp_path, "full"))
    model = create_classifier(spec.model, 10, seed=0)
    assert len(transformer_blocks(model)) == len(model.backbone.blocks) > 1
    with pytest.raises(ValueError, match="Sequential has no transformer blocks.*training.sharding ddp"):
        transformer_blocks(torch.nn.Sequential(torch.nn.Linear(2, 2)))


# ---------------------------------------------------------------------------------------------------
# Two gloo workers


@pytest.mark.slow
def test_two_fsdp_workers_give_the_records_of_one_process_and_of_ddp(tmp_path):
    """full and lp_ft (probe 8 steps, then every weight: a change of phase re-shards): every evaluation point the
    same as one process (accuracies on the same images, the loss within rounding), and as two DDP workers."""
    full = parallel_run(tmp_path / "fsdp", "full", **FSDP)
    lp_ft = parallel_run(tmp_path / "fsdp", "lp_ft", **FSDP, **{"strategy.options": {"probe_steps": 8}})
    ddp = parallel_run(tmp_path / "ddp", "full")
    one = {name: train_loop(run_spec(spec), []) for name, spec in (("full", full), ("lp_ft", lp_ft))}
    ranks = run_workers(2, [{"spec": full}, {"spec": lp_ft}, {"spec": ddp}], tmp_path / "out")
    for i, name in enumerate(("full", "lp_ft")):
        assert_same_records(one[name], ranks[0][i])
        assert [r.to_row() for r in ranks[1][i]] == [r.to_row() for r in ranks[0][i]], name
        assert len({r.train_loss for r in one[name][1:]}) == 3, name  # it trained
    assert_same_records(ranks[0][2], ranks[0][0])  # DDP and FSDP: the same trajectory


@pytest.mark.slow
def test_fsdp_checkpoints_are_whole_and_cross_to_and_from_one_process(tmp_path):
    """A checkpoint written by two FSDP workers (once, rank 0) holds whole tensors (every weight and AdamW moment
    of the model's shape) and resumes in one process of training.sharding ddp; one written by one process resumes
    in two FSDP workers: either way the records of an uninterrupted run."""
    spec = parallel_run(tmp_path, "full", **FSDP)
    model = create_classifier(run_spec(spec).model, 10, seed=0)
    shapes = sorted((n, tuple(p.shape)) for n, p in model.named_parameters())

    def whole_tensors(folder):
        saved = torch.load(folder / "checkpoint.pt", weights_only=True)
        assert sorted((n, tuple(t.shape)) for n, t in saved["trainable"].items()) == shapes
        moments = sorted(tuple(s["exp_avg"].shape) for s in saved["optimizer"]["state"].values())
        assert moments == sorted(shape for _, shape in shapes)

    # training.sharding ddp in one process: the same run, as far as a checkpoint goes
    assert_checkpoints_cross(tmp_path, spec, alone=parallel_run(tmp_path, "full"), inspect=whole_tensors)
