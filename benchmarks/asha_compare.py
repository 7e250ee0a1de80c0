"""Benchmark: what each early-stopping rule keeps of the run-everything fronts, and for what compute (issue 26).

    flock /tmp/rft-heavy.lock .venv/bin/python benchmarks/asha_compare.py       # 20 seeds: 4x the 5-seed run (53 s)
    .venv/bin/python benchmarks/asha_compare.py --seeds 0 --strategies 2 --scenarios aligned   # a smoke run

All sides in one run, on the seeded learning-curve simulator (benchmarks/scheduler_sim.py: per scenario and seed,
`--strategies` groups of `--trials` trials, 8 asynchronous workers per group, binomial measurement noise, one
scheduler per group as `rft sweep` runs one Tune experiment per strategy; every scheduler sees the same
measurement of the same trial at the same step):

- run everything: the reference; its fronts are the final (clean, PGD) points of all trials, group by group;
- asha: Ray's ASHAScheduler on clean accuracy (`search.scheduler: asha`);
- pareto_asha_before: Pareto ASHA before issue 26 (benchmarks/legacy_pareto_asha.py);
- pareto_asha_raw_trend: issue 26's first trend rule, without the allowance for measurement noise (same file);
- pareto_asha: Pareto ASHA now (rft_ray/sweep/pareto_asha.py, `search.scheduler: pareto_asha`);
- random: random search at pareto_asha's compute (per group, that share of the trials, chosen at random and run
  to the end).

Rungs: grace period `--grace`, reduction factor `--rf`, max_t `--max-t` optimizer steps. Per scheduler, mean and
standard deviation over seeds of: recall (share of the reference fronts' trials it ran to max_t), hypervolume kept
(per group, hypervolume of its finished trials' final points over the reference's, both from the group's nadir:
the worst clean and worst PGD accuracy of all its final points; mean over groups), Kendall tau of the groups'
(strategies') AUC ranking (hypervolume from (0, 0) of the finished trials' final points, the platform's
`frontier_auc`) against the reference's, compute (optimizer steps trained over all trials x max_t) and keep rate
(per rung but the last, the share of the trials reaching it that reached the next; mean over rungs and groups).
The simulator's measurements stand for test-split numbers; selection there is on the same values (no separate
validation split is simulated).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from legacy_pareto_asha import LegacyParetoAsha, RawTrendParetoAsha  # noqa: E402
from scheduler_sim import (  # noqa: E402
    CLEAN, PGD, SCENARIOS, Outcome, Setting, command_line, mean_sd, random_search_at, simulate)

FIELDS = ("recall", "hypervolume_kept", "kendall_tau", "compute", "keep_rate")
SIDES = ("run_everything", "asha", "pareto_asha_before", "pareto_asha_raw_trend", "pareto_asha", "random")


def schedulers(args) -> dict:
    from ray.tune.schedulers import ASHAScheduler

    from rft_ray.sweep.pareto_asha import ParetoAshaScheduler

    rungs = {"max_t": args.max_t, "grace_period": args.grace, "reduction_factor": args.rf}
    return {
        "asha": lambda: ASHAScheduler(time_attr="step", metric=CLEAN, mode="max", **rungs),
        "pareto_asha_before": lambda: LegacyParetoAsha([CLEAN, PGD], ["max", "max"], **rungs),
        "pareto_asha_raw_trend": lambda: RawTrendParetoAsha([CLEAN, PGD], ["max", "max"], time_attr="step", **rungs),
        "pareto_asha": lambda: ParetoAshaScheduler([CLEAN, PGD], ["max", "max"], time_attr="step", **rungs),
    }


def one_seed(scenario: str, seed: int, args) -> dict[str, Outcome]:
    setting = Setting(scenario=scenario, seed=seed, strategies=args.strategies, trials=args.trials,
                      max_t=args.max_t, every=args.every)
    everything, reference = simulate(setting, None, args.grace, args.rf)
    out = {"run_everything": everything}
    for name, make in schedulers(args).items():
        out[name], _ = simulate(setting, make, args.grace, args.rf, reference)
    out["random"] = random_search_at(setting, reference, out["pareto_asha"].compute, args.grace, args.rf)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(20)))
    parser.add_argument("--strategies", type=int, default=8)
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--max-t", type=int, default=800)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--grace", type=int, default=50)
    parser.add_argument("--rf", type=float, default=2.0)
    args = parser.parse_args()
    print("== early stopping vs running everything, simulated learning curves (benchmarks/scheduler_sim.py)")
    print(command_line("asha_compare.py", args))
    for scenario in args.scenarios:
        started = time.perf_counter()
        per_seed = [one_seed(scenario, seed, args) for seed in args.seeds]
        print(f"\n{scenario}: {len(args.seeds)} seeds x {args.strategies} strategies x {args.trials} trials "
              f"(mean ± sd over seeds; {time.perf_counter() - started:.0f} s)")
        print(f"| scheduler | {' | '.join(FIELDS)} |")
        print(f"| --- |{' --- |' * len(FIELDS)}")
        for side in SIDES:
            cells = [mean_sd([getattr(seed[side], field) for seed in per_seed]) for field in FIELDS]
            print(f"| {side} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
