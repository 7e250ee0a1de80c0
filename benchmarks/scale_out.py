"""Benchmark 5, scale-out: sweep throughput (evaluation points per minute) with 1 vs 2 trials at once on
this machine, and on a local multi-node Ray cluster (ray.cluster_utils.Cluster) with 1 vs 2 worker nodes.

    /work/venv/bin/python benchmarks/scale_out.py                   # ~7 min: 1 vs 2 concurrent trials
    /work/venv/bin/python benchmarks/scale_out.py --mode cluster    # ~7 min: 1 vs 2 worker nodes
    /work/venv/bin/python benchmarks/scale_out.py --mode both --trials 4

Each sweep is `rft sweep` of a grid of --trials LoRA trials (the demo's model, data and evaluation, --steps
steps, 1 CPU per trial, MLflow on). Throughput = evaluation points written to the store / the sweep
command's wall time (Ray start-up included), so it is what a user gets. "concurrent" runs on a local Ray with
max_concurrent_trials 1 or 2; "cluster" starts a head node with no CPUs (the sweep driver and the trials'
Tune drivers need none) plus 1 or 2 worker nodes of 1 CPU each, and points `rft sweep --address` at it.
Goal (issue 5): at least 1.8x from 1 to 2.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import ROOT, header, median, spread

VENV_BIN = Path(sys.executable).parent
DEMO = yaml.safe_load((ROOT / "experiments" / "demo.yaml").read_text())


def experiment(work: Path, trials: int, steps: int, concurrent: int) -> Path:
    base = json.loads(json.dumps(DEMO["base"]))
    base["training"] = {**base["training"], "steps": steps}
    spec = {"name": "bench-scale", "base": base, "strategies": ["lora"],
            "search": {"mode": "grid", "grid": {"lr": [1e-3 * (1 + i / 10) for i in range(trials)],
                                                "weight_decay": [1e-2]},
                       "objectives": [{"metric": "test_clean_acc"}]},
            "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent_trials": concurrent},
            "tracking": {"enabled": True}, "storage": {"path": str(work / "sweep")}}
    path = work / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def sweep(trials: int, steps: int, concurrent: int, address: str | None = None) -> tuple[float, int]:
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="rft-scale-") as folder:
        work = Path(folder)
        spec = experiment(work, trials, steps, concurrent)
        command = [str(VENV_BIN / "rft"), "sweep", str(spec), "--overwrite", "--no-analysis"]
        env = dict(os.environ)
        if address:
            command += ["--address", address]
        else:
            env.pop("RAY_ADDRESS", None)
        began = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
        wall = time.perf_counter() - began
        points = sum(pq.read_metadata(p).num_rows for p in (work / "sweep" / "store").glob("*.parquet"))
    return wall, points


def compare(label: str, runs: dict[int, list[tuple[float, int]]]) -> None:
    rates = {k: [60 * p / w for w, p in v] for k, v in runs.items()}
    for k, v in runs.items():
        print(f"  {label} {k}: {spread([w for w, _ in v])} s for {v[0][1]} points -> "
              f"{median(rates[k]):.1f} points/min")
    print(f"  throughput 2 / 1: {median(rates[2]) / median(rates[1]):.2f}x (goal >= 1.8x)", flush=True)


def local(repeats: int, trials: int, steps: int) -> None:
    print(f"A. local Ray, {trials} trials of {steps} steps, 1 vs 2 trials at once")
    runs = {1: [], 2: []}
    for i in range(repeats):
        for concurrent in (1, 2):
            runs[concurrent].append(sweep(trials, steps, concurrent))
            print(f"  repeat {i + 1}, {concurrent} at once: {runs[concurrent][-1][0]:.1f} s", flush=True)
    compare("trials at once", runs)


def cluster(repeats: int, trials: int, steps: int) -> None:
    from ray.cluster_utils import Cluster

    print(f"\nB. local multi-node cluster (head 0 CPUs + worker nodes of 1 CPU), {trials} trials of {steps} steps")
    runs = {1: [], 2: []}
    for i in range(repeats):
        for nodes in (1, 2):
            c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
            try:
                for _ in range(nodes):
                    c.add_node(num_cpus=1)
                c.wait_for_nodes()
                runs[nodes].append(sweep(trials, steps, nodes, c.address))
            finally:
                c.shutdown()
            print(f"  repeat {i + 1}, {nodes} worker node(s): {runs[nodes][-1][0]:.1f} s", flush=True)
    compare("worker nodes", runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["concurrent", "cluster", "both"], default="concurrent")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    header("Benchmark 5: scale-out", " ".join([Path(sys.executable).name, *sys.argv]))
    if args.mode in ("concurrent", "both"):
        local(args.repeats, args.trials, args.steps)
    if args.mode in ("cluster", "both"):
        cluster(args.repeats, args.trials, args.steps)


if __name__ == "__main__":
    main()
