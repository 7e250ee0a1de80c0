"""The attacks of `rft attack`, each giving a robust verdict per image, and a counter of the model's passes.

AutoAttack here is the standard version for L-inf (Croce & Hein 2020, fra31/auto-attack): APGD-CE, then
APGD-T, FAB-T and Square on the images still standing, in torchattacks 3.3.0's implementations, with the
reference's budget (`REFERENCE`): 100 iterations for APGD-CE, and per target class for APGD-T and FAB-T; the 9
most likely wrong classes as targets; 5000 Square queries (p_init 0.8, no schedule rescaling), one restart
each. torchattacks' own `AutoAttack(version='standard')` chains the same four classes in the same order but
with 10 iterations and every other class as a target, so we build the chain (`torchattacks.MultiAttack`)
ourselves. The single attacks (`apgd-ce`, `apgd-t`, `fab`, `square`) are these chain members alone. All run in
float32 (TF32 off on CUDA) and are seeded with the run's PGD seed (`dataset.split_seed`).

Verdict: the run's PGD verdict rule (`evaluation.pgd.verdict`), so that an attack's accuracy and training-time
PGD's compare like with like (the gradient-masking flag subtracts them). any_iterate: robust when the model
classifies the image correctly clean and under the attack; clean errors are not attacked. final_iterate: robust
when the model classifies the attack's final image correctly, clean errors attacked too (PGD's final iterate
can land back in the right class, so that rule can count a clean error as robust). An adversarial image is projected onto the eps-ball and [0, 1] before it is judged, so an
attack that overshoots the ball cannot count. `pgd` is the run's own PGD (`pgd_robust`, its steps, verdict,
precision, random start and seed) at the radius asked for, alpha scaled as `evaluation.pgd.extra_eps` scales it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from rft_ray.config import RunSpec, same_radius
from rft_ray.evaluation.robustness import EvalSet, PGDConfig, _as_float, pgd_arithmetic, pgd_robust
from rft_ray.results.attacks import ATTACK_SLUGS


@dataclass(frozen=True)
class AttackBudget:
    steps: int = 100  # iterations of APGD-CE, and per target class of APGD-T and FAB-T
    targets: int = 9  # target classes of APGD-T and FAB-T (at most the number of classes less one)
    queries: int = 5000  # Square's queries

    def __post_init__(self):
        if min(self.steps, self.targets, self.queries) < 1:
            raise ValueError(f"attack budget must be positive: {self}")


REFERENCE = AttackBudget()


class PassCounter(nn.Module):
    """The model, counting what it is asked to do, image by image: a forward pass whose output later receives a
    gradient (an attack's gradient step) counts as a forward-backward pass, every other one as forward-only."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.forward_backward = 0
        self.forward_only = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)
        count = len(images)
        self.forward_only += count  # moved to forward_backward when the first gradient reaches these logits
        if logits.requires_grad:
            seen = []

            def backward_reached(grad):
                if not seen:
                    seen.append(True)
                    self.forward_only -= count
                    self.forward_backward += count

            logits.register_hook(backward_reached)
        return logits


def _chain_members(model: nn.Module, eps: float, num_classes: int, seed: int, budget: AttackBudget) -> dict:
    import torchattacks

    # torchattacks targets the n_classes-1 most likely wrong classes: n_classes caps the targets.
    targets = min(budget.targets, num_classes - 1) + 1
    return {
        "apgd-ce": torchattacks.APGD(model, norm="Linf", eps=eps, steps=budget.steps, n_restarts=1, seed=seed,
                                     loss="ce"),
        "apgd-t": torchattacks.APGDT(model, norm="Linf", eps=eps, steps=budget.steps, n_restarts=1, seed=seed,
                                     n_classes=targets),
        "fab": torchattacks.FAB(model, norm="Linf", eps=eps, steps=budget.steps, n_restarts=1, seed=seed,
                                multi_targeted=True, n_classes=targets),
        "square": torchattacks.Square(model, norm="Linf", eps=eps, n_queries=budget.queries, n_restarts=1,
                                      p_init=0.8, resc_schedule=False, seed=seed),
    }


def build_attack(name: str, model: nn.Module, eps: float, num_classes: int, seed: int,
                 budget: AttackBudget = REFERENCE):
    """The torchattacks attack `name` (any of ATTACK_SLUGS but pgd) at radius `eps` on `model` (float images in
    [0, 1]; normalisation is inside the model)."""
    import torchattacks

    members = _chain_members(model, eps, num_classes, seed, budget)
    if name == "autoattack":
        return torchattacks.MultiAttack([members["apgd-ce"], members["apgd-t"], members["fab"], members["square"]])
    if name not in members:
        raise ValueError(f"no torchattacks attack {name!r}: one of autoattack, {', '.join(members)}")
    return members[name]


def pgd_config(spec: RunSpec, radius: float) -> PGDConfig:
    """The run's PGD at `radius`: exactly its own eps and alpha at its own radius (or one of its extra_eps), else
    alpha scaled by radius / eps, as the evaluation scales it for extra_eps."""
    p = spec.evaluation.pgd
    config = PGDConfig(p.eps, p.alpha, p.steps, p.random_start, p.verdict, p.precision)
    if same_radius(radius, p.eps):
        return config
    radius = next((r for r in p.extra_eps if same_radius(r, radius)), radius)
    return dataclasses.replace(config, eps=radius, alpha=p.alpha * radius / p.eps)


def robust_under(name: str, model: nn.Module, attacked: EvalSet, clean_ok: torch.Tensor, radius: float,
                 spec: RunSpec, num_classes: int, device: torch.device,
                 budget: AttackBudget = REFERENCE) -> torch.Tensor:
    """Boolean [N]: is each image of `attacked` robust under attack `name` at `radius` (module docstring).
    `clean_ok`: the clean verdict of those images as the run's evaluation computed it."""
    if name not in ATTACK_SLUGS:
        raise ValueError(f"unknown attack {name!r}")
    e, seed = spec.evaluation, spec.dataset.split_seed
    batch_size = e.pgd.batch_size or e.batch_size
    if name == "pgd":
        return pgd_robust(model, attacked.images, attacked.labels, pgd_config(spec, radius), batch_size, device,
                          seed=seed, clean_ok=clean_ok)
    robust = torch.zeros(len(attacked), dtype=torch.bool)
    # The images each verdict rule attacks (module docstring): all of them for final_iterate, like PGD.
    standing = torch.arange(len(attacked)) if e.pgd.verdict == "final_iterate" else clean_ok.nonzero().squeeze(1)
    with pgd_arithmetic("fp32", device):
        attack = build_attack(name, model, radius, num_classes, seed, budget)
        for index in standing.split(batch_size):
            images = _as_float(attacked.images[index], device)
            labels = attacked.labels[index].to(device)
            adversarial = attack(images, labels)
            with torch.no_grad():
                adversarial = torch.clamp(torch.minimum(torch.maximum(adversarial, images - radius), images + radius),
                                          0, 1)
                robust[index] = (model(adversarial).argmax(1) == labels).cpu()
    return robust
