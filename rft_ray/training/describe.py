"""What a run loaded, in a few lines before its first step (`rft run` prints them; a loop plugin, so a sweep's
trials could too): the data, its classes, images per split and how they were resized, the validation split,
the OOD domains, the PGD settings, the head it starts from, the strategy and its trainable parameters, and the training length, with a
warning when the spec gave neither steps nor epochs.

How images are resized (`rft_ray.data.base.to_tensor`): every image, whatever its size or shape, is converted
to RGB and resized to the model's square input S x S with bilinear interpolation, without keeping its aspect
ratio (a non-square image is stretched, never cropped or padded).
"""
from __future__ import annotations

import sys
from typing import Any, TextIO

from rft_ray.config import eps_label
from rft_ray.models.strategies import count_parameters

RESIZE_RULE = "RGB, resized to {s}x{s} bilinear, aspect ratio not kept (non-square images are stretched)"


def _names(names: list[str], shown: int = 6) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "")


def _subset(count: int | None, total: int) -> str:
    return f"{total}" if count is None or count >= total else f"{count} of {total}"


def describe(context: Any) -> list[str]:
    """The lines (module docstring); the last is a warning when the training length was not given."""
    spec, bundle = context.spec, context.bundle
    d, e, t, pgd = spec.dataset, spec.evaluation, spec.training, spec.evaluation.pgd
    source = f" from {d.root}" if d.root else ""
    lines = [f"data: {d.name} {d.title!r}{source}: {bundle.num_classes} classes ({_names(bundle.class_names)})",
             f"images: train {len(bundle.train)}, validation {len(bundle.val)} (val_fraction {d.val_fraction:g} of "
             f"the training images, seeded by split_seed {d.split_seed}), test {len(bundle.test)}; "
             + RESIZE_RULE.format(s=bundle.image_size)]
    if bundle.ood:
        own = set(d.ood)
        domains = [f"{name}{' (own)' if name in own else ''} {len(images)}" for name, images in bundle.ood.items()]
        corrupted = [name for name in bundle.ood if name in d.corruptions]
        lines.append(f"OOD domains: {', '.join(domains)}" + (f"; corruptions at severity {d.severity}"
                                                              if corrupted else "")
                     + f"; evaluated on {e.ood_examples or 'all'} per domain, pooled {e.ood_pooling}")
    else:
        lines.append("OOD domains: none")
    tested = min(e.test_examples or len(bundle.test), len(bundle.test))
    lines.append(f"evaluation: clean accuracy on {_subset(e.train_examples, len(bundle.train))} train and "
                 f"{_subset(e.test_examples, len(bundle.test))} test images; PGD L-inf eps {eps_label(pgd.eps)}"
                 + "".join(f", {eps_label(r)}" for r in pgd.extra_eps)
                 + f", {pgd.steps} steps of {eps_label(pgd.alpha)}, {pgd.verdict}, on "
                 f"{_subset(pgd.examples, tested)} of those test images")
    lines.append(head_line(spec, getattr(context.model, "head_init", "fresh"), bundle.num_classes))
    count = count_parameters(context.model)
    options = ", ".join(f"{k} {v}" for k, v in spec.strategy.options.items())
    lines.append(f"strategy: {spec.strategy.name}" + (f" ({options})" if options else "")
                 + f" on {spec.model.name}: {count.trainable:,} of {count.total:,} parameters trainable "
                 f"({100 * count.share:.3f}%)")
    batch = min(t.batch_size, len(bundle.train))
    per_epoch = max(1, len(bundle.train) // batch)
    lines.append(f"training: {context.total_steps} steps of batch {batch} ({context.total_steps / per_epoch:.3g} "
                 f"epochs of {per_epoch} steps)")
    if getattr(t, "length_defaulted", False):
        lines.append(f"warning: the spec gives neither training.steps nor training.epochs, so the run trains 1 epoch "
                     f"= {context.total_steps} steps (set --steps or --epochs)")
    return lines


def head_line(spec: Any, head_init: str, classes: int) -> str:
    """Which classifier the run starts from (rft_ray.models.backbones.create_classifier)."""
    if head_init == "pretrained":
        return (f"head: the pretrained classifier of the {spec.model.source} weights, kept (model.keep_head; same "
                f"{classes} classes)")
    return (f"head: new, {classes} outputs, initialised as timm initialises a ViT's (truncated normal, std 0.02; "
            f"bias 0) from training.seed {spec.training.seed}; no pretrained classifier is loaded")


class RunSummary:
    """Loop plugin printing `describe` once, when the run starts (`rft run` installs it)."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream

    def on_run_start(self, context) -> None:
        stream = self.stream or sys.stdout
        print(f"run {context.run_id}", file=stream)
        for line in describe(context):
            if line.startswith("warning:"):
                print(f"rft: {line}", file=sys.stderr if self.stream is None else stream, flush=True)
            else:
                print(f"  {line}", file=stream, flush=True)
