"""Benchmark 4, data: a trial's data set-up with the node's data cache cold (the first trial on a node),
warm (every later trial) and off (every trial decoding for itself, as before the cache).

    /work/venv/bin/python benchmarks/data.py              # ~3 min
    /work/venv/bin/python benchmarks/data.py --dataset digits

Each set-up runs in a fresh Python process, as a trial's worker does, and times what `train_loop` does
before its first step with the data: `create_bundle` (through the cache), the fixed evaluation subsets
(`EvalSets.from_bundle`: the paper's sizes, train 1,000, the whole test split, 4 corruption domains x 1,000)
and the decoded training split. Dataset: CIFAR-10 from the shared Parquet files (50,000 + 10,000 JPEGs,
32 px). Goal (issue 5): the second trial's data set-up at most 10% of the first's.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import SHARED_DATA, cifar_available, header, median, spread


def spec_dict(dataset: str) -> dict:
    if dataset == "cifar10":
        data = {"name": "parquet", "val_fraction": 0.0,
                "options": {"train": str(SHARED_DATA / "cifar10" / "train.parquet"),
                            "test": str(SHARED_DATA / "cifar10" / "test.parquet")}}
    else:
        data = {"name": "digits"}
    return {"dataset": data, "evaluation": {"train_examples": 1000, "test_examples": None, "ood_examples": 1000},
            "model": {"name": "rft_vit_cifar_patch8_32", "source": "embedded"}}


def child(dataset: str) -> None:
    import time

    import torch

    torch.set_num_threads(1)
    from rft_ray.config import RunSpec
    from rft_ray.data import create_bundle
    from rft_ray.evaluation.evaluator import EvalSets

    spec = RunSpec.from_dict(spec_dict(dataset))
    began = time.perf_counter()
    bundle = create_bundle(spec.dataset, 32, cache=True)
    after_bundle = time.perf_counter()
    pixels, labels = bundle.train.materialize()
    after_train = time.perf_counter()
    sets = EvalSets.from_bundle(bundle, spec)
    done = time.perf_counter()
    checksum = int(pixels[:: max(1, len(pixels) // 97)].sum()) + int(sets.test.images.sum())
    print(json.dumps({"total": done - began, "bundle": after_bundle - began, "train": after_train - after_bundle,
                      "eval_sets": done - after_train, "train_images": len(labels), "checksum": checksum}))


def run_child(dataset: str, cache: str) -> dict:
    env = {**os.environ, "RFT_DATA_CACHE": cache}
    out = subprocess.run([sys.executable, __file__, "--child", dataset], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dataset", choices=["cifar10", "digits"], default="cifar10")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    header("Benchmark 4: data set-up per trial", " ".join([Path(sys.executable).name, *sys.argv]))
    dataset = args.dataset if (args.dataset != "cifar10" or cifar_available()) else "digits"
    print(f"dataset: {dataset}; each set-up in a fresh process with 1 torch thread\n")
    cold, warm, off = [], [], []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="rft-cache-bench-") as folder:
            first = run_child(dataset, folder)
            second = run_child(dataset, folder)
        uncached = run_child(dataset, "off")
        assert first["checksum"] == second["checksum"] == uncached["checksum"], "cached data differs"
        cold.append(first)
        warm.append(second)
        off.append(uncached)
        print(f"  repeat {i + 1}: first trial {first['total']:.2f} s, second {second['total']:.2f} s, "
              f"without cache {uncached['total']:.2f} s ({first['train_images']:,} training images)", flush=True)
    for name, runs in (("first trial (cache cold)", cold), ("second trial (cache warm)", warm),
                       ("any trial, cache off", off)):
        parts = ", ".join(f"{k} {median([r[k] for r in runs]):.2f} s" for k in ("bundle", "train", "eval_sets"))
        print(f"{name:<28} total {spread([r['total'] for r in runs])} s  ({parts})")
    ratio = median([r["total"] for r in warm]) / median([r["total"] for r in cold])
    print(f"\nsecond / first trial's data set-up: {ratio:.1%} (goal <= 10%)")
    print(f"second trial / a trial without the cache: "
          f"{median([r['total'] for r in warm]) / median([r['total'] for r in off]):.1%}; first trial's cost of "
          f"writing the cache: {median([r['total'] for r in cold]) - median([r['total'] for r in off]):+.2f} s")


if __name__ == "__main__":
    main()
