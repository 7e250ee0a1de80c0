"""full, linear, bitfit, lora, ia3, adapter, compacter — defaults follow the paper's configuration."""
from __future__ import annotations

from peft import IA3Config, LoraConfig, inject_adapter_in_model
from torch import nn

from rft_ray.config.strategy_options import (
    AdapterOptions,
    CompacterOptions,
    IA3Options,
    LoraOptions,
    NoOptions,
)
from rft_ray.models.strategies.base import (
    INTERPOLATE,
    KEEP_FINETUNED,
    MergeError,
    Strategy,
    register_strategy,
    vit_blocks,
)
from rft_ray.models.strategies.modules import (
    QKV_PARTS,
    BottleneckAdapter,
    CompacterAdapter,
    FusedQKVLora,
    PHMRules,
    SplitQKV,
    fused_qkv,
    insert_after_sublayers,
    lora_on_fused_qkv,
    merged_qkv,
    split_qkv,
    unload_peft,
)

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}
# Module names inside a block (q, k, v: after split_qkv); peft matches them as name suffixes.
TARGETS = {"q": "attn.qkv.q", "k": "attn.qkv.k", "v": "attn.qkv.v", "proj": "attn.proj",
           "fc1": "mlp.fc1", "fc2": "mlp.fc2"}


def _peft_targets(names: list[str]) -> str:
    # A regex over full module names, so that `fc1` never matches a head or adapter elsewhere.
    return r".*blocks\.\d+\.(" + "|".join(TARGETS[n].replace(".", r"\.") for n in names) + r")"


@register_strategy
class Full(Strategy):
    name = "full"
    summary = "every parameter trains"
    Config = NoOptions
    interpolation = "every parameter: theta0 + alpha * (theta_ft - theta0), WiSE-FT as published"

    def is_trainable(self, name, param):
        return True


@register_strategy
class Linear(Strategy):
    name = "linear"
    summary = "linear probing: the head only"
    Config = NoOptions
    interpolation = ("the head's weight and bias; the features are fixed, so the logits are exactly (1 - alpha) x "
                     "the step-0 head's + alpha x the fine-tuned head's")


@register_strategy
class BitFit(Strategy):
    name = "bitfit"
    summary = "every bias, plus the head"
    Config = NoOptions
    interpolation = "every bias and the head: theta0 + alpha * (theta_ft - theta0)"

    def is_trainable(self, name, param):
        return name.endswith(".bias")


@register_strategy
class Lora(Strategy):
    name = "lora"
    summary = "LoRA on q, k, v (on timm's fused qkv, one matmul pair), peft LoRA on fc1, fc2"
    Config = LoraOptions
    interpolation = ("each update scaling * B @ A: B (zero at step 0) scaled to alpha * B_ft, A kept fine-tuned, so "
                     "every update is exactly alpha x the fine-tuned one; the head interpolated")

    def interpolation_rule(self, name):
        return KEEP_FINETUNED if "lora_A" in name else INTERPOLATE

    def adapt(self, model):
        c = self.config
        # q, k, v stay one fused Linear (three small matmuls plus peft's per-layer overhead halved the GPU speed);
        # the other targets are ordinary Linears, where peft fits.
        fused = [t for t in QKV_PARTS if t in c.targets]
        if fused:
            lora_on_fused_qkv(vit_blocks(model), fused, c.r, c.alpha, c.dropout)
        others = [t for t in c.targets if t not in QKV_PARTS]
        if others:
            inject_adapter_in_model(LoraConfig(r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout,
                                               target_modules=_peft_targets(others)), model)

    def is_trainable(self, name, param):
        return "lora_" in name

    def merge(self, model):
        unload_peft(model)
        for _, block in vit_blocks(model):
            if isinstance(block.attn.qkv, FusedQKVLora):
                block.attn.qkv = merged_qkv(block.attn.qkv)


@register_strategy
class IA3(Strategy):
    name = "ia3"
    summary = "peft (IA)^3 scaling vectors on the outputs of k, v, fc1, fc2"
    Config = IA3Options
    interpolation = ("each scaling vector l (one at step 0): 1 + alpha * (l_ft - 1), so every scaled layer's weight "
                     "change is exactly alpha x the fine-tuned one; the head interpolated")

    def adapt(self, model):
        split_qkv(vit_blocks(model))
        c = self.config
        config = IA3Config(target_modules=_peft_targets(c.targets),
                           feedforward_modules=_peft_targets(c.feedforward) if c.feedforward else [])
        inject_adapter_in_model(config, model)

    def is_trainable(self, name, param):
        return "ia3_" in name

    def merge(self, model):
        unload_peft(model)  # peft scales the weight rows (and bias) of output-scaled layers, columns of input-scaled
        for _, block in vit_blocks(model):
            if isinstance(block.attn.qkv, SplitQKV):
                block.attn.qkv = fused_qkv(block.attn.qkv)


_FROM_STEP_0 = ("with init adapterhub, whose up-projection is not zero at step 0, every adapter parameter moves "
                "alpha of the way from its step-0 value instead")


@register_strategy
class Adapter(Strategy):
    name = "adapter"
    summary = "Houlsby bottleneck adapters after attention and MLP"
    Config = AdapterOptions
    interpolation = ("init identity: each adapter's up-projection (zero at step 0) scaled to alpha x its fine-tuned "
                     "weights, its down-projection kept fine-tuned, so every adapter adds exactly alpha x its "
                     f"fine-tuned output; {_FROM_STEP_0}; the head interpolated")

    def interpolation_rule(self, name):
        return KEEP_FINETUNED if ".down." in name and self.config.init == "identity" else INTERPOLATE

    def adapt(self, model):
        c = self.config
        insert_after_sublayers(vit_blocks(model), lambda dim: BottleneckAdapter(
            dim, _bottleneck(dim, c.reduction_factor), ACTIVATIONS[c.activation], c.init))

    def is_trainable(self, name, param):
        return isinstance(param, nn.Parameter) and (".ls1.1." in name or ".ls2.1." in name)

    def merge(self, model):
        raise MergeError(_NOT_TIMM.format(name=self.name, what="a bottleneck adapter (down, GELU, up)"))


@register_strategy
class Compacter(Strategy):
    name = "compacter"
    summary = "Compacter: PHM adapters, shared rule matrices, rank-1 factors"
    Config = CompacterOptions
    interpolation = ("init identity: each adapter's up-projection factor `right` and bias (zero at step 0) scaled to "
                     "alpha x their fine-tuned values, the shared rules, `left` and the down-projection kept "
                     "fine-tuned, so every adapter adds exactly alpha x its fine-tuned output; "
                     f"{_FROM_STEP_0}; the head interpolated")

    def interpolation_rule(self, name):
        kept = name.startswith("phm_rules.") or ".down." in name or name.endswith(".up.left")
        return KEEP_FINETUNED if kept and self.config.init == "identity" else INTERPOLATE

    def adapt(self, model):
        c = self.config
        model.phm_rules = PHMRules(c.phm_dim, c.init)  # one set, shared by every layer
        blocks = list(vit_blocks(model))
        dim = blocks[0][1].norm1.normalized_shape[0]
        bottleneck = _bottleneck(dim, c.reduction_factor)
        if dim % c.phm_dim or bottleneck % c.phm_dim:
            from rft_ray.config import SpecError
            raise SpecError(f"phm_dim {c.phm_dim} must divide the hidden size {dim} and the bottleneck {bottleneck} "
                            f"(= {dim} / reduction_factor {c.reduction_factor})", "strategy.options.phm_dim")
        insert_after_sublayers(blocks, lambda d: CompacterAdapter(d, bottleneck, model.phm_rules,
                                                                  ACTIVATIONS[c.activation], c.init))

    def is_trainable(self, name, param):
        return name.startswith("phm_rules.") or ".ls1.1." in name or ".ls2.1." in name

    def merge(self, model):
        raise MergeError(_NOT_TIMM.format(name=self.name, what="a PHM bottleneck adapter"))


_NOT_TIMM = ("{name} adds {what} after the attention and the MLP of every block: a non-linear module that no layer of "
             "timm's ViT has, so it cannot be merged into a plain timm model; use the kept checkpoint with "
             "rft_ray.training.weights.load_finetuned (or rft predict) instead")


def _bottleneck(dim: int, reduction_factor: int) -> int:
    return max(1, dim // reduction_factor)
