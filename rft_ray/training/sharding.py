"""FSDP (`training.sharding: fsdp`): a trial's workers train a sharded copy of the model.

torch's FSDP2 (`torch.distributed.fsdp.fully_shard`) is applied to a copy of the run's model, each transformer
block as one unit and then the root (the rest: patch embedding, tokens, final norm, head). Every parameter of the
copy becomes a DTensor sharded on its first dimension over the workers; a unit's parameters are all-gathered just
before it runs and freed after it (the root's are kept until the backward pass), its gradients are
reduce-scattered (averaged over the workers, as DDP's all-reduce does) and AdamW updates each worker's shard
only. The same update as DDP, so the same loss trajectory within floating-point tolerance.

The loop's own `model` stays unsharded: it is what evaluation, checkpoints, kept weights and the strategy's phases
see. At each evaluation point, and before a phase changes what trains, it receives the trained weights, gathered
whole on every worker (`torch.distributed.checkpoint.state_dict.get_model_state_dict`, full_state_dict); between
them a GPU run parks it in host memory, so that a GPU holds only its shards while it trains. The AdamW state is
checkpointed whole, in the layout of an unsharded AdamW (each shard gathered), and sharded again on resume: a
checkpoint crosses between fsdp, ddp and a single process.
"""
from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a timm ViT classifier (`backbone.blocks`): FSDP's units."""
    backbone = getattr(model, "backbone", model)
    blocks = getattr(backbone, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or len(blocks) == 0:
        raise ValueError(f"training.sharding fsdp shards a model block by block, but {type(backbone).__name__} has "
                         "no transformer blocks (timm's .blocks); use training.sharding ddp for this model")
    return list(blocks)


def shard_copy(model: nn.Module, world: int) -> nn.Module:
    """A copy of `model` (left as it is) sharded over the `world` workers of the default process group: FSDP2 on
    each transformer block, then on the root. What trains (requires_grad) is copied as it is."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    device = next(model.parameters()).device
    mesh = init_device_mesh(device.type, (world,))
    sharded = copy.deepcopy(model)
    for block in transformer_blocks(sharded):
        fully_shard(block, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    return sharded.train()


def shard_optimizer_state(state: dict, optimizer: torch.optim.Optimizer) -> dict:
    """An unsharded AdamW's `state_dict()` made fit for `optimizer`, an AdamW over the sharded copy's parameters
    in the same order: each state tensor of a parameter's shape becomes this worker's shard of it (no
    communication: every worker holds the whole state)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    placed = {}
    for index, values in state["state"].items():
        param = params[int(index)]
        placed[index] = {
            key: distribute_tensor(value.to(param.device), param.device_mesh, param.placements, src_data_rank=None)
            if isinstance(param, DTensor) and isinstance(value, torch.Tensor) and value.shape == param.shape else value
            for key, value in values.items()}
    return {"state": placed, "param_groups": state["param_groups"]}


def whole_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The `state_dict()` an unsharded AdamW would have, on the host: every sharded state tensor gathered (a
    collective: every worker calls it, in the same order)."""
    from torch.distributed.tensor import DTensor

    state = optimizer.state_dict()
    gathered = {index: {key: value.full_tensor().cpu() if isinstance(value, DTensor) else value
                        for key, value in values.items()} for index, values in state["state"].items()}
    return {"state": gathered, "param_groups": state["param_groups"]}


def park(model: nn.Module) -> None:
    """Keep the unsharded model in host memory between evaluation points (a no-op on the CPU)."""
    model.to("cpu")


@contextlib.contextmanager
def gathered(sharded: nn.Module, model: nn.Module, device: torch.device):
    """`model` holds the sharded copy's trained weights, on `device`, inside the block; parked after it. Every
    worker enters (the gather is a collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    weights = get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True))
    model.load_state_dict(weights)  # every name checked: the copy has the model's names
    del weights
    model.to(device)
    try:
        yield
    finally:
        park(model)
