"""The adapter's and Compacter's initialisation (`strategy.options.init`: identity or adapterhub) in the case
study's setting: four runs of experiments/adapter_init.yaml, two at a time on one thread each (as the case study's
trials), then one table.

    PYTHONPATH=<checkout> python docs/case-study-cifar-transfer/adapter_init.py [store] > adapter_init.json

Run from the checkout's root (the spec's data path is relative to it). Runs already in the store are not run again.
Per run: the final (step 700) and the best (highest over the 15 points, with its step) test clean, PGD (1/255),
validation clean and validation PGD accuracy, each with its image count and 95% Wilson interval
(`analysis.uncertainty`). Per strategy: identity against adapterhub at step 700 on the same images, image by image
(exact McNemar: the two-sided binomial p of the images only one of them gets right), and whether the Wilson
intervals are apart.
"""
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from analysis.uncertainty import interval
from rft_ray.results.store import ResultStore

SPEC = "experiments/adapter_init.yaml"
RUNS = {"adapter": 1e-3, "compacter": 3e-3}  # the case study's known-good lr of each (weight decay 1e-2 both)
INITS = ("identity", "adapterhub")
METRICS = {"test_clean_acc": "test_images", "pgd_adv_acc": "pgd_images", "val_clean_acc": "val_images",
           "val_pgd_adv_acc": "val_pgd_images"}


def run(store: str, strategy: str, init: str) -> None:
    if ResultStore(store).read_run(f"{strategy}-{init}"):
        return
    command = [sys.executable, "-m", "rft_ray.cli", "run", "--spec", SPEC, "--strategy", strategy,
               "--lr", str(RUNS[strategy]), "--set", f"strategy.options.init={init}", "--run-id", f"{strategy}-{init}",
               "--results", store, "--checkpoints", f"{store}/checkpoints", "--quiet"]
    subprocess.run(command, check=True, stdout=sys.stderr, env={**os.environ, "OMP_NUM_THREADS": "1"})


def point(record, metric: str) -> dict:
    acc, n = getattr(record, metric), getattr(record, METRICS[metric])
    return {"step": record.step, "acc": acc, "n": n, "wilson95": interval(acc, n)}


def mcnemar(a, b) -> dict:
    """Exact two-sided McNemar test of two runs' verdicts on the same images."""
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    k, n = min(only_a, only_b), only_a + only_b
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
    return {"only_identity": only_a, "only_adapterhub": only_b, "p": p}


def main(store: str) -> dict:
    jobs = [(strategy, init) for strategy in RUNS for init in INITS]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda job: run(store, *job), jobs))
    results = ResultStore(store)
    out = {"spec": SPEC, "runs": {}, "paired_final": {}}
    for strategy, init in jobs:
        records = results.read_run(f"{strategy}-{init}")
        out["runs"][f"{strategy}-{init}"] = {
            "lr": records[-1].lr, "weight_decay": records[-1].weight_decay, "steps": records[-1].step,
            "wall_seconds": records[-1].wall_seconds,
            "final": {m: point(records[-1], m) for m in METRICS},
            "best": {m: point(max(records, key=lambda r: (getattr(r, m), -r.step)), m) for m in METRICS}}
    for strategy in RUNS:
        finals = [results.read_verdicts(f"{strategy}-{init}") for init in INITS]
        last = [v.points[max(v.points)] for v in finals]
        pairs = {}
        for metric in METRICS:
            subsets = {v.subset_of(metric).fingerprint for v in finals}
            assert len(subsets) == 1, f"{strategy}: the two runs' {metric} images differ"
            wilson = [out["runs"][f"{strategy}-{init}"]["final"][metric]["wilson95"] for init in INITS]
            apart = wilson[0][1] < wilson[1][0] or wilson[1][1] < wilson[0][0]
            pairs[metric] = {**mcnemar(last[0][metric], last[1][metric]), "wilson_apart": apart}
        out["paired_final"][strategy] = pairs
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1] if len(sys.argv) > 1 else "results/adapter_init"), indent=1))
