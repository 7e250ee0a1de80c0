"""Benchmark 1, per strategy: training images/s of a bare PyTorch loop (the ceiling) vs `rft`'s `train_loop`
for each fine-tuning strategy, on the same model, data and batch; on the GPU when there is one.

    .venv/bin/python benchmarks/strategy_speed.py                  # GPU: ViT-B/16 (random init) at 224 px, batch 128
    .venv/bin/python benchmarks/strategy_speed.py --steps 20 --warmup 5 --strategies full,lora,linear   # CPU, ~1 min

Data: CIFAR-10 training images from the shared Parquet file (digits when it is absent), a seeded subset small
enough for `rft` to decode once and keep in memory (its path for every split that fits). Bare loop: those
images on the device, resized to the model's size there once; random batches, cross-entropy, AdamW (fused on
CUDA), bf16 autocast on a GPU that has bf16, fp32 elsewhere. rft: `train_loop` on a spec of the same model,
strategy, data and batch with the bare loop's work (precision auto, no augmentation, no clipping) and only its
step-0 and final evaluation points. Both run `--warmup` untimed steps, then `--steps` timed ones; rft's clock
is read by an observer's `on_step_start` hook, so neither evaluation point is counted. Clocks are read after
`torch.cuda.synchronize()` on a GPU. MFU (GPU only): rft images/s x training FLOPs per image (counted by
`rft_ray.cost.calibrate.count_flops`) / the peak dense bf16 FLOP/s given by `--peak-tflops`.
Goals (GPU-efficiency issue), printed as checks, not asserted: rft/bare >= 0.95 for every strategy; every
PEFT strategy at least as fast as full fine-tuning under rft.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from common import SHARED_DATA, cifar_available, header, median

STRATEGIES = ["full", "linear", "bitfit", "lora", "ia3", "adapter", "compacter"]
EMBEDDED = "rft_vit_cifar_patch8_32"
# NVIDIA H100 SXM and H200 SXM datasheets: BF16 Tensor Core 1,979 TFLOP/s "with sparsity"; dense is half.
DEFAULT_PEAK_TFLOPS = 989.0
MAX_TRAIN_IMAGES = 8192  # enough distinct batches; keeps the first (cache-cold) decode short
LR, WEIGHT_DECAY = 1e-4, 1e-2  # small enough that no strategy diverges in a short run


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_section(name: str) -> dict:
    # The embedded ViT ships its weights; any other timm name is built with random weights (no download).
    return {"name": name, "source": "embedded" if name == EMBEDDED else "random"}


def dataset_section(limit: int) -> dict:
    if cifar_available():
        return {"name": "parquet", "val_fraction": 0.0, "corruptions": [], "train_limit": limit,
                "options": {"train": str(SHARED_DATA / "cifar10" / "train.parquet"),
                            "test": str(SHARED_DATA / "cifar10" / "test.parquet")}}
    return {"name": "digits", "val_fraction": 0.0, "corruptions": [], "train_limit": limit}


def train_limit(size: int) -> int:
    """Training images such that rft keeps the decoded split in memory (not per-batch decoding)."""
    from rft_ray.training.setup import TRAIN_CACHE_BYTES

    return min(MAX_TRAIN_IMAGES, int(0.9 * TRAIN_CACHE_BYTES) // (3 * size * size))


def spec_dict(args, strategy: str, limit: int, steps: int, compile_: bool, results: str) -> dict:
    return {
        "model": model_section(args.model),
        "strategy": {"name": strategy},
        "dataset": dataset_section(limit),
        "training": {"steps": steps, "batch_size": args.batch, "lr": LR, "weight_decay": WEIGHT_DECAY,
                     "precision": "auto", "augment": "none", "grad_clip": None, "checkpoint": False,
                     "compile": compile_},
        "evaluation": {"schedule": [{"until": None, "every": 10_000_000}], "train_examples": 1, "test_examples": 1,
                       "ood_examples": 1, "pgd": {"steps": 1, "examples": 1}},
        "output": {"results": results},
    }


def device_images(limit: int, size: int, device):
    """The training subset (uint8 [N,3,S,S] and labels) on `device`, resized there from 32 px in chunks."""
    import torch
    import torch.nn.functional as F

    from rft_ray.config import DatasetSpec
    from rft_ray.data import create_bundle

    bundle = create_bundle(DatasetSpec(**dataset_section(limit)), 32, cache=True)
    pixels, labels = bundle.train.materialize()
    out = torch.empty((len(labels), 3, size, size), dtype=torch.uint8, device=device)
    for start in range(0, len(labels), 512):
        chunk = pixels[start:start + 512].to(device).float()
        if size != 32:
            chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False)
        out[start:start + 512] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out, labels.to(device), bundle.num_classes


def bare_loop(args, strategy: str, data, device, dtype) -> float:
    """Images/s of a plain PyTorch loop over device-resident data."""
    import torch
    import torch.nn.functional as F

    from rft_ray.config import ModelSpec
    from rft_ray.models.backbones import create_classifier
    from rft_ray.models.strategies import create_strategy

    pixels, labels, classes = data
    torch.manual_seed(0)
    model = create_classifier(ModelSpec(**model_section(args.model)), classes, seed=0)
    create_strategy(strategy, {}).apply(model)
    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=LR, weight_decay=WEIGHT_DECAY, fused=device.type == "cuda")
    generator = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        idx = torch.randint(0, len(labels), (args.batch,), device=device, generator=generator)
        x = pixels[idx].float().div_(255.0)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    sync(device)
    began = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    return args.steps * args.batch / (time.perf_counter() - began)


class StepClock:
    """A run observer that reads the clock (after a device sync) before steps `first` and `last` (1-based,
    as the loop's `on_step_start` counts them): between them lie exactly the timed steps."""

    def __init__(self, first: int, last: int, device):
        self.first, self.last, self.device, self.marks = first, last, device, {}

    def on_step_start(self, step: int, context) -> None:
        if step in (self.first, self.last):
            sync(self.device)
            self.marks[step] = time.perf_counter()

    def records_changed(self, records, checkpoint_dir) -> None:
        pass


def rft_loop(args, strategy: str, limit: int, device, compile_: bool) -> float:
    """Images/s of `train_loop` over the timed steps (one more step follows them, then the final evaluation)."""
    from rft_ray.config import RunSpec
    from rft_ray.training.loop import train_loop

    total = args.warmup + args.steps + 1
    clock = StepClock(args.warmup + 1, total, device)
    with tempfile.TemporaryDirectory(prefix="rft-bench-store-") as results:
        train_loop(RunSpec.from_dict(spec_dict(args, strategy, limit, total, compile_, results)), [clock])
    return args.steps * args.batch / (clock.marks[total] - clock.marks[args.warmup + 1])


def train_flops(args, strategy: str, limit: int) -> float:
    from rft_ray.config import RunSpec
    from rft_ray.cost.calibrate import count_flops

    return count_flops(RunSpec.from_dict(spec_dict(args, strategy, limit, 1, False, tempfile.gettempdir())))["train"]


def free(device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: dict, gpu: bool, compiled: bool) -> None:
    full = rows.get("full")
    columns = ["strategy", "bare img/s", "rft img/s", "rft/bare", "bare vs full", "rft vs full", "MFU"]
    if compiled:
        columns += ["rft compiled img/s", "compiled/eager"]
    print(" | ".join(columns))
    for name, r in rows.items():
        cells = [name, f"{r['bare_img_s']:.1f}", f"{r['rft_img_s']:.1f}", fmt(r["rft_over_bare"]),
                 fmt(r["bare_img_s"] / full["bare_img_s"] if full else None),
                 fmt(r["rft_img_s"] / full["rft_img_s"] if full else None),
                 f"{100 * r['mfu']:.1f}%" if gpu and r.get("mfu") is not None else "-"]
        if compiled:
            cells += [f"{r['rft_compiled_img_s']:.1f}", fmt(r["compiled_over_eager"])]
        print(" | ".join(cells))


def checks(rows: dict) -> None:
    print("\nchecks (goals, not asserts):")
    for name, r in rows.items():
        print(f"  {name}: rft/bare {r['rft_over_bare']:.2f} {'met' if r['rft_over_bare'] >= 0.95 else 'MISSED'} "
              "(goal >= 0.95)")
    if "full" not in rows:
        print("  PEFT vs full: not checked (full not measured)")
        return
    for name, r in rows.items():
        if name != "full":
            ratio = r["rft_img_s"] / rows["full"]["rft_img_s"]
            print(f"  {name}: rft img/s {ratio:.2f}x full's {'met' if ratio >= 1 else 'MISSED'} (goal >= 1.00)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma list")
    parser.add_argument("--model", help=f"timm name (GPU default vit_base_patch16_224, CPU default {EMBEDDED})")
    parser.add_argument("--batch", type=int, help="GPU default 128, CPU default 32")
    parser.add_argument("--steps", type=int, help="timed steps per loop (GPU default 200, CPU default 30)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (GPU default 20, CPU default 5)")
    parser.add_argument("--repeats", type=int, default=1, help="median of this many runs of each loop")
    parser.add_argument("--compile", action="store_true", help="also time rft with training.compile: true")
    parser.add_argument("--peak-tflops", type=float, default=DEFAULT_PEAK_TFLOPS,
                        help="the GPU's peak dense bf16 TFLOP/s, for MFU (default: H100/H200 SXM)")
    parser.add_argument("--json", help="write every number to this file")
    args = parser.parse_args()
    import torch

    from rft_ray.config import RunSpec
    from rft_ray.training.setup import autocast_dtype, resolve_image_size

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    args.model = args.model or ("vit_base_patch16_224" if gpu else EMBEDDED)
    args.batch = args.batch or (128 if gpu else 32)
    args.steps = args.steps or (200 if gpu else 30)
    args.warmup = args.warmup if args.warmup is not None else (20 if gpu else 5)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        parser.error(f"unknown strategies {unknown}; choose from {STRATEGIES}")
    size = resolve_image_size(RunSpec.from_dict({"model": model_section(args.model)}))
    dtype = autocast_dtype("auto", device)
    precision = "bf16 autocast" if dtype is torch.bfloat16 else "fp32"
    limit = train_limit(size)
    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    if not gpu and os.environ.get("OMP_WAIT_POLICY"):
        name += f", OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
    header("Benchmark 1 per strategy: bare PyTorch loop vs rft train_loop", " ".join([Path(sys.executable).name, *sys.argv]))
    data = device_images(limit, size, device)
    source = "CIFAR-10" if cifar_available() else "digits (CIFAR-10 Parquet not found)"
    print(f"device: {name} | model {args.model} ({model_section(args.model)['source']}) at {size} px, batch "
          f"{args.batch}, {args.steps} timed steps after {args.warmup} warm-up, {precision}, {len(data[1])} "
          f"{source} training images, median of {args.repeats}\n", flush=True)
    rows = {}
    for strategy in strategies:
        bare, ours, compiled = [], [], []
        for _ in range(args.repeats):
            bare.append(bare_loop(args, strategy, data, device, dtype))
            free(device)
            ours.append(rft_loop(args, strategy, limit, device, compile_=False))
            free(device)
            if args.compile:
                compiled.append(rft_loop(args, strategy, limit, device, compile_=True))
                free(device)
        row = {"bare_img_s": median(bare), "rft_img_s": median(ours), "bare_runs": bare, "rft_runs": ours}
        row["rft_over_bare"] = row["rft_img_s"] / row["bare_img_s"]
        row["train_flops_per_image"] = train_flops(args, strategy, limit)
        row["mfu"] = row["rft_img_s"] * row["train_flops_per_image"] / (args.peak_tflops * 1e12) if gpu else None
        if args.compile:
            row.update(rft_compiled_img_s=median(compiled), rft_compiled_runs=compiled,
                       compiled_over_eager=median(compiled) / row["rft_img_s"])
        rows[strategy] = row
        print(f"  {strategy}: bare {row['bare_img_s']:.1f} img/s, rft {row['rft_img_s']:.1f} img/s"
              + (f", rft compiled {row['rft_compiled_img_s']:.1f} img/s" if args.compile else ""), flush=True)
    print()
    table(rows, gpu, args.compile)
    if gpu:
        print(f"MFU: rft img/s x training FLOPs per image / {args.peak_tflops:g} TFLOP/s (peak dense bf16)")
    checks(rows)
    if not gpu and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        # Measured here: libgomp's spinning workers make a loop many times slower whenever another process takes
        # a core, and a second thread that ran torch ops (rft's batch prefetch) stops the spinning.
        print("\nCPU note: torch's OpenMP workers spin while they wait; on a shared machine a run can be many times "
              "slower than the next; OMP_WAIT_POLICY=PASSIVE gives steadier figures")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "device": name, "model": args.model, "image_size": size, "batch": args.batch, "steps": args.steps,
            "warmup": args.warmup, "repeats": args.repeats, "precision": precision, "train_images": len(data[1]),
            "data": source, "peak_tflops": args.peak_tflops if gpu else None, "strategies": rows}, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
