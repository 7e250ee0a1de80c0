"""Modules strategies insert: LoRA on timm's fused qkv, separate q/k/v projections, Houlsby adapters,
Compacter PHM adapters; and how those that can be are folded back into timm's layers (`Strategy.merge`)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rft_ray.models.strategies.base import copy_linear

QKV_PARTS = ("q", "k", "v")


class FusedQKVLora(nn.Module):
    """LoRA on q, k and/or v of timm's fused `qkv` Linear (d -> 3d), without splitting it.

    The same function and parameter count as a peft LoRA layer on each selected part, but in one matmul
    pair: every selected part's A stacked in `lora_A` [n*r, d], the B's in `lora_B` [n, d, r] applied
    block-diagonally, the update (scaled by alpha / r) added to that part's d outputs (q first, k, v).
    The frozen base keeps its names (`weight`, `bias`), so the block's state dict keys are timm's.
    """

    def __init__(self, fused: nn.Linear, parts: list[str], r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if fused.out_features % 3 or not parts or any(p not in QKV_PARTS for p in parts):
            raise ValueError(f"need a d -> 3d Linear and parts among q, k, v; got {fused} and {parts}")
        self.parts = [p for p in QKV_PARTS if p in parts]  # in the fused layer's order
        self.in_features, self.out_features = fused.in_features, fused.out_features
        self.dim, self.r, self.scaling = fused.out_features // 3, r, alpha / r
        self.weight, self.bias = fused.weight, fused.bias  # the same (frozen) Parameters, same names
        n, kw = len(self.parts), dict(device=fused.weight.device, dtype=fused.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(n * r, self.in_features, **kw))
        self.lora_B = nn.Parameter(torch.empty(n, self.dim, r, **kw))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.register_buffer("_slots", torch.tensor([QKV_PARTS.index(p) for p in self.parts],
                                                    device=fused.weight.device), persistent=False)
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        # peft's init_lora_weights=True: A as nn.Linear's default (fan_in = d for each r rows, so stacking
        # them changes nothing), B zero, so the layer starts as the base.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        n, r = len(self.parts), self.r
        if isinstance(self.lora_dropout, nn.Dropout) and self.training:
            # peft drops each adapted layer's input independently: one mask per part.
            dropped = self.lora_dropout(x.unsqueeze(-2).expand(*x.shape[:-1], n, x.shape[-1]))
            low = torch.einsum("...nd,nrd->...nr", dropped, self.lora_A.view(n, r, -1))
        else:
            low = F.linear(x, self.lora_A).unflatten(-1, (n, r))  # [..., n, r]: all A's in one matmul
        update = torch.einsum("...nr,ndr->...nd", low, self.lora_B) * self.scaling  # [..., n, d]
        if n == 3:
            return out + update.flatten(-2)
        return out.unflatten(-1, (3, self.dim)).index_add(-2, self._slots, update.to(out.dtype)).flatten(-2)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, parts={','.join(self.parts)}, "
                f"r={self.r}, scaling={self.scaling:g}")


def merged_qkv(layer: FusedQKVLora) -> nn.Linear:
    """timm's fused qkv Linear with each part's update scaling * B @ A added to its weight rows."""
    n, r = len(layer.parts), layer.r
    fused = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                      device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        delta = torch.einsum("ndr,nri->ndi", layer.lora_B, layer.lora_A.view(n, r, -1)) * layer.scaling
        weight = layer.weight.detach().clone().view(3, layer.dim, layer.in_features)
        weight[layer._slots] += delta.to(weight.dtype)
        fused.weight.copy_(weight.view(layer.out_features, layer.in_features))
        if layer.bias is not None:
            fused.bias.copy_(layer.bias)
    return fused


def lora_on_fused_qkv(blocks, parts: list[str], r: int, alpha: float, dropout: float) -> None:
    for _, block in blocks:
        block.attn.qkv = FusedQKVLora(block.attn.qkv, parts, r, alpha, dropout)


class SplitQKV(nn.Module):
    """timm's fused `qkv` Linear as three Linears `q`, `k`, `v`, so LoRA and (IA)^3 can target each.

    Outputs are the fused layer's, concatenated in the same order.
    """

    def __init__(self, fused: nn.Linear):
        super().__init__()
        dim = fused.out_features // 3
        self.q = copy_linear(fused, slice(0, dim))
        self.k = copy_linear(fused, slice(dim, 2 * dim))
        self.v = copy_linear(fused, slice(2 * dim, 3 * dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)


def fused_qkv(split: SplitQKV) -> nn.Linear:
    """The three projections as timm's one fused Linear again (the inverse of SplitQKV)."""
    parts = (split.q, split.k, split.v)
    fused = nn.Linear(parts[0].in_features, 3 * parts[0].out_features, bias=parts[0].bias is not None,
                      device=parts[0].weight.device, dtype=parts[0].weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([p.weight for p in parts]))
        if fused.bias is not None:
            fused.bias.copy_(torch.cat([p.bias for p in parts]))
    return fused


def unload_peft(model: nn.Module) -> None:
    """Merge every peft layer (LoRA, (IA)^3) into its base layer, with peft's own `merge`, and put the base layer
    back in its place."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())


def split_qkv(blocks) -> None:
    for _, block in blocks:
        if not isinstance(block.attn.qkv, SplitQKV):
            block.attn.qkv = SplitQKV(block.attn.qkv)


# AdapterHub's initialisation (`init: adapterhub`), as the paper's code gets it from adapters v1.2.0
# (src/adapters/methods/modeling.py; lines in docs/fidelity.md): the bottleneck adapter's "bert" init draws every
# Linear weight from N(0, 0.02) with zero bias; Compacter's PHM layers are no Linear, so "bert" leaves them to
# their own init: shared rules N(0, phm_init_range = 1e-4), each factor slice glorot-normal, bias zero.
ADAPTERHUB_STD = 0.02
ADAPTERHUB_PHM_RULE_STD = 1e-4


class BottleneckAdapter(nn.Module):
    """Houlsby adapter: x + up(act(down(x))). `init` identity: `up` starts at zero, so the block is unchanged at
    step 0; adapterhub: both projections N(0, 0.02), so it is not."""

    def __init__(self, dim: int, bottleneck: int, activation: type[nn.Module] = nn.GELU, init: str = "identity"):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = activation()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.normal_(self.down.weight, std=ADAPTERHUB_STD if init == "adapterhub" else 1e-2)
        nn.init.zeros_(self.down.bias)
        if init == "adapterhub":
            nn.init.normal_(self.up.weight, std=ADAPTERHUB_STD)
        else:
            nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x)))


class PHMRules(nn.Module):
    """The n rule matrices A_i (n x n) that every PHM layer shares (Compacter's shared 'slow' weights)."""

    def __init__(self, phm_dim: int, init: str = "identity"):
        super().__init__()
        rules = torch.randn(phm_dim, phm_dim, phm_dim)
        self.rules = nn.Parameter(rules * ADAPTERHUB_PHM_RULE_STD if init == "adapterhub"
                                  else rules / math.sqrt(phm_dim))


class PHMLinear(nn.Module):
    """Parameterised hypercomplex Linear: W = sum_i A_i kron (s_i t_i^T), rank-1 factorised B_i.

    `rules` is shared and deliberately not registered here (it belongs to the model once), so each
    layer owns only its factors and bias. `init` identity with `zero_init` makes W start at zero (the adapter's
    up-projection); adapterhub draws every factor slice glorot-normal, as AdapterHub's `init_W` does.
    """

    def __init__(self, in_features: int, out_features: int, rules: PHMRules, zero_init: bool = False,
                 init: str = "identity"):
        super().__init__()
        n = rules.rules.shape[0]
        if in_features % n or out_features % n:
            raise ValueError(f"PHM layer {in_features}->{out_features} needs both sizes divisible by phm_dim={n}")
        object.__setattr__(self, "_rules", rules)  # shared, not a submodule of this layer
        if init == "adapterhub":
            self.left = nn.Parameter(_glorot_slices(n, in_features // n, 1))
            self.right = nn.Parameter(_glorot_slices(n, 1, out_features // n))
        else:
            scale = (1.0 / (in_features * n)) ** 0.25
            self.left = nn.Parameter(torch.randn(n, in_features // n, 1) * scale)
            self.right = nn.Parameter(torch.zeros(n, 1, out_features // n) if zero_init
                                      else torch.randn(n, 1, out_features // n) * scale)
        self.bias = nn.Parameter(torch.zeros(out_features))

    def weight(self) -> torch.Tensor:
        factors = self.left @ self.right  # [n, in/n, out/n]
        rules = self._rules.rules  # [n, n, n]
        # sum_i kron(A_i, B_i) -> [n*in/n, n*out/n]
        kron = torch.einsum("iab,icd->acbd", rules, factors)
        n, p, q = rules.shape[1], factors.shape[1], factors.shape[2]
        return kron.reshape(n * p, n * q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight() + self.bias


def _glorot_slices(n: int, rows: int, cols: int) -> torch.Tensor:
    """n slices of [rows, cols], each glorot-normal (std sqrt(2 / (rows + cols))), as AdapterHub's `init_W`."""
    factor = torch.empty(n, rows, cols)
    for axis in factor:
        nn.init.xavier_normal_(axis)
    return factor


class CompacterAdapter(nn.Module):
    def __init__(self, dim: int, bottleneck: int, rules: PHMRules, activation: type[nn.Module] = nn.GELU,
                 init: str = "identity"):
        super().__init__()
        self.down = PHMLinear(dim, bottleneck, rules, init=init)
        self.act = activation()
        self.up = PHMLinear(bottleneck, dim, rules, zero_init=True, init=init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x)))


def insert_after_sublayers(blocks, make_adapter) -> None:
    """Put an adapter after the attention and after the MLP of every block (Houlsby placement).

    timm blocks apply `ls1`/`ls2` (LayerScale, or Identity) to each sublayer's output right before the
    residual add; the adapter joins that slot, so timm's forward is untouched.
    """
    for _, block in blocks:
        dim = block.norm1.normalized_shape[0]
        block.ls1 = nn.Sequential(block.ls1, make_adapter(dim))
        block.ls2 = nn.Sequential(block.ls2, make_adapter(dim))
