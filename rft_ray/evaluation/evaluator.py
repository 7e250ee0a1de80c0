"""One evaluation point: clean accuracy on fixed train and test subsets, PGD on a subset of the test subset,
and accuracy on every OOD domain. Every subset is seeded by `dataset.split_seed` and class-stratified (each
class in proportion to its share), drawn once per run; the PGD images are a stratified subset of the test
subset, so clean and robust accuracy describe the same classes whatever order a split is stored in."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from rft_ray.config import RunSpec, eps_label
from rft_ray.data import DataBundle, ImageSet
from rft_ray.data.base import stratified_indices, stratified_subset
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
    pgd_index: torch.Tensor  # positions in `test` of the images PGD attacks
    ood: dict[str, EvalSet]
    ood_sizes: dict[str, int]  # images in each whole OOD domain (the weights of `ood_pooling: by_size`)

    @classmethod
    def from_bundle(cls, bundle: DataBundle, spec: RunSpec) -> "EvalSets":
        e, seed = spec.evaluation, spec.dataset.split_seed

        def fixed(images: ImageSet, count: int | None, salt: str) -> EvalSet:
            return EvalSet(*stratified_subset(images, count, seed, salt).materialize())

        test = fixed(bundle.test, e.test_examples, "eval/test")
        pgd_index = torch.as_tensor(stratified_indices(test.labels.numpy(), e.pgd.examples, seed, "eval/pgd"))
        return cls(train=fixed(bundle.train, e.train_examples, "eval/train"), test=test, pgd_index=pgd_index,
                   ood={name: fixed(images, e.ood_examples, f"eval/ood/{name}") for name, images in bundle.ood.items()},
                   ood_sizes={name: len(images) for name, images in bundle.ood.items()})


def pooled_ood_accuracy(correct: dict[str, torch.Tensor], sizes: dict[str, int], pooling: str) -> float:
    """test_ood_accuracy: the domains' accuracies averaged with equal weights, or weighted by each whole
    domain's size (`by_size`: an estimate of the accuracy over the union of the domains). Domains without
    images carry no weight; NaN when there are none."""
    measured = {name: ok for name, ok in correct.items() if len(ok)}
    if not measured:
        return float("nan")
    weights = {name: 1.0 if pooling == "equal" else float(sizes[name]) for name in measured}
    return sum(weights[name] * accuracy(ok) for name, ok in measured.items()) / sum(weights.values())


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
        attacked = sets.test.take(sets.pgd_index)
        pgd = PGDConfig(e.pgd.eps, e.pgd.alpha, e.pgd.steps, e.pgd.random_start, e.pgd.verdict, e.pgd.precision)
        pgd_batch = e.pgd.batch_size or e.batch_size
        phase(f"PGD-{e.pgd.steps} on {len(attacked)} images")
        # The test pass's clean verdict starts every attack: one clean forward per image, not one per radius.
        clean_ok = test_ok[sets.pgd_index]
        robust = pgd_robust(model, attacked.images, attacked.labels, pgd, pgd_batch, device,
                            seed=spec.dataset.split_seed, clean_ok=clean_ok)
        extra = {}
        for radius in e.pgd.extra_eps:
            scaled = dataclasses.replace(pgd, eps=radius, alpha=e.pgd.alpha * radius / e.pgd.eps)
            phase(f"PGD-{e.pgd.steps} at eps {eps_label(radius)}")
            survived = pgd_robust(model, attacked.images, attacked.labels, scaled, pgd_batch, device,
                                  seed=spec.dataset.split_seed, clean_ok=clean_ok)
            extra[eps_label(radius)] = accuracy(survived)
        phase("OOD")
        ood_ok = {name: clean_correct(model, s.images, s.labels, e.batch_size, device, dtype)
                  for name, s in sets.ood.items()}
    finally:
        model.train(was_training)
    return dict(train_clean_acc=accuracy(train_ok), test_clean_acc=accuracy(test_ok), pgd_adv_acc=accuracy(robust),
                test_ood_accuracy=pooled_ood_accuracy(ood_ok, sets.ood_sizes, e.ood_pooling),
                ood_acc={k: accuracy(v) for k, v in ood_ok.items()}, pgd_extra=extra,
                train_images=len(train_ok), test_images=len(test_ok), pgd_images=len(robust),
                ood_images={k: len(v) for k, v in ood_ok.items()})
