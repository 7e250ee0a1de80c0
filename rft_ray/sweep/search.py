"""How each group searches: the Tune param space (lr and weight decay searched, the rest constant), Optuna
samplers seeded per group, the budget-aware Optuna searcher, grid mode and early stopping (ASHA or Pareto ASHA)
on the optimizer step."""
from __future__ import annotations

import json
import logging
import math
import warnings
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from rft_ray.config.experiment import ExperimentSpec, Group
from rft_ray.config.search import SearchSpec, startup_trials
from rft_ray.sweep.inputs import absolute_paths

logger = logging.getLogger(__name__)


class BudgetAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna the truth about trials that did not run their whole budget.

    Ray's OptunaSearch reports a trial complete with whatever its last result holds, so a trial ASHA
    stopped at step 100 of 1000 would enter the study as if its objective were final (and with several
    objectives it would be told COMPLETE with values it never reached). Here a trial is COMPLETE only if
    its last result reached `total_steps`; one stopped early is PRUNED (its intermediate values, reported
    against the optimizer step, are what TPE ranks pruned trials by; a multi-objective study takes none, so
    there the values the trial was stopped with go in user attributes), an errored one FAILED.
    """

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, list) or trial_id in self._completed_trials:
            return  # Optuna keeps no intermediate values for multi-objective studies
        ot_trial = self._ot_trials.get(trial_id)
        value, step = result.get(self.metric), result.get("step")
        if ot_trial is None or value is None or step is None or not math.isfinite(float(value)):
            return
        ot_trial.report(float(value), int(step))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        import optuna

        if trial_id in self._completed_trials:
            logger.warning("trial %s already told to Optuna; ignoring another completion", trial_id)
            return
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return
        state, values = _optuna_outcome(result, error, self.metric)
        if state == "PRUNED" and isinstance(self.metric, list) and result and result.get("step") is not None:
            # Optuna takes no intermediate values in a multi-objective study: what the scheduler judged the
            # trial on goes in its user attributes instead.
            ot_trial.set_user_attr("stopped_at_step", int(result["step"]))
            ot_trial.set_user_attr("values_when_stopped", {k: _finite_or_none(result.get(k)) for k in self.metric})
        try:
            self._ot_study.tell(ot_trial, values, state=getattr(optuna.trial.TrialState, state))
        except Exception as exc:  # noqa: BLE001 - Optuna refused (e.g. a NaN objective): the trial stays out
            logger.warning("Optuna did not accept trial %s: %s", trial_id, exc)
        self._completed_trials.add(trial_id)


def _finite_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _optuna_outcome(result: dict | None, error: bool, metric: str | list[str]) -> tuple[str, Any]:
    """(Optuna state name, values) for a trial Tune reports complete."""
    if error:
        return "FAIL", None
    result = result or {}
    step, total = result.get("step"), result.get("total_steps")
    if step is None or total is None or step < total:
        return "PRUNED", None
    keys = metric if isinstance(metric, list) else [metric]
    values = [result.get(k) for k in keys]
    if any(v is None or not math.isfinite(float(v)) for v in values):
        return "FAIL", None
    values = [float(v) for v in values]
    return "COMPLETE", values if isinstance(metric, list) else values[0]


def group_seed(search: SearchSpec, group_name: str) -> int:
    """The sampler seed of one group: from search.seed and the group's name, so groups explore different
    points (one seed for all would send every strategy to the same start-up samples)."""
    return (search.seed * 1_000_003 + zlib.crc32(group_name.encode())) % 2**31


def make_sampler(search: SearchSpec, seed: int | None = None):
    import optuna

    name = search.sampler_name()
    startup = startup_trials(search)
    seed = search.seed if seed is None else seed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True,
                                              constant_liar=True)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False)
        if name == "nsga2":
            population = max(4, min(50, (search.num_samples or 8) // 3))
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
        return optuna.samplers.RandomSampler(seed=seed)


def search_domain(rng):
    from ray import tune

    if rng.log:
        return tune.loguniform(rng.low, rng.high)
    return tune.uniform(rng.low, rng.high)


def param_space(experiment: ExperimentSpec, group: Group, resources: dict[str, Any]) -> dict[str, Any]:
    """The Tune config of every trial of a group: lr and weight decay searched, the rest constant."""
    from ray import tune

    search = experiment.search
    if search.mode == "grid":
        lr, wd = tune.grid_search(list(group.grid.lr)), tune.grid_search(list(group.grid.weight_decay))
    else:
        lr, wd = search_domain(group.space.lr), search_domain(group.space.weight_decay)
    run = absolute_paths(json.loads(json.dumps(group.run)))
    run["output"] = {**(run.get("output") or {}), "results": experiment.store_root}  # base.output: keep_checkpoints
    seeds = {}
    if search.seeds:  # one more grid axis: every configuration once per training seed (optuna: one seed only)
        seeds["seed"] = tune.grid_search(list(search.seeds)) if len(search.seeds) > 1 else search.seeds[0]
    return {
        "lr": lr,
        "weight_decay": wd,
        **seeds,
        "group": group.name,
        "run": json.dumps(run, sort_keys=True),  # one line in Tune's output; the worker parses it
        "objectives": [asdict(o) for o in search.objectives],
        "select_on": search.select_on,  # the split the objectives read (rft_ray.config.metrics.selection_column)
        "resources": {"cpus_per_trial": resources["cpus_per_trial"], "gpus_per_trial": resources["gpus_per_trial"],
                      "workers_per_trial": resources.get("workers_per_trial", 1)},
        "train_storage": f"{experiment.storage_root}/train",
        "worker_max_failures": experiment.failure.worker_max_failures,
    }


def study_name(group: Group, sweep_started: str) -> str:
    """One Optuna study per group and sweep: a rerun with --overwrite starts new studies beside the old ones
    (never merging into them); --resume keeps the sweep's start, so its groups continue their studies."""
    return f"{group.name} {sweep_started}"


def optuna_storage(experiment: ExperimentSpec):
    """The RDB storage the studies live in (SQLite by default), so they outlive the sweep: optuna-dashboard,
    `optuna.load_study`, or a look at what the sampler saw."""
    import optuna

    url = experiment.optuna_storage_url()
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.RDBStorage(url)


def early_stopping(search: SearchSpec):
    """The Tune scheduler of `search.scheduler` (None for none), its rungs on the optimizer step."""
    asha, objectives = search.asha, search.objectives
    if search.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(time_attr="step", metric=search.keys()[0], mode=objectives[0].mode, max_t=asha.max_t,
                             grace_period=asha.grace_period, reduction_factor=asha.reduction_factor)
    if search.scheduler == "pareto_asha":
        from rft_ray.sweep.pareto_asha import ParetoAshaScheduler

        return ParetoAshaScheduler(search.keys(), [o.mode for o in objectives], time_attr="step",
                                   max_t=asha.max_t, grace_period=asha.grace_period,
                                   reduction_factor=asha.reduction_factor)
    return None


def unjudged_rungs(experiment: ExperimentSpec) -> str | None:
    """With early stopping: a line naming the rungs below max_t that no evaluation point reaches before the next
    rung (a trial reports only at its evaluation points and is judged at the highest rung it passed, so such a
    rung never judges anyone), or None; a SpecError naming the fields when that is every rung (nothing could be
    stopped). Read from the base evaluation schedule; a strategy's later phases (lp_ft) only add points."""
    from rft_ray.config import RunSpec, SpecError
    from rft_ray.evaluation.schedule import EvalSchedule
    from rft_ray.sweep.pareto_asha import rung_milestones

    asha = experiment.search.asha
    if experiment.search.scheduler == "none" or not experiment.groups:
        return None
    max_t = int(asha.max_t)
    points = EvalSchedule.from_spec(RunSpec.from_dict(experiment.groups[0].run).evaluation).points(max_t)
    rungs = [m for m in rung_milestones(asha.grace_period, max_t, asha.reduction_factor) if m < max_t]
    ends = rungs[1:] + [max_t]
    unjudged = [m for m, end in zip(rungs, ends) if not any(m <= p < end for p in points)]
    if not unjudged:
        return None
    shown = ", ".join(f"{m:g}" for m in rungs)
    where = (f"rungs at steps {shown} (search.asha.grace_period {asha.grace_period} x reduction_factor "
             f"{asha.reduction_factor:g}^k below max_t {max_t}), evaluation points at steps "
             f"{', '.join(map(str, points[:12]))}{', ...' if len(points) > 12 else ''} (base.evaluation.schedule)")
    if len(unjudged) == len(rungs):
        raise SpecError(f"no rung below max_t is reached by an evaluation point before the next rung, so "
                        f"{experiment.search.scheduler} could stop no trial: {where}; evaluate more often or move the "
                        f"rungs onto evaluation points", "search.asha.grace_period")
    return (f"{experiment.search.scheduler} judges no trial at the rungs at steps "
            f"{', '.join(f'{m:g}' for m in unjudged)}: no evaluation point falls between them and the next rung; "
            f"{where}")


def tune_config(experiment: ExperimentSpec, group: Group, resources: dict[str, Any], sweep_started: str):
    from ray import tune

    search = experiment.search
    objectives = search.objectives
    scheduler = early_stopping(search)
    if search.mode == "grid":
        return tune.TuneConfig(num_samples=1, scheduler=scheduler,
                               max_concurrent_trials=resources["max_concurrent_trials"])
    multi = search.multi_objective
    searcher = BudgetAwareOptunaSearch(
        metric=search.keys() if multi else search.keys()[0],
        mode=[o.mode for o in objectives] if multi else objectives[0].mode,
        points_to_evaluate=[asdict(p) for p in group.points_to_evaluate] or None,
        sampler=make_sampler(search, group_seed(search, group.name)),
        study_name=study_name(group, sweep_started),
        storage=optuna_storage(experiment),
    )
    return tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=search.num_samples,
                           max_concurrent_trials=resources["max_concurrent_trials"])
