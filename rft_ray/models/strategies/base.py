"""Strategy registry and the base class every strategy overrides a few hooks of.

`Strategy.apply(model)` freezes everything, lets the strategy insert its modules (`adapt`), marks
what trains (`is_trainable`), and always leaves the classification head trainable.

A run is one or more phases (`Strategy.phases`): consecutive stretches of its optimizer steps, each with
its own trainable parameters, learning rate, optimizer state and LR schedule. Every strategy of the paper
has one phase, the whole run at `training.lr`; LP-FT has two. `apply` leaves the model as phase 0 trains
it; `enter_phase(model, i)` sets what trains in phase i.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import torch
from torch import nn

from rft_ray.config import SpecError, build_options
from rft_ray.config.registry import Registry


@dataclass(frozen=True)
class ParameterCount:
    trainable: int
    total: int

    @property
    def share(self) -> float:
        return self.trainable / self.total if self.total else 0.0


def count_parameters(model: nn.Module) -> ParameterCount:
    params = list(model.parameters())  # shared parameters (Compacter's rules) counted once
    return ParameterCount(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))


def vit_blocks(model: nn.Module) -> Iterator[tuple[int, nn.Module]]:
    """The transformer blocks of a timm ViT (inside an ImageClassifier or bare)."""
    backbone = getattr(model, "backbone", model)
    blocks = getattr(backbone, "blocks", None)
    if blocks is None:
        raise SpecError(f"{backbone.__class__.__name__} has no transformer `blocks`; strategies need a timm ViT",
                        "model.name")
    yield from enumerate(blocks)


class MergeError(ValueError):
    """A strategy whose modules cannot be folded into the plain timm model (`Strategy.merge`)."""


# `Strategy.interpolation_rule`'s answers.
INTERPOLATE, KEEP_FINETUNED = "interpolate", "keep_finetuned"


@dataclass(frozen=True)
class Phase:
    """Optimizer steps [start, start + steps) of a run (0-based), trained at `lr` with a fresh AdamW and
    its own warm-up and decay over `steps`."""

    name: str
    start: int
    steps: int
    lr: float

    @property
    def end(self) -> int:
        return self.start + self.steps


class Strategy:
    name: ClassVar[str]
    Config: ClassVar[type]
    summary: ClassVar[str] = ""
    # What trains in each phase, in order (`rft strategies` counts the parameters of each).
    phase_names: ClassVar[tuple[str, ...]] = ("train",)
    # What WiSE-FT's alpha scales (`rft interpolate`), in words; `interpolation_rule` says it per parameter.
    interpolation: ClassVar[str] = ("every trained parameter moves alpha of the way from its step-0 value to its "
                                    "fine-tuned one")

    def __init__(self, config: Any):
        self.config = config

    def adapt(self, model: nn.Module) -> None:
        """Insert the strategy's modules (default: none)."""

    def is_trainable(self, name: str, param: nn.Parameter) -> bool:
        return False

    def apply(self, model: nn.Module) -> nn.Module:
        for param in model.parameters():
            param.requires_grad_(False)
        self.adapt(model)
        for name, param in model.named_parameters():
            param.requires_grad_(self.is_trainable(name, param))
        for param in model.head.parameters():
            param.requires_grad_(True)
        return model

    def interpolation_rule(self, name: str) -> str:
        """How a WiSE-FT interpolation (`rft_ray.training.interpolate`) sets trained parameter `name` at alpha:
        INTERPOLATE: theta0 + alpha * (theta_ft - theta0); KEEP_FINETUNED: the fine-tuned value, for a factor
        multiplied by a parameter that starts at zero (LoRA's A beside B), so that scaling that partner scales
        their product, the learned change, by exactly alpha."""
        return INTERPOLATE

    def merge(self, model: nn.Module) -> None:
        """Fold what `adapt` inserted into the backbone's own layers, in place, so that `model.backbone` is a plain
        timm model computing the same function (`rft export`). Default: nothing was inserted. A strategy whose
        modules timm's layers cannot express raises MergeError."""

    def phases(self, total_steps: int, lr: float) -> list[Phase]:
        """The run's phases, covering its `total_steps` steps; `lr` is `training.lr`."""
        return [Phase(self.phase_names[0], 0, total_steps, lr)]

    def enter_phase(self, model: nn.Module, index: int) -> None:
        """Set what trains in phase `index` of a model `apply` prepared (one phase: already set)."""
        if index != 0:
            raise ValueError(f"strategy {self.name} has one phase; there is no phase {index}")

    def phase_counts(self, model: nn.Module) -> list[ParameterCount]:
        """The parameters of an applied model that train in each phase (the model is left in phase 0)."""
        counts = []
        for index in range(len(self.phase_names)):
            self.enter_phase(model, index)
            counts.append(count_parameters(model))
        self.enter_phase(model, 0)
        return counts


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", "strategy.name")


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    return STRATEGIES.add(cls.name, cls)


def strategy_names() -> list[str]:
    return STRATEGIES.names()  # registration order: the paper's seven (full ... compacter), then lp_ft


def strategy_config(name: str, options: dict[str, Any]) -> Any:
    return build_options(STRATEGIES.get(name).Config, options, "strategy.options")


def create_strategy(name: str, options: dict[str, Any] | None = None) -> Strategy:
    cls = STRATEGIES.get(name)
    return cls(strategy_config(name, options or {}))


def config_help(name: str) -> dict[str, tuple[Any, str]]:
    cls = STRATEGIES.get(name)
    return {f.name: (f.default, f.metadata.get("help", "")) for f in dataclasses.fields(cls.Config)}


def apply_strategy(model: nn.Module, name: str, options: dict[str, Any] | None = None) -> ParameterCount:
    create_strategy(name, options).apply(model)
    return count_parameters(model)


def copy_linear(source: nn.Linear, out_slice: slice) -> nn.Linear:
    weight = source.weight[out_slice]
    layer = nn.Linear(source.in_features, weight.shape[0], bias=source.bias is not None,
                      device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if source.bias is not None:
            layer.bias.copy_(source.bias[out_slice])
    return layer
