"""Benchmark 1, platform overhead: a bare PyTorch loop vs `rft`'s training loop in-process (training step
rate), and one trial through `rft sweep` (Ray Tune + a Ray Train worker) vs the same spec through `rft run`.

    /work/venv/bin/python benchmarks/platform_overhead.py                 # ~8 min: 45-s trials
    /work/venv/bin/python benchmarks/platform_overhead.py --steps 1000    # ~2-min trials (the issue's goal)

Part A builds the same model (the embedded ViT with LoRA) on the same data (digits at 32 px, decoded once)
and trains the same number of steps, without evaluation: the bare loop is AdamW + cross-entropy over
random batches; `rft`'s loop is `train_loop` with only the two evaluation points it always has (step 0
and the last), which are excluded from its training time (wall time between them, minus the last's
evaluation). Part B runs whole trials as subprocesses, like a user would, with the demo's evaluation
settings: `rft run --spec` vs `rft sweep` of a one-point grid. The trial's own loop time comes from its
records (`wall_seconds` of the last point); the rest of each command's wall time is its fixed start-up.
Goals (issue 5): step rate within 5% of the bare loop; a whole trial under Ray within 15% of in-process.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import ROOT, NullObserver, Timer, header, median, spread

VENV_BIN = Path(sys.executable).parent
DEMO = yaml.safe_load((ROOT / "experiments" / "demo.yaml").read_text())


def tiny_eval_spec(steps: int, batch: int) -> dict:
    return {
        "model": {"name": "rft_vit_cifar_patch8_32", "source": "embedded"},
        "strategy": {"name": "lora"},
        "dataset": {"name": "digits", "corruptions": []},
        "training": {"steps": steps, "batch_size": batch, "lr": 1e-3, "weight_decay": 1e-2, "checkpoint": False},
        "evaluation": {"schedule": [{"until": None, "every": 10_000_000}], "train_examples": 1, "test_examples": 1,
                       "ood_examples": 1, "pgd": {"steps": 1, "examples": 1}},
        "output": {"results": tempfile.mkdtemp(prefix="rft-bench-store-")},
    }


def bare_loop(steps: int, batch: int) -> float:
    """Steps per second of a plain PyTorch loop on the same model and data."""
    import torch
    import torch.nn.functional as F

    from rft_ray.config import RunSpec
    from rft_ray.data import create_bundle
    from rft_ray.models.backbones import create_classifier
    from rft_ray.models.strategies import create_strategy

    spec = RunSpec.from_dict(tiny_eval_spec(steps, batch))
    torch.manual_seed(0)
    bundle = create_bundle(spec.dataset, 32, cache=True)
    images, labels = bundle.train.materialize()
    model = create_classifier(spec.model, bundle.num_classes, seed=0)
    create_strategy("lora", {}).apply(model)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=1e-2)
    generator = torch.Generator().manual_seed(0)
    with Timer() as t:
        for _ in range(steps):
            idx = torch.randint(0, len(labels), (batch,), generator=generator)
            x = images[idx].float().div_(255.0)
            loss = F.cross_entropy(model(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return steps / t.seconds


def rft_loop(steps: int, batch: int) -> float:
    """Steps per second of `rft`'s training loop, between its first and last evaluation point."""
    from rft_ray.config import RunSpec
    from rft_ray.training.loop import train_loop

    records = train_loop(RunSpec.from_dict(tiny_eval_spec(steps, batch)), NullObserver())
    first, last = records[0], records[-1]
    training = last.wall_seconds - last.eval_seconds - first.wall_seconds
    return steps / training


def part_a(repeats: int, steps: int, batch: int) -> None:
    import torch

    print(f"A. training step rate: {steps} steps of batch {batch}, LoRA on the embedded ViT, digits at 32 px, "
          f"{torch.get_num_threads()} threads")
    rft_loop(20, batch)  # warm-up (and fills the data cache)
    bare, ours = [], []
    for _ in range(repeats):
        bare.append(bare_loop(steps, batch))
        ours.append(rft_loop(steps, batch))
    ratio = median(ours) / median(bare)
    print(f"  bare PyTorch loop   steps/s {spread(bare)}")
    print(f"  rft train loop      steps/s {spread(ours)}")
    print(f"  rft / bare step rate: {ratio:.3f} ({(1 - ratio) * 100:+.1f}% slower; goal: within 5%)", flush=True)


def trial_specs(work: Path, steps: int) -> tuple[Path, Path]:
    base = json.loads(json.dumps(DEMO["base"]))
    base["training"] = {**base["training"], "steps": steps}
    run = {**base, "strategy": {"name": "lora"},
           "training": {**base["training"], "lr": 1e-3, "weight_decay": 1e-2},
           "output": {"results": str(work / "run-store"), "checkpoints": str(work / "run-ckpt"), "run_id": "inproc"}}
    experiment = {"name": "bench-overhead", "base": base, "strategies": ["lora"],
                  "search": {"mode": "grid", "grid": {"lr": [1e-3], "weight_decay": [1e-2]},
                             "objectives": [{"metric": "test_clean_acc"}]},
                  "resources": {"cpus_per_trial": 2, "gpus_per_trial": 0, "max_concurrent_trials": 1},
                  "tracking": {"enabled": True}, "storage": {"path": str(work / "sweep")}}
    (work / "run.yaml").write_text(yaml.safe_dump(run))
    (work / "sweep.yaml").write_text(yaml.safe_dump(experiment))
    return work / "run.yaml", work / "sweep.yaml"


def loop_seconds(store: Path) -> tuple[float, int]:
    import pyarrow.parquet as pq

    files = sorted(store.glob("*.parquet"))
    table = pq.read_table(files[0], columns=["wall_seconds", "step"])
    return max(table.column("wall_seconds").to_pylist()), table.num_rows


def timed_command(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - began


def part_b(repeats: int, steps: int) -> None:
    print(f"\nB. one trial: `rft run` in-process vs `rft sweep` (Ray Tune + Train worker, MLflow on), "
          f"demo evaluation settings, {steps} steps, LoRA, 2 CPUs per trial")
    rft = str(VENV_BIN / "rft")
    runs, sweeps = [], []
    for i in range(repeats):
        with tempfile.TemporaryDirectory(prefix="rft-bench-") as folder:
            work = Path(folder)
            run_spec, sweep_spec = trial_specs(work, steps)
            wall = timed_command([rft, "run", "--spec", str(run_spec), "--quiet", "--restart"])
            loop, points = loop_seconds(work / "run-store")
            runs.append((wall, loop))
            wall = timed_command([rft, "sweep", str(sweep_spec), "--overwrite", "--no-analysis"])
            loop, points = loop_seconds(work / "sweep" / "store")
            sweeps.append((wall, loop))
        print(f"  repeat {i + 1}: rft run {runs[-1][0]:.1f} s (loop {runs[-1][1]:.1f} s), rft sweep "
              f"{sweeps[-1][0]:.1f} s (loop {sweeps[-1][1]:.1f} s), {points} points", flush=True)
    run_wall, run_loop = median([w for w, _ in runs]), median([l for _, l in runs])
    sweep_wall, sweep_loop = median([w for w, _ in sweeps]), median([l for _, l in sweeps])
    print(f"  in-process: command {run_wall:.1f} s = loop {run_loop:.1f} s + start-up {run_wall - run_loop:.1f} s")
    print(f"  under Ray:  command {sweep_wall:.1f} s = loop {sweep_loop:.1f} s + fixed start-up/tear-down "
          f"{sweep_wall - sweep_loop:.1f} s (Ray, Tune, Train worker, MLflow, store)")
    print(f"  trial loop under Ray / in-process: {sweep_loop / run_loop:.3f} (goal <= 1.15)")
    print(f"  whole command under Ray / in-process: {sweep_wall / run_wall:.3f}; fixed cost of a Ray trial over "
          f"in-process: {(sweep_wall - sweep_loop) - (run_wall - run_loop):.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=150, help="part A steps per repeat")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=250, help="part B trial length in steps")
    parser.add_argument("--part", choices=["a", "b", "both"], default="both")
    args = parser.parse_args()
    header("Benchmark 1: platform overhead", " ".join([Path(sys.executable).name, *sys.argv]))
    if args.part in ("a", "both"):
        part_a(args.repeats, args.train_steps, args.batch)
    if args.part in ("b", "both"):
        part_b(args.repeats, args.steps)


if __name__ == "__main__":
    main()
