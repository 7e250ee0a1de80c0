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

Per GPU of a trial of N data-parallel workers (`resources.workers_per_trial`): each saves the activations of its
share of the batch (training.batch_size / N). With DDP each also holds the whole weights, gradients and AdamW
state, and DDP's all-reduce buckets, as large as the gradients (torch's DistributedDataParallel,
gradient_as_bucket_view off). With FSDP (`training.sharding: fsdp`) weights, gradients and AdamW state are
sharded, 1/N each; on top, the units FSDP2 gathers whole while they run: the root's own parameters (patch
embedding, tokens, norm, head: kept gathered through the step) and two transformer blocks' parameters and
gradients (the one computing and the one prefetched or being reduce-scattered).
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
    """One strategy's training step at the run's batch size, in GiB, per GPU of a trial of `workers` workers."""

    strategy: str
    batch: int  # the global batch (training.batch_size); each worker saves the activations of batch / workers
    weights: float
    gradients: float
    optimizer: float
    activations: float
    precision: str  # what the activations were counted in: fp32 or bf16 autocast
    workers: int = 1
    sharding: str = "ddp"
    buckets: float = 0.0  # DDP's all-reduce buckets
    gathered: float = 0.0  # FSDP's units gathered whole while they run

    @property
    def total(self) -> float:
        return (self.weights + self.gradients + self.optimizer + self.activations + self.buckets + self.gathered
                + CUDA_OVERHEAD_GIB)

    def parts(self) -> str:
        split = ""
        if self.workers > 1:
            held = ("weights, gradients and AdamW sharded" if self.sharding == "fsdp" else "each holding the model")
            split = f"per GPU of {self.workers} workers ({self.sharding}: {held}, batch {self.batch // self.workers} each): "
        extra = (f", DDP buckets {self.buckets:.2f}" if self.buckets else "") + \
                (f", FSDP gathered units {self.gathered:.2f}" if self.gathered else "")
        return (f"{split}weights {self.weights:.2f}, gradients {self.gradients:.2f}, AdamW {self.optimizer:.2f}, saved "
                f"activations {self.activations:.2f} ({self.precision}){extra}, CUDA {CUDA_OVERHEAD_GIB:.1f}")


@dataclass(frozen=True)
class ModelCounts:
    """What one strategy's model keeps for a training step, counted once on the CPU (bytes, or parameters)."""

    per_image: float  # saved activations per image
    fixed: float  # saved activations independent of the batch
    weights: int  # every parameter
    trainable: int  # trainable parameters (fp32 gradient and two AdamW moments each)
    block: int  # the largest transformer block's parameters (an FSDP unit)
    block_trainable: int  # its trainable parameters
    root: int  # parameters outside the blocks (FSDP's root unit)
    precision: str


def per_gpu(strategy: str, counts: ModelCounts, batch: int, workers: int = 1, sharding: str = "ddp") -> StepMemory:
    """The step's memory per GPU of `workers` data-parallel workers holding the model per `sharding` (module
    docstring): the arithmetic, apart from the counting."""
    grads, moments = counts.trainable * 4, counts.trainable * 4 * ADAMW_STATES
    activations = counts.per_image * batch / workers + counts.fixed
    fsdp = sharding == "fsdp" and workers > 1
    if fsdp:
        shares = (counts.weights / workers, grads / workers, moments / workers)
        buckets, gathered = 0.0, counts.root + 2 * (counts.block + counts.block_trainable * 4)
    else:
        shares = (counts.weights, grads, moments)
        buckets, gathered = (grads if workers > 1 else 0.0), 0.0
    return StepMemory(strategy, batch, *(share / GIB for share in shares), activations / GIB, counts.precision,
                      workers, sharding if workers > 1 else "ddp", buckets / GIB, gathered / GIB)


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


def step_memory(run: RunSpec, workers: int = 1) -> StepMemory:
    """The training step's memory of a run spec (its model, strategy, image size, batch, precision and
    sharding), per GPU of a trial of `workers` data-parallel workers."""
    key = json.dumps({"model": asdict(run.model), "strategy": asdict(run.strategy),
                      "precision": run.training.precision, "dataset": asdict(run.dataset)}, sort_keys=True, default=str)
    if key not in _COUNTED:  # one count per model, strategy and image size in a process
        _COUNTED[key] = _count(run)
    return per_gpu(run.strategy.name, _COUNTED[key], run.training.batch_size, workers, run.training.sharding)


_COUNTED: dict[str, ModelCounts] = {}


def _count(run: RunSpec) -> ModelCounts:
    from rft_ray.cost.calibrate import _model_for

    model, size, classes = _model_for(run, meta=False)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    blocks = list(getattr(getattr(model, "backbone", model), "blocks", None) or [])
    in_blocks = sum(p.numel() * p.element_size() for block in blocks for p in block.parameters())
    block = max(blocks, key=lambda b: sum(p.numel() for p in b.parameters()), default=None)
    block_params = list(block.parameters()) if block is not None else []
    bf16 = run.training.precision in ("auto", "bf16")
    one, two = (_saved_bytes(model, batch, size, classes, bf16) for batch in (1, 2))
    per_image = max(0, two - one)
    return ModelCounts(float(per_image), float(max(0, one - per_image)), weights, trainable,
                       sum(p.numel() * p.element_size() for p in block_params),
                       sum(p.numel() for p in block_params if p.requires_grad), weights - in_blocks,
                       "bf16 autocast" if bf16 else "fp32")


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
