"""Per-image costs of a spec's model and strategy: timed on this machine by running the engine's own steps
(remembered per machine in the data cache folder), or from the model's FLOPs counted on the meta device and
a target accelerator's sustained FLOP/s."""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rft_ray.config import RunSpec
from rft_ray.results.files import atomic_write

DEFAULT_TRIAL_OVERHEAD_S = 27.0  # one trial's Ray Tune + Train start-up and tear-down, measured on 2 CPU cores
# In the cache key: 3 takes the median of 5 repeats after 2 warm-ups and refuses disagreeing repeats; 2 took 3
# repeats after 1 warm-up (on a busy machine, costs 65x apart); 1 timed a simplified copy of the step.
CALIBRATION_METHOD = 3
REPEATS, WARMUPS = 5, 2
MAX_SPREAD = 2.0  # slowest / fastest timed repeat of one step beyond which a calibration is refused
_SCHEDULE_STEPS = 1_000  # the learning-rate schedule's horizon while calibrating: only its per-step cost matters


@dataclass
class Costs:
    train_s_per_image: float  # one training step (forward, backward, optimizer update) per image
    eval_s_per_image: float  # one clean forward, inference mode, per image
    pgd_s_per_iteration_image: float  # one PGD iteration (forward + gradient to the input) per image
    trial_overhead_s: float = DEFAULT_TRIAL_OVERHEAD_S
    source: str = ""


def _fingerprint_machine() -> dict[str, Any]:
    import torch

    return {"host": platform.node(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def describe_machine(threads: int | None = None) -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()})"
    return (f"{device}, {os.cpu_count()} cores, torch {torch.__version__} with "
            f"{threads or torch.get_num_threads()} threads")


def _model_for(run: RunSpec, meta: bool):
    import torch

    from rft_ray.models.backbones import create_classifier
    from rft_ray.models.strategies import create_strategy
    from rft_ray.training.setup import resolve_image_size

    size = resolve_image_size(run)
    model_spec = dataclasses.replace(run.model, source="random", weights=None)
    classes = 10
    strategy = create_strategy(run.strategy.name, run.strategy.options)
    if meta:
        with torch.device("meta"):  # shapes only: nothing allocated, nothing downloaded
            model = create_classifier(model_spec, classes)
            strategy.apply(model)
    else:
        model = create_classifier(model_spec, classes, seed=0)
        strategy.apply(model)
    # A strategy with phases (lp_ft) is costed as its last phase trains (for lp_ft every parameter): an upper
    # bound, since its probing phase backpropagates into the head only.
    strategy.enter_phase(model, len(strategy.phase_names) - 1)
    return model, size, classes


# ---------------------------------------------------------------------------------------------------
# FLOPs


def count_flops(run: RunSpec) -> dict[str, float]:
    """FLOPs per image of a training step, a clean forward and a PGD iteration (meta device: no compute)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    model, size, _ = _model_for(run, meta=True)
    x = torch.empty(1, 3, size, size, device="meta")
    y = torch.zeros(1, dtype=torch.long, device="meta")
    out = {}
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    out["eval"] = counter.get_total_flops()
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(x), y).backward()
    out["train"] = counter.get_total_flops() * 1.0  # the optimizer update is negligible next to these
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    x.requires_grad_(True)
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(x), y, reduction="sum").backward()
    out["pgd"] = counter.get_total_flops()
    return out


def costs_from_flops(run: RunSpec, tflops: float, overhead: float, device: str) -> Costs:
    flops = count_flops(run)
    rate = tflops * 1e12
    return Costs(flops["train"] / rate, flops["eval"] / rate, flops["pgd"] / rate, overhead,
                 f"{device or 'target accelerator'} at an assumed sustained {tflops:g} TFLOP/s (FLOPs counted)")


# ---------------------------------------------------------------------------------------------------
# Timing the engine's steps


def _engine_steps(run: RunSpec, model, device) -> tuple[Callable, Callable, Callable]:
    """(train, clean, pgd): each runs the engine's own operation on a batch (images, labels).

    train: `train_step` on uint8 images on the host, as the loop feeds them (augmentation, autocast,
    clipping, AdamW and the schedule per the run's training section); clean: `clean_correct` on uint8
    images with the evaluator's autocast; pgd: one `pgd_iteration` on float images already on the device, in the
    spec's PGD arithmetic.
    """

    from rft_ray.evaluation.robustness import clean_correct, pgd_arithmetic, pgd_iteration
    from rft_ray.training.loop import train_step
    from rft_ray.training.optim import build_optimizer
    from rft_ray.training.setup import autocast_dtype

    t = run.training
    dtype = autocast_dtype(t.precision, device)
    optimizer, scheduler, trainable = build_optimizer(model, t, _SCHEDULE_STEPS)
    step = itertools.count()

    def train(images, labels):
        model.train()
        train_step(model, images, labels, optimizer, scheduler, trainable, t, next(step), device, dtype)

    def clean(images, labels):
        model.eval()
        clean_correct(model, images, labels, len(images), device, dtype)

    def pgd(images, labels):
        model.eval()
        with pgd_arithmetic(run.evaluation.pgd.precision, device) as pgd_dtype:
            pgd_iteration(model, images, labels, dtype=pgd_dtype)

    return train, clean, pgd


class CalibrationError(ValueError):
    """Timed repeats of one step that disagree too much to be its cost (a busy machine): no estimate from them."""


@dataclass(frozen=True)
class Timing:
    """The timed repeats of one step, seconds per image."""

    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        ordered = sorted(self.seconds)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2

    @property
    def spread(self) -> float:
        """Slowest over fastest repeat (1: all alike)."""
        return max(self.seconds) / min(self.seconds) if min(self.seconds) > 0 else float("inf")


def time_per_image(fn: Callable, batch: tuple, device, repeats: int = REPEATS, warmups: int = WARMUPS,
                   clock: Callable[[], float] = time.perf_counter) -> Timing:
    """`fn(*batch)` run `warmups` times untimed (allocation, kernel selection, caches), then `repeats` times, each
    timed by `clock` (waiting for the GPU), per image of the batch."""
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmups):
        fn(*batch)
    seconds = []
    for _ in range(repeats):
        sync()
        began = clock()
        fn(*batch)
        sync()
        seconds.append((clock() - began) / len(batch[0]))
    return Timing(tuple(seconds))


def checked_costs(timings: dict[str, Timing], machine: str, repeats: int, warmups: int) -> Costs:
    """Costs from the medians of the train, clean and PGD timings; CalibrationError when the repeats of one step
    disagree by more than MAX_SPREAD, naming them."""
    for step, timing in timings.items():
        if timing.spread > MAX_SPREAD:
            shown = ", ".join(f"{s:.3g}" for s in timing.seconds)
            raise CalibrationError(
                f"calibration refused: {repeats} timed {step} steps took {shown} s per image, {timing.spread:.1f}x "
                f"apart (more than {MAX_SPREAD:g}x): this machine is too busy for a cost to be measured. Rerun with "
                "--recalibrate when it is quieter, or give the costs (--train-s-per-image, --eval-s-per-image, "
                "--pgd-s-per-iteration-image, or a costs: section)")
    spread = ", ".join(f"{step} {timing.spread:.2f}x" for step, timing in timings.items())
    return Costs(timings["train"].median, timings["clean"].median, timings["pgd"].median, DEFAULT_TRIAL_OVERHEAD_S,
                 f"calibrated on this machine: {machine}; the median of {repeats} timed repeats after {warmups} "
                 f"warm-ups, slowest/fastest {spread}")


def calibrate(run: RunSpec, threads: int | None = None, repeats: int = REPEATS, max_batch: int = 32,
              budget_s: float = 20.0, warmups: int = WARMUPS, clock: Callable[[], float] = time.perf_counter) -> Costs:
    """Time the spec's model and strategy on this machine through the engine's own steps: a few training
    steps, clean forwards and PGD iterations (see `_engine_steps`).

    Batches are capped at `max_batch` (per-image cost on a CPU hardly depends on the batch); each of the three
    measurements takes the median of `repeats` runs timed by `clock` after `warmups` untimed ones, and is refused
    when its repeats disagree by more than MAX_SPREAD (`checked_costs`).
    """
    import torch

    from rft_ray.training.setup import resolve_device

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        device = resolve_device(run.training.device)
        model, size, classes = _model_for(run, meta=False)
        model.to(device)
        train, clean, pgd = _engine_steps(run, model, device)
        generator = torch.Generator().manual_seed(0)

        def batch(n: int):  # uint8 pixels and labels on the host, as the loop and the evaluator hold them
            images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)
            return images, torch.randint(0, classes, (n,), generator=generator)

        def on_device(images, labels):  # PGD iterates on float images already on the device
            return images.to(device).float().div_(255.0), labels.to(device)

        def timed(fn, images):
            return time_per_image(fn, images, device, repeats, warmups, clock)

        # Small probe first, so that a big model on a CPU does not take minutes.
        probe = timed(train, batch(2)).median  # seconds per image: it sizes the batches to the budget
        n_train = max(2, min(max_batch, run.training.batch_size,
                             int(budget_s / max(probe, 1e-6) / (repeats + warmups) / 3)))
        n_eval = max(2, min(2 * max_batch, run.evaluation.batch_size, 2 * n_train))
        timings = {"train": timed(train, batch(n_train)), "clean": timed(clean, batch(n_eval)),
                   "pgd": timed(pgd, on_device(*batch(n_eval)))}
        return checked_costs(timings, describe_machine(threads), repeats, warmups)
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------------
# The calibration cache


def _calibration_key(run: RunSpec, threads: int | None) -> str:
    t = run.training
    decisive = {"machine": _fingerprint_machine(), "threads": threads, "model": dataclasses.asdict(run.model),
                "strategy": dataclasses.asdict(run.strategy), "batch": t.batch_size,
                "eval_batch": run.evaluation.batch_size, "device": t.device, "method": CALIBRATION_METHOD,
                "step": {"precision": t.precision, "augment": t.augment, "grad_clip": t.grad_clip}}
    return hashlib.sha256(json.dumps(decisive, sort_keys=True, default=str).encode()).hexdigest()[:20]


def calibration_file() -> Path:
    from rft_ray.data.cache import cache_root

    return cache_root() / "calibration.json"


def _known() -> dict[str, Any]:
    try:
        return json.loads(calibration_file().read_text())
    except (OSError, ValueError):
        return {}


def calibrated(run: RunSpec, threads: int | None, recalibrate: bool = False, log=None) -> Costs:
    """`calibrate`, remembered per machine, model, strategy, batch sizes and training-step settings."""
    key = _calibration_key(run, threads)
    known = _known()
    if not recalibrate and key in known:
        return Costs(**known[key])
    if log:
        log(f"calibrating {run.model.name} / {run.strategy.name} on this machine ...")
    costs = calibrate(run, threads)
    known = _known()  # another estimate may have added entries meanwhile
    known[key] = dataclasses.asdict(costs)
    path = calibration_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(known, indent=1))
    return costs
