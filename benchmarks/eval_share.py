"""Benchmark 3, evaluation share: how much of a trial goes to evaluation, and PGD's cost per image
relative to training's, on the demo trial and on a paper-like trial scaled to this machine.

    /work/venv/bin/python benchmarks/eval_share.py            # ~6 min
    /work/venv/bin/python benchmarks/eval_share.py --scale 10 # a paper-like trial 2.5x longer

demo: experiments/demo.yaml's base with LoRA (lr 1e-3), one trial, in-process.
paper-like: experiments/paper.yaml's CIFAR-10 trial (batch 128, 20 epochs = 7,800 steps, 20 evaluation points,
per point 1,000 train + 10,000 test + 4 x 1,000 OOD clean images and PGD-15 at 1/255 on 1,000) with every count
divided by --scale (default 25: 312 steps, the default schedule's segments divided alike so the trial still
has 20 points, 40 + 400 + 4 x 40 clean and 40 PGD images per point), on the embedded ViT at 32 px and the shared
CIFAR-10 Parquet files. Both use our defaults: eval batch 256, inference mode for clean passes, early-exit
PGD, decoded data from the node cache (bf16 autocast applies on a GPU only).
Each trial runs --repeats times; medians. Evaluation time is split by timing the trainer's calls of
clean_correct and pgd_robust.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import ROOT, SHARED_DATA, NullObserver, cifar_available, header, median

DEMO = yaml.safe_load((ROOT / "experiments" / "demo.yaml").read_text())


def demo_spec() -> dict:
    base = dict(DEMO["base"])
    return {**base, "strategy": {"name": "lora"}, "training": {**base["training"], "lr": 1e-3, "weight_decay": 1e-2},
            "output": {"results": tempfile.mkdtemp(prefix="rft-bench-")}}


def paper_like_spec(scale: int) -> dict:
    steps = round(7800 / scale)
    segments = [{"until": round(700 / scale), "every": max(1, round(50 / scale))},
                {"until": round(3000 / scale), "every": max(1, round(1000 / scale))},
                {"until": None, "every": max(1, round(6000 / scale))}]
    n = lambda count: max(1, round(count / scale))  # noqa: E731
    return {
        "model": {"name": "rft_vit_cifar_patch8_32", "source": "embedded"},
        "strategy": {"name": "lora"},
        "dataset": {"name": "parquet", "val_fraction": 0.0,
                    "options": {"train": str(SHARED_DATA / "cifar10" / "train.parquet"),
                                "test": str(SHARED_DATA / "cifar10" / "test.parquet")}},
        "training": {"steps": steps, "batch_size": 128, "lr": 5e-4, "weight_decay": 1e-2, "checkpoint": True},
        "evaluation": {"schedule": segments, "train_examples": n(1000), "test_examples": n(10000),
                       "ood_examples": n(1000), "batch_size": 256,
                       "pgd": {"eps": "1/255", "alpha": "0.25/255", "steps": 15, "examples": n(1000)}},
        "output": {"results": tempfile.mkdtemp(prefix="rft-bench-"), "checkpoints": tempfile.mkdtemp()},
    }


class Meter:
    """Wraps the trainer's evaluation calls to time them and count their images."""

    def __init__(self):
        import rft_ray.evaluation.evaluator as trainer

        self.trainer, self.seconds, self.images = trainer, {"clean": 0.0, "pgd": 0.0}, {"clean": 0, "pgd": 0}
        self.originals = {"clean": trainer.clean_correct, "pgd": trainer.pgd_robust}

        def wrap(kind):
            original = self.originals[kind]

            def timed(model, images, *args, **kwargs):
                began = time.perf_counter()
                try:
                    return original(model, images, *args, **kwargs)
                finally:
                    self.seconds[kind] += time.perf_counter() - began
                    self.images[kind] += len(images)

            return timed

        trainer.clean_correct, trainer.pgd_robust = wrap("clean"), wrap("pgd")

    def close(self):
        self.trainer.clean_correct, self.trainer.pgd_robust = self.originals["clean"], self.originals["pgd"]


def one_trial(data: dict) -> dict:
    from rft_ray.config import RunSpec
    from rft_ray.training.loop import train_loop

    spec = RunSpec.from_dict(data)
    meter = Meter()
    began = time.perf_counter()
    try:
        records = train_loop(spec, NullObserver(), checkpoint_dir=Path(data["output"].get("checkpoints") or
                                                                        tempfile.mkdtemp()))
    finally:
        meter.close()
    total = time.perf_counter() - began
    evaluation = sum(r.eval_seconds for r in records)
    setup = records[0].wall_seconds - records[0].eval_seconds
    training = total - evaluation - setup
    steps, batch = records[-1].step, spec.training.batch_size
    return {"total": total, "evaluation": evaluation, "setup": setup, "training": training,
            "share": evaluation / total, "points": len(records), "pgd_s": meter.seconds["pgd"],
            "clean_s": meter.seconds["clean"], "pgd_images": meter.images["pgd"],
            "clean_images": meter.images["clean"], "train_s_per_image": training / (steps * batch),
            "pgd_s_per_image": meter.seconds["pgd"] / max(1, meter.images["pgd"]),
            "clean_s_per_image": meter.seconds["clean"] / max(1, meter.images["clean"]),
            "robust": records[-1].pgd_adv_acc, "clean_acc": records[-1].test_clean_acc, "steps": steps}


def report(name: str, runs: list[dict], pgd_steps: int) -> None:
    m = {k: median([r[k] for r in runs]) for k in runs[0]}
    shares = ", ".join(f"{r['share']:.1%}" for r in runs)
    print(f"{name}: {m['steps']:.0f} steps, {m['points']:.0f} evaluation points, trial {m['total']:.1f} s "
          f"(set-up {m['setup']:.1f} s, training {m['training']:.1f} s, evaluation {m['evaluation']:.1f} s)")
    print(f"  evaluation share of the trial: {m['share']:.1%} (runs: {shares})")
    print(f"  of evaluation: PGD {m['pgd_s']:.1f} s on {m['pgd_images']:.0f} images, clean {m['clean_s']:.1f} s on "
          f"{m['clean_images']:.0f} images")
    ratio = m["pgd_s_per_image"] / m["train_s_per_image"]
    print(f"  PGD-{pgd_steps} s/image {m['pgd_s_per_image'] * 1e3:.2f} ms vs training s/image "
          f"{m['train_s_per_image'] * 1e3:.2f} ms: {ratio:.1f}x (a full attack's floor is about {pgd_steps} "
          f"forward-backward passes; final robust acc {m['robust']:.2f}, clean acc {m['clean_acc']:.2f})")
    print(f"  clean s/image {m['clean_s_per_image'] * 1e3:.3f} ms ({m['clean_s_per_image'] / m['train_s_per_image']:.2f}x "
          "a training image)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=int, default=25, help="divide the paper's CIFAR-10 trial by this")
    parser.add_argument("--only", choices=["demo", "paper"])
    args = parser.parse_args()
    header("Benchmark 3: evaluation share", " ".join([Path(sys.executable).name, *sys.argv]))
    if args.only != "paper":
        one_trial({**demo_spec(), "training": {**demo_spec()["training"], "steps": 20}})  # warm-up, data cache
        report("demo (digits, LoRA)", [one_trial(demo_spec()) for _ in range(args.repeats)], 15)
    if args.only != "demo":
        if not cifar_available():
            print("paper-like: skipped, the shared CIFAR-10 Parquet files are not here")
            return
        spec = paper_like_spec(args.scale)
        one_trial({**spec, "training": {**spec["training"], "steps": 2}})  # warm-up, fills the data cache
        report(f"paper-like (CIFAR-10, LoRA, paper / {args.scale})",
               [one_trial(paper_like_spec(args.scale)) for _ in range(args.repeats)], 15)


if __name__ == "__main__":
    main()
