"""Recipes: named presets that fill the settings a run spec leaves out.

`recipe: paper_code` is the training and evaluation recipe of the paper's public code
(github kyangl/robustness-finetuning, `scripts/main.py` and `scripts/finetune.py`, Hugging Face Trainer):

- every strategy: batch 128, AdamW, no weight decay on biases and LayerNorm weights (the Trainer's decay
  groups), gradient norm clipped at 1.0 (the Trainer's
  `max_grad_norm`), fp32 for training and PGD (`fp16` is commented out), no augmentation (the image processor only resizes
  and normalises), a 10% validation hold-out, PGD judged on the final iterate of every image
  (torchattacks), OOD accuracy over the union of the domains, and the code's evaluation schedule;
- full fine-tuning (`finetune`): lr 2e-5 and weight decay 0.01 (`main.py`'s defaults), linear decay from
  the first step (the Trainer's default schedule, no warm-up);
- every other strategy (linear probing, BitFit and the adapters): lr 5e-3 and weight decay 0, as
  `finetune.py`'s note on those defaults says ("5e-3 for others", "0 for others"), 800 warm-up steps, then
  cosine decay;
- the bottleneck adapter and Compacter: AdapterHub's initialisation (`strategy.options.init: adapterhub`), which
  the code's `BnConfig` and `CompacterConfig` (`build.py:113-116`) get by default;
- LP-FT (not in the paper's code): full fine-tuning's settings, since `training.lr` is its fine-tuning phase's
  (its probe phase takes `strategy.options.probe_lr`, by default 30x that lr).

Given values always win: a sweep's lr and weight decay, or any key the spec sets, replace the preset's.
docs/fidelity.md sets every aspect side by side with the paper's code.
"""
from __future__ import annotations

import copy
from typing import Any

PAPER_CODE: dict[str, Any] = {
    "dataset": {"val_fraction": 0.1},
    "training": {"batch_size": 128, "no_weight_decay": ["bias", "norm"], "grad_clip": 1.0,
                 "precision": "fp32", "augment": "none"},
    "evaluation": {"schedule": "paper_code", "ood_pooling": "by_size",
                   "pgd": {"eps": 1 / 255, "alpha": 0.25 / 255, "steps": 15, "random_start": True,
                           "verdict": "final_iterate", "precision": "fp32"}},
}
PAPER_CODE_FULL = {"training": {"lr": 2e-5, "weight_decay": 0.01, "lr_schedule": "linear", "warmup_steps": 0}}
PAPER_CODE_OTHERS = {"training": {"lr": 5e-3, "weight_decay": 0.0, "lr_schedule": "cosine", "warmup_steps": 800}}
PAPER_CODE_ADAPTERS = {"strategy": {"options": {"init": "adapterhub"}}}  # adapter, compacter


def recipe_settings(recipe: str, strategy: str) -> dict[str, Any]:
    """The settings `recipe` gives a run of `strategy` (empty for the default recipe)."""
    if recipe != "paper_code":
        return {}
    settings = merged(PAPER_CODE, PAPER_CODE_FULL if strategy in ("full", "lp_ft") else PAPER_CODE_OTHERS)
    return merged(settings, PAPER_CODE_ADAPTERS) if strategy in ("adapter", "compacter") else settings


def with_recipe(data: Any, default_strategy: str) -> Any:
    """`data` (a run spec as a mapping) with its recipe's settings filled in wherever `data` has none;
    `default_strategy` is the strategy a spec without one runs."""
    if not isinstance(data, dict) or not isinstance(data.get("recipe", "default"), str):
        return data  # not a spec mapping: the builder reports it
    strategy = data.get("strategy")
    name = strategy.get("name", default_strategy) if isinstance(strategy, dict) else default_strategy
    settings = recipe_settings(data.get("recipe", "default"), name)
    return merged(settings, data) if settings else data


def merged(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """`defaults` overlaid with `given`, section by section (a given value, even null, replaces the default)."""
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
