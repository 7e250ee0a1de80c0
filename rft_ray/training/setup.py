"""What a run builds before its first step: device and precision, data, model and strategy, the seeded
batch order and the training augmentation (the optimizer and schedule: `rft_ray.training.optim`)."""
from __future__ import annotations

import os
import queue
import random
import sys
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rft_ray.config import RunSpec, SpecError
from rft_ray.data import DataBundle, ImageSet, create_bundle
from rft_ray.models.backbones import ImageClassifier, create_classifier
from rft_ray.models.strategies import ParameterCount, count_parameters, create_strategy

# Decode the whole training split once when it fits in this many bytes; larger sets decode per batch.
TRAIN_CACHE_BYTES = 1 << 30


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise SpecError("device is 'cuda' but no GPU is visible to torch; use 'auto' or 'cpu'", "training.device")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def gpu_has_bf16(device: torch.device) -> bool:
    """bf16 arithmetic at speed: Ampere and newer (T4 and V100 emulate it, slowly, or not at all)."""
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def autocast_dtype(precision: str, device: torch.device, bf16_ok: bool | None = None) -> torch.dtype | None:
    """The training step's autocast dtype (None: fp32). `auto` is bf16 on a GPU that has it, fp32 elsewhere;
    an explicit bf16 on a CUDA GPU without it is an error. `bf16_ok` overrides the GPU's answer (tests)."""
    if device.type == "cuda" and precision in ("auto", "bf16"):
        ok = gpu_has_bf16(device) if bf16_ok is None else bf16_ok
        if ok:
            return torch.bfloat16
        if precision == "bf16":
            raise SpecError("bf16 was asked for, but this GPU has no bf16 support (e.g. T4, V100); use auto "
                            "(fp32 on such a GPU) or fp32", "training.precision")
        return None
    return torch.bfloat16 if precision == "bf16" else None


def check_pgd_precision(precision: str, device: torch.device, bf16_ok: bool | None = None) -> None:
    if precision == "bf16" and device.type == "cuda" and not (gpu_has_bf16(device) if bf16_ok is None else bf16_ok):
        raise SpecError("bf16 was asked for, but this GPU has no bf16 support; use auto, tf32 or fp32",
                        "evaluation.pgd.precision")


def resolve_image_size(spec: RunSpec) -> int:
    if spec.model.image_size:
        return spec.model.image_size
    import timm

    with torch.device("meta"):  # architecture only: no weights allocated or downloaded
        model = timm.create_model(spec.model.name, pretrained=False)
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    return int(size[0]) if size else int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])


def resolve_workers(choice: int | str) -> int:
    """DataLoader workers: the number given, or for auto the CPUs this run was given less one (Ray sets
    OMP_NUM_THREADS to a trial worker's CPUs; else the CPUs this process may run on)."""
    if choice != "auto":
        return int(choice)
    given = os.environ.get("OMP_NUM_THREADS", "")
    cpus = int(given) if given.isdigit() and int(given) > 0 else len(os.sched_getaffinity(0))
    return max(0, min(64, cpus - 1))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class BatchOrder:
    """Seeded, resumable batch order: epoch e is a permutation drawn from (seed, e)."""

    def __init__(self, size: int, batch_size: int, seed: int):
        self.size, self.seed = size, seed
        self.batch_size = min(batch_size, size)
        self.steps_per_epoch = max(1, size // self.batch_size)  # drop_last: every step sees a full batch

    def batches(self, start_step: int, share: tuple[int, int] | None = None):
        """The index lists of steps `start_step` on; with `share` (first, size), each step's slice of the global
        batch that one data-parallel worker trains on (`rft_ray.training.parallel`)."""
        epoch, offset = divmod(start_step, self.steps_per_epoch)
        first, size = share if share is not None else (0, self.batch_size)
        while True:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=generator)
            for i in range(offset, self.steps_per_epoch):
                start = i * self.batch_size + first
                yield order[start:start + size].tolist()
            epoch, offset = epoch + 1, 0


@dataclass
class Run:
    """Everything a run builds before its first step (shared by the loop and `rft strategies`-like tools)."""

    spec: RunSpec
    device: torch.device
    dtype: torch.dtype | None
    bundle: DataBundle
    model: ImageClassifier
    params: ParameterCount
    total_steps: int
    order: BatchOrder

    @classmethod
    def build(cls, spec: RunSpec) -> "Run":
        device = resolve_device(spec.training.device)
        dtype = autocast_dtype(spec.training.precision, device)
        check_pgd_precision(spec.evaluation.pgd.precision, device)
        if device.type == "cuda" and spec.training.precision == "auto" and dtype is None:
            print(f"rft: training in fp32: {torch.cuda.get_device_name(device)} has no bf16 (training.precision "
                  "auto uses bf16 autocast only on GPUs that have it)", file=sys.stderr, flush=True)
        seed_everything(spec.training.seed)
        bundle = create_bundle(spec.dataset, resolve_image_size(spec), cache=True)  # decoded once per node
        model = create_classifier(spec.model, bundle.num_classes, seed=spec.training.seed)
        model.class_names = list(bundle.class_names)
        create_strategy(spec.strategy.name, spec.strategy.options).apply(model)
        model.to(device)
        if spec.training.compile:
            model.compile()  # in place: the module (names, state dict) stays ours; its calls go through the compiled code
        order = BatchOrder(len(bundle.train), spec.training.batch_size, spec.training.seed)
        t = spec.training
        total = t.steps if t.steps is not None else max(1, int(round(t.epochs * order.steps_per_epoch)))
        return cls(spec, device, dtype, bundle, model, count_parameters(model), total, order)


def crop_flip(images: torch.Tensor, seed: int, share: tuple[int, int] | None = None) -> torch.Tensor:
    """Random crop with reflection padding of 1/8 of the size, and horizontal flip, seeded per step, on the
    images' own device (one gather; the offsets and flips are drawn on the CPU, so every device draws alike).
    With `share` (first, global batch size), `images` are that slice of a global batch: the draws are the
    global batch's, so each image is cropped alike whatever the number of workers. Returns float pixels in
    [0, 255]."""
    generator = torch.Generator().manual_seed(seed)
    n, _, size, _ = images.shape
    first, drawn = share if share is not None else (0, n)
    pad = max(1, size // 8)
    dx = torch.randint(0, 2 * pad + 1, (drawn,), generator=generator)[first:first + n]
    dy = torch.randint(0, 2 * pad + 1, (drawn,), generator=generator)[first:first + n]
    flip = (torch.rand(drawn, generator=generator) < 0.5)[first:first + n]
    padded = F.pad(images.float(), (pad, pad, pad, pad), mode="reflect")
    span = torch.arange(size)
    rows = dy[:, None] + span  # [n, size]
    cols = torch.where(flip[:, None], dx[:, None] + size - 1 - span, dx[:, None] + span)
    device = images.device
    batch = torch.arange(n, device=device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=device)[None, :, None, None]
    rows, cols = rows.to(device, non_blocking=True), cols.to(device, non_blocking=True)
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


class _BatchSampler:
    def __init__(self, order: BatchOrder, start_step: int, share: tuple[int, int] | None):
        self.order, self.start_step, self.share = order, start_step, share

    def __iter__(self):
        return self.order.batches(self.start_step, self.share)


class Prefetched:
    """The batches of `source`, each prepared in a background thread while the device works on the one
    before (gathered, and pinned when `pin`, so the copy to the GPU is asynchronous). Same batches, same order;
    an error in the thread is raised by the next `next()`. `close()` stops the thread."""

    def __init__(self, source, depth: int = 2, pin: bool = False):
        self.source, self.pin = source, pin
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._fill, name="rft-prefetch", daemon=True)
        self.thread.start()

    def _fill(self) -> None:
        try:
            for images, labels in self.source:
                if self.pin:
                    images, labels = images.pin_memory(), labels.pin_memory()
                while not self._offer((images, labels)):
                    if self.stopped.is_set():
                        return
        except BaseException as err:  # handed to the training thread, which raises it
            self._offer(err)

    def _offer(self, item) -> bool:
        try:
            self.queue.put(item, timeout=0.1)
            return True
        except queue.Full:
            return False

    def __iter__(self):
        return self

    def __next__(self):
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)


def train_batches(images: ImageSet, order: BatchOrder, start_step: int, num_workers: int,
                  device: torch.device = torch.device("cpu"), share: tuple[int, int] | None = None):
    """Endless (uint8 images, labels) batches in `order` (an iterator with `close()`; with `share`, this data-
    parallel worker's slice of each global batch: `BatchOrder.batches`); decodes the whole split
    once when it fits, else decodes per batch in `num_workers` DataLoader workers. For a GPU each batch is
    prepared ahead in a thread (gathered and pinned while the GPU works); on the CPU in the training thread
    itself, since a second thread's torch ops there take the cores from the step (measured: about half the
    step rate with libgomp's spinning thread teams, benchmarks/RESULTS.md)."""
    ahead = device.type == "cuda"
    if len(images) * 3 * images.size * images.size <= TRAIN_CACHE_BYTES:
        pixels, labels = images.materialize()
        batches = ((pixels[idx], labels[idx]) for idx in order.batches(start_step, share))
        return Prefetched(batches, pin=True) if ahead else batches
    loader = torch.utils.data.DataLoader(images, batch_sampler=_BatchSampler(order, start_step, share),
                                         num_workers=num_workers, pin_memory=ahead,
                                         prefetch_factor=2 if num_workers else None)
    # the loader pins; the thread overlaps decoding without workers too
    return Prefetched(iter(loader)) if ahead else (batch for batch in loader)
