"""One evaluation point: clean accuracy on fixed train and test subsets, PGD on a subset of the test subset,
and accuracy on every OOD domain; and the same on the validation split (`evaluation.validation`): clean
accuracy on a validation subset, PGD on a part of it, and optionally OOD validation. Every subset is seeded
by `dataset.split_seed` and class-stratified (each class in proportion to its share), drawn once per run; the
PGD images are a stratified subset of the test (validation) subset, so clean and robust accuracy describe the
same classes whatever order a split is stored in. Selections read the validation metrics; test is reported."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
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
from rft_ray.evaluation.sharding import EvalShard
from rft_ray.results.verdicts import Subset


@dataclass
class ValidationSets:
    """The validation split's subsets (`evaluation.validation`), drawn like the test ones."""

    clean: EvalSet
    pgd_index: torch.Tensor  # positions in `clean` of the images PGD attacks
    ood: dict[str, EvalSet]  # empty unless validation.ood
    ood_sizes: dict[str, int]  # images each domain's validation part was drawn from (`ood_pooling: by_size`)
    subsets: dict[str, Subset] = dataclasses.field(default_factory=dict)  # val, val/pgd, val/ood/<domain>


@dataclass
class EvalSets:
    train: EvalSet
    test: EvalSet
    pgd_index: torch.Tensor  # positions in `test` of the images PGD attacks
    ood: dict[str, EvalSet]
    ood_sizes: dict[str, int]  # images in each whole OOD domain (the weights of `ood_pooling: by_size`)
    validation: ValidationSets | None = None  # None: validation off, or an empty validation split
    # The identity of every subset's images (rft_ray.results.verdicts): test, test/pgd, ood/<domain>, and the
    # validation ones; what lets two runs' per-image verdicts be paired.
    subsets: dict[str, Subset] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_bundle(cls, bundle: DataBundle, spec: RunSpec, validation: bool = True) -> "EvalSets":
        """The run's subsets; `validation` False leaves the validation ones out (`rft attack` reads test only)."""
        e, seed = spec.evaluation, spec.dataset.split_seed

        def fixed(images: ImageSet, count: int | None, salt: str) -> EvalSet:
            return EvalSet(*stratified_subset(images, count, seed, salt).materialize())

        subsets: dict[str, Subset] = {}
        test = _drawn(bundle.test, e.test_examples, seed, "eval/test", subsets, "test")
        pgd_index = torch.as_tensor(stratified_indices(test.labels.numpy(), e.pgd.examples, seed, "eval/pgd"))
        _sub_subset(subsets, "test", "test/pgd", test, pgd_index)
        measured = validation and e.validation.enabled and len(bundle.val) > 0
        valid = validation_sets(bundle, spec) if measured else None
        return cls(train=fixed(bundle.train, e.train_examples, "eval/train"), test=test, pgd_index=pgd_index,
                   ood={name: _drawn(images, e.ood_examples, seed, f"eval/ood/{name}", subsets, f"ood/{name}")
                        for name, images in bundle.ood.items()},
                   ood_sizes={name: len(images) for name, images in bundle.ood.items()},
                   validation=valid, subsets={**subsets, **(valid.subsets if valid is not None else {})})


def _drawn(images: ImageSet, count: int | None, seed: int, salt: str, subsets: dict[str, Subset],
           name: str) -> EvalSet:
    """The seeded, stratified subset (as `stratified_subset`), its identity recorded in `subsets` under `name`."""
    indices = stratified_indices(images.labels, count, seed, salt)
    drawn = EvalSet(*(images if len(indices) == len(images) else images.subset(indices)).materialize())
    subsets[name] = Subset.of(indices, drawn.labels.numpy(), drawn.images.numpy())
    return drawn


def _sub_subset(subsets: dict[str, Subset], parent: str, name: str, drawn: EvalSet, positions: torch.Tensor) -> None:
    """The identity of the PGD part of a subset: its split indices (the parent's at `positions`)."""
    where = positions.numpy()
    subsets[name] = Subset.of(subsets[parent].indices[where], drawn.labels.numpy()[where],
                              drawn.images.numpy()[where])


def validation_ood_pools(bundle: DataBundle, spec: RunSpec) -> dict[str, ImageSet]:
    """Where each OOD domain's validation images come from: a corruption's, the corrupted validation split; the
    dataset's own or the run's own domain's, the images of the domain that its test subset does not use (none
    when the test subset is the whole domain: then the domain has no validation part and is left out)."""
    e, seed = spec.evaluation, spec.dataset.split_seed
    pools = {}
    for name, images in bundle.ood.items():
        if name in bundle.val_ood:
            pools[name] = bundle.val_ood[name]
            continue
        tested = stratified_indices(images.labels, e.ood_examples, seed, f"eval/ood/{name}")
        rest = np.setdiff1d(np.arange(len(images)), tested)
        if len(rest):
            pools[name] = images.subset(rest)
    return pools


def validation_sets(bundle: DataBundle, spec: RunSpec) -> ValidationSets:
    v, seed = spec.evaluation.validation, spec.dataset.split_seed
    subsets: dict[str, Subset] = {}
    clean = _drawn(bundle.val, v.examples, seed, "val/clean", subsets, "val")
    pgd_index = torch.as_tensor(stratified_indices(clean.labels.numpy(), v.pgd_examples, seed, "val/pgd"))
    _sub_subset(subsets, "val", "val/pgd", clean, pgd_index)
    pools = validation_ood_pools(bundle, spec) if v.ood else {}
    return ValidationSets(clean=clean, pgd_index=pgd_index,
                          ood={name: _drawn(images, v.ood_examples, seed, f"val/ood/{name}", subsets,
                                            f"val/ood/{name}") for name, images in pools.items()},
                          ood_sizes={name: len(images) for name, images in pools.items()}, subsets=subsets)


def pooled_ood_accuracy(correct: dict[str, torch.Tensor], sizes: dict[str, int], pooling: str) -> float:
    """test_ood_accuracy: the domains' accuracies averaged with equal weights, or weighted by each whole
    domain's size (`by_size`: an estimate of the accuracy over the union of the domains). Domains without
    images carry no weight; NaN when there are none."""
    measured = {name: ok for name, ok in correct.items() if len(ok)}
    if not measured:
        return float("nan")
    weights = {name: 1.0 if pooling == "equal" else float(sizes[name]) for name in measured}
    return sum(weights[name] * accuracy(ok) for name, ok in measured.items()) / sum(weights.values())


# Which subset each metric's verdicts are measured on (rft_ray.results.verdicts); the radius and domain columns
# follow their prefix.
METRIC_SUBSETS = {"test_clean_acc": "test", "pgd_adv_acc": "test/pgd", "val_clean_acc": "val",
                  "val_pgd_adv_acc": "val/pgd"}


def verdict_subset(metric: str) -> str:
    """The subset name of a verdict metric (`METRIC_SUBSETS`; pgd_adv_acc/<r> -> test/pgd, ood_acc/<d> ->
    ood/<d>, val_ood_acc/<d> -> val/ood/<d>)."""
    if metric in METRIC_SUBSETS:
        return METRIC_SUBSETS[metric]
    prefix, _, rest = metric.partition("/")
    return {"pgd_adv_acc": "test/pgd", "ood_acc": f"ood/{rest}", "val_ood_acc": f"val/ood/{rest}"}[prefix]


class _Passes:
    """The evaluation passes over a subset, each worker on its shard's slice (`EvalShard`), every verdict of the
    subset gathered on every worker."""

    def __init__(self, model: nn.Module, spec: RunSpec, device: torch.device, dtype: torch.dtype | None,
                 shard: EvalShard):
        self.model, self.spec, self.device, self.dtype, self.shard = model, spec, device, dtype, shard
        self.pgd_batch = spec.evaluation.pgd.batch_size or spec.evaluation.batch_size

    def clean(self, images: EvalSet) -> torch.Tensor:
        part = self.shard.part(len(images))
        mine = clean_correct(self.model, images.images[part], images.labels[part], self.spec.evaluation.batch_size,
                             self.device, self.dtype)
        return self.shard.gather(mine, len(images), self.device)

    def attack(self, attacked: EvalSet, config: PGDConfig, clean_ok: torch.Tensor) -> torch.Tensor:
        """PGD on `attacked` (`clean_ok`: its clean verdicts), from the random starts of the whole subset."""
        part = self.shard.part(len(attacked))
        mine = pgd_robust(self.model, attacked.images[part], attacked.labels[part], config, self.pgd_batch,
                          self.device, seed=self.spec.dataset.split_seed, clean_ok=clean_ok[part], first=part.start)
        return self.shard.gather(mine, len(attacked), self.device)


def evaluate(model: nn.Module, sets: EvalSets, spec: RunSpec, device: torch.device,
             dtype: torch.dtype | None, bar=None, verdicts: dict | None = None,
             shard: EvalShard = EvalShard()) -> dict:
    """The point's metrics (EvalRecord's fields); with `verdicts` (a dict), also fills it with each metric's
    per-image verdicts (metric -> bool numpy array, in its subset's image order; `verdict_subset`). `shard`:
    this data-parallel worker's part of every subset (`rft_ray.evaluation.sharding`); every worker of the
    group must call this together, and each gets the metrics and verdicts of the whole subsets."""
    e = spec.evaluation
    passes = _Passes(model, spec, device, dtype, shard)
    was_training = model.training
    model.eval()

    def phase(name: str) -> None:
        if bar is not None:
            bar.set_description_str(f"eval: {name}")

    try:
        phase("train subset")
        train_ok = passes.clean(sets.train)
        phase("test")
        test_ok = passes.clean(sets.test)
        attacked = sets.test.take(sets.pgd_index)
        pgd = PGDConfig(e.pgd.eps, e.pgd.alpha, e.pgd.steps, e.pgd.random_start, e.pgd.verdict, e.pgd.precision)
        phase(f"PGD-{e.pgd.steps} on {len(attacked)} images")
        # The test pass's clean verdict starts every attack: one clean forward per image, not one per radius.
        clean_ok = test_ok[sets.pgd_index]
        robust = passes.attack(attacked, pgd, clean_ok)
        extra = {}
        for radius in e.pgd.extra_eps:
            scaled = dataclasses.replace(pgd, eps=radius, alpha=e.pgd.alpha * radius / e.pgd.eps)
            phase(f"PGD-{e.pgd.steps} at eps {eps_label(radius)}")
            survived = passes.attack(attacked, scaled, clean_ok)
            extra[eps_label(radius)] = accuracy(survived)
            if verdicts is not None:
                verdicts[f"pgd_adv_acc/{eps_label(radius)}"] = survived.cpu().numpy()
        phase("OOD")
        ood_ok = {name: passes.clean(s) for name, s in sets.ood.items()}
        validated = _validate(passes, sets.validation, pgd, phase, verdicts) if sets.validation is not None else {}
    finally:
        model.train(was_training)
    if verdicts is not None:
        verdicts.update({"test_clean_acc": test_ok.cpu().numpy(), "pgd_adv_acc": robust.cpu().numpy(),
                         **{f"ood_acc/{name}": ok.cpu().numpy() for name, ok in ood_ok.items()}})
    return dict(train_clean_acc=accuracy(train_ok), test_clean_acc=accuracy(test_ok), pgd_adv_acc=accuracy(robust),
                test_ood_accuracy=pooled_ood_accuracy(ood_ok, sets.ood_sizes, e.ood_pooling),
                ood_acc={k: accuracy(v) for k, v in ood_ok.items()}, pgd_extra=extra,
                train_images=len(train_ok), test_images=len(test_ok), pgd_images=len(robust),
                ood_images={k: len(v) for k, v in ood_ok.items()}, **validated)


def _validate(passes: _Passes, sets: ValidationSets, pgd: PGDConfig, phase, verdicts: dict | None = None) -> dict:
    """The validation metrics and their image counts (EvalRecord's val_* fields): clean, PGD at the main radius
    (same settings and seed as the test attack), and the pooled OOD validation accuracy when asked."""
    e = passes.spec.evaluation
    phase("validation")
    clean_ok = passes.clean(sets.clean)
    attacked = sets.clean.take(sets.pgd_index)
    phase(f"validation PGD-{e.pgd.steps} on {len(attacked)} images")
    robust = passes.attack(attacked, pgd, clean_ok[sets.pgd_index])
    out = dict(val_clean_acc=accuracy(clean_ok), val_pgd_adv_acc=accuracy(robust), val_images=len(clean_ok),
               val_pgd_images=len(robust))
    if verdicts is not None:
        verdicts.update(val_clean_acc=clean_ok.cpu().numpy(), val_pgd_adv_acc=robust.cpu().numpy())
    if e.validation.ood and sets.ood:
        phase("validation OOD")
        ood_ok = {name: passes.clean(s) for name, s in sets.ood.items()}
        out.update(val_ood_accuracy=pooled_ood_accuracy(ood_ok, sets.ood_sizes, e.ood_pooling),
                   val_ood_images=sum(len(ok) for ok in ood_ok.values()))
        if verdicts is not None:
            verdicts.update({f"val_ood_acc/{name}": ok.cpu().numpy() for name, ok in ood_ok.items()})
    return out
