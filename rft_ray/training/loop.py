"""The one training loop. `rft run` calls it in-process; Ray Train workers call it unchanged.

Results leave the loop once per evaluation point, as the full list of `EvalRecord`s so far, through the
run's observers, in order (the result store first, then plugins, then Ray Tune on a worker; see
`rft_ray.training.plugins`). A checkpoint (written before any observer hears of the point, and holding
the records too) lets a run resume at the same step and produce the same subsequent records.

A strategy with several phases (LP-FT) switches what trains, and its optimizer and LR schedule, at each
phase's first step (`PhasedTraining`); the evaluation schedule starts again there.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rft_ray.config import RunSpec, TrainingSpec
from rft_ray.evaluation.evaluator import EvalSets, evaluate
from rft_ray.evaluation.schedule import EvalSchedule
from rft_ray.evaluation.sharding import EvalShard
from rft_ray.models.strategies import ParameterCount, count_parameters, create_strategy
from rft_ray.results.record import EvalRecord
from rft_ray.training.checkpoint import (
    checkpoint_state,
    load_checkpoint,
    save_checkpoint,
)
from rft_ray.training.plugins import RunContext, hooks
from rft_ray.training.optim import PhasedTraining
from rft_ray.training.parallel import DataParallel
from rft_ray.training.setup import Run, crop_flip, resolve_workers, train_batches


# Steps between reads of the loss on the host (besides evaluation points), where divergence is noticed.
FINITE_CHECK_EVERY = 100


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stops with the records it has."""


class LossTracker:
    """The training loss, kept on the device between reads: its running sum since the last evaluation point,
    and the first step (and value) at which it was not finite. Nothing here waits for the device."""

    def __init__(self, device: torch.device):
        self.total = torch.zeros((), device=device)
        self.count = 0
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_value = torch.zeros((), device=device)

    def add(self, loss: torch.Tensor, step: int) -> None:
        newly_bad = (self.bad_step < 0) & ~torch.isfinite(loss)
        self.bad_step.masked_fill_(newly_bad, step)
        self.bad_value = torch.where(newly_bad, loss.float(), self.bad_value)
        self.total += loss.float()
        self.count += 1

    def check(self, run: str, setting: str, kept: int, parallel: DataParallel = DataParallel()) -> None:
        """Raise TrainingDiverged naming the first step whose loss was not finite, if there was one (on any
        data-parallel worker: all of them raise together)."""
        bad_step, bad_value = parallel.first_bad(self.bad_step, self.bad_value)
        if bad_step >= 0:
            raise TrainingDiverged(f"{run}: loss became {bad_value} at step {bad_step} ({setting}); "
                                   f"the {kept} records before it are kept")

    def take_mean(self, parallel: DataParallel = DataParallel()) -> float:
        """The mean loss since the last call (one host read): over the global batch with several workers."""
        mean = parallel.mean(self.total).item() / max(1, self.count)
        self.total.zero_()
        self.count = 0
        return mean


class RunObserver(Protocol):
    def records_changed(self, records: list[EvalRecord], checkpoint_dir: Path | None) -> None: ...


def train_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, optimizer, scheduler,
               trainable: list[nn.Parameter], training: TrainingSpec, step: int, device: torch.device,
               dtype: torch.dtype | None, share: tuple[int, int] | None = None) -> torch.Tensor:
    """Optimizer step `step` (0-based) on one uint8 batch: augmentation, autocast forward, backward,
    clipping, AdamW and the schedule. Returns the loss (computed before the update). `rft estimate`
    times this same function. With data parallelism `model` is the DDP wrapper and `images` this worker's
    slice `share` (first, global size) of the global batch."""
    images = images.to(device, non_blocking=True)
    if training.augment == "crop_flip":  # on the device: one gather instead of a Python loop on the host
        images = crop_flip(images, seed=training.seed * 1_000_003 + step, share=share)
    images = images.float().div_(255.0)
    labels = labels.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        loss = F.cross_entropy(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if training.grad_clip is not None:
        nn.utils.clip_grad_norm_(trainable, training.grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach()


def _restore(state: dict, model: nn.Module, optimizer, scheduler, resume_from: Path) -> list[EvalRecord]:
    """Put a checkpoint's trainable weights, optimizer, scheduler and RNG state back; its records."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n in names if n not in state["trainable"]]
    if missing:
        raise RuntimeError(f"checkpoint in {resume_from} lacks parameters {missing[:3]}")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.copy_(state["trainable"][name])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return [EvalRecord.from_row(row) for row in state["records"]]


def _record(run: Run, params: ParameterCount, step: int, loss: float, metrics: dict, wall_seconds: float,
            eval_seconds: float) -> EvalRecord:
    spec, t = run.spec, run.spec.training
    examples = step * run.order.batch_size
    return EvalRecord(
        run_id=spec.run_id, strategy=spec.strategy.name, dataset=spec.dataset.title, model=spec.model.name,
        lr=t.lr, weight_decay=t.weight_decay, seed=t.seed, step=step, total_steps=run.total_steps,
        epoch=examples / len(run.bundle.train), examples_seen=examples, train_loss=loss,
        pgd_eps=spec.evaluation.pgd.eps, trainable_params=params.trainable, total_params=params.total,
        wall_seconds=wall_seconds, eval_seconds=eval_seconds, measured_at=time.time(), **metrics)


def train_loop(spec: RunSpec, observers: RunObserver | Sequence[RunObserver], checkpoint_dir: Path | None = None,
               resume_from: Path | None = None, progress: bool = False) -> list[EvalRecord]:
    """Fine-tune per `spec`, evaluating on the schedule; returns every record of the run.

    `observers` (one or a list, called in order) hear of every evaluation point through `records_changed`;
    any of them may instead or also have the hooks `on_run_start` and `on_step_start` (see
    `rft_ray.training.plugins`)."""
    # One function on purpose (as nanoGPT's train.py): the run's state (step, records, the progress bar) lives in
    # locals that the nested evaluation point updates, and the loop reads top to bottom in the order it runs.
    observers = list(observers) if isinstance(observers, (list, tuple)) else [observers]
    started = time.perf_counter()
    run = Run.build(spec)
    model, device, dtype, t = run.model, run.device, run.dtype, spec.training
    sets = EvalSets.from_bundle(run.bundle, spec)
    phases = PhasedTraining(model, create_strategy(spec.strategy.name, spec.strategy.options), t, run.total_steps)
    schedule = EvalSchedule.from_spec(spec.evaluation, restarts=phases.restarts)
    state = load_checkpoint(resume_from, spec) if resume_from else None
    phases.enter(state.get("phase", 0) if state is not None else 0)  # the phase the checkpoint was saved in
    params = count_parameters(model)  # what trains in the current phase
    parallel = DataParallel.current(t.sharding)  # a trial's data-parallel workers (Ray Train's process group), or one
    share = parallel.share(run.order.batch_size) if parallel.active else None
    global_share = (share[0], run.order.batch_size) if share is not None else None
    eval_shard = EvalShard(parallel.rank, parallel.world)  # each worker's part of every evaluation subset

    point_hooks = hooks(observers, "records_changed")
    verdict_hooks = hooks(observers, "verdicts_measured")  # per-image verdicts (rft_ray.results.verdicts)

    def publish(records: list[EvalRecord], saved: Path | None) -> None:
        for records_changed in point_hooks:
            records_changed(records, saved)

    step, records, elapsed_before = 0, [], 0.0
    if state is not None:
        records = _restore(state, model, phases.optimizer, phases.scheduler, resume_from)
        step, elapsed_before = state["step"], state["elapsed"]
        publish(records, None)
    # What the training step calls: DDP over the phase's trainable weights, or (fsdp) a sharded copy of the restored
    # model that the phase's optimizer now steps.
    stepped = parallel.wrap(model, phases)
    context = RunContext(spec, model, phases.optimizer, phases.scheduler, device, run.total_steps, run.bundle)

    def evaluation_point(loss: float) -> None:
        with parallel.whole(stepped, model, device):  # fsdp: the weights trained so far, gathered into `model`
            measure_point(loss)

    def measure_point(loss: float) -> None:
        record = None
        began = time.perf_counter()
        verdicts: dict = {}
        # Every worker measures its shard of every subset, and all gather the whole subsets' verdicts
        metrics = evaluate(model, sets, spec, device, dtype, bar, verdicts=verdicts, shard=eval_shard)
        if parallel.leads:  # rank 0 keeps the per-image verdicts and makes the record; every worker then holds it
            for verdicts_measured in verdict_hooks:  # before records_changed, which writes them beside the records
                verdicts_measured(step, verdicts, sets.subsets)
            elapsed = elapsed_before + time.perf_counter() - started
            record = _record(run, params, step, loss, metrics, elapsed, time.perf_counter() - began)
        records.append(parallel.from_leader(record))
        saved = None
        if checkpoint_dir is not None and t.checkpoint:
            optimizer_state = parallel.optimizer_state(phases.optimizer)  # fsdp: gathered, by every worker
            if parallel.leads:  # written once
                state = checkpoint_state(step, elapsed_before + time.perf_counter() - started, model,
                                         optimizer_state, phases.scheduler, records, spec, phases.index)
                saved = save_checkpoint(Path(checkpoint_dir), state).parent
        publish(records, saved)
        if bar is not None:
            bar.set_description_str(spec.run_id)
            bar.set_postfix(acc=f"{records[-1].test_clean_acc:.3f}", pgd=f"{records[-1].pgd_adv_acc:.3f}")

    for hook in hooks(observers, "on_run_start"):
        hook(context)
    step_hooks = hooks(observers, "on_step_start")
    bar = _progress(progress, run.total_steps, step, spec.run_id)
    if state is None:  # a fresh run measures step 0; a resumed one already has it among its records
        evaluation_point(float("nan"))
    model.train()
    losses = LossTracker(device)
    batches = train_batches(run.bundle.train, run.order, step, resolve_workers(t.num_workers), device, share)
    with contextlib.closing(batches):  # the batch thread stops with the run, whether it ends or raises
        while step < run.total_steps:
            if phases.begins(step):  # a new phase: what trains, a fresh optimizer and LR schedule
                with parallel.whole(stepped, model, device):  # fsdp: from the weights trained so far
                    phases.advance(step)
                    stepped = parallel.wrap(model, phases)  # DDP (or a sharded copy) over what trains now
                params = count_parameters(model)
                context.optimizer, context.scheduler = phases.optimizer, phases.scheduler
            for hook in step_hooks:
                hook(step + 1, context)
            images, labels = next(batches)
            loss = train_step(stepped, images, labels, phases.optimizer, phases.scheduler, phases.trainable, t, step,
                              device, dtype, global_share)
            step += 1
            losses.add(loss, step)
            if bar is not None:
                bar.update(1)
            point = schedule.is_point(step, run.total_steps)
            if point or step % FINITE_CHECK_EVERY == 0:  # the only reads of the loss: no host sync on other steps
                losses.check(f"run {spec.run_id}", f"lr {t.lr:g}", len(records), parallel)
            if point:
                evaluation_point(losses.take_mean(parallel))
    if bar is not None:
        bar.close()
    return records


def _progress(enabled: bool, total: int, initial: int, name: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=name, unit="step", dynamic_ncols=True)
