"""Benchmark: each early-stopping rule replayed on a real grid sweep that ran every trial to the end (issue 26).

    flock /tmp/rft-heavy.lock rft sweep benchmarks/asha_replay_grid.yaml ...   # once (its header: the command)
    .venv/bin/python benchmarks/asha_replay.py --store /work/study/i26-grid/store   # seconds

The store holds every evaluation point of every trial (`rft sweep`, no scheduler). Per strategy (one Tune
experiment per group, as `rft sweep` runs them), the trials start in the order the sweep started them on
`--workers` asynchronous slots, and each trial's results reach the scheduler at its evaluation points, spaced by
the seconds they took in the sweep (`wall_seconds`), so the arrival order is the real one; a STOP ends the trial
there (benchmarks/scheduler_sim.py `drive`, as Ray's TuneController). Sides, all in one run:

- run_everything: the reference (every trial to `--max-t`);
- asha: Ray's ASHAScheduler on the first selection key (validation clean accuracy);
- pareto_asha_before, pareto_asha_raw_trend: the earlier Pareto ASHA rules (benchmarks/legacy_pareto_asha.py);
- pareto_asha: rft_ray/sweep/pareto_asha.py;
- random: random search at pareto_asha's compute: per strategy, round(compute x trials) trials chosen at random
  and run to the end; the mean over `--draws` seeded draws.

The schedulers read the selection split (`--select-on`, validation by default: val_clean_acc, val_pgd_adv_acc),
as `rft sweep` does. Per scheduler: recall (share of the reference fronts' trials it ran to the end: per
strategy, the non-dominated final points on the selection split), hypervolume kept (per strategy, of its
finished trials' final points over the reference's, from the strategy's nadir; mean over strategies; on the
selection split), Kendall tau of the strategies' AUC ranking against the reference (AUC: `analysis.frontier.
frontier_auc` pooled over every TEST evaluation point the trials reached, as the report's AUC table), compute
(optimizer steps trained over trials x max_t), keep rate (per rung but the last, the share of the trials reaching
it that reached the next; mean over rungs and strategies) and time (the trials' own seconds, start-up aside, over the
reference's).
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asha_compare import FIELDS  # noqa: E402
from legacy_pareto_asha import LegacyParetoAsha, RawTrendParetoAsha  # noqa: E402
from scheduler_sim import (  # noqa: E402
    GroupRun, command_line, drive, front_kept_by, kendall_tau, rung_keep_rates)

from analysis.frontier import frontier_auc  # noqa: E402
from rft_ray.results.store import ResultStore  # noqa: E402

KEYS = {"validation": ("val_clean_acc", "val_pgd_adv_acc"), "test": ("test_clean_acc", "pgd_adv_acc")}
TEST = KEYS["test"]
SIDES = ("run_everything", "asha", "pareto_asha_before", "pareto_asha_raw_trend", "pareto_asha", "random")
COLUMNS = (*FIELDS, "time")


def load(store: str) -> dict[str, dict[str, list[dict]]]:
    """{strategy: {run id: its records by step}}, runs in the order the sweep started them."""
    rows = ResultStore(store).must_exist().read().to_pylist()
    runs: dict[str, dict[str, list[dict]]] = defaultdict(dict)
    for row in sorted(rows, key=lambda r: (r["run_id"], r["step"])):
        runs[row["strategy"]].setdefault(row["run_id"], []).append(row)
    return {s: dict(sorted(r.items(), key=lambda kv: kv[1][0]["measured_at"] or 0.0)) for s, r in runs.items()}


def replay(records: dict[str, list[dict]], make, workers: int) -> GroupRun:
    ids = list(records)

    def report(j: int, k: int):
        points = records[ids[j]]
        if k >= len(points):
            return None
        before = points[k - 1]["wall_seconds"] if k else 0.0
        return max(0.0, points[k]["wall_seconds"] - before), points[k]
    return drive(dict(enumerate(ids)), workers, report, make() if make else None)


def final(run: GroupRun, max_t: int, keys) -> dict[int, tuple[float, float]]:
    return {j: (r[keys[0]], r[keys[1]]) for j, r in run.last_result.items() if run.last_step[j] >= max_t}


def pooled_auc(records: dict[str, list[dict]], run: GroupRun) -> float:
    """The strategy's AUC over every test point its trials reached under `run`."""
    points = [(p[TEST[0]], p[TEST[1]]) for j, rid in enumerate(records) for p in records[rid]
              if p["step"] <= run.last_step.get(j, -1)]  # random search: trials never started, no point
    return frontier_auc(np.array(points))


def measure(data, runs: dict[str, GroupRun], reference: dict[str, GroupRun], max_t: int, keys,
            rungs: tuple[int, float]) -> dict[str, float]:
    front_total = kept = steps = seconds = ref_seconds = 0
    hv, rates = [], []
    for strategy, records in data.items():
        ref, run = final(reference[strategy], max_t, keys), final(runs[strategy], max_t, keys)
        front, front_kept, share = front_kept_by(ref, run)
        front_total += front
        kept += front_kept
        hv.append(share)
        rates.extend(rung_keep_rates(list(runs[strategy].last_step.values()), *rungs, max_t))
        for j, rid in enumerate(records):
            last = runs[strategy].last_step.get(j, -1)
            steps += max(0, last)
            seconds += max((p["wall_seconds"] for p in records[rid] if p["step"] <= last), default=0.0)
            ref_seconds += records[rid][-1]["wall_seconds"]
    trials = sum(len(r) for r in data.values())
    tau = kendall_tau([pooled_auc(data[s], reference[s]) for s in data], [pooled_auc(data[s], runs[s]) for s in data])
    return {"recall": kept / front_total, "hypervolume_kept": float(np.mean(hv)), "kendall_tau": tau,
            "compute": steps / (trials * max_t), "keep_rate": float(np.mean(rates)) if rates else 1.0,
            "time": seconds / ref_seconds}


def random_at(data, reference: dict[str, GroupRun], compute: float, draws: int) -> list[dict[str, GroupRun]]:
    """`draws` seeded random searches: per strategy, round(compute x trials) of its trials, each to the end."""
    out = []
    for draw in range(draws):
        runs = {}
        for g, (strategy, records) in enumerate(data.items()):
            ref, n = reference[strategy], len(records)
            chosen = np.random.default_rng([draw, 13, g]).choice(n, size=max(1, round(compute * n)), replace=False)
            runs[strategy] = GroupRun({int(j): ref.last_step[int(j)] for j in chosen},
                                      {int(j): ref.last_result[int(j)] for j in chosen})
        out.append(runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="the grid sweep's result store (<storage.path>/store)")
    parser.add_argument("--select-on", choices=tuple(KEYS), default="validation")
    parser.add_argument("--grace", type=int, default=20)
    parser.add_argument("--rf", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--draws", type=int, default=200)
    args = parser.parse_args()
    from ray.tune.schedulers import ASHAScheduler

    from rft_ray.sweep.pareto_asha import ParetoAshaScheduler

    data = load(args.store)
    max_t = max(p["total_steps"] for records in data.values() for r in records.values() for p in r)
    keys = KEYS[args.select_on]
    rungs = {"max_t": max_t, "grace_period": args.grace, "reduction_factor": args.rf}
    makers = {
        "run_everything": None,
        "asha": lambda: ASHAScheduler(time_attr="step", metric=keys[0], mode="max", **rungs),
        "pareto_asha_before": lambda: LegacyParetoAsha(list(keys), ["max", "max"], **rungs),
        "pareto_asha_raw_trend": lambda: RawTrendParetoAsha(list(keys), ["max", "max"], time_attr="step", **rungs),
        "pareto_asha": lambda: ParetoAshaScheduler(list(keys), ["max", "max"], time_attr="step", **rungs),
    }
    runs = {name: {s: replay(records, make, args.workers) for s, records in data.items()}
            for name, make in makers.items()}
    reference = runs["run_everything"]
    judged = (args.grace, args.rf)
    results = {name: measure(data, r, reference, max_t, keys, judged) for name, r in runs.items()}
    draws = [measure(data, r, reference, max_t, keys, judged)
             for r in random_at(data, reference, results["pareto_asha"]["compute"], args.draws)]
    results["random"] = {f: float(np.mean([d[f] for d in draws])) for f in COLUMNS}
    trials = sum(len(r) for r in data.values())
    print("== early stopping replayed on a real grid sweep that ran every trial to the end")
    print(command_line("asha_replay.py", args))
    print(f"{len(data)} strategies, {trials} trials, max_t {max_t} steps, rungs from {args.grace} x {args.rf:g}^k, "
          f"{args.workers} workers per strategy; schedulers and fronts read {keys[0]}, {keys[1]} "
          f"({args.select_on}); AUC on test points; random: mean of {args.draws} draws")
    print(f"| scheduler | {' | '.join(COLUMNS)} |")
    print(f"| --- |{' --- |' * len(COLUMNS)}")
    for side in SIDES:
        print(f"| {side} | {' | '.join(f'{results[side][f]:.3f}' for f in COLUMNS)} |")


if __name__ == "__main__":
    main()
