import math

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model

from rft_ray.config import ModelSpec, SpecError
from rft_ray.models.backbones import create_classifier
from rft_ray.models.strategies import (
    PAPER_STRATEGIES,
    apply_strategy,
    count_parameters,
    create_strategy,
    strategy_names,
)
from rft_ray.models.strategies.base import vit_blocks
from rft_ray.models.strategies.builtin import _peft_targets
from rft_ray.models.strategies.modules import FusedQKVLora, split_qkv

PAPER = ["full", "linear", "bitfit", "lora", "ia3", "adapter", "compacter"]
ALL = [*PAPER, "lp_ft"]  # the registry: the paper's seven, then LP-FT (tests/test_lp_ft.py)


def small_model(seed=0):
    return create_classifier(ModelSpec(source="random"), num_classes=7, seed=seed).eval()


def test_registry_lists_the_papers_seven_in_order_then_lp_ft():
    assert strategy_names() == ALL
    assert list(PAPER_STRATEGIES) == PAPER


@pytest.mark.parametrize("name", ALL)
def test_outputs_unchanged_at_init_and_head_trainable(name):
    model = small_model()
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(images)
    count = apply_strategy(model, name)
    with torch.no_grad():
        after = model(images)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    assert all(p.requires_grad for p in model.head.parameters())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert count.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count.total == sum(p.numel() for p in model.parameters())
    assert 0 < count.trainable <= count.total
    head = {n for n in trainable if n.startswith("backbone.head.")}
    assert head == {"backbone.head.weight", "backbone.head.bias"}
    others = trainable - head
    if name == "full":
        assert count.trainable == count.total
    elif name in ("linear", "lp_ft"):  # lp_ft as applied: its first phase, probing, trains the head only
        assert others == set()
    elif name == "bitfit":
        assert others and all(n.endswith(".bias") for n in others)
        all_biases = {n for n, _ in model.named_parameters() if n.endswith(".bias")}
        assert trainable >= all_biases
    elif name == "lora":
        assert others and all(".lora_" in n for n in others)
        adapted = {n.split(".lora_")[0].split("blocks.0.")[-1] for n in others if ".blocks.0." in n}
        assert adapted == {"attn.qkv", "mlp.fc1", "mlp.fc2"}  # q, k, v on the fused qkv
        assert model.backbone.blocks[0].attn.qkv.parts == ["q", "k", "v"]
    elif name == "ia3":
        adapted = {n.split(".ia3_")[0].split("blocks.0.")[-1] for n in others if ".blocks.0." in n}
        assert adapted == {"attn.qkv.k", "attn.qkv.v", "mlp.fc1", "mlp.fc2"}
    elif name in ("adapter", "compacter"):
        assert others and all(".ls1.1." in n or ".ls2.1." in n or n.startswith("phm_rules") for n in others)
        # An adapter after both sublayers (attention: ls1, MLP: ls2) of every block.
        adapted = {tuple(n.split(".")[2:4]) for n in others if n.startswith("backbone.blocks.")}
        assert adapted == {(str(i), ls) for i in range(len(model.backbone.blocks)) for ls in ("ls1", "ls2")}


def test_lora_rank_and_alpha_from_options_and_training_changes_outputs():
    model = small_model()
    count = apply_strategy(model, "lora", {"r": 2, "alpha": 4, "targets": ["q", "v"]})
    blocks, dim = 4, 128
    assert count.trainable - (7 * dim + 7) == blocks * 2 * (2 * dim + 2 * dim)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    with torch.no_grad():
        lora_b[0].add_(0.1)
    images = torch.rand(2, 3, 32, 32)
    reference = small_model()
    with torch.no_grad():
        assert not torch.allclose(model(images), reference(images))


def tiny_vit(seed=0):
    return create_classifier(ModelSpec(name="rft_vit_cifar_patch8_32", source="random", image_size=16), 4, seed=seed)


def split_peft_lora(model, parts, r, alpha):
    """The former LoRA on q, k, v: timm's qkv split into three Linears, a peft LoRA layer on each."""
    split_qkv(vit_blocks(model))
    inject_adapter_in_model(LoraConfig(r=r, lora_alpha=alpha, target_modules=_peft_targets(parts)), model)
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
    return model


def fused_and_split_pairs(fused_model, split_model):
    """(fused parameter slice, the split model's peft parameter) for every A and B of every block."""
    for (_, fused), (_, split) in zip(vit_blocks(fused_model), vit_blocks(split_model)):
        qkv, r = fused.attn.qkv, fused.attn.qkv.r
        for j, part in enumerate(qkv.parts):
            layer = getattr(split.attn.qkv, part)
            yield qkv.lora_A, slice(j * r, (j + 1) * r), layer.lora_A["default"].weight
            yield qkv.lora_B, j, layer.lora_B["default"].weight


@pytest.mark.parametrize("parts", [["q", "k", "v"], ["q", "v"], ["k"]])
def test_lora_on_fused_qkv_is_peft_lora_on_split_q_k_v(parts):
    fused, split = tiny_vit(), split_peft_lora(tiny_vit(), parts, r=2, alpha=6)
    apply_strategy(fused, "lora", {"r": 2, "alpha": 6, "targets": parts})
    assert count_parameters(fused).trainable - 4 * 128 - 4 == count_parameters(split).trainable
    assert isinstance(fused.backbone.blocks[0].attn.qkv, FusedQKVLora)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for big, index, small in fused_and_split_pairs(fused, split):
            big[index] = torch.randn(big[index].shape, generator=generator) * 0.2  # non-zero B: a real update
            small.copy_(big[index])
    images = torch.rand(3, 3, 16, 16, generator=generator)
    outputs, image_grads = [], []
    for model in (fused, split):
        x = images.clone().requires_grad_(True)
        out = model(x)
        torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 3])).backward()
        outputs.append(out.detach())
        image_grads.append(x.grad)
    before = tiny_vit()(images).detach()
    assert not torch.allclose(outputs[0], before, atol=1e-3)  # the update does change the outputs
    # fp32 rounding only (the sums run in another order): gradients are ~0.1, differences ~1e-6.
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(image_grads[0], image_grads[1], atol=1e-5, rtol=1e-4)
    for big, index, small in fused_and_split_pairs(fused, split):
        torch.testing.assert_close(big.grad[index], small.grad, atol=1e-5, rtol=1e-4)


def test_fused_qkv_lora_initialises_as_peft_and_drops_out_per_part():
    dim = 64
    torch.manual_seed(0)
    qkv = torch.nn.Linear(dim, 3 * dim)
    layer = FusedQKVLora(qkv, ["v", "q", "k"], r=4, alpha=8, dropout=0.5)
    assert layer.parts == ["q", "k", "v"] and layer.scaling == 2
    assert layer.weight is qkv.weight and [n for n, _ in layer.named_parameters()] == [
        "weight", "bias", "lora_A", "lora_B"]  # the base keeps timm's names
    assert layer.lora_A.shape == (12, dim) and layer.lora_B.shape == (3, dim, 4)
    assert not layer.lora_B.any()  # peft's init_lora_weights=True: B zero, A kaiming_uniform_(a=sqrt(5))
    assert layer.lora_A.abs().max() <= 1 / math.sqrt(dim) and layer.lora_A.std() > 0.4 / math.sqrt(dim)
    with torch.no_grad():
        layer.lora_A.copy_(layer.lora_A[:4].repeat(3, 1))  # the same A and B for q, k, v
        layer.lora_B.fill_(1.0)
    x = torch.rand(2, 5, dim)
    updates = (layer(x) - qkv(x)).unflatten(-1, (3, dim))
    assert not torch.allclose(updates[..., 0, :], updates[..., 1, :])  # peft drops out each layer's input apart
    layer.lora_dropout.p = 1e-12  # the per-part dropout path, dropping nothing, is the one-matmul path
    training = layer(x)
    layer.eval()
    torch.testing.assert_close(training, layer(x))
    updates = (layer(x) - qkv(x)).unflatten(-1, (3, dim))
    torch.testing.assert_close(updates[..., 0, :], updates[..., 2, :])


def test_compacter_shares_rule_matrices_and_factorises():
    model = small_model()
    count = apply_strategy(model, "compacter", {"reduction_factor": 8, "phm_dim": 4})
    rules = [n for n, _ in model.named_parameters() if "rules" in n]
    assert rules == ["phm_rules.rules"]  # one shared set
    dim, bottleneck, n = 128, 16, 4
    per_adapter = n * (dim // n + bottleneck // n) + bottleneck + n * (bottleneck // n + dim // n) + dim
    assert count.trainable == 4 * 2 * per_adapter + n ** 3 + (7 * dim + 7)


def test_compacter_rejects_indivisible_sizes():
    with pytest.raises(SpecError, match="phm_dim 3 must divide the hidden size 128"):
        apply_strategy(small_model(), "compacter", {"phm_dim": 3})


def test_unknown_option_is_rejected_with_suggestion():
    with pytest.raises(SpecError, match="Did you mean 'reduction_factor'"):
        create_strategy("adapter", {"reduction": 4})


def test_vit_base_counts_land_in_the_papers_range():
    shares, counts = {}, {}
    for name in PAPER:
        with torch.device("meta"):
            model = create_classifier(ModelSpec(name="vit_base_patch16_224", source="random"), 10)
        counts[name] = apply_strategy(model, name)
        shares[name] = counts[name].share * 100
    assert shares["full"] == 100
    # README's table: r 8 on q, k, v, fc1, fc2 of 12 blocks is 1,179,648, plus the 10-class head.
    assert counts["lora"] == type(counts["lora"])(1_187_338, counts["full"].total + 1_179_648)
    for name in ("bitfit", "lora", "ia3", "adapter", "compacter"):
        # The paper reports 0.07% (IA3/Compacter) to 3.97% (Adapter); our Houlsby adapter with biases is 3.99%.
        assert 0.07 <= shares[name] <= 4.0, (name, shares[name])
    assert shares["ia3"] < shares["bitfit"] < shares["lora"] < shares["adapter"]
