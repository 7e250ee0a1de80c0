"""The one training loop. `rft run` calls it in-process; Ray Train workers call it unchanged.

Results leave the loop once per evaluation point, as the full list of `EvalRecord`s so far, through a
`RunObserver`. A checkpoint (written before the observer hears of the point, and holding the records
too) lets a run resume at the same step and produce the same subsequent records.
"""
from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rft_ray.backbones import ImageClassifier, create_classifier
from rft_ray.datasets import DataBundle, ImageSet, create_bundle
from rft_ray.datasets.base import seeded_subset
from rft_ray.records import EvalRecord, eps_label
from rft_ray.robustness import EvalSet, PGDConfig, accuracy, clean_correct, pgd_robust
from rft_ray.schedule import EvalSchedule
from rft_ray.spec import RunSpec, SpecError
from rft_ray.strategies import ParameterCount, create_strategy, count_parameters

CHECKPOINT_FILE = "checkpoint.pt"
# Spec sections a resumed run may change without invalidating its checkpoint.
RESUMABLE_CHANGES = ("output",)
# Decode the whole training split once when it fits in this many bytes; larger sets decode per batch.
TRAIN_CACHE_BYTES = 1 << 30


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stops with the records it has."""


class RunObserver(Protocol):
    def records_changed(self, records: list[EvalRecord], checkpoint_dir: Path | None) -> None: ...


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise SpecError("device is 'cuda' but no GPU is visible to torch; use 'auto' or 'cpu'", "training.device")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def resolve_image_size(spec: RunSpec) -> int:
    if spec.model.image_size:
        return spec.model.image_size
    import timm

    with torch.device("meta"):  # architecture only: no weights allocated or downloaded
        model = timm.create_model(spec.model.name, pretrained=False)
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    return int(size[0]) if size else int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


class BatchOrder:
    """Seeded, resumable batch order: epoch e is a permutation drawn from (seed, e)."""

    def __init__(self, size: int, batch_size: int, seed: int):
        self.size, self.seed = size, seed
        self.batch_size = min(batch_size, size)
        self.steps_per_epoch = max(1, size // self.batch_size)  # drop_last: every step sees a full batch

    def batches(self, start_step: int):
        epoch, offset = divmod(start_step, self.steps_per_epoch)
        while True:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=generator)
            for i in range(offset, self.steps_per_epoch):
                yield order[i * self.batch_size:(i + 1) * self.batch_size].tolist()
            epoch, offset = epoch + 1, 0


def cosine_with_warmup(total_steps: int, warmup_fraction: float):
    warmup = int(round(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@dataclass
class Run:
    """Everything a run builds before its first step (shared by the loop and `rft strategies`-like tools)."""

    spec: RunSpec
    device: torch.device
    dtype: torch.dtype | None
    bundle: DataBundle
    model: ImageClassifier
    params: ParameterCount
    total_steps: int
    order: BatchOrder

    @classmethod
    def build(cls, spec: RunSpec) -> "Run":
        device = resolve_device(spec.training.device)
        dtype = autocast_dtype(spec.training.precision, device)
        seed_everything(spec.training.seed)
        bundle = create_bundle(spec.dataset, resolve_image_size(spec), cache=True)  # decoded once per node
        model = create_classifier(spec.model, bundle.num_classes, seed=spec.training.seed)
        create_strategy(spec.strategy.name, spec.strategy.options).apply(model)
        model.to(device)
        order = BatchOrder(len(bundle.train), spec.training.batch_size, spec.training.seed)
        t = spec.training
        total = t.steps if t.steps is not None else max(1, int(round(t.epochs * order.steps_per_epoch)))
        return cls(spec, device, dtype, bundle, model, count_parameters(model), total, order)


def _spec_fingerprint(spec: RunSpec) -> dict:
    plain = spec.to_dict()
    return {k: v for k, v in plain.items() if k not in RESUMABLE_CHANGES}


def save_checkpoint(directory: Path, state: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / CHECKPOINT_FILE
    temporary = directory / f".{CHECKPOINT_FILE}.{os.getpid()}.tmp"
    torch.save(state, temporary)
    os.replace(temporary, final)  # one checkpoint per run, replaced whole, never half-written
    return final


def load_checkpoint(directory: Path, spec: RunSpec) -> dict | None:
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RuntimeError(f"checkpoint {path} cannot be read ({err}); delete it to start the run afresh") from err
    saved = state.get("spec_fingerprint", {})
    current = _spec_fingerprint(spec)
    if saved != current:
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        raise SpecError(f"checkpoint {path} was made by a run with different settings in {', '.join(changed)}; "
                        "use another run id or output.checkpoints, or delete the checkpoint", "output.run_id")
    return state


def train_loop(spec: RunSpec, observer: RunObserver, checkpoint_dir: Path | None = None,
               resume_from: Path | None = None, progress: bool = False) -> list[EvalRecord]:
    """Fine-tune per `spec`, evaluating on the schedule; returns every record of the run."""
    started = time.perf_counter()
    run = Run.build(spec)
    model, device, dtype, t = run.model, run.device, run.dtype, spec.training
    sets = EvalSets.from_bundle(run.bundle, spec)
    schedule = EvalSchedule.from_spec(spec.evaluation)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=t.lr, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(run.total_steps, t.warmup_fraction))

    step, records, elapsed_before = 0, [], 0.0
    state = load_checkpoint(resume_from, spec) if resume_from else None
    if state is not None:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        missing = [n for n in names if n not in state["trainable"]]
        if missing:
            raise RuntimeError(f"checkpoint in {resume_from} lacks parameters {missing[:3]}")
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.requires_grad:
                    param.copy_(state["trainable"][name])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        step, elapsed_before = state["step"], state["elapsed"]
        records = [EvalRecord.from_row(row) for row in state["records"]]
        observer.records_changed(records, None)

    def make_record(metrics: dict, loss: float, eval_seconds: float) -> EvalRecord:
        examples = step * run.order.batch_size
        return EvalRecord(
            run_id=spec.run_id, strategy=spec.strategy.name, dataset=spec.dataset.title, model=spec.model.name,
            lr=t.lr, weight_decay=t.weight_decay, seed=t.seed, step=step, total_steps=run.total_steps,
            epoch=examples / len(run.bundle.train), examples_seen=examples, train_loss=loss,
            pgd_eps=spec.evaluation.pgd.eps, trainable_params=run.params.trainable, total_params=run.params.total,
            wall_seconds=elapsed_before + time.perf_counter() - started, eval_seconds=eval_seconds, **metrics)

    def evaluation_point(loss: float) -> None:
        began = time.perf_counter()
        metrics = evaluate(model, sets, spec, device, dtype, bar)
        records.append(make_record(metrics, loss, time.perf_counter() - began))
        saved = None
        if checkpoint_dir is not None and t.checkpoint:
            saved = save_checkpoint(Path(checkpoint_dir), {
                "step": step, "elapsed": elapsed_before + time.perf_counter() - started,
                "trainable": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(), "records": [r.to_row() for r in records],
                "spec": spec.to_dict(), "spec_fingerprint": _spec_fingerprint(spec)}).parent
        observer.records_changed(records, saved)
        if bar is not None:
            bar.set_description_str(spec.run_id)
            bar.set_postfix(acc=f"{records[-1].test_clean_acc:.3f}", pgd=f"{records[-1].pgd_adv_acc:.3f}")

    bar = _progress(progress, run.total_steps, step, spec.run_id)
    if state is None:  # a fresh run measures step 0; a resumed one already has it among its records
        evaluation_point(float("nan"))
    model.train()
    loss_sum, loss_count = 0.0, 0
    batches = train_batches(run.bundle.train, run.order, step, t.num_workers)
    while step < run.total_steps:
        images, labels = next(batches)
        if t.augment == "crop_flip":
            images = crop_flip(images, seed=t.seed * 1_000_003 + step)
        images = images.to(device, non_blocking=True).float().div_(255.0)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(images), labels)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"run {spec.run_id}: loss became {loss.item()} at step {step + 1} "
                                   f"(lr {t.lr:g}); the {len(records)} records before it are kept")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip is not None:
            nn.utils.clip_grad_norm_(trainable, t.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        loss_sum, loss_count = loss_sum + loss.item(), loss_count + 1
        if bar is not None:
            bar.update(1)
        if schedule.is_point(step, run.total_steps):
            evaluation_point(loss_sum / loss_count)
            loss_sum, loss_count = 0.0, 0
    if bar is not None:
        bar.close()
    return records


def crop_flip(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Random crop with reflection padding of 1/8 of the size, and horizontal flip; seeded per step."""
    generator = torch.Generator().manual_seed(seed)
    n, _, size, _ = images.shape
    pad = max(1, size // 8)
    padded = F.pad(images.float(), (pad, pad, pad, pad), mode="reflect")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.stack([padded[i, :, dy[i]:dy[i] + size, dx[i]:dx[i] + size] for i in range(n)])
    out[flip] = out[flip].flip(-1)
    return out.to(images.dtype)


class _BatchSampler:
    def __init__(self, order: BatchOrder, start_step: int):
        self.order, self.start_step = order, start_step

    def __iter__(self):
        return self.order.batches(self.start_step)


def train_batches(images: ImageSet, order: BatchOrder, start_step: int, num_workers: int):
    """Endless (uint8 images, labels) batches in `order`; decodes the whole split once when it fits."""
    if len(images) * 3 * images.size * images.size <= TRAIN_CACHE_BYTES:
        pixels, labels = images.materialize()
        return ((pixels[idx], labels[idx]) for idx in order.batches(start_step))
    loader = torch.utils.data.DataLoader(images, batch_sampler=_BatchSampler(order, start_step),
                                         num_workers=num_workers, pin_memory=torch.cuda.is_available())
    return iter(loader)


def _progress(enabled: bool, total: int, initial: int, name: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=name, unit="step", dynamic_ncols=True)


RECORD_FIELDS = [f.name for f in fields(EvalRecord)]
