"""Data parallelism inside one run: the workers of a trial (`resources.workers_per_trial`, Ray Train's torch
process group: gloo on CPU, NCCL on GPUs) train one model with torch DDP.

Every worker builds the same seeded model and batch order; at step k each takes its contiguous share of the
global batch (`training.batch_size` split evenly) and DDP averages the gradients, so the update is the
gradient of the mean loss over the whole global batch, as one worker computes it: the same records, within
floating-point tolerance, whatever the number of workers. Rank 0 evaluates, checkpoints and writes; the
others receive its record, so every worker holds the same records (and reports the same metrics).

Without an initialised process group of more than one process (`rft run`, a one-worker trial) every method
here is the identity, and the loop runs exactly as before.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DataParallel:
    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> "DataParallel":
        """The torch process group this process is in (Ray Train's), or a single process."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def leads(self) -> bool:
        """Rank 0: the one that evaluates, checkpoints and writes."""
        return self.rank == 0

    def share(self, global_batch: int) -> tuple[int, int]:
        """(first position, size) of this worker's share of a global batch; the size must divide."""
        if global_batch % self.world:
            raise ValueError(f"the global batch of {global_batch} images does not divide over {self.world} workers "
                             "(training.batch_size, capped at the training split's size, and "
                             "resources.workers_per_trial)")
        size = global_batch // self.world
        return self.rank * size, size

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the training step calls: DDP over `model` (its trainable parameters as they are now: wrap
        again when a phase changes what trains), or `model` itself. Evaluation and checkpoints use `model`."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

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
