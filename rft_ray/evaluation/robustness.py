"""Clean, PGD and OOD evaluation on fixed, seeded image subsets, in [0, 1] pixel space.

PGD (L-inf) has two verdicts (`PGDConfig.verdict`):

- `any_iterate` (the default): an image counts as robust only if the model classifies the clean input and
  every PGD iterate correctly. Clean errors are never attacked, and an image leaves the batch as soon as an
  iterate fools it, so later steps spend compute only on images still standing. Per image this is never
  above the final-iterate verdict from the same start; it is below it exactly when an image is fooled at
  some iterate and classified correctly again at the last (or is a clean error the final iterate gets right).
- `final_iterate`: every image, clean errors too, is attacked for all steps and the last iterate alone is
  judged, exactly as torchattacks' PGD and the paper's code do (same start, same steps, same projection).
"""
from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass
from typing import Literal

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
    verdict: Literal["any_iterate", "final_iterate"] = "any_iterate"
    precision: Literal["auto", "fp32", "tf32", "bf16"] = "fp32"
    threat_model: ThreatModel = ThreatModel.LINF

    def __post_init__(self):
        if not 0 < self.eps <= 1:
            raise ValueError(f"PGD eps must be in (0, 1] pixel units, got {self.eps}")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"PGD alpha must be in (0, 1], got {self.alpha}")
        if self.steps < 1:
            raise ValueError(f"PGD steps must be at least 1, got {self.steps}")
        if self.precision not in ("auto", "fp32", "tf32", "bf16"):
            raise ValueError(f"PGD precision must be auto, fp32, tf32 or bf16, got {self.precision!r}")
        if self.verdict not in ("any_iterate", "final_iterate"):
            raise ValueError(f"PGD verdict must be 'any_iterate' or 'final_iterate', got {self.verdict!r}")


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


@contextlib.contextmanager
def pgd_arithmetic(precision: str, device: torch.device):
    """The attack's arithmetic: yields the autocast dtype (bf16, or None for float32 passes) and, on CUDA, sets
    whether float32 matmuls and convolutions may use TF32 while the attack runs (restored after): yes for tf32
    and auto, no for fp32 (torch's default lets cuDNN convolutions, e.g. the patch embedding, use TF32)."""
    if precision == "bf16":
        yield torch.bfloat16
        return
    if device.type != "cuda":
        yield None
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision != "fp32"
    try:
        yield None
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def pgd_robust(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: PGDConfig,
               batch_size: int, device: torch.device, seed: int = 0,
               clean_ok: torch.Tensor | None = None, first: int = 0) -> torch.Tensor:
    """Boolean [N]: is each image robust under `config.verdict`. Model must be in eval mode.

    The random start is drawn for the whole batch from a generator seeded with `seed`, so the same
    seed gives the same attack at every evaluation point (and matches torchattacks' start when its
    global RNG is seeded alike). The generator draws one number per pixel in order, serially (torch's
    CPU `uniform_`), so an image's start depends on its position in the attacked subset alone, not on
    the batch size. `first`: the position of `images[0]` in that subset, when `images` is a slice of it
    (a data-parallel worker's shard): the starts of the `first` images before it are drawn and dropped,
    so the slice is attacked from the very starts the whole subset gets. `clean_ok` ([N] booleans, e.g.
    from `clean_correct` on the same images) is the clean verdict when the caller has it: the
    any-iterate attack then skips its own clean forward pass (the final-iterate verdict does not use it).
    """
    if clean_ok is not None and len(clean_ok) != len(images):
        raise ValueError(f"clean_ok has {len(clean_ok)} verdicts for {len(images)} images")
    if first < 0:
        raise ValueError(f"first must be a position in the attacked subset (0 or more), got {first}")
    with pgd_arithmetic(config.precision, device) as dtype:
        return _pgd_batches(model, images, labels, config, batch_size, device, seed, clean_ok, dtype, first)


def _skip_starts(generator: torch.Generator, images: int, image_shape: torch.Size, config: PGDConfig) -> None:
    """Advance `generator` past the random starts of `images` images: drawn (float32, as `_as_float` makes
    every attacked image) and dropped, about 4M numbers at a time so the memory stays 16 MiB."""
    per_piece = max(1, (1 << 22) // max(1, image_shape.numel()))
    for start in range(0, images, per_piece):
        count = min(per_piece, images - start)
        torch.empty((count, *image_shape), dtype=torch.float32).uniform_(-config.eps, config.eps, generator=generator)


def _pgd_batches(model, images, labels, config: PGDConfig, batch_size: int, device: torch.device, seed: int,
                 clean_ok: torch.Tensor | None, dtype: torch.dtype | None, first: int = 0) -> torch.Tensor:
    generator = torch.Generator(device="cpu").manual_seed(seed)
    if config.random_start and first:
        _skip_starts(generator, first, images.shape[1:], config)
    out = []
    for start in range(0, len(images), batch_size):
        x = _as_float(images[start:start + batch_size], device)
        y = labels[start:start + batch_size].to(device)
        noise = None
        if config.random_start:
            noise = torch.empty(x.shape, dtype=x.dtype).uniform_(-config.eps, config.eps, generator=generator)
        if config.verdict == "final_iterate":
            out.append(_pgd_final_iterate(model, x, y, noise, config, dtype).cpu())
            continue
        known = None if clean_ok is None else clean_ok[start:start + batch_size].to(device)
        out.append(_pgd_any_iterate(model, x, y, noise, config, known, dtype).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def _logits(model: nn.Module, images: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    with torch.autocast(images.device.type, dtype=dtype, enabled=dtype is not None):
        return model(images).float()


def pgd_iteration(model: nn.Module, adv: torch.Tensor, labels: torch.Tensor, reduction: Literal["sum", "mean"] = "sum",
                  dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's work in one PGD iteration: a forward pass on the float images `adv` and the gradient of the
    loss with respect to them. Returns (fooled: is the model wrong on each image, the gradient). A summed loss
    gives each image its own gradient whichever images share the batch; the mean (torchattacks') scales it by
    1/batch, which leaves its sign unchanged. `dtype`: the autocast dtype of the forward pass (None: float32).
    `rft estimate` times this."""
    adv.requires_grad_(True)
    with torch.enable_grad():
        logits = _logits(model, adv, dtype)
        fooled = logits.argmax(1) != labels
        grad, = torch.autograd.grad(F.cross_entropy(logits, labels, reduction=reduction), adv)
    return fooled, grad


def _step(adv: torch.Tensor, grad: torch.Tensor, origin: torch.Tensor, config: PGDConfig) -> torch.Tensor:
    """One signed-gradient ascent step, projected onto the eps-ball around `origin` and the pixel range, in
    torchattacks' order of operations (so both attacks produce the same floats)."""
    adv = adv.detach() + config.alpha * grad.sign()
    delta = torch.clamp(adv - origin, min=-config.eps, max=config.eps)
    return torch.clamp(origin + delta, min=0, max=1)


def _pgd_final_iterate(model, x, y, noise, config: PGDConfig, dtype: torch.dtype | None) -> torch.Tensor:
    adv = x.clone() if noise is None else torch.clamp(x + noise.to(x.device), min=0, max=1)
    for _ in range(config.steps):
        _, grad = pgd_iteration(model, adv, y, reduction="mean", dtype=dtype)
        with torch.no_grad():
            adv = _step(adv, grad, x, config)
    with torch.no_grad():
        return _logits(model, adv, dtype).argmax(1) == y


def _pgd_any_iterate(model, x, y, noise, config: PGDConfig, clean_ok: torch.Tensor | None,
                     dtype: torch.dtype | None) -> torch.Tensor:
    robust = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    if clean_ok is None:
        with torch.no_grad():
            clean_ok = _logits(model, x, dtype).argmax(1) == y
    active = clean_ok.nonzero().squeeze(1)  # clean errors are never attacked
    if len(active) == 0:
        return robust
    origin = x[active]
    labels = y[active]
    adv = origin.clone()
    if noise is not None:
        adv = (adv + noise[active.cpu()].to(x.device)).clamp_(0, 1)
    for _ in range(config.steps):
        fooled, grad = pgd_iteration(model, adv, labels, dtype=dtype)
        with torch.no_grad():
            keep = ~fooled
            origin, labels, active = origin[keep], labels[keep], active[keep]
            adv = _step(adv.detach()[keep], grad[keep], origin, config)
        if len(active) == 0:
            return robust
    adv.requires_grad_(True)  # the last iterate is judged as every earlier one: same forward, no gradient
    with torch.enable_grad():
        fooled = _logits(model, adv, dtype).argmax(1) != labels
    robust[active[~fooled]] = True
    return robust


@dataclass
class EvalSet:
    """A fixed evaluation subset, decoded once: uint8 images [N,3,S,S] and labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor) -> "EvalSet":
        """The images at positions `index` (e.g. the PGD subset of the test subset)."""
        return EvalSet(self.images[index], self.labels[index])


def accuracy(correct: torch.Tensor) -> float:
    return float(correct.float().mean()) if len(correct) else float("nan")
