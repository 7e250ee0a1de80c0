"""Benchmark: does telling a multi-objective Optuna sampler about the trials Pareto ASHA stopped help it (issue 26)?

    flock /tmp/rft-heavy.lock .venv/bin/python benchmarks/sampler_feedback.py          # a few minutes on 2 cores

Optuna takes no intermediate values in a multi-objective study, so the platform tells a stopped trial as PRUNED
(rft_ray/sweep/search.py). Here a sampler proposes (lr, weight decay) positions in [0, 1]^2 for one group of
`--trials` trials on 8 asynchronous workers, the late-bloom curves of benchmarks/scheduler_sim.py (the learning
rate sets the trade-off and the speed, the weight decay the quality: best at 0.3, worse linearly away from it)
and Pareto ASHA stops trials. Three ways of telling the study about a stopped trial:

- pruned: as the platform does (TPE ranks pruned trials after every complete one, as bad; GP ignores them);
- ignored: told FAIL (no sampler learns from it);
- forecast: told COMPLETE with the values Pareto ASHA recorded for its forecast (not what the platform does: the
  study's front would then hold values never measured; here only to see whether the information would help).

Printed per sampler and way, mean and sd over seeds: the hypervolume (reference (0, 0)) of the final (clean,
PGD) points of the trials that ran to the end, and the compute (steps over trials x max_t).
"""
from __future__ import annotations

import argparse
import heapq
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler_sim import CLEAN, PGD, Setting, TrialCurve, auc, command_line, mean_sd, measure  # noqa: E402

WAYS = ("pruned", "ignored", "forecast")


def curve_of(x: float, w: float, index: int, max_t: int, slowest: float) -> TrialCurve:
    quality = max(0.0, 1.0 - 1.5 * abs(w - 0.3))
    scale = 0.6 + 0.4 * quality
    return TrialCurve(0, index, x, quality, clean_final=0.86 * (0.75 + 0.25 * x) * scale,
                      pgd_final=0.375 * (1.0 - 0.6 * x) * scale, tau=max_t * (0.03 + slowest * (1.0 - x) ** 2),
                      bump=0.045 * x, step_cost=1.0 + 0.25 * ((index * 7919) % 13) / 13)


def one_run(sampler_name: str, way: str, seed: int, args) -> tuple[float, float]:
    import optuna

    from rft_ray.sweep.pareto_asha import ParetoAshaScheduler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if sampler_name == "tpe":
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, multivariate=True,
                                                 constant_liar=True)
        else:
            sampler = optuna.samplers.GPSampler(seed=seed, n_startup_trials=10, warn_independent_sampling=False)
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
    setting = Setting(scenario="late_bloom", seed=seed, max_t=args.max_t)
    scheduler = ParetoAshaScheduler([CLEAN, PGD], ["max", "max"], time_attr="step", max_t=args.max_t,
                                    grace_period=args.grace, reduction_factor=args.rf)
    events, running, steps, finals, started = [], {}, 0, [], 0

    def start(now: float) -> None:
        nonlocal started
        trial = study.ask()
        x, w = trial.suggest_float("lr", 0.0, 1.0), trial.suggest_float("weight_decay", 0.0, 1.0)
        running[started] = (trial, curve_of(x, w, started, args.max_t, setting.slowest))
        heapq.heappush(events, (now + setting.every * running[started][1].step_cost, started, setting.every))
        started += 1

    for _ in range(min(8, args.trials)):
        start(0.0)
    while events:
        now, j, step = heapq.heappop(events)
        trial, curve = running[j]
        result = measure(setting, curve, step)
        decision = scheduler.on_trial_result(None, SimpleNamespace(trial_id=str(j)), result)
        if decision != "STOP" and step < args.max_t:
            heapq.heappush(events, (now + setting.every * curve.step_cost, j, step + setting.every))
            continue
        scheduler.on_trial_complete(None, SimpleNamespace(trial_id=str(j)), result)
        steps += step
        if step >= args.max_t:
            finals.append((result[CLEAN], result[PGD]))
            study.tell(trial, [result[CLEAN], result[PGD]])
        elif way == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif way == "ignored":
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            recorded = [r[str(j)] for _, r in scheduler._rungs if str(j) in r]
            study.tell(trial, list(recorded[0][1]))  # the forecast at the highest rung it was judged at
        if started < args.trials:
            start(now)
    return auc(finals), steps / (args.trials * args.max_t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samplers", nargs="+", default=["tpe", "gp"], choices=["tpe", "gp"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--max-t", type=int, default=800)
    parser.add_argument("--grace", type=int, default=50)
    parser.add_argument("--rf", type=float, default=2.0)
    args = parser.parse_args()
    print("== stopped trials and the sampler: hypervolume of the finished trials' final points (reference (0, 0))")
    print(command_line("sampler_feedback.py", args))
    print("| sampler | stopped trials told as | hypervolume | compute |\n| --- | --- | --- | --- |")
    for sampler_name in args.samplers:
        for way in WAYS:
            runs = [one_run(sampler_name, way, seed, args) for seed in args.seeds]
            hv, compute = [r[0] for r in runs], [r[1] for r in runs]
            print(f"| {sampler_name} | {way} | {mean_sd(hv, 4)} | {mean_sd(compute, 3)} |", flush=True)


if __name__ == "__main__":
    main()
