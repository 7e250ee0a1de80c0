"""Data parallelism inside one run: the workers of a trial (`resources.workers_per_trial`, Ray Train's torch
process group: gloo on CPU, NCCL on GPUs) train one model with torch DDP.

Every worker builds the same seeded model and batch order; at step k each takes its contiguous share of the
global batch (`training.batch_size` split evenly) and DDP averages the gradients, so the update is the
gradient of the mean loss over the whole global batch, as one worker computes it: the same records, within
floating-point tolerance, whatever the number of workers. Every worker evaluates its slice of each evaluation
subset (`rft_ray.evaluation.sharding`); rank 0 makes the record, checkpoints and writes; the others receive its
record, so every worker holds the same records (and reports the same metrics).

With `training.sharding: fsdp` the workers train a sharded copy of the model instead (`rft_ray.training.sharding`);
the loop's model is refreshed from it at evaluation points (`whole`) and checkpoints hold the whole AdamW state
(`optimizer_state`), as with DDP.

Without an initialised process group of more than one process (`rft run`, a one-worker trial) every method
here is the identity, and the loop runs exactly as before.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DataParallel:
    rank: int = 0
    world: int = 1
    sharding: str = "ddp"  # training.sharding: ddp or fsdp

    @classmethod
    def current(cls, sharding: str = "ddp") -> "DataParallel":
        """The torch process group this process is in (Ray Train's), or a single process."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return cls(dist.get_rank(), dist.get_world_size(), sharding)
        return cls()

    @property
    def sharded(self) -> bool:
        return self.active and self.sharding == "fsdp"

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def leads(self) -> bool:
        """Rank 0: the one that makes the record, checkpoints and writes."""
        return self.rank == 0

    def share(self, global_batch: int) -> tuple[int, int]:
        """(first position, size) of this worker's share of a global batch; the size must divide."""
        if global_batch % self.world:
            raise ValueError(f"the global batch of {global_batch} images does not divide over {self.world} workers "
                             "(training.batch_size, capped at the training split's size, and "
                             "resources.workers_per_trial)")
        size = global_batch // self.world
        return self.rank * size, size

    def wrap(self, model: nn.Module, phases=None) -> nn.Module:
        """The module the training step calls: DDP over `model` (its trainable parameters as they are now: wrap
        again when a phase changes what trains), or `model` itself. Evaluation and checkpoints use `model`.

        fsdp: a sharded copy of `model`; `phases` (`PhasedTraining`) then steps the copy's parameters, its AdamW
        state and schedule carried over (a restored run's included), and `model` is parked in host memory."""
        if not self.active:
            return model
        if self.sharded:
            from rft_ray.training.sharding import park, shard_copy, shard_optimizer_state

            stepped = shard_copy(model, self.world)
            phases.step_other(stepped, shard_optimizer_state)
            park(model)
            return stepped
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    def whole(self, stepped: nn.Module, model: nn.Module, device: torch.device):
        """A block in which `model` holds the weights trained so far (fsdp: gathered from `stepped` on every
        worker, which all enter it; on `device`, parked after); otherwise `model` already does."""
        if not self.sharded:
            return contextlib.nullcontext()
        from rft_ray.training.sharding import gathered

        return gathered(stepped, model, device)

    def optimizer_state(self, optimizer) -> dict:
        """The optimizer's `state_dict()` as an unsharded AdamW has it (fsdp: gathered, a collective)."""
        if not self.sharded:
            return optimizer.state_dict()
        from rft_ray.training.sharding import whole_optimizer_state

        return whole_optimizer_state(optimizer)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a scalar over the workers (each worker's mean loss: the global batch's mean loss)."""
        if not self.active:
            return value
        import torch.distributed as dist

        total = value.detach().clone().float()
        dist.all_reduce(total)
        return total / self.world

    def first_bad(self, bad_step: torch.Tensor, bad_value: torch.Tensor) -> tuple[int, float]:
        """(the first step whose loss was not finite on any worker, or -1; that loss), read on the host: every
        worker gets the same answer, so all stop together."""
        if not self.active:
            return int(bad_step), float(bad_value)
        import torch.distributed as dist

        never = torch.iinfo(torch.long).max
        step = torch.where(bad_step < 0, torch.full_like(bad_step, never), bad_step)
        dist.all_reduce(step, op=dist.ReduceOp.MIN)
        if int(step) == never:
            return -1, float("nan")
        value = torch.where(bad_step == step, bad_value.float(), torch.zeros_like(bad_value, dtype=torch.float))
        dist.all_reduce(value)  # the losses of the workers that went bad at that step (NaN or inf)
        return int(step), float(value)

    def from_leader(self, item):
        """Rank 0's `item`, on every worker (any picklable object)."""
        if not self.active:
            return item
        import torch.distributed as dist

        box = [item if self.leads else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]
