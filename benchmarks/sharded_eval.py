"""Benchmark: one evaluation point sharded over 1 vs 2 data-parallel workers (CPU, gloo): PGD time and the
whole point's, and whether the verdicts are the same.

    flock /tmp/rft-heavy.lock /work/main/.venv/bin/python benchmarks/sharded_eval.py [--pgd 400] [--repeats 3]

The model is the embedded ViT (pretrained on CIFAR-10, its own head kept) on CIFAR-10 test images (the shared
Parquet file, a seeded stratified 80/20 split of it: the point's test subset is drawn from the 20%); the digits
dataset with a random-init model when the file is absent (then nearly every image is a clean error and PGD has
little to do). One evaluation point as the training loop measures it (`evaluate`): 200 train and `--pgd` test
images clean, PGD-10 at eps 1/255 (alpha 0.25/255, any-iterate verdict, random start) on `--pgd` test images,
100 images of one OOD domain (contrast); validation off. Timed: the PGD pass alone (each worker's slice,
`pgd_robust(first=...)`, then the gather) and the whole point, each the median of `--repeats`, on rank 0 after
a barrier (the gather waits for the slower worker, so this is the group's wall time). Run three ways on the
same cores: one process with 1 thread, one process with 2 threads (what a one-worker trial gets from 2 CPUs),
and 2 gloo processes of 1 thread each (Ray Train's process group, Ray's start-up not included).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

from common import SHARED_DATA, cifar_available, header

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def spec(pgd_images: int) -> dict:
    if cifar_available():
        model = {"name": "rft_vit_cifar_patch8_32", "source": "embedded", "image_size": 32, "keep_head": True}
        dataset = {"name": "parquet", "options": {"train": str(SHARED_DATA / "cifar10" / "test.parquet")},
                   "val_fraction": 0.0, "corruptions": ["contrast"]}
    else:
        model = {"name": "rft_vit_cifar_patch8_32", "source": "random", "image_size": 32}
        dataset = {"name": "digits", "val_fraction": 0.0, "corruptions": ["contrast"]}
    return {"model": model, "strategy": {"name": "full"}, "dataset": dataset,
            "training": {"steps": 1, "batch_size": 16, "seed": 0},
            "evaluation": {"train_examples": 200, "test_examples": pgd_images, "ood_examples": 100, "batch_size": 100,
                           "validation": {"enabled": False},
                           "pgd": {"eps": "1/255", "alpha": "0.25/255", "steps": 10, "examples": pgd_images}}}


def measure(data: dict, repeats: int, shard) -> dict:
    """Median seconds of the PGD pass and of the whole point, and the verdicts, in this process (of `shard`)."""
    from rft_ray.evaluation.evaluator import EvalSets, evaluate
    from rft_ray.evaluation.robustness import PGDConfig, pgd_robust
    from rft_ray.specs import run_spec
    from rft_ray.training.setup import Run

    run_config = run_spec(data)
    run = Run.build(run_config)
    sets = EvalSets.from_bundle(run.bundle, run_config)
    model, e = run.model.eval(), run_config.evaluation
    attacked = sets.test.take(sets.pgd_index)
    config = PGDConfig(e.pgd.eps, e.pgd.alpha, e.pgd.steps, e.pgd.random_start, e.pgd.verdict, e.pgd.precision)
    part = shard.part(len(attacked))

    def barrier():
        if shard.world > 1:
            dist.barrier()

    pgd_seconds, point_seconds = [], []
    for _ in range(repeats):
        barrier()
        began = time.perf_counter()
        mine = pgd_robust(model, attacked.images[part], attacked.labels[part], config, e.pgd.batch_size or e.batch_size,
                          run.device, seed=run_config.dataset.split_seed, first=part.start)
        robust = shard.gather(mine, len(attacked), run.device)
        pgd_seconds.append(time.perf_counter() - began)
        barrier()
        began = time.perf_counter()
        verdicts: dict = {}
        metrics = evaluate(model, sets, run_config, run.device, run.dtype, verdicts=verdicts, shard=shard)
        point_seconds.append(time.perf_counter() - began)
    return {"pgd": statistics.median(pgd_seconds), "point": statistics.median(point_seconds),
            "pgd_runs": pgd_seconds, "point_runs": point_seconds, "robust": robust.tolist(),
            "verdicts": {k: v.tolist() for k, v in verdicts.items()}, "pgd_adv_acc": metrics["pgd_adv_acc"],
            "test_clean_acc": metrics["test_clean_acc"]}


def _worker(rank: int, world: int, port: int, data: dict, repeats: int, out: str) -> None:
    from rft_ray.evaluation.sharding import EvalShard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = measure(data, repeats, EvalShard(rank, world))
        if rank == 0:
            Path(out).write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def two_workers(data: dict, repeats: int, out: Path) -> dict:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_worker, args=(2, port, data, repeats, str(out)), nprocs=2, join=True)
    return json.loads(out.read_text())


def runs(result: dict, key: str) -> str:
    return ", ".join(f"{s:.2f}" for s in result[f"{key}_runs"])


def main() -> None:
    from rft_ray.evaluation.sharding import EvalShard

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pgd", type=int, default=400, help="test images, all of them attacked")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    header("sharded evaluation: 1 vs 2 workers per trial (CPU, gloo)",
           f"python benchmarks/sharded_eval.py --pgd {args.pgd} --repeats {args.repeats}")
    data = spec(args.pgd)
    print(f"data: {'CIFAR-10 test Parquet, embedded pretrained ViT' if cifar_available() else 'digits, random ViT'}; "
          f"PGD-10 on {args.pgd} images, {args.repeats} repeats", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results[f"1 worker, {threads} thread(s)"] = measure(data, args.repeats, EvalShard())
        results["2 workers, 1 thread each"] = two_workers(data, args.repeats, Path(tmp) / "two.json")
    one = results["1 worker, 1 thread(s)"]
    print(f"clean accuracy {one['test_clean_acc']:.3f}, PGD accuracy {one['pgd_adv_acc']:.3f} on the attacked images")
    for name, result in results.items():
        differ = sum(a != b for m in one["verdicts"] for a, b in zip(one["verdicts"][m], result["verdicts"][m]))
        print(f"{name:>26}: PGD {result['pgd']:.2f} s (runs {runs(result, 'pgd')}), whole point "
              f"{result['point']:.2f} s (runs {runs(result, 'point')}); verdicts differing from 1 worker's: {differ}")
    two = results["2 workers, 1 thread each"]
    for base in ("1 worker, 1 thread(s)", "1 worker, 2 thread(s)"):
        print(f"2 workers vs {base}: PGD time {two['pgd'] / results[base]['pgd']:.2f}x, whole point "
              f"{two['point'] / results[base]['point']:.2f}x")


if __name__ == "__main__":
    main()
