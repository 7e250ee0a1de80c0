"""Evaluation sharded over a trial's data-parallel workers (`resources.workers_per_trial`).

Every worker draws the same seeded subsets; each evaluates one contiguous slice of every subset (the first
`n % world` workers one image more than the others), and the per-image verdicts are gathered in rank order,
so every worker ends with the verdicts of the whole subset, in the subset's order: the verdicts one process
computes, image for image. PGD's random start of an image depends only on its position in the attacked
subset (`pgd_robust`'s `first`), so a slice is attacked from the starts the whole subset gets. A subset with
fewer images than workers leaves some workers an empty slice: they wait at the gather.

Without an initialised process group of more than one process, `EvalShard()` is the whole subset and the
gather is the identity.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EvalShard:
    rank: int = 0
    world: int = 1

    def __post_init__(self):
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"an evaluation shard is a rank in [0, world) of world >= 1, got rank {self.rank} "
                             f"of {self.world}")

    def part(self, images: int) -> slice:
        """This worker's slice of a subset of `images` images (contiguous; the slices of all ranks, in rank
        order, are the whole subset once)."""
        return self._part_of(self.rank, images)

    def _size_of(self, rank: int, images: int) -> int:
        base, extra = divmod(images, self.world)
        return base + (rank < extra)

    def _part_of(self, rank: int, images: int) -> slice:
        base, extra = divmod(images, self.world)
        start = rank * base + min(rank, extra)
        return slice(start, start + self._size_of(rank, images))

    def gather(self, verdicts: torch.Tensor, images: int, device: torch.device = torch.device("cpu")) -> torch.Tensor:
        """The boolean verdicts of the whole subset of `images` images, from each worker's verdicts on its
        `part` (this worker's are `verdicts`), on the host. `device`: this worker's GPU, which an NCCL group
        sends through (gloo sends from the host)."""
        if self.world == 1:
            return verdicts
        import torch.distributed as dist

        mine = self._size_of(self.rank, images)
        if len(verdicts) != mine:
            raise ValueError(f"rank {self.rank} has {len(verdicts)} verdicts for its {mine} images of {images}")
        # all_gather moves one size from every worker (so padded), as uint8, and with NCCL only from the GPU
        width = -(-images // self.world) or 1
        via = device if dist.get_backend() == "nccl" else torch.device("cpu")
        padded = torch.zeros(width, dtype=torch.uint8, device=via)
        padded[:len(verdicts)] = verdicts.to(device=via, dtype=torch.uint8)
        pieces = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(pieces, padded)
        whole = [piece[:self._size_of(rank, images)] for rank, piece in enumerate(pieces)]
        return torch.cat(whole).bool().cpu()
