"""Evaluation sharded over a trial's data-parallel workers (`rft_ray.evaluation.sharding`): each worker measures a
slice of every subset, the verdicts are gathered, and the result is that of one process, image for image.

The gloo tests run in spawned processes joined by a gloo process group (what Ray Train sets up for a trial's
workers), as tests/test_data_parallel.py does, and compare with the same work in this process.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import gloo_group, rendezvous_file, tiny_run

from rft_ray.evaluation.evaluator import EvalSets, evaluate
from rft_ray.evaluation.robustness import PGDConfig, pgd_robust
from rft_ray.evaluation.sharding import EvalShard
from rft_ray.specs import run_spec
from rft_ray.training.loop import train_loop
from rft_ray.training.setup import Run

# A tiny spec that reaches every evaluation pass: train, test, PGD at three radii, two OOD domains, validation
# clean, PGD and OOD. 37 test and 19 PGD images (odd, so the two shards differ in size); the validation's one PGD
# image leaves the second worker an empty slice.
EVALUATED = {"training": {"steps": 16, "batch_size": 16, "lr": 3e-3, "seed": 0, "augment": "crop_flip"},
             "evaluation.schedule": [{"until": None, "every": 8}], "evaluation.test_examples": 37,
             "evaluation.pgd": {"eps": "4/255", "alpha": "1/255", "steps": 3, "examples": 19,
                                "extra_eps": ["2/255", "8/255"]},
             "evaluation.validation": {"examples": 21, "pgd_examples": 1, "ood": True, "ood_examples": 9}}

MEASURED = sorted(["test_clean_acc", "pgd_adv_acc", "pgd_adv_acc/2/255", "pgd_adv_acc/8/255", "ood_acc/contrast",
                   "ood_acc/gaussian_noise", "val_clean_acc", "val_pgd_adv_acc", "val_ood_acc/contrast",
                   "val_ood_acc/gaussian_noise"])


class Verdicts:
    """Keeps each point's per-image verdicts (the loop's `verdicts_measured` hook), as lists."""

    def __init__(self):
        self.points = {}

    def verdicts_measured(self, step, verdicts, subsets):
        self.points[str(step)] = {metric: np.asarray(v).tolist() for metric, v in verdicts.items()}


def _worker(rank: int, world: int, rendezvous: str, specs: list[dict], out: str) -> None:
    """One data-parallel worker: the training loop on each spec; its records (and on rank 0 the verdicts) to
    `out`."""
    with gloo_group(rank, world, rendezvous):
        results = []
        for spec in specs:
            seen = Verdicts()
            records = train_loop(run_spec(spec), [seen])
            results.append({"records": [r.to_row() for r in records], "verdicts": seen.points})
        Path(out, f"rank{rank}.json").write_text(json.dumps(results, default=str))


def _evaluated(spec: dict, shard: EvalShard) -> dict:
    """One evaluation point of the spec's freshly built model, sharded by `shard`: its metrics and verdicts."""
    config = run_spec(spec)
    run = Run.build(config)
    verdicts: dict = {}
    metrics = evaluate(run.model, EvalSets.from_bundle(run.bundle, config), config, run.device, run.dtype,
                       verdicts=verdicts, shard=shard)
    return {"metrics": metrics, "verdicts": {metric: v.tolist() for metric, v in verdicts.items()}}


def _evaluating_worker(rank: int, world: int, rendezvous: str, spec: dict, out: str) -> None:
    with gloo_group(rank, world, rendezvous):
        Path(out, f"rank{rank}.json").write_text(json.dumps(_evaluated(spec, EvalShard(rank, world))))


def _comparable(row: dict) -> dict:
    """A record's measured fields (not its timings or loss)."""
    return {k: v for k, v in row.items() if k not in ("wall_seconds", "eval_seconds", "measured_at", "train_loss")}


# ---------------------------------------------------------------------------------------------------
# Without a process group


def test_the_shards_of_a_subset_are_it_once_in_order():
    for world in range(1, 5):
        for images in range(0, 11):
            parts = [range(images)[EvalShard(rank, world).part(images)] for rank in range(world)]
            assert [i for part in parts for i in part] == list(range(images)), (world, images)
            assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced; fewer images than workers: empty
    assert EvalShard().gather(torch.tensor([True, False]), 2).tolist() == [True, False]
    with pytest.raises(ValueError, match=r"rank 2 of 2"):
        EvalShard(2, 2)


@pytest.mark.parametrize("verdict", ["any_iterate", "final_iterate"])
def test_a_slice_is_attacked_from_the_random_starts_of_the_whole_subset(verdict):
    """A wide random start and a tiny step: the verdicts hang on the start, so slices attacked with `first` give
    the whole subset's verdicts, whatever their batch size, and slices attacked from a fresh start do not."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3)).eval()
    images = torch.rand(40, 3, 4, 4)
    labels = model(images).argmax(1)  # all clean-correct, so every image is attacked
    config = PGDConfig(eps=0.5, alpha=1e-4, steps=1, verdict=verdict)
    cpu = torch.device("cpu")
    whole = pgd_robust(model, images, labels, config, 8, cpu, seed=7)
    assert 0 < int(whole.sum()) < len(whole)  # the start decides: some images fall, some stand
    cuts = [(0, 13), (13, 27), (27, 40)]
    sliced = torch.cat([pgd_robust(model, images[a:b], labels[a:b], config, 5, cpu, seed=7, first=a) for a, b in cuts])
    assert torch.equal(sliced, whole)
    fresh = torch.cat([pgd_robust(model, images[a:b], labels[a:b], config, 5, cpu, seed=7) for a, b in cuts])
    assert not torch.equal(fresh, whole)
    with pytest.raises(ValueError, match="first must be a position"):
        pgd_robust(model, images, labels, config, 8, cpu, first=-1)


# ---------------------------------------------------------------------------------------------------
# Two gloo workers against one process


def test_three_workers_evaluate_a_point_as_one_process_does(tmp_path):
    """Every pass of one point (final-iterate PGD, so every image is attacked for every step) sharded over three
    gloo workers, in slices of unequal size: each worker ends with the metrics and per-image verdicts one process
    measures."""
    spec = tiny_run(tmp_path, **EVALUATED, **{"evaluation.pgd.verdict": "final_iterate"})
    alone = json.loads(json.dumps(_evaluated(spec, EvalShard())))
    assert sorted(alone["verdicts"]) == MEASURED
    out = tmp_path / "out"
    out.mkdir()
    mp.spawn(_evaluating_worker, args=(3, rendezvous_file(out), spec, str(out)), nprocs=3, join=True)
    for rank in range(3):
        assert json.loads((out / f"rank{rank}.json").read_text()) == alone, rank


@pytest.mark.slow
def test_two_workers_evaluate_every_point_as_one_process_does(tmp_path):
    """linear and lora, 16 steps, points 0, 8 and 16: every metric of every record, and every per-image verdict
    (test, PGD at each radius, OOD, validation clean, PGD and OOD), the same with the evaluation sharded over
    two gloo workers as in one process; both workers hold the same records."""
    specs = [tiny_run(tmp_path / name, **{"strategy": {"name": name}, "output.run_id": f"shard-{name}", **EVALUATED})
             for name in ("linear", "lora")]
    alone = []
    for spec in specs:
        seen = Verdicts()
        alone.append(([r.to_row() for r in train_loop(run_spec(spec), [seen])], seen.points))
    out = tmp_path / "out"
    out.mkdir()
    mp.spawn(_worker, args=(2, rendezvous_file(out), specs, str(out)), nprocs=2, join=True)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    for (rows, verdicts), two, other in zip(alone, ranks[0], ranks[1]):
        assert [r["step"] for r in two["records"]] == [0, 8, 16]
        assert two["records"] == other["records"]
        one_rows = [_comparable(json.loads(json.dumps(r, default=str))) for r in rows]
        assert [_comparable(r) for r in two["records"]] == one_rows  # accuracies exactly: the same verdicts
        assert two["verdicts"].keys() == verdicts.keys()
        for step, metrics in verdicts.items():
            assert sorted(metrics) == MEASURED
            assert two["verdicts"][step] == metrics, step
        assert len({r["test_clean_acc"] for r in rows}) > 1  # it trained: the points differ
