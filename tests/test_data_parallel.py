"""Data-parallel workers per trial (`resources.workers_per_trial`, `rft_ray.training.parallel`): two gloo
workers give the records of one, checkpoints cross between them, and the batch is split as the spec says.

The equivalence tests run the one training loop in two spawned processes joined by a gloo process group (what
Ray Train's TorchTrainer sets up for a trial's workers) and compare every evaluation point with the same run in
one process: random-init 16px ViT on digits, 24 steps, evaluated every 8.
"""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import gloo_group, rendezvous_file, tiny_run

from rft_ray.config import SpecError
from rft_ray.results.record import EvalRecord
from rft_ray.specs import experiment_spec, run_spec
from rft_ray.training.loop import train_loop
from rft_ray.training.parallel import DataParallel
from rft_ray.training.setup import BatchOrder, crop_flip

STRATEGIES = ["linear", "bitfit", "lora", "full"]
COMPARED = ["step", "epoch", "examples_seen", "train_clean_acc", "test_clean_acc", "pgd_adv_acc", "test_ood_accuracy"]


def parallel_run(tmp_path: Path, strategy: str, **overrides) -> dict:
    return tiny_run(tmp_path / strategy, **{
        "strategy": {"name": strategy}, "output.run_id": f"dp-{strategy}",
        "training": {"steps": 24, "batch_size": 16, "lr": 3e-3, "seed": 0, "augment": "crop_flip"},
        "evaluation.schedule": [{"until": None, "every": 8}], **overrides})


class StopRun(Exception):
    pass


class StopAt:
    """Ends a run right after the point of `step` (its checkpoint written), as an interruption would."""

    def __init__(self, step: int):
        self.step, self.records = step, []

    def records_changed(self, records, checkpoint_dir):
        self.records = list(records)
        if records and records[-1].step == self.step:
            raise StopRun


def _worker(rank: int, world: int, rendezvous: str, jobs: list[dict], out: str) -> None:
    """One data-parallel worker: each job is a spec dict, and optionally checkpoint_dir, resume_from and stop_at
    (the step after whose point the run ends); the records of each run, as rows, to `out`."""
    with gloo_group(rank, world, rendezvous):
        results = []
        for job in jobs:
            spec = run_spec(job["spec"])
            checkpoint_dir = Path(job["checkpoint_dir"]) if job.get("checkpoint_dir") else None
            resume = Path(job["resume_from"]) if job.get("resume_from") else None
            stop = StopAt(job.get("stop_at", -1))
            try:
                records = train_loop(spec, [stop], checkpoint_dir=checkpoint_dir, resume_from=resume)
            except StopRun:
                records = stop.records
            results.append([r.to_row() for r in records])
        Path(out, f"rank{rank}.json").write_text(json.dumps(results))


def run_workers(world: int, jobs: list[dict], out: Path) -> list[list[list[EvalRecord]]]:
    """Each rank's records of each job, run by `world` gloo workers."""
    out.mkdir(parents=True, exist_ok=True)
    mp.spawn(_worker, args=(world, rendezvous_file(out), jobs, str(out)), nprocs=world, join=True)
    return [[[EvalRecord.from_row(row) for row in rows] for rows in json.loads((out / f"rank{r}.json").read_text())]
            for r in range(world)]


def assert_same_records(one: list[EvalRecord], two: list[EvalRecord]) -> None:
    assert [r.step for r in one] == [r.step for r in two] == [0, 8, 16, 24]
    for a, b in zip(one, two):
        for key in COMPARED:
            assert getattr(a, key) == pytest.approx(getattr(b, key), abs=1e-6), (a.step, key)
        assert a.ood_acc == pytest.approx(b.ood_acc, abs=1e-6)
        # the mean loss over the global batch: gradients summed in another order, so not bit-identical
        assert (math.isnan(a.train_loss) and math.isnan(b.train_loss)) or \
            a.train_loss == pytest.approx(b.train_loss, rel=1e-4), a.step


# ---------------------------------------------------------------------------------------------------
# Without a process group


def test_shares_of_a_global_batch_cover_it_in_order():
    order = BatchOrder(size=100, batch_size=16, seed=3)
    whole = [next(iter(order.batches(5))) for _ in range(1)][0]
    shares = [DataParallel(rank, 4).share(16) for rank in range(4)]
    assert shares == [(0, 4), (4, 4), (8, 4), (12, 4)]
    assert sum((next(order.batches(5, share)) for share in shares), []) == whole
    with pytest.raises(ValueError, match="16 images does not divide over 3 workers"):
        DataParallel(0, 3).share(16)


def test_crop_flip_of_a_share_is_that_slice_of_the_global_batch():
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    whole = crop_flip(images, seed=11)
    halves = [crop_flip(images[first:first + 4], seed=11, share=(first, 8)) for first in (0, 4)]
    assert torch.equal(torch.cat(halves), whole)


def test_single_process_is_the_identity():
    single = DataParallel.current()
    model = torch.nn.Linear(2, 2)
    assert not single.active and single.leads and single.wrap(model) is model
    assert single.from_leader({"a": 1}) == {"a": 1} and single.mean(torch.tensor(2.5)).item() == 2.5


def test_workers_per_trial_is_validated_against_the_batch(tmp_path):
    base = {"training": {"batch_size": 16}}
    spec = experiment_spec({"base": base, "resources": {"workers_per_trial": 4}})
    assert spec.resources.workers_per_trial == 4
    assert experiment_spec({"base": base}).resources.workers_per_trial == 1
    with pytest.raises(SpecError) as err:
        experiment_spec({"base": base, "resources": {"workers_per_trial": 3}})
    assert err.value.field_path == "resources.workers_per_trial"
    assert "base.training.batch_size 16 does not divide evenly over 3 workers" in str(err.value)
    with pytest.raises(SpecError, match=r"resources.workers_per_trial: must be in \[1, 64\] or auto"):
        experiment_spec({"base": base, "resources": {"workers_per_trial": 0}})


def test_auto_workers_is_the_largest_gpu_node_and_a_trial_must_fit_one_node():
    from rft_ray.sweep.resources import NodeOffer, plan_resources
    from rft_ray.sweep.state import SweepError

    gpu_nodes = [NodeOffer("node type g4", 16, 4, 3), NodeOffer("node type g1", 8, 1, 2)]
    auto = experiment_spec({"base": {"training": {"batch_size": 32}},
                            "resources": {"workers_per_trial": "auto", "gpus_per_trial": 1, "cpus_per_trial": 4}})
    plan = plan_resources(auto, [], gpu_nodes)
    assert plan["workers_per_trial"] == 4 and plan["max_concurrent_trials"] == 3  # one trial per 4-GPU node
    on_cpus = experiment_spec({"base": {"training": {"batch_size": 32}}, "resources": {"workers_per_trial": "auto"}})
    assert plan_resources(on_cpus, [NodeOffer("node a", 8, 0, 1)], None)["workers_per_trial"] == 1
    odd = experiment_spec({"base": {"training": {"batch_size": 30}}, "resources": {"workers_per_trial": "auto"}})
    with pytest.raises(SweepError, match="auto = 4 .*batch_size 30 does not divide evenly over 4 workers"):
        plan_resources(odd, [], gpu_nodes)
    two = experiment_spec({"base": {"training": {"batch_size": 32}},
                           "resources": {"workers_per_trial": 2, "gpus_per_trial": 0, "cpus_per_trial": 3}})
    assert plan_resources(two, [NodeOffer("node a", 12, 0, 1)], None)["max_concurrent_trials"] == 2
    with pytest.raises(SweepError, match=r"each asks for 6 CPU and 0 GPU \(2 worker"):
        plan_resources(two, [NodeOffer("node a", 4, 0, 1), NodeOffer("node b", 4, 0, 1)], None)


def test_estimate_counts_every_worker_device_and_shares_training_and_evaluation():
    """Two workers: the same training and evaluation accelerator-hours (both sharded; ideal scaling), the
    start-up held on both devices, and the report says so."""
    from rft_ray.cost.calibrate import Costs
    from rft_ray.cost.counts import plan_from_dict
    from rft_ray.cost.estimate import format_report, estimate, hours

    def plan(workers):
        return plan_from_dict({"base": {"training": {"steps": 100, "batch_size": 16}},
                               "search": {"mode": "grid", "grid": {"lr": [1e-3], "weight_decay": [0.0]}},
                               "resources": {"workers_per_trial": workers, "max_concurrent_trials": 1}})

    one, two = plan(1), plan(2)
    assert (one.workers_per_trial, two.workers_per_trial) == (1, 2)
    costs = {g.group: Costs(1e-3, 1e-4, 2e-4, 30.0) for g in one.groups}
    a, b = hours(one, costs), hours(two, costs)
    assert a.pgd > 0 and a.clean_eval > 0 and a.overhead > 0
    assert b.training == pytest.approx(a.training) and b.pgd == pytest.approx(a.pgd)
    assert b.clean_eval == pytest.approx(a.clean_eval) and b.overhead == pytest.approx(2 * a.overhead)
    report = format_report(two, costs, estimate(two, costs))
    assert "2 workers per trial: training and evaluation shared at ideal scaling" in report
    assert "2 workers per trial" not in format_report(one, costs, estimate(one, costs))


# ---------------------------------------------------------------------------------------------------
# Two gloo workers against one process


@pytest.mark.slow
def test_two_workers_give_the_records_of_one_for_every_strategy(tmp_path):
    """linear, bitfit, lora and full: 24 steps with crop-and-flip augmentation, every evaluation point the same
    (accuracies on the same images, the loss within rounding); both workers hold the same records."""
    specs = {s: parallel_run(tmp_path, s) for s in STRATEGIES}
    one = {s: train_loop(run_spec(spec), []) for s, spec in specs.items()}
    ranks = run_workers(2, [{"spec": specs[s]} for s in STRATEGIES], tmp_path / "out")
    for i, strategy in enumerate(STRATEGIES):
        assert_same_records(one[strategy], ranks[0][i])
        assert [r.to_row() for r in ranks[1][i]] == [r.to_row() for r in ranks[0][i]], strategy
        assert len({r.train_loss for r in one[strategy][1:]}) == 3, strategy  # it trained (not a no-op in both)


@pytest.mark.slow
def test_checkpoints_cross_between_one_and_two_workers(tmp_path):
    """A checkpoint written by two workers (once, by rank 0) resumes in one process, and one written by one
    process resumes in two workers: either way the records are those of an uninterrupted run."""
    assert_checkpoints_cross(tmp_path, parallel_run(tmp_path, "lora"))


def assert_checkpoints_cross(tmp_path: Path, spec: dict, alone: dict | None = None, inspect=None) -> None:
    """`spec`'s checkpoint written by two workers (stopped after step 8; one file, by rank 0; `inspect(folder)`
    sees it) resumes in one process of `alone` (default: `spec`), and one written by one process of `alone`
    (stopped after step 16) resumes in two workers: either way the records of an uninterrupted run."""
    alone = alone or spec
    whole = train_loop(run_spec(spec), [])

    two_dir = tmp_path / "two-ckpt"
    stopped = run_workers(2, [{"spec": spec, "checkpoint_dir": str(two_dir), "stop_at": 8}], tmp_path / "out2")
    assert [r.step for r in stopped[0][0]] == [r.step for r in stopped[1][0]] == [0, 8]
    assert sorted(p.name for p in two_dir.iterdir()) == ["checkpoint.pt"]
    if inspect is not None:
        inspect(two_dir)
    assert_same_records(whole, train_loop(run_spec(alone), [], resume_from=two_dir))

    one_dir = tmp_path / "one-ckpt"
    with pytest.raises(StopRun):
        train_loop(run_spec(alone), [StopAt(16)], checkpoint_dir=one_dir)
    resumed = run_workers(2, [{"spec": spec, "resume_from": str(one_dir)}], tmp_path / "out3")
    assert_same_records(whole, resumed[0][0])
    assert [r.to_row() for r in resumed[1][0]] == [r.to_row() for r in resumed[0][0]]


# ---------------------------------------------------------------------------------------------------
# A sweep trial of two Ray Train workers, one of them killed


@pytest.mark.slow
def test_a_two_worker_trial_survives_its_rank_1_killed_with_the_records_of_one_process(tmp_path):
    """One trial, two gloo workers (Ray Train's process group). Rank 1 is SIGKILLed at step 20, after rank 0 has
    written the store: Ray Train restarts the group from the last checkpoint, and the store ends with each point
    once, each the same as the same run in one process; the kept weights are written once, by rank 0."""
    import ray
    from fault_plugins import KILL_FILE, KILL_FIRED_FILE, fault_env
    from test_sweep import tiny_experiment

    from rft_ray.config import apply_overrides
    from rft_ray.results.store import ResultStore
    from rft_ray.sweep.driver import run_sweep

    faults = tmp_path / "faults"
    faults.mkdir()
    data = tiny_experiment(tmp_path / "sweep", search={"mode": "grid", "grid": {"lr": [3e-3], "weight_decay": [0.01]},
                                                      "objectives": [{"metric": "test_clean_acc"}]},
                           resources={"cpus_per_trial": 1, "gpus_per_trial": 0, "workers_per_trial": 2,
                                      "max_concurrent_trials": 1})
    data["base"]["output"] = {"keep_checkpoints": "all"}
    experiment = experiment_spec(data)
    (faults / KILL_FILE).write_text(json.dumps({"step": 20, "rank": 1, "run_id_contains": "lora-digits"}))
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": fault_env(faults)})
    try:
        result = run_sweep(experiment, analyze=False)
    finally:
        ray.shutdown()
    fired = json.loads((faults / KILL_FIRED_FILE).read_text())
    assert fired["step"] == 20 and fired["rank"] == 1
    [trial] = result.groups[0].trials
    assert trial.status == "completed" and trial.step == 40
    store = ResultStore(experiment.store_root)
    records = store.read_run(trial.run_id)
    assert [r.step for r in records] == [0, 20, 40]  # none lost, none twice

    run = apply_overrides(experiment.groups[0].run, {
        "training.lr": 3e-3, "training.weight_decay": 0.01, "output.run_id": trial.run_id,
        "output.results": str(tmp_path / "one-process")})
    alone = train_loop(run_spec(run), [])
    for a, b in zip(alone, records):
        for key in COMPARED:
            assert getattr(a, key) == pytest.approx(getattr(b, key), abs=1e-6), (a.step, key)
    kept = sorted(p.name for p in Path(experiment.store_root, "checkpoints", trial.run_id).iterdir())
    assert kept == ["step-0.safetensors", "step-20.safetensors", "step-40.safetensors"], kept
