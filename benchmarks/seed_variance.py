"""Seed-to-seed against image-sampling variation of the frontier AUC, measured: each strategy fine-tuned on the
demo's single-run setting (`rft_ray/cli/demo.py`'s DEMO: the embedded CIFAR-10 ViT on digits, 300 test images, PGD
at 2/255 on all of them; --steps of training, 150 by default where the demo trains 300, to fit a shared 2-core
machine) once per training seed, on the same images, then `rft analyze`'s seed
section (analysis/seeds.py) and the seeds that would resolve best vs second. Figures: benchmarks/RESULTS.md and
the comment above search.seeds in experiments/paper.yaml.

    flock /tmp/rft-heavy.lock python benchmarks/seed_variance.py OUT --strategies bitfit lora --seeds 0 1 2 3
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, ".")
from analysis.report import analyze  # noqa: E402
from rft_ray.cli.demo import DEMO_LR, demo_spec  # noqa: E402
from rft_ray.config import apply_overrides  # noqa: E402
from rft_ray.specs import run_spec  # noqa: E402
from rft_ray.training.runner import run_in_process  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("out", type=Path)
parser.add_argument("--strategies", nargs="+", default=["bitfit", "lora"])
parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
parser.add_argument("--replicates", type=int, default=1000)
parser.add_argument("--steps", type=int, default=150)
args = parser.parse_args()
print("command: benchmarks/seed_variance.py " + " ".join(sys.argv[1:]), flush=True)
started = time.perf_counter()
for strategy in args.strategies:
    for seed in args.seeds:
        base = demo_spec(strategy, args.out).to_dict()
        spec = run_spec(apply_overrides(base, {"training.seed": seed, "training.steps": args.steps,
                                                "output.run_id": f"{strategy}-s{seed}"}))
        t = time.perf_counter()
        records = run_in_process(spec, progress=False, log=lambda _: None).records
        print(f"{strategy} seed {seed} (lr {DEMO_LR[strategy]:g}): final clean {records[-1].test_clean_acc:.3f} "
              f"PGD {records[-1].pgd_adv_acc:.3f} ({time.perf_counter() - t:.0f} s)", flush=True)
data = analyze(str(args.out / "store"), args.out / "analysis", figures=False, replicates=args.replicates).data
for g in data["seeds"]["groups"]:
    per_seed = ", ".join(f"{s['seed']}: {s['auc']:.4f} (image sd {s['auc_sd']:.4f})" for s in g["seeds"])
    print(f"{g['strategy']} {g['dataset']}: AUC per seed {per_seed}; mean {g['auc_mean']:.4f}, sd over seeds "
          f"{g['auc_sd_seeds']:.4f}, image sd {g['auc_sd_images']:.4f}")
for r in data["seeds"]["resolve"]:
    print(f"{r['dataset']}: best {r['best']} - second {r['second']} = {r['difference']:+.4f}; image sd of the "
          f"difference {r['sd_image_difference']:.4f}; seeds to resolve: {r['seeds_to_resolve']}")
print(json.dumps({"seeds": data["seeds"]}, indent=1))
print(f"total {time.perf_counter() - started:.0f} s")
