"""LP-FT (Kumar et al., ICLR 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution"): linear probing, then full fine-tuning starting from the probed head.

Not one of the paper's seven strategies. A run of `training.steps` (or epochs) steps is split in two phases
(`Strategy.phases`), each with a fresh AdamW (no optimizer state carried over) and its own warm-up and
decay (`training.warmup_*` and `lr_schedule` applied to the phase's own length):

- `probe`: steps [0, P): the head alone trains (as `linear`), at `probe_lr`;
- `finetune`: steps [P, total): every parameter trains (as `full`), at `training.lr`, the head starting
  where probing left it (the same tensors: nothing is re-initialised).

P is `probe_steps` when given, else `probe_fraction` of the run's steps (rounded, at least 1, leaving at
least 1 step to fine-tune). The evaluation schedule restarts its dense early stretch at P (the boundary step
itself is a point: the probed model). Records carry the current phase's `trainable_params` and the run's
`lr` (the fine-tuning phase's); checkpoints record the phase, so a run resumes in either phase.

Defaults, and why:
- `probe_fraction` 0.5: equal halves of the run's budget. Kumar et al. fit the probe to convergence (a
  logistic regression on the frozen features) before fine-tuning; here both phases share the one step budget
  every strategy gets, and equal halves are the neutral split: nothing measured here favours another. Set
  `probe_steps`, or sweep the option, when it matters.
- `probe_lr` null, `probe_lr_factor` 30: a linear head on frozen features takes a larger step than
  fine-tuning every parameter, and `training.lr` is the fine-tuning phase's, so the probe's is a multiple of
  it. This project's own learning rates for `linear` versus `full` are 3e-3 versus 1e-4 in the demo (30x)
  and 5e-3 versus 2e-5 in the paper's code (250x); 30x is the more cautious of the two. A sweep over
  `training.lr` moves both phases' rates together.
"""
from __future__ import annotations

from torch import nn

from rft_ray.config.strategy_options import LpFtOptions
from rft_ray.models.strategies.base import Phase, Strategy, register_strategy


@register_strategy
class LpFt(Strategy):
    name = "lp_ft"
    summary = "LP-FT: the head only (linear probing), then every parameter from the probed head"
    Config = LpFtOptions
    phase_names = ("probe", "finetune")
    interpolation = ("what the point's phase trained (the head while probing, every parameter after): "
                     "theta0 + alpha * (theta_ft - theta0), theta0 the step-0 model")

    def probe_length(self, total_steps: int) -> int:
        return self.config.check_steps(total_steps)  # the rule lives with the options: specs check it without torch

    def phases(self, total_steps: int, lr: float) -> list[Phase]:
        probe = self.probe_length(total_steps)
        probe_lr = self.config.probe_lr if self.config.probe_lr is not None else self.config.probe_lr_factor * lr
        return [Phase("probe", 0, probe, probe_lr), Phase("finetune", probe, total_steps - probe, lr)]

    def enter_phase(self, model: nn.Module, index: int) -> None:
        if index not in (0, 1):
            raise ValueError(f"lp_ft has phases 0 (probe) and 1 (finetune); there is no phase {index}")
        for param in model.parameters():
            param.requires_grad_(index == 1)
        for param in model.head.parameters():
            param.requires_grad_(True)
