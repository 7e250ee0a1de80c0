"""The optimizer and learning-rate schedule of a run: AdamW over the trainable parameters, in two groups
(decayed, and exempt from weight decay per `training.no_weight_decay`), with a warm-up then cosine, linear
or constant schedule. The loop and `rft estimate`'s calibration both build them here.

A strategy with several phases (`Strategy.phases`, e.g. LP-FT's probe then fine-tune) gets a fresh AdamW and
schedule per phase (`PhasedTraining`): the warm-up and decay run over the phase's own steps, at its own lr.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from rft_ray.config import TrainingSpec
from rft_ray.models.strategies import Strategy

# Normalisation layers whose weights `no_weight_decay: [norm]` exempts (timm's and torch's; the Hugging Face
# Trainer exempts LayerNorm's).
NORM_LAYERS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.RMSNorm)


def decay_exempt(module: nn.Module, name: str, groups: list[str]) -> bool:
    """Is parameter `name` (its own name within `module`, e.g. "bias") exempt from weight decay."""
    return (("bias" in groups and name == "bias")
            or ("norm" in groups and isinstance(module, NORM_LAYERS))
            or ("pos_embed" in groups and name == "pos_embed")
            or ("cls_token" in groups and name == "cls_token"))


def parameter_groups(model: nn.Module, training: TrainingSpec) -> list[dict]:
    """AdamW parameter groups: the decayed trainable parameters, and those exempt from weight decay."""
    decayed, exempt, seen = [], [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if param.requires_grad and id(param) not in seen:  # a shared parameter is placed once
                seen.add(id(param))
                (exempt if decay_exempt(module, name, training.no_weight_decay) else decayed).append(param)
    groups = [{"params": decayed, "weight_decay": training.weight_decay},
              {"params": exempt, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def warmup_length(training: TrainingSpec, total_steps: int) -> int:
    if training.warmup_steps is not None:
        return training.warmup_steps
    return int(round(training.warmup_fraction * total_steps))


def lr_factor(training: TrainingSpec, total_steps: int):
    """The multiplier of lr at each optimizer step (0-based): a linear warm-up reaching the full lr on the
    last warm-up step, then `lr_schedule` from the full lr down to 0 at `total_steps`."""
    warmup, schedule = warmup_length(training, total_steps), training.lr_schedule

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_optimizer(model: nn.Module, training: TrainingSpec, total_steps: int, lr: float | None = None):
    """(AdamW, its LambdaLR schedule, the trainable parameters) for a run (or phase) of `total_steps` steps
    at `lr` (default: training.lr)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    # The fused CUDA kernel updates every parameter in one launch; same arithmetic as the per-tensor loop.
    fused = bool(trainable) and all(p.is_cuda and p.dtype == torch.float32 for p in trainable)
    optimizer = torch.optim.AdamW(parameter_groups(model, training), lr=training.lr if lr is None else lr,
                                  weight_decay=training.weight_decay, fused=fused or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(training, total_steps))
    return optimizer, scheduler, trainable


class PhasedTraining:
    """The strategy's phases over a run and the current phase's AdamW, LR schedule and trainable parameters.

    `enter(i)` sets what trains in phase i and builds its optimizer and schedule afresh; `advance(step)`
    enters the next phase when optimizer step `step` (0-based) is its first. A one-phase strategy enters
    phase 0 once and never advances."""

    def __init__(self, model: nn.Module, strategy: Strategy, training: TrainingSpec, total_steps: int):
        self.model, self.strategy, self.training = model, strategy, training
        self.phases = strategy.phases(total_steps, training.lr)
        self.index = -1
        self.optimizer = self.scheduler = None
        self.trainable: list[nn.Parameter] = []

    @property
    def restarts(self) -> list[int]:
        """The first steps of the phases after the first (where the evaluation schedule starts again)."""
        return [phase.start for phase in self.phases[1:]]

    def enter(self, index: int) -> None:
        phase = self.phases[index]
        self.strategy.enter_phase(self.model, index)
        self.optimizer, self.scheduler, self.trainable = build_optimizer(self.model, self.training, phase.steps,
                                                                         phase.lr)
        self.index = index

    def begins(self, step: int) -> bool:
        """Is optimizer step `step` (0-based) the first of the next phase."""
        following = self.index + 1
        return following < len(self.phases) and step == self.phases[following].start

    def advance(self, step: int) -> bool:
        """Enter the next phase if `step` is its first step; whether a phase began."""
        if self.begins(step):
            self.enter(self.index + 1)
            return True
        return False

    def step_other(self, module: nn.Module, place) -> None:
        """From now on step `module`, a copy of the model with its parameters in the same order (FSDP's sharded
        copy): a new AdamW and schedule of the current phase over its trainable parameters, given the state of
        the old ones (`place(state_dict, new_optimizer)` fits the AdamW state to the new parameters)."""
        optimizer_state, scheduler_state = self.optimizer.state_dict(), self.scheduler.state_dict()
        phase = self.phases[self.index]
        self.optimizer, self.scheduler, self.trainable = build_optimizer(module, self.training, phase.steps, phase.lr)
        self.optimizer.load_state_dict(place(optimizer_state, self.optimizer))
        self.scheduler.load_state_dict(scheduler_state)
