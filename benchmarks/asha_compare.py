"""Benchmark: ASHA on accuracy vs Pareto ASHA on (accuracy, PGD accuracy), same budget (issue 17).

    flock /tmp/rft-heavy.lock .venv/bin/python benchmarks/asha_compare.py            # ~18 min on 2 cores
    .venv/bin/python benchmarks/asha_compare.py --seeds 0 --trials 2 --steps 40      # a smoke run

Per seed, two real sweeps (Ray Tune + Ray Train) of one strategy (lora) on the
embedded default (the package's CIFAR-10 ViT, source: embedded) fine-tuned on CIFAR-10 from ../shared/data,
the same budget each: `--trials` trials of `--steps` optimizer steps, evaluated every `--every` steps,
rungs at grace_period = `--every` steps and reduction factor 2. Both use Optuna's random sampler with the
same seed, so both sweeps draw the same (lr, weight decay) settings in the same order and differ only in
which trials their scheduler stops:

- asha: search.scheduler asha, objectives [test_clean_acc]: Ray's ASHA on clean accuracy;
- pareto_asha: search.scheduler pareto_asha, objectives [test_clean_acc, pgd_adv_acc].

Printed per sweep: the hypervolume (analysis.frontier.hypervolume_auc, reference (0, 0), area of [0,1]^2
dominated) of the final (test_clean_acc, pgd_adv_acc) points of the trials that ran their whole budget (the
trials a sweep returns; stopped ones were cut before the end), the trials stopped early, and the optimizer
steps trained in all (the compute each scheduler spent). Then the means over seeds and their ratio.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from common import SHARED_DATA, cifar_available, header


def experiment_data(scheduler: str, seed: int, args, storage: Path) -> dict:
    objectives = [{"metric": "test_clean_acc", "mode": "max"}]
    if scheduler == "pareto_asha":
        objectives.append({"metric": "pgd_adv_acc", "mode": "max"})
    return {
        "name": f"{scheduler}-seed{seed}",
        "base": {
            "model": {"name": "rft_vit_cifar_patch8_32", "source": "embedded"},
            "dataset": {"name": "parquet", "label": "cifar10", "val_fraction": 0.0,
                        "corruptions": ["gaussian_noise", "contrast"], "severity": 3,
                        "options": {"train": str(SHARED_DATA / "cifar10" / "train.parquet"),
                                    "test": str(SHARED_DATA / "cifar10" / "test.parquet")}},
            "training": {"steps": args.steps, "batch_size": 32, "warmup_fraction": 0.1, "seed": 0},
            "evaluation": {"schedule": [{"until": None, "every": args.every}], "train_examples": 100,
                           "test_examples": 300, "ood_examples": 100, "batch_size": 100,
                           "pgd": {"eps": "2/255", "alpha": "0.5/255", "steps": 5, "examples": 200}},
        },
        "strategies": ["lora"],
        "search": {"mode": "optuna", "objectives": objectives, "num_samples": args.trials, "sampler": "random",
                   "seed": seed, "space": {"lr": {"low": 1e-5, "high": 3e-2, "log": True},
                                           "weight_decay": {"low": 1e-4, "high": 1e-1, "log": True}},
                   "scheduler": scheduler,
                   "asha": {"grace_period": args.every, "reduction_factor": 2, "max_t": args.steps}},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent_trials": 2},
        "tracking": {"enabled": False},
        "storage": {"path": str(storage)},
        "failure": {"max_failures": 1, "worker_max_failures": 1},
    }


def one_sweep(scheduler: str, seed: int, args, storage: Path) -> dict:
    from analysis.frontier import hypervolume_auc
    from rft_ray.results.store import ResultStore
    from rft_ray.specs import experiment_spec
    from rft_ray.sweep.driver import run_sweep

    experiment = experiment_spec(experiment_data(scheduler, seed, args, storage))
    result = run_sweep(experiment, analyze=False)
    [group] = result.groups
    rows = ResultStore(experiment.store_root).read().to_pylist()
    last_step: dict[str, int] = {}
    for row in rows:
        last_step[row["run_id"]] = max(last_step.get(row["run_id"], 0), row["step"])
    completed = {t.run_id for t in group.trials if t.status == "completed"}
    finals = [(r["test_clean_acc"], r["pgd_adv_acc"]) for r in rows
              if r["run_id"] in completed and r["step"] == r["total_steps"]]
    return {"hypervolume": hypervolume_auc(finals), "completed": len(completed),
            "stopped": sum(t.status == "stopped early" for t in group.trials),
            "errors": sum(t.status == "error" for t in group.trials),
            "steps_trained": sum(last_step.values()), "finals": sorted(finals)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--every", type=int, default=25)
    args = parser.parse_args()
    if not cifar_available():
        raise SystemExit(f"CIFAR-10 Parquet files not found under {SHARED_DATA / 'cifar10'}")
    header("ASHA (clean accuracy) vs Pareto ASHA (clean, PGD accuracy): hypervolume of the final points",
           "benchmarks/asha_compare.py " + " ".join(f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                                                   for k, v in vars(args).items()))
    # Each sweep starts and stops its own Ray (as `rft sweep` does): in one long session, trials Tune stopped
    # left their Train placement groups reserved here, and the next sweep's workers waited for CPUs.
    found: dict[str, list[float]] = {"asha": [], "pareto_asha": []}
    steps: dict[str, list[int]] = {"asha": [], "pareto_asha": []}
    with tempfile.TemporaryDirectory(prefix="asha-compare-") as root:
        for seed in args.seeds:
            for scheduler in ("asha", "pareto_asha"):
                out = one_sweep(scheduler, seed, args, Path(root) / f"{scheduler}-{seed}")
                found[scheduler].append(out["hypervolume"])
                steps[scheduler].append(out["steps_trained"])
                finals = ", ".join(f"({a:.3f}, {p:.3f})" for a, p in out["finals"])
                print(f"seed {seed} {scheduler:11s}: hypervolume {out['hypervolume']:.4f}; "
                      f"{out['completed']} completed, {out['stopped']} stopped early, {out['errors']} errors; "
                      f"{out['steps_trained']} optimizer steps trained; final (clean, PGD): {finals}", flush=True)
    mean = {k: statistics.mean(v) for k, v in found.items()}
    print()
    for k in ("asha", "pareto_asha"):
        print(f"{k:11s}: mean hypervolume {mean[k]:.4f} over seeds {args.seeds} "
              f"(per seed {', '.join(f'{v:.4f}' for v in found[k])}); mean optimizer steps trained "
              f"{statistics.mean(steps[k]):.0f} of a budget of {args.trials * args.steps}")
    ratio = mean["pareto_asha"] / mean["asha"] if mean["asha"] > 0 else float("inf")
    print(f"ratio pareto_asha / asha of the mean hypervolumes: {ratio:.3f}")


if __name__ == "__main__":
    main()
