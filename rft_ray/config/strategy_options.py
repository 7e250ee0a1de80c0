"""The fine-tuning strategies' names and option dataclasses, on the config floor.

They live here, below the strategy registry (`rft_ray.models.strategies`, which needs torch), so that a spec's
strategy name and options are checked without importing torch (`rft_ray.specs`). The registry registers each
strategy with the class named here (`Strategy.Config`); `tests/test_spec.py` holds that the two agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rft_ray.config.fields import SpecError, check, described

# Projections a strategy can adapt in every block (q, k, v: parts of timm's fused qkv).
TARGET_NAMES = ("q", "k", "v", "proj", "fc1", "fc2")
Target = Literal["q", "k", "v", "proj", "fc1", "fc2"]
Activation = Literal["gelu", "relu", "silu"]
# How a bottleneck adapter's weights start: identity (up-projection zero, the model unchanged at step 0) or
# adapterhub (AdapterHub's defaults, which the paper's code gets; `recipe: paper_code` picks it).
AdapterInit = Literal["identity", "adapterhub"]


@dataclass
class NoOptions:
    """No hyperparameters of its own."""


@dataclass
class LoraOptions:
    r: int = described("rank of each low-rank update", 8, bounds="[1, 4096]")
    alpha: float = described("LoRA scaling numerator (update scaled by alpha / r)", 8.0, bounds="(0, inf)")
    dropout: float = described("dropout on the LoRA branch input", 0.0, bounds="[0, 1)")
    targets: list[Target] = described("projections adapted in every block", factory=lambda: ["q", "k", "v", "fc1", "fc2"])

    def __post_init__(self):
        check(len(self.targets) > 0, "targets", f"must name at least one of {', '.join(TARGET_NAMES)}")


@dataclass
class IA3Options:
    targets: list[Target] = described("projections whose outputs get a learned scaling vector",
                                      factory=lambda: ["k", "v", "fc1", "fc2"])
    feedforward: list[Target] = described(
        "of those, the ones scaled on their input instead of their output (peft's feedforward_modules)",
        factory=list)

    def __post_init__(self):
        check(len(self.targets) > 0, "targets", f"must name at least one of {', '.join(TARGET_NAMES)}")
        stray = [t for t in self.feedforward if t not in self.targets]
        check(not stray, "feedforward", f"{stray} are not in targets {self.targets}")


@dataclass
class AdapterOptions:
    reduction_factor: int = described("bottleneck = hidden size / reduction_factor", 8, bounds="[1, 4096]")
    activation: Activation = described("bottleneck non-linearity", "gelu")
    init: AdapterInit = described(
        "identity: down-projection normal with std 0.01, up-projection zero, so the model is unchanged at step 0; "
        "adapterhub: AdapterHub's 'bert' init, both projections normal with std 0.02, biases zero, so outputs change "
        "at step 0", "identity")


@dataclass
class CompacterOptions:
    reduction_factor: int = described("bottleneck = hidden size / reduction_factor", 32, bounds="[1, 4096]")
    phm_dim: int = described("n: number of Kronecker summands; hidden and bottleneck sizes must divide by it", 4,
                             bounds="[1, 64]")
    activation: Activation = described("bottleneck non-linearity", "gelu")
    init: AdapterInit = described(
        "identity: rules normal with std phm_dim^-1/2, factors with std (in_features x phm_dim)^-1/4, the "
        "up-projection's right factor zero, so the model is unchanged at step 0; adapterhub: AdapterHub's Compacter "
        "defaults, shared rules normal with std 1e-4, every factor glorot-normal, biases zero (outputs change at "
        "step 0, by about 1e-8 of the hidden state)", "identity")


@dataclass
class LpFtOptions:
    probe_fraction: float = described(
        "share of the run's optimizer steps spent linear probing (the head only) before every parameter trains",
        0.5, bounds="(0, 1)", note="a share of the steps that leaves some to fine-tune")
    probe_steps: int | None = described("linear probing steps; when set, replaces probe_fraction", None,
                                        bounds="[1, 10000000]")
    probe_lr: float | None = described(
        "AdamW learning rate of the probing phase (training.lr is the fine-tuning phase's); "
        "null: probe_lr_factor x training.lr", None, bounds="(0, 10)")
    probe_lr_factor: float = described("the probing phase's learning rate as a multiple of training.lr, "
                                       "when probe_lr is null", 30.0, bounds="(0, 1000]")

    def check_steps(self, total_steps: int) -> int:
        """The probing phase's length in a run of `total_steps` steps (SpecError when the run is too short)."""
        if total_steps < 2:
            raise SpecError(f"lp_ft needs at least 2 steps (1 to probe, 1 to fine-tune); the run has {total_steps}",
                            "training.steps")
        if self.probe_steps is None:
            return min(total_steps - 1, max(1, int(round(self.probe_fraction * total_steps))))
        if self.probe_steps >= total_steps:
            raise SpecError(f"probe_steps {self.probe_steps} leaves no step to fine-tune: the run has {total_steps} "
                            "steps", "strategy.options.probe_steps")
        return self.probe_steps


# The built-in strategies in the registry's order (the paper's seven, then LP-FT) with their options.
STRATEGY_OPTIONS: dict[str, type] = {
    "full": NoOptions, "linear": NoOptions, "bitfit": NoOptions, "lora": LoraOptions, "ia3": IA3Options,
    "adapter": AdapterOptions, "compacter": CompacterOptions, "lp_ft": LpFtOptions,
}
# The paper's seven, in its order (the registry also holds strategies the paper did not study).
PAPER_STRATEGIES = ("full", "linear", "bitfit", "lora", "ia3", "adapter", "compacter")
