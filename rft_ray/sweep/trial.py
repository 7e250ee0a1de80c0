"""What runs on the cluster for one Tune trial: the driver (a Tune function trainable) and the Train worker.

The driver holds no CPU: it builds a `TorchTrainer` (Ray Train V2) whose one worker asks for
`cpus_per_trial` CPUs and, when the sweep resolved GPUs, `gpus_per_trial` GPUs, and passes the trial's
config through to the worker unchanged. The Train run is named after the trial (`<group>-<trial id>`,
never a timestamp), so a retried or restored trial finds its own checkpoints in storage.

The worker runs the one training loop (`rft_ray.training.loop.train_loop`) and, at every evaluation point,
rewrites the run's Parquet file whole from the records so far (rank 0), then reports the point's metrics
with its checkpoint. The checkpoint holds every record so far, so a worker restarted from it rewrites
exactly the rows up to that point: no duplicated and no missing rows, whatever was written before a crash.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

from rft_ray.results.record import EvalRecord
from rft_ray.config import RunSpec, apply_overrides
from rft_ray.specs import run_spec

# Fault injection for tests: when this variable names a folder holding `kill-worker.json`
# ({"step": N, "run_id_contains": "..."}), the first worker to reach step N of a matching run renames
# the file (atomically, so it fires once) and SIGKILLs itself after writing the store, before reporting.
FAULT_DIR_ENV = "RFT_FAULT_DIR"
FAULT_FILE = "kill-worker.json"
FIRED_FILE = "kill-worker.fired.json"
# Also for tests: `nan-loss.json` ({"step": N, "run_id_contains": "..."}) makes the training loss of the first
# matching run to start NaN from its N-th step on (fires once), as a diverging learning rate would.
NAN_FAULT_FILE = "nan-loss.json"
NAN_FIRED_FILE = "nan-loss.fired.json"
# A run whose loss diverged leaves this file in its Train run's folder: the trial ends errored with the reason,
# and retries (by Ray Train or Tune) end at once instead of diverging again from the same checkpoint.
DIVERGED_FILE = "diverged.json"


# ---------------------------------------------------------------------------------------------------
# Pure helpers (tested without Ray)


def trial_run_spec(config: dict[str, Any], run_id: str) -> RunSpec:
    """The run spec of one trial: the group's run with the trial's lr, weight decay and run id."""
    run = json.loads(config["run"]) if isinstance(config["run"], str) else config["run"]
    data = apply_overrides(run, {"training.lr": float(config["lr"]),
                                           "training.weight_decay": float(config["weight_decay"]),
                                           "output.run_id": run_id})
    return run_spec(data)


def objective_value(records: list[EvalRecord], objective: dict[str, Any]) -> float:
    """One objective of a trial from its records so far (`final`, `best`, or the trial's Pareto AUC)."""
    metric = objective["metric"]
    if metric == "pareto_auc":
        from analysis.frontier import hypervolume_auc

        return hypervolume_auc([(r.test_clean_acc, r.pgd_adv_acc) for r in records])
    values = [_metric(r, metric) for r in records]
    if objective.get("reduce", "final") == "final":
        return values[-1]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return float("nan")
    return max(finite) if objective.get("mode", "max") == "max" else min(finite)


def objective_key(objective: dict[str, Any]) -> str:
    if objective["metric"] == "pareto_auc" or objective.get("reduce", "final") == "final":
        return objective["metric"]
    return f"best/{objective['metric']}"


def _metric(record: EvalRecord, metric: str) -> float:
    values = record.metrics()
    if metric not in values:
        domains = ", ".join(sorted(record.ood_acc)) or "none"
        raise ValueError(f"objective metric {metric!r} is not measured by this run (OOD domains: {domains})")
    return float(values[metric])


def trial_metrics(records: list[EvalRecord], objectives: list[dict[str, Any]]) -> dict[str, Any]:
    """What a trial reports at an evaluation point: the record's metrics, its step, and the objectives."""
    last = records[-1]
    out: dict[str, Any] = dict(last.metrics())
    out.update(step=int(last.step), total_steps=int(last.total_steps), trainable_params=int(last.trainable_params),
               total_params=int(last.total_params))
    for objective in objectives:
        out[objective_key(objective)] = objective_value(records, objective)
    return out


def _claim_fault(armed_name: str, fired_name: str, run_id: str, step: int | None = None) -> dict | None:
    """The armed fault plan in $RFT_FAULT_DIR if it targets this run (and step): claimed once, atomically."""
    folder = os.environ.get(FAULT_DIR_ENV)
    if not folder:
        return None
    armed = Path(folder) / armed_name
    try:
        plan = json.loads(armed.read_text())
    except (OSError, ValueError):
        return None
    if str(plan.get("run_id_contains", "")) not in run_id:
        return None
    if step is not None and int(plan.get("step", -1)) != step:
        return None
    fired = Path(folder) / fired_name
    try:
        os.rename(armed, fired)  # atomic: one process wins, the fault fires once
    except OSError:
        return None
    fired.write_text(json.dumps({**plan, "run_id": run_id, "pid": os.getpid()}))
    return plan


def maybe_inject_fault(run_id: str, step: int) -> None:
    if _claim_fault(FAULT_FILE, FIRED_FILE, run_id, step) is not None:
        os.kill(os.getpid(), signal.SIGKILL)


def maybe_poison_loss(run_id: str) -> None:
    plan = _claim_fault(NAN_FAULT_FILE, NAN_FIRED_FILE, run_id)
    if plan is None:
        return
    import torch.nn.functional as functional

    import rft_ray.training.loop as trainer

    class PoisonedFunctional:
        """torch.nn.functional for the training loop, with cross_entropy NaN from the plan's step on."""

        calls = 0

        def __getattr__(self, name):
            return getattr(functional, name)

        def cross_entropy(self, *args, **kwargs):
            loss = functional.cross_entropy(*args, **kwargs)
            self.calls += 1
            return loss * float("nan") if self.calls >= int(plan["step"]) else loss

    trainer.F = PoisonedFunctional()


def _storage(uri: str):
    import pyarrow.fs as pafs

    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), uri


def mark_diverged(train_storage: str, run_id: str, reason: str) -> None:
    fs, base = _storage(train_storage)
    fs.create_dir(f"{base}/{run_id}", recursive=True)
    with fs.open_output_stream(f"{base}/{run_id}/{DIVERGED_FILE}") as out:
        out.write(json.dumps({"run_id": run_id, "reason": reason}).encode())


def diverged_reason(train_storage: str, run_id: str) -> str | None:
    import pyarrow.fs as pafs

    fs, base = _storage(train_storage)
    path = f"{base}/{run_id}/{DIVERGED_FILE}"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as handle:
        return json.loads(handle.read().decode())["reason"]


# ---------------------------------------------------------------------------------------------------
# The Ray Train worker


class TrialObserver:
    """Store first, then `ray.train.report` with the checkpoint; at the resume call, the store only."""

    def __init__(self, run_id: str, store, objectives: list[dict[str, Any]], rank: int, resuming: bool):
        self.run_id, self.store, self.objectives, self.rank = run_id, store, objectives, rank
        self.resume_call_pending = resuming

    def records_changed(self, records: list[EvalRecord], checkpoint_dir: Path | None) -> None:
        import ray.train

        if self.store is not None:
            self.store.write_run(self.run_id, records)
        if self.resume_call_pending:
            self.resume_call_pending = False
            if records and records[-1].step >= records[-1].total_steps:
                # The run had finished before the interruption: tell Tune its final result again (no new
                # checkpoint), in case the driver died before it heard of it.
                ray.train.report(self._metrics(records))
            return
        maybe_inject_fault(self.run_id, records[-1].step)
        checkpoint = None
        if checkpoint_dir is not None and self.rank == 0:
            checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir))
        ray.train.report(self._metrics(records), checkpoint=checkpoint)

    def _metrics(self, records: list[EvalRecord]) -> dict[str, Any]:
        import ray

        # The node that ran the point (Tune's node_ip is the driver's, and the same for every local node).
        return {**trial_metrics(records, self.objectives), "node_id": ray.get_runtime_context().get_node_id()}


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
    from rft_ray.training.loop import TrainingDiverged, train_loop

    context = ray.train.get_context()
    run_id = context.get_experiment_name()  # the Train run's name: <group>-<trial id>
    spec = trial_run_spec(config, run_id)
    rank = context.get_world_rank()
    _limit_threads()
    store = ResultStore(spec.output.results) if rank == 0 else None
    work = Path(tempfile.mkdtemp(prefix=f"rft-{run_id}-"))
    try:
        resume_from = None
        restored = ray.train.get_checkpoint()
        if restored is not None:
            resume_from = Path(restored.to_directory(str(work / "restored")))
        observer = TrialObserver(run_id, store, config["objectives"], rank,
                                 resuming=resume_from is not None)
        if diverged_reason(config["train_storage"], run_id) is not None:
            return  # diverged before: the driver reports the error
        maybe_poison_loss(run_id)
        try:
            train_loop(spec, observer, checkpoint_dir=work / "checkpoint", resume_from=resume_from, progress=False)
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
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=gpus > 0, resources_per_worker=per_worker),
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
