"""The one training loop. `rft run` calls it in-process; Ray Train workers call it unchanged.

Results leave the loop once per evaluation point, as the full list of `EvalRecord`s so far, through the
run's observers, in order (the result store first, then plugins, then Ray Tune on a worker; see
`rft_ray.training.plugins`). A checkpoint (written before any observer hears of the point, and holding
the records too) lets a run resume at the same step and produce the same subsequent records.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rft_ray.config import RunSpec, TrainingSpec
from rft_ray.evaluation.evaluator import EvalSets, evaluate
from rft_ray.evaluation.schedule import EvalSchedule
from rft_ray.results.record import EvalRecord
from rft_ray.training.checkpoint import (
    checkpoint_state,
    load_checkpoint,
    save_checkpoint,
)
from rft_ray.training.plugins import RunContext, hooks
from rft_ray.training.setup import Run, cosine_with_warmup, crop_flip, train_batches


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stops with the records it has."""


class RunObserver(Protocol):
    def records_changed(self, records: list[EvalRecord], checkpoint_dir: Path | None) -> None: ...


def train_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, optimizer, scheduler,
               trainable: list[nn.Parameter], training: TrainingSpec, step: int, device: torch.device,
               dtype: torch.dtype | None) -> torch.Tensor:
    """Optimizer step `step` (0-based) on one uint8 batch: augmentation, autocast forward, backward,
    clipping, AdamW and the schedule. Returns the loss (computed before the update). `rft estimate`
    times this same function."""
    if training.augment == "crop_flip":
        images = crop_flip(images, seed=training.seed * 1_000_003 + step)
    images = images.to(device, non_blocking=True).float().div_(255.0)
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


def _record(run: Run, step: int, loss: float, metrics: dict, wall_seconds: float, eval_seconds: float) -> EvalRecord:
    spec, t = run.spec, run.spec.training
    examples = step * run.order.batch_size
    return EvalRecord(
        run_id=spec.run_id, strategy=spec.strategy.name, dataset=spec.dataset.title, model=spec.model.name,
        lr=t.lr, weight_decay=t.weight_decay, seed=t.seed, step=step, total_steps=run.total_steps,
        epoch=examples / len(run.bundle.train), examples_seen=examples, train_loss=loss,
        pgd_eps=spec.evaluation.pgd.eps, trainable_params=run.params.trainable, total_params=run.params.total,
        wall_seconds=wall_seconds, eval_seconds=eval_seconds, **metrics)


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
    schedule = EvalSchedule.from_spec(spec.evaluation)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=t.lr, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(run.total_steps, t.warmup_fraction))
    context = RunContext(spec, model, optimizer, scheduler, device, run.total_steps)

    point_hooks = hooks(observers, "records_changed")

    def publish(records: list[EvalRecord], saved: Path | None) -> None:
        for records_changed in point_hooks:
            records_changed(records, saved)

    step, records, elapsed_before = 0, [], 0.0
    state = load_checkpoint(resume_from, spec) if resume_from else None
    if state is not None:
        records = _restore(state, model, optimizer, scheduler, resume_from)
        step, elapsed_before = state["step"], state["elapsed"]
        publish(records, None)

    def evaluation_point(loss: float) -> None:
        began = time.perf_counter()
        metrics = evaluate(model, sets, spec, device, dtype, bar)
        elapsed = elapsed_before + time.perf_counter() - started
        records.append(_record(run, step, loss, metrics, elapsed, time.perf_counter() - began))
        saved = None
        if checkpoint_dir is not None and t.checkpoint:
            state = checkpoint_state(step, elapsed_before + time.perf_counter() - started, model, optimizer,
                                     scheduler, records, spec)
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
    loss_sum, loss_count = 0.0, 0
    batches = train_batches(run.bundle.train, run.order, step, t.num_workers)
    while step < run.total_steps:
        for hook in step_hooks:
            hook(step + 1, context)
        images, labels = next(batches)
        loss = train_step(model, images, labels, optimizer, scheduler, trainable, t, step, device, dtype)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"run {spec.run_id}: loss became {loss.item()} at step {step + 1} "
                                   f"(lr {t.lr:g}); the {len(records)} records before it are kept")
        step += 1
        loss_sum, loss_count = loss_sum + loss.item(), loss_count + 1
        if bar is not None:
            bar.update(1)
        if schedule.is_point(step, run.total_steps):
            evaluation_point(loss_sum / loss_count)
            loss_sum, loss_count = 0.0, 0
    if bar is not None:
        bar.close()
    return records


def _progress(enabled: bool, total: int, initial: int, name: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=name, unit="step", dynamic_ncols=True)
