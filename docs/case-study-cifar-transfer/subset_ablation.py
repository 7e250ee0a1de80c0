"""The case study's final weights attacked on two sets of 200 test images: the stratified 200 this run's
records used, and the first 200 of the test split that the first run (commit 0b73085) attacked.

    PYTHONPATH=<checkout at the run's commit> python subset_ablation.py <sweep folder>/train > subset_ablation.json

For every trial's last checkpoint (step 700): clean and PGD accuracy (the run's own PGD settings and seed, the
any_iterate verdict) on both image sets, at eps 1/255 and 2/255, next to the accuracies its records hold.
"""
import glob
import json
import sys

import torch

from rft_ray.evaluation.evaluator import EvalSets
from rft_ray.evaluation.robustness import PGDConfig, clean_correct, pgd_robust
from rft_ray.specs import run_spec
from rft_ray.training.setup import Run

CPU = torch.device("cpu")


def attack(model, images, labels, spec, eps) -> tuple[float, float]:
    e = spec.evaluation
    config = PGDConfig(eps, e.pgd.alpha * eps / e.pgd.eps, e.pgd.steps, e.pgd.random_start)
    clean = clean_correct(model, images, labels, 256, CPU)
    robust = pgd_robust(model, images, labels, config, 256, CPU, seed=spec.dataset.split_seed, clean_ok=clean)
    return float(clean.float().mean()), float(robust.float().mean())


rows = []
for folder in sorted(glob.glob(f"{sys.argv[1]}/*/checkpoint_2*")):
    state = torch.load(f"{folder}/checkpoint.pt", map_location="cpu", weights_only=True)
    spec = run_spec(state["spec"])
    run = Run.build(spec)
    with torch.no_grad():
        for name, param in run.model.named_parameters():
            if param.requires_grad:
                param.copy_(state["trainable"][name])
    run.model.eval()
    sets = EvalSets.from_bundle(run.bundle, spec)
    last = state["records"][-1]
    row = {"run_id": spec.run_id, "strategy": spec.strategy.name, "lr": spec.training.lr,
           "weight_decay": spec.training.weight_decay, "step": state["step"],
           "recorded_pgd_1/255": last["pgd_adv_acc"], "recorded_pgd_2/255": last["pgd_adv_acc/2/255"]}
    for name, index in (("stratified", sets.pgd_index), ("first_200", torch.arange(200))):
        chosen = sets.test.take(index)
        for label, eps in (("1/255", 1 / 255), ("2/255", 2 / 255)):
            row[f"{name}_clean"], row[f"{name}_pgd_{label}"] = attack(run.model, chosen.images, chosen.labels,
                                                                        spec, eps)
    rows.append(row)
print(json.dumps(rows, indent=1))
