"""What runs on the cluster for one Tune trial: the driver (a Tune function trainable) and the Train worker.

The driver holds no CPU: it builds a `TorchTrainer` (Ray Train V2) of `workers_per_trial` workers (torch DDP
over Ray Train's process group: `rft_ray.training.parallel`), each asking for `cpus_per_trial` CPUs and, when
the sweep resolved GPUs, `gpus_per_trial` GPUs, and passes the trial's config through to them unchanged. The Train run is named after the trial (`<group>-<trial id>`,
never a timestamp), so a retried or restored trial finds its own checkpoints in storage.

The worker runs the one training loop (`rft_ray.training.loop.train_loop`) and, at every evaluation point,
rewrites the run's Parquet file whole from the records so far (rank 0), then reports the point's metrics
with its checkpoint. The checkpoint holds every record so far, so a worker restarted from it rewrites
exactly the rows up to that point: no duplicated and no missing rows, whatever was written before a crash.
Rank 0 also keeps the weights of evaluation points per `output.keep_checkpoints` in the result store
(`rft_ray.training.weights.CheckpointKeeper`: `<store>/checkpoints/<run_id>/`), where every node and the
driver's MLflow callback find them; a restored worker deletes the files of points after its checkpoint.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rft_ray.config import RunSpec, apply_overrides
from rft_ray.results.files import filesystem_for, read_bytes, write_bytes
from rft_ray.results.record import EvalRecord
from rft_ray.specs import run_spec
from rft_ray.sweep.inputs import check_trial_inputs
from rft_ray.tracking.metrics import trial_metrics

# A run whose loss diverged leaves this file in its Train run's folder: the trial ends errored with the reason,
# and retries (by Ray Train or Tune) end at once instead of diverging again from the same checkpoint.
DIVERGED_FILE = "diverged.json"


# ---------------------------------------------------------------------------------------------------
# Pure helpers (tested without Ray)


def trial_run_spec(config: dict[str, Any], run_id: str) -> RunSpec:
    """The run spec of one trial: the group's run with the trial's lr, weight decay, run id and, with
    search.seeds, training seed."""
    run = json.loads(config["run"]) if isinstance(config["run"], str) else config["run"]
    overrides = {"training.lr": float(config["lr"]), "training.weight_decay": float(config["weight_decay"]),
                 "output.run_id": run_id}
    if config.get("seed") is not None:
        overrides["training.seed"] = int(config["seed"])
    data = apply_overrides(run, overrides)
    return run_spec(data)


def mark_diverged(train_storage: str, run_id: str, reason: str) -> None:
    fs, base = filesystem_for(train_storage)
    write_bytes(fs, f"{base}/{run_id}/{DIVERGED_FILE}", json.dumps({"run_id": run_id, "reason": reason}).encode())


def diverged_reason(train_storage: str, run_id: str) -> str | None:
    fs, base = filesystem_for(train_storage)
    data = read_bytes(fs, f"{base}/{run_id}/{DIVERGED_FILE}")
    return None if data is None else json.loads(data.decode())["reason"]


# ---------------------------------------------------------------------------------------------------
# The Ray Train worker


class TuneReporter:
    """The last observer of a worker's run: `ray.train.report` with the checkpoint (after the store and any
    plugins have the point); at the call that follows a restore, only a finished run's final result."""

    def __init__(self, objectives: list[dict[str, Any]], select_on: str, rank: int, resuming: bool):
        self.objectives, self.select_on, self.rank = objectives, select_on, rank
        self.resume_call_pending = resuming

    def records_changed(self, records: list[EvalRecord], checkpoint_dir: Path | None) -> None:
        import ray.train

        if self.resume_call_pending:
            self.resume_call_pending = False
            if records and records[-1].step >= records[-1].total_steps:
                # The run had finished before the interruption: tell Tune its final result again (no new
                # checkpoint), in case the driver died before it heard of it.
                ray.train.report(self._metrics(records))
            return
        checkpoint = None
        if checkpoint_dir is not None and self.rank == 0:
            checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir))
        ray.train.report(self._metrics(records), checkpoint=checkpoint)

    def _metrics(self, records: list[EvalRecord]) -> dict[str, Any]:
        import ray

        # The node that ran the point (Tune's node_ip is the driver's, and the same for every local node).
        return {**trial_metrics(records, self.objectives, self.select_on),
                "node_id": ray.get_runtime_context().get_node_id()}


def _limit_threads() -> None:
    """Use the CPUs Ray gave this worker, not every core of the node."""
    import ray
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if cpus:
        torch.set_num_threads(max(1, int(cpus)))


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: one fine-tuning run, resumed from the trial's latest checkpoint when there is one."""
    import ray.train

    from rft_ray.results.store import ResultStore
    from rft_ray.training.describe import RunSummary
    from rft_ray.training.loop import TrainingDiverged, train_loop
    from rft_ray.training.plugins import plugins_from_env
    from rft_ray.training.runner import StoreObserver
    from rft_ray.training.weights import CheckpointKeeper

    context = ray.train.get_context()
    run_id = context.get_experiment_name()  # the Train run's name: <group>-<trial id>
    run = json.loads(config["run"]) if isinstance(config["run"], str) else config["run"]
    check_trial_inputs(run)  # on this node, before any data is read; the error names the node
    spec = trial_run_spec(config, run_id)
    rank = context.get_world_rank()
    _limit_threads()
    work = Path(tempfile.mkdtemp(prefix=f"rft-{run_id}-"))
    try:
        resume_from = None
        restored = ray.train.get_checkpoint()
        if restored is not None:
            resume_from = Path(restored.to_directory(str(work / "restored")))
        if diverged_reason(config["train_storage"], run_id) is not None:
            return  # diverged before: the driver reports the error
        # Rank 0 writes the store first, then the point's weights into it (output.keep_checkpoints); plugins
        # ($RFT_PLUGINS) see each point next; Tune hears last.
        checkpoint_dir = work / "checkpoint"
        store = ResultStore(spec.output.results)
        if rank == 0 and resume_from is None:
            store.forget_derived(run_id)  # attacked and interpolated on weights this trial is about to replace
        # Trials configured before search.select_on existed selected on test; the kept front follows the split.
        select_on = config.get("select_on", "test")
        kept = [RunSummary(), StoreObserver(store, run_id),
                CheckpointKeeper(store, run_id, spec.output.keep_checkpoints, select_on)
                ] if rank == 0 else []  # RunSummary: what the trial loaded, in sweep.log
        reporter = TuneReporter(config["objectives"], select_on, rank, resuming=resume_from is not None)
        observers = [*kept, *plugins_from_env(), reporter]
        try:
            train_loop(spec, observers, checkpoint_dir=checkpoint_dir, resume_from=resume_from, progress=False)
        except TrainingDiverged as err:
            # Deterministic: a retry from the last checkpoint would diverge at the same step. End the Train run
            # here (no Train retries); the driver turns the marker into the trial's error.
            if rank == 0:
                mark_diverged(config["train_storage"], run_id, str(err))
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# The Tune driver (function trainable)


def trial_driver(config: dict[str, Any]) -> None:
    """Tune function trainable: one Ray Train run for this trial, its results relayed to Tune."""
    import ray.train
    import ray.tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = ray.tune.get_context().get_trial_id()
    run_id = f"{config['group']}-{trial_id}"
    resources = config["resources"]
    gpus = float(resources["gpus_per_trial"])
    per_worker = {"CPU": float(resources["cpus_per_trial"])}
    if gpus > 0:
        per_worker["GPU"] = gpus
    workers = int(resources.get("workers_per_trial", 1))
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=config,
        # PACK: a trial's workers on one node where they fit (the all-reduce of every step stays on the node)
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=gpus > 0,
                                               resources_per_worker=per_worker, placement_strategy="PACK"),
        run_config=ray.train.RunConfig(
            name=run_id,
            storage_path=config["train_storage"],
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=int(config["worker_max_failures"])),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
    )
    from rft_ray.training.loop import TrainingDiverged

    reason = diverged_reason(config["train_storage"], run_id)
    if reason is None:
        trainer.fit()
        reason = diverged_reason(config["train_storage"], run_id)
    if reason is not None:
        raise TrainingDiverged(reason)
