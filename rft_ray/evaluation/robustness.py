"""Clean, PGD and OOD evaluation on fixed, seeded image subsets, in [0, 1] pixel space.

PGD (L-inf) here is batched and exits early: an image counts as broken as soon as the model gets it
wrong (on the clean input or at any PGD iterate), and broken images leave the batch, so later steps
only spend compute on images still standing. Counting "wrong at any point" is exact for robust
accuracy and can only be lower than (never above) judging the last iterate alone.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class ThreatModel(enum.Enum):
    LINF = "Linf"


@dataclass(frozen=True)
class PGDConfig:
    eps: float
    alpha: float
    steps: int
    random_start: bool = True
    threat_model: ThreatModel = ThreatModel.LINF

    def __post_init__(self):
        if not 0 < self.eps <= 1:
            raise ValueError(f"PGD eps must be in (0, 1] pixel units, got {self.eps}")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"PGD alpha must be in (0, 1], got {self.alpha}")
        if self.steps < 1:
            raise ValueError(f"PGD steps must be at least 1, got {self.steps}")


def _as_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


@torch.inference_mode()
def clean_correct(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                  device: torch.device, autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Boolean [N]: is each image classified correctly. Images uint8 [N,3,S,S] or float in [0,1]."""
    out = []
    for start in range(0, len(images), batch_size):
        x = _as_float(images[start:start + batch_size], device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(x)
        out.append((logits.argmax(1) == labels[start:start + batch_size].to(device)).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def pgd_robust(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: PGDConfig,
               batch_size: int, device: torch.device, seed: int = 0,
               clean_ok: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean [N]: does each image survive clean and every PGD iterate. Model must be in eval mode.

    The random start is drawn for the whole batch from a generator seeded with `seed`, so the same
    seed gives the same attack at every evaluation point (and matches torchattacks' start when its
    global RNG is seeded alike). `clean_ok` ([N] booleans, e.g. from `clean_correct` on the same
    images) is the clean verdict when the caller has it: PGD then skips its own clean forward pass.
    """
    if clean_ok is not None and len(clean_ok) != len(images):
        raise ValueError(f"clean_ok has {len(clean_ok)} verdicts for {len(images)} images")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for start in range(0, len(images), batch_size):
        x = _as_float(images[start:start + batch_size], device)
        y = labels[start:start + batch_size].to(device)
        noise = None
        if config.random_start:
            noise = torch.empty(x.shape, dtype=x.dtype).uniform_(-config.eps, config.eps, generator=generator)
        known = None if clean_ok is None else clean_ok[start:start + batch_size].to(device)
        out.append(_pgd_batch(model, x, y, noise, config, known).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def pgd_iteration(model: nn.Module, adv: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's work in one PGD iteration: a forward pass on the float images `adv` and the gradient of the
    loss with respect to them. Returns (fooled: is the model wrong on each image, the gradient). The loss is
    summed, so each image's gradient is its own whichever images share the batch. `rft estimate` times this."""
    adv.requires_grad_(True)
    with torch.enable_grad():
        logits = model(adv)
        fooled = logits.argmax(1) != labels
        grad, = torch.autograd.grad(F.cross_entropy(logits, labels, reduction="sum"), adv)
    return fooled, grad


def _pgd_batch(model, x, y, noise, config: PGDConfig, clean_ok: torch.Tensor | None = None) -> torch.Tensor:
    robust = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    if clean_ok is None:
        with torch.no_grad():
            clean_ok = model(x).argmax(1) == y
    active = clean_ok.nonzero().squeeze(1)  # clean errors are never attacked
    if len(active) == 0:
        return robust
    origin = x[active]
    labels = y[active]
    adv = origin.clone()
    if noise is not None:
        adv = (adv + noise[active.cpu()].to(x.device)).clamp_(0, 1)
    for _ in range(config.steps):
        fooled, grad = pgd_iteration(model, adv, labels)
        with torch.no_grad():
            keep = ~fooled
            adv = adv.detach()[keep] + config.alpha * grad[keep].sign()
            origin, labels, active = origin[keep], labels[keep], active[keep]
            adv = torch.min(torch.max(adv, origin - config.eps), origin + config.eps).clamp_(0, 1)
        if len(active) == 0:
            return robust
    adv.requires_grad_(True)  # the last iterate is judged as every earlier one: same forward, no gradient
    with torch.enable_grad():
        fooled = model(adv).argmax(1) != labels
    robust[active[~fooled]] = True
    return robust


@dataclass
class EvalSet:
    """A fixed evaluation subset, decoded once: uint8 images [N,3,S,S] and labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, count: int | None) -> "EvalSet":
        if count is None or count >= len(self):
            return self
        return EvalSet(self.images[:count], self.labels[:count])


def accuracy(correct: torch.Tensor) -> float:
    return float(correct.float().mean()) if len(correct) else float("nan")
