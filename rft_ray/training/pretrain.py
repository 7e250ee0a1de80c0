"""`rft pretrain`: train the embedded default's small ViT upstream on CIFAR-10, with the same loop as every run.

Pretraining is a run like any other (full fine-tuning of a randomly initialised model on CIFAR-10);
its final checkpoint becomes the package's embedded weights, with a model card beside them.
"""
from __future__ import annotations

import hashlib
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from rft_ray.config import RunSpec, SpecError
from rft_ray.models.backbones import EMBEDDED_MODEL, embedded_weights_path
from rft_ray.training.checkpoint import CHECKPOINT_FILE
from rft_ray.training.runner import run_in_process


def pretrain_spec(data: str | None, epochs: float, seed: int, work_dir: str, batch_size: int = 128,
                  lr: float = 2e-3) -> RunSpec:
    if data:
        root = Path(data)
        train, test = root / "train.parquet", root / "test.parquet"
        for path in (train, test):
            if not path.is_file():
                raise SpecError(f"{path} not found: --data must be a folder with train.parquet and test.parquet "
                                "(Hugging Face-style CIFAR-10 export)", "data")
        dataset = {"name": "parquet", "options": {"train": str(train), "test": str(test)}}
    else:
        dataset = {"name": "cifar10", "root": str(Path(work_dir) / "cifar10"), "download": True}
    dataset.update(val_fraction=0.0, corruptions=[])
    return RunSpec.from_dict({
        "model": {"name": EMBEDDED_MODEL, "source": "random"},
        "strategy": {"name": "full"},
        "dataset": dataset,
        "training": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": 0.05,
                     "warmup_fraction": 0.05, "grad_clip": 1.0, "augment": "crop_flip", "seed": seed},
        "evaluation": {"schedule": [{"until": None, "every": 1000}], "train_examples": 2000,
                       "test_examples": None, "ood_examples": None, "pgd": {"examples": 500}},
        "output": {"results": str(Path(work_dir) / "store"), "checkpoints": str(Path(work_dir) / "checkpoints"),
                   "run_id": f"pretrain-{EMBEDDED_MODEL}-s{seed}"},
    })


def pretrain(data: str | None, epochs: float, seed: int, work_dir: str, out: str | None) -> Path:
    from safetensors.torch import save_file

    spec = pretrain_spec(data, epochs, seed, work_dir)
    began = time.time()
    result = run_in_process(spec, progress=True)
    state = torch.load(result.checkpoint_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=True)["trainable"]
    weights = {name.removeprefix("backbone."): tensor.contiguous() for name, tensor in state.items()}
    target = Path(out) if out else embedded_weights_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(target), metadata={"architecture": EMBEDDED_MODEL, "data": "CIFAR-10"})
    final = result.records[-1]
    card = target.with_name("MODEL_CARD.md")
    command = "rft pretrain " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 else "rft pretrain"
    card.write_text(_card(spec, final, target, command, time.time() - began))
    print(f"weights: {target} ({target.stat().st_size / 1e6:.2f} MB); card: {card}")
    return target


def _card(spec: RunSpec, final, weights: Path, command: str, seconds: float) -> str:
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    t = spec.training
    return f"""# Embedded default backbone: `{EMBEDDED_MODEL}`

A small timm VisionTransformer (32x32 input, patch 8 so 16 tokens + class token, width 128, depth 4,
4 heads, MLP ratio 4; {final.total_params:,} parameters) trained from scratch on CIFAR-10 by `rft pretrain`.
It is the upstream model of the embedded default: small enough that PGD evaluation runs on a CPU.

| | |
| --- | --- |
| data | CIFAR-10 train split, 50,000 images ({spec.dataset.name} source{': ' + spec.dataset.options.get('train', '') if spec.dataset.options else ''}) |
| input normalisation | mean = std = 0.5 per channel (inside the model; the paper's choice) |
| training | {t.epochs:g} epochs ({final.step} steps of {t.batch_size}), AdamW lr {t.lr:g}, weight decay {t.weight_decay:g}, cosine schedule with {t.warmup_fraction:.0%} warm-up, gradient clipping {t.grad_clip}, random crop + flip, seed {t.seed} |
| CIFAR-10 test accuracy | **{final.test_clean_acc:.4f}** (all 10,000 test images) |
| CIFAR-10 train accuracy | {final.train_clean_acc:.4f} (fixed 2,000-image subset) |
| PGD accuracy (eps 1/255, 15 steps) | {final.pgd_adv_acc:.4f} (a seeded, class-stratified 500 of the test images) |
| wall time | {seconds / 60:.1f} min on {platform.machine()} CPU, torch {torch.__version__}, {torch.get_num_threads()} threads |
| file | `{weights.name}`, safetensors, sha256 `{digest}` |

Reproduce (from the project root, with the CIFAR-10 Parquet files of `../shared/data/cifar10`, or with
no `--data` and a network, through torchvision):

```
{command}
```

Note: the Parquet CIFAR-10 images are JPEG-compressed (see that folder's README), so accuracy is a little
lower than on the lossless originals.
"""
