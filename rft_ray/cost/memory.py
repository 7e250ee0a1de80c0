"""Whether a strategy's training step fits a GPU's memory: computed, not measured on a GPU.

A training step's peak GPU memory is, to first order, what it keeps across the step: the weights (fp32, all of
them), the gradients and AdamW's two moments of the trainable parameters (fp32), and the tensors autograd saves
for the backward pass. The saved tensors are counted exactly, on this machine's CPU, by running the strategy's
forward pass at batch 1 and 2 under `torch.autograd.graph.saved_tensors_hooks` (each storage once, the
parameters' own left out), so the per-image part and the fixed part follow; the batch's total is then
per-image x batch + fixed. On top: `CUDA_OVERHEAD_GIB` for the CUDA context, cuBLAS/cuDNN workspaces and the
caching allocator's slack, and a verdict with headroom (`TIGHT_FRACTION`): transient tensors of the backward
pass (e.g. an attention map's gradient) are not in the count.

With `training.precision` auto or bf16 the forward is counted under bf16 autocast (what a bf16 GPU runs); fp32
otherwise. A phased strategy (lp_ft) is counted as its last phase trains (every parameter): an upper bound.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from rft_ray.config import RunSpec

GIB = 2**30
CUDA_OVERHEAD_GIB = 1.0  # CUDA context and library workspaces, caching-allocator slack (typical, not measured here)
TIGHT_FRACTION = 0.9  # above this share of the GPU's memory: may not fit (transients are not counted)
ADAMW_STATES = 2  # exp_avg and exp_avg_sq, fp32, per trainable parameter
# GPUs by name: memory in GiB from the nominal GB (1e9 bytes) each is sold with; the card's driver reserves a little.
GPUS = {"t4": 16, "a10g": 24, "l4": 24, "a100-40gb": 40, "a100-80gb": 80, "h100": 80, "h200": 141}
GPU_GIB = {name: gb * 1e9 / GIB for name, gb in GPUS.items()}
DEFAULT_GPU = "a10g"  # cluster.yaml's GPU workers (g5.xlarge)


@dataclass(frozen=True)
class StepMemory:
    """One strategy's training step at the run's batch size, in GiB."""

    strategy: str
    batch: int
    weights: float
    gradients: float
    optimizer: float
    activations: float
    precision: str  # what the activations were counted in: fp32 or bf16 autocast

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + CUDA_OVERHEAD_GIB

    def parts(self) -> str:
        return (f"weights {self.weights:.2f}, gradients {self.gradients:.2f}, AdamW {self.optimizer:.2f}, saved "
                f"activations {self.activations:.2f} ({self.precision}), CUDA {CUDA_OVERHEAD_GIB:.1f}")


def gpu_memory_gib(gpu: str) -> tuple[str, float]:
    """(label, GiB) of a GPU given by name (`GPUS`) or as its memory in GiB; ValueError naming the choices."""
    key = gpu.strip().lower()
    if key in GPU_GIB:
        return key.upper() if len(key) <= 4 else key, GPU_GIB[key]
    try:
        gib = float(key.removesuffix("gib"))
    except ValueError:
        raise ValueError(f"unknown GPU {gpu!r}: give one of {', '.join(GPUS)} or its memory in GiB (e.g. 22)") from None
    if gib <= 0:
        raise ValueError(f"GPU memory must be positive, got {gpu!r}")
    return f"{gib:g} GiB GPU", gib


def verdict(need_gib: float, have_gib: float) -> str:
    """fits, tight (above TIGHT_FRACTION of it) or does not fit."""
    if need_gib > have_gib:
        return "does not fit"
    return "tight" if need_gib > TIGHT_FRACTION * have_gib else "fits"


def step_memory(run: RunSpec) -> StepMemory:
    """The training step's memory of a run spec (its model, strategy, image size, batch and precision)."""
    key = json.dumps({"model": asdict(run.model), "strategy": asdict(run.strategy),
                      "precision": run.training.precision, "dataset": asdict(run.dataset)}, sort_keys=True, default=str)
    if key not in _COUNTED:  # one count per model, strategy and image size in a process
        _COUNTED[key] = _count(run)
    per_image, fixed, weights, trainable, precision = _COUNTED[key]
    batch = run.training.batch_size
    return StepMemory(run.strategy.name, batch, weights / GIB, trainable * 4 / GIB, trainable * 4 * ADAMW_STATES / GIB,
                      (per_image * batch + fixed) / GIB, precision)


_COUNTED: dict[str, tuple[float, float, int, int, str]] = {}


def _count(run: RunSpec) -> tuple[float, float, int, int, str]:
    import torch

    from rft_ray.cost.calibrate import _model_for

    model, size, classes = _model_for(run, meta=False)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    bf16 = run.training.precision in ("auto", "bf16")
    one, two = (_saved_bytes(model, batch, size, classes, bf16) for batch in (1, 2))
    per_image = max(0, two - one)
    return float(per_image), float(max(0, one - per_image)), weights, trainable, "bf16 autocast" if bf16 else "fp32"


def _saved_bytes(model, batch: int, size: int, classes: int, bf16: bool) -> int:
    """Bytes of the tensors autograd saves for the backward pass of one forward at `batch` (each storage once)."""
    import contextlib

    import torch
    import torch.nn.functional as F

    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=generator)
    labels = torch.randint(0, classes, (batch,), generator=generator)
    model.train()
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), cast:
        loss = F.cross_entropy(model(images), labels)
    del loss
    return sum(saved.values())
