"""`strategy.options.init` of the bottleneck adapter and Compacter: identity (ours, the default) or adapterhub
(AdapterHub's, which the paper's code gets and `recipe: paper_code` picks). Sources in docs/fidelity.md."""
from __future__ import annotations

import math

import pytest
import torch

from rft_ray.config import ModelSpec, RunSpec
from rft_ray.models.backbones import create_classifier
from rft_ray.models.strategies import apply_strategy, create_strategy
from rft_ray.models.strategies.modules import BottleneckAdapter, CompacterAdapter

IMAGES = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def small_model():
    return create_classifier(ModelSpec(source="random"), num_classes=7, seed=0).eval()  # hidden size 128


def adapted(name: str, options: dict):
    """The model's outputs before and after the strategy is applied, and the applied model."""
    model = small_model()
    with torch.no_grad():
        before = model(IMAGES)
        apply_strategy(model, name, options)
        return before, model(IMAGES), model


def modules(model, kind):
    found = [m for m in model.modules() if isinstance(m, kind)]
    assert len(found) == 2 * len(model.backbone.blocks)  # after attention and after the MLP of every block
    return found


def test_adapterhub_adapter_draws_both_projections_from_n_0_002_and_changes_the_output_at_step_0():
    before, after, model = adapted("adapter", {"init": "adapterhub"})
    adapters = modules(model, BottleneckAdapter)
    for part in ("up", "down"):
        weights = torch.cat([getattr(a, part).weight.flatten() for a in adapters])  # 8 x 16 x 128 values
        # the standard error of a standard deviation from 16,384 normal draws is 0.55%; 3% is over 5 of them
        assert weights.std().item() == pytest.approx(0.02, rel=0.03), part
        assert abs(weights.mean().item()) < 0.02 * 5 / math.sqrt(weights.numel())
        assert all(torch.count_nonzero(getattr(a, part).bias) == 0 for a in adapters)
    assert (after - before).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["adapter", "compacter"])
def test_identity_init_is_the_default_and_leaves_the_backbones_output(name):
    before, after, _ = adapted(name, {"init": "identity"})
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    assert create_strategy(name).config.init == "identity"


def test_adapterhub_compacter_draws_rules_from_n_0_1e4_and_glorot_factors():
    options = {"init": "adapterhub", "reduction_factor": 8, "phm_dim": 8}  # 512 rule entries, bottleneck 16
    _, _, model = adapted("compacter", options)
    rules = model.phm_rules.rules
    assert rules.std().item() == pytest.approx(1e-4, rel=0.15)  # 512 draws: a standard error of 3%
    # Each factor slice [rows, cols] glorot-normal: std sqrt(2 / (rows + cols)); pooled after dividing by it.
    scaled = []
    for adapter in modules(model, CompacterAdapter):
        for layer in (adapter.down, adapter.up):
            assert torch.count_nonzero(layer.bias) == 0
            for factor in (layer.left, layer.right):
                rows, cols = factor.shape[1:]
                scaled.append(factor.detach().flatten() / math.sqrt(2 / (rows + cols)))
    scaled = torch.cat(scaled)
    assert scaled.std().item() == pytest.approx(1.0, rel=0.05)  # 2,304 draws: a standard error of 1.5%
    assert all(torch.count_nonzero(a.up.right) == a.up.right.numel() for a in modules(model, CompacterAdapter))


def test_adapterhub_compacter_changes_the_output_at_step_0_by_a_hair():
    # The rules' 1e-4 scales both projections, so an adapter adds about 1e-8 of its input: not the identity,
    # but far below what fp32 logits resolve.
    _, _, model = adapted("compacter", {"init": "adapterhub"})
    hidden = torch.randn(4, 65, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for adapter in modules(model, CompacterAdapter):
            added = adapter.up(adapter.act(adapter.down(hidden)))
            assert 0 < added.norm() / hidden.norm() < 1e-6


@pytest.mark.parametrize("name", ["adapter", "compacter"])
def test_the_paper_code_recipe_picks_adapterhubs_init_and_a_given_init_wins(name):
    spec = RunSpec.from_dict({"recipe": "paper_code", "strategy": {"name": name, "options": {"reduction_factor": 16}}})
    assert spec.strategy.options == {"init": "adapterhub", "reduction_factor": 16}
    assert create_strategy(name, spec.strategy.options).config.init == "adapterhub"
    given = RunSpec.from_dict({"recipe": "paper_code", "strategy": {"name": name, "options": {"init": "identity"}}})
    assert given.strategy.options == {"init": "identity"}
    assert RunSpec.from_dict({"strategy": {"name": name}}).strategy.options == {}  # default recipe: identity
    assert RunSpec.from_dict({"recipe": "paper_code", "strategy": {"name": "lora"}}).strategy.options == {}
