"""One evaluation point: clean accuracy on fixed train and test subsets, PGD on the test subset's head,
and accuracy on every OOD domain. The subsets are drawn once per run, seeded by `dataset.split_seed`."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rft_ray.config import RunSpec, eps_label
from rft_ray.data import DataBundle, ImageSet
from rft_ray.data.base import seeded_subset
from rft_ray.evaluation.robustness import (
    EvalSet,
    PGDConfig,
    accuracy,
    clean_correct,
    pgd_robust,
)


@dataclass
class EvalSets:
    train: EvalSet
    test: EvalSet
    ood: dict[str, EvalSet]

    @classmethod
    def from_bundle(cls, bundle: DataBundle, spec: RunSpec) -> "EvalSets":
        e, seed = spec.evaluation, spec.dataset.split_seed

        def fixed(images: ImageSet, count: int | None, salt: str) -> EvalSet:
            return EvalSet(*seeded_subset(images, count, seed, salt).materialize())

        return cls(train=fixed(bundle.train, e.train_examples, "eval/train"),
                   test=fixed(bundle.test, e.test_examples, "eval/test"),
                   ood={name: fixed(images, e.ood_examples, f"eval/ood/{name}") for name, images in bundle.ood.items()})


def evaluate(model: nn.Module, sets: EvalSets, spec: RunSpec, device: torch.device,
             dtype: torch.dtype | None, bar=None) -> dict:
    e = spec.evaluation
    was_training = model.training
    model.eval()

    def phase(name: str) -> None:
        if bar is not None:
            bar.set_description_str(f"eval: {name}")

    try:
        phase("train subset")
        train_ok = clean_correct(model, sets.train.images, sets.train.labels, e.batch_size, device, dtype)
        phase("test")
        test_ok = clean_correct(model, sets.test.images, sets.test.labels, e.batch_size, device, dtype)
        attacked = sets.test.head(e.pgd.examples)
        pgd = PGDConfig(e.pgd.eps, e.pgd.alpha, e.pgd.steps, e.pgd.random_start)
        phase(f"PGD-{e.pgd.steps} on {len(attacked)} images")
        # The test pass's clean verdict starts every attack: one clean forward per image, not one per radius.
        clean_ok = test_ok[: len(attacked)]
        robust = pgd_robust(model, attacked.images, attacked.labels, pgd, e.batch_size, device,
                            seed=spec.dataset.split_seed, clean_ok=clean_ok)
        extra = {}
        for radius in e.pgd.extra_eps:
            scaled = PGDConfig(radius, e.pgd.alpha * radius / e.pgd.eps, e.pgd.steps, e.pgd.random_start)
            phase(f"PGD-{e.pgd.steps} at eps {eps_label(radius)}")
            survived = pgd_robust(model, attacked.images, attacked.labels, scaled, e.batch_size, device,
                                  seed=spec.dataset.split_seed, clean_ok=clean_ok)
            extra[eps_label(radius)] = accuracy(survived)
        phase("OOD")
        ood_ok = {name: clean_correct(model, s.images, s.labels, e.batch_size, device, dtype)
                  for name, s in sets.ood.items()}
    finally:
        model.train(was_training)
    pooled = torch.cat(list(ood_ok.values())) if ood_ok else torch.zeros(0, dtype=torch.bool)
    return dict(train_clean_acc=accuracy(train_ok), test_clean_acc=accuracy(test_ok), pgd_adv_acc=accuracy(robust),
                test_ood_accuracy=accuracy(pooled), ood_acc={k: accuracy(v) for k, v in ood_ok.items()},
                pgd_extra=extra)
