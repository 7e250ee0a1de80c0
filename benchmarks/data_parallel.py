"""Benchmark: 1 vs 2 data-parallel workers per trial on this machine (CPU, gloo): correctness and overhead.

    flock /tmp/rft-heavy.lock /work/main/.venv/bin/python benchmarks/data_parallel.py [--steps 100] [--batch 64]

The same run (the demo's 32px ViT, random init, on digits; full and lora; crop-and-flip; evaluated at step 0 and
at the end on 200 test images, PGD-3) is trained by the one training loop in one process with 2 torch threads,
and by 2 processes of 1 thread each joined by a gloo process group (what Ray Train sets up for a trial's workers:
Ray's own start-up is not included here). Same cores, same global batch.
Reported: the largest difference of any accuracy between the two runs' records (in images), the relative
difference of the final training loss, and the training seconds (the last point's time, less both points'
evaluation and the set-up before step 0) of each. On 2 cores this measures DDP's overhead (all-reduce of the
gradients, the per-worker Python work), not a speed-up: one process already uses both cores. GPU scaling is not
measured (no multi-GPU node was available).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
from pathlib import Path

from common import header

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rft_ray.results.record import EvalRecord
from rft_ray.specs import run_spec
from rft_ray.training.loop import train_loop


def spec(strategy: str, steps: int, batch: int, root: Path) -> dict:
    return {
        "model": {"name": "rft_vit_cifar_patch8_32", "source": "random", "image_size": 32},
        "strategy": {"name": strategy},
        "dataset": {"name": "digits", "corruptions": ["contrast"]},
        "training": {"steps": steps, "batch_size": batch, "lr": 1e-3, "seed": 0, "augment": "crop_flip"},
        "evaluation": {"schedule": [{"until": None, "every": steps}], "train_examples": 200, "test_examples": 200,
                       "ood_examples": 100, "batch_size": 100, "pgd": {"eps": "4/255", "alpha": "1/255", "steps": 3}},
        "output": {"results": str(root / "store"), "run_id": f"bench-{strategy}"},
    }


def training_seconds(records: list[EvalRecord]) -> float:
    first, last = records[0], records[-1]
    return last.wall_seconds - last.eval_seconds - first.wall_seconds


def _worker(rank: int, world: int, port: int, specs: list[dict], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        rows = [[r.to_row() for r in train_loop(run_spec(s), [])] for s in specs]
        if rank == 0:
            Path(out).write_text(json.dumps(rows))
    finally:
        dist.destroy_process_group()


def two_workers(specs: list[dict], out: Path) -> list[list[EvalRecord]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_worker, args=(2, port, specs, str(out)), nprocs=2, join=True)
    return [[EvalRecord.from_row(r) for r in rows] for rows in json.loads(out.read_text())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    header("data parallel: 1 vs 2 workers per trial (CPU, gloo)", f"python benchmarks/data_parallel.py --steps "
           f"{args.steps} --batch {args.batch}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        specs = [spec(s, args.steps, args.batch, root) for s in ("full", "lora")]
        torch.set_num_threads(2)
        one = [train_loop(run_spec(s), []) for s in specs]
        two = two_workers(specs, root / "two.json")
    for s, a, b in zip(specs, one, two):
        keys = ["train_clean_acc", "test_clean_acc", "pgd_adv_acc"]
        images = {"train_clean_acc": a[-1].train_images, "test_clean_acc": a[-1].test_images,
                  "pgd_adv_acc": a[-1].pgd_images}
        worst = max(abs(getattr(x, k) - getattr(y, k)) * images[k] for x, y in zip(a, b) for k in keys)
        loss = abs(a[-1].train_loss - b[-1].train_loss) / abs(a[-1].train_loss)
        t1, t2 = training_seconds(a), training_seconds(b)
        print(f"{s['strategy']['name']:>5}: {args.steps} steps of {args.batch} images; records differ by at most "
              f"{worst:.0f} image(s) on any accuracy at any point, final train loss by {loss:.1e} (relative); "
              f"training {t1:.1f} s with 1 worker (2 threads), {t2:.1f} s with 2 workers (1 thread each): "
              f"{t2 / t1:.2f}x")


if __name__ == "__main__":
    main()
