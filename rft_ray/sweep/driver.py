"""`rft sweep`: one Ray Tune search per strategy x dataset, each trial a Ray Train run of the one loop.

    experiment spec ──► groups (strategy x dataset), one after another
                          │  Tuner(trial_driver): OptunaSearch or a grid, optional ASHA on the optimizer step
                          ▼
           trial_driver (Tune, 0 CPU) ──► TorchTrainer ──► train_worker (1 worker: cpus_per_trial, GPUs if any)
                                                              │ every evaluation point
                          ┌───────────────────────────────────┼──────────────────────────┐
                          ▼                                   ▼                          ▼
              Parquet store <storage>/store        ray.train.report + checkpoint   MLflow child run (driver
              (file rewritten whole per point)     ──► TuneReportCallback ──► Tune  callback, step = optimizer step)

The sweep's folder (`storage.path`, local or s3:// / gs://) holds `sweep.json` (state: fingerprint,
parent MLflow run, finished groups), `store/` (Parquet), `tune/<group>/` (Tune experiments, restorable),
`train/<run id>/` (Train runs and their checkpoints), `orphans/`, and locally `mlflow.db` and `analysis/`.
`--resume` skips finished groups and restores the others with `Tuner.restore` (searcher state included).
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import uuid
import warnings
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from ray.tune.search.optuna import OptunaSearch

from rft_ray.config.experiment import ExperimentSpec, Group, Objective, SearchSpec, startup_trials
from rft_ray.config import SpecError
from rft_ray.results.store import ResultStore
from rft_ray.sweep.trial import trial_driver

logger = logging.getLogger(__name__)

STATE_FILE = "sweep.json"
SUBFOLDERS = ("tune", "train", "store", "orphans")
# The Tune driver of a trial holds no CPU (its Train worker does); a non-zero resource keeps Tune from
# defaulting it to one CPU.
DRIVER_RESOURCES = {"cpu": 0, "memory": 1}


class SweepError(RuntimeError):
    """A sweep that cannot start or continue as asked (the message says what to do)."""


class SweepInterrupted(SweepError):
    """The sweep stopped before its groups finished; `rft sweep --resume` continues it."""


# ---------------------------------------------------------------------------------------------------
# Results


@dataclass
class TrialSummary:
    trial_id: str
    run_id: str
    lr: float
    weight_decay: float
    status: str  # completed | stopped early | error | unfinished
    step: int | None
    total_steps: int | None
    objectives: dict[str, float]
    error: str | None = None  # why an errored trial failed (its exception, one line)

    @property
    def completed(self) -> bool:
        return self.status == "completed"


@dataclass
class GroupResult:
    name: str
    strategy: str
    dataset: str
    status: str  # done | errors | interrupted
    trials: list[TrialSummary]
    pareto: list[TrialSummary]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GroupResult":
        trials = [TrialSummary(**t) for t in data["trials"]]
        pareto = [TrialSummary(**t) for t in data["pareto"]]
        return cls(data["name"], data["strategy"], data["dataset"], data["status"], trials, pareto)


@dataclass
class SweepResult:
    name: str
    path: str
    store: str
    groups: list[GroupResult]
    summary: list[dict[str, Any]]
    summary_markdown: str
    tracking_uri: str | None
    parent_run_id: str | None
    analysis_dir: str | None
    wall_seconds: float
    files: list[str] = field(default_factory=list)

    def pareto(self) -> dict[str, list[TrialSummary]]:
        return {g.name: g.pareto for g in self.groups}


# ---------------------------------------------------------------------------------------------------
# Optuna


class BudgetAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna the truth about trials that did not run their whole budget.

    Ray's OptunaSearch reports a trial complete with whatever its last result holds, so a trial ASHA
    stopped at step 100 of 1000 would enter the study as if its objective were final (and with several
    objectives it would be told COMPLETE with values it never reached). Here a trial is COMPLETE only if
    its last result reached `total_steps`; one stopped early is PRUNED (its intermediate values, reported
    against the optimizer step, are what TPE ranks pruned trials by), an errored one FAILED.
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
        try:
            self._ot_study.tell(ot_trial, values, state=getattr(optuna.trial.TrialState, state))
        except Exception as exc:  # noqa: BLE001 - Optuna refused (e.g. a NaN objective): the trial stays out
            logger.warning("Optuna did not accept trial %s: %s", trial_id, exc)
        self._completed_trials.add(trial_id)


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


def pareto_set(trials: list[TrialSummary], objectives: list[Objective]) -> list[TrialSummary]:
    """The completed trials no other completed trial dominates on the objectives (mode-aware).

    One objective: the best trial (ties all kept). Trials with a missing or NaN objective are left out.
    """
    def vector(t: TrialSummary) -> list[float] | None:
        values = [t.objectives.get(o.key) for o in objectives]
        if any(v is None or not math.isfinite(v) for v in values):
            return None
        return [v if o.mode == "max" else -v for v, o in zip(values, objectives)]

    candidates = [(t, v) for t in trials if t.completed for v in [vector(t)] if v is not None]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    front = [t for t, v in candidates if not any(dominates(w, v) for _, w in candidates)]
    first = objectives[0]
    return sorted(front, key=lambda t: t.objectives[first.key], reverse=first.mode == "max")


# ---------------------------------------------------------------------------------------------------
# The sweep's folder


class SweepFolder:
    """The sweep's storage: a local folder or an object-store prefix (pyarrow filesystems)."""

    def __init__(self, root: str):
        self.root = root
        if "://" in root:
            self.fs, self.path = pafs.FileSystem.from_uri(root)
            self.local = False
        else:
            self.fs, self.path = pafs.LocalFileSystem(), root
            self.local = True

    def uri(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _p(self, *parts: str) -> str:
        return "/".join([self.path, *parts])

    def read_state(self) -> dict[str, Any] | None:
        path = self._p(STATE_FILE)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            return json.loads(f.read().decode())

    def write_state(self, state: dict[str, Any]) -> None:
        self.fs.create_dir(self.path, recursive=True)
        data = json.dumps(state, indent=1, default=str).encode()
        if self.local:
            temporary = self._p(f".{STATE_FILE}.{uuid.uuid4().hex}.tmp")
            Path(temporary).write_bytes(data)
            os.replace(temporary, self._p(STATE_FILE))
        else:
            with self.fs.open_output_stream(self._p(STATE_FILE)) as f:
                f.write(data)

    def clear(self) -> None:
        """Remove a previous sweep's state and results (`--overwrite`); MLflow's history stays."""
        for name in SUBFOLDERS:
            if self.fs.get_file_info(self._p(name)).type == pafs.FileType.Directory:
                self.fs.delete_dir(self._p(name))
        if self.fs.get_file_info(self._p(STATE_FILE)).type == pafs.FileType.File:
            self.fs.delete_file(self._p(STATE_FILE))

    def move(self, source: str, target_dir: str) -> None:
        self.fs.create_dir(self._p(target_dir), recursive=True)
        self.fs.move(self._p(source), self._p(target_dir, Path(source).name))


# ---------------------------------------------------------------------------------------------------
# Ray set-up


def _ensure_ray(address: str | None) -> bool:
    """Connect to (or start) Ray unless this process already did; True when we did it here."""
    import ray

    if ray.is_initialized():
        return False
    # A Ray started here serves its dashboard on this machine only (reach it through an SSH tunnel); when
    # connecting to a running cluster, the host it was started with applies.
    ray.init(address=address, dashboard_host="127.0.0.1")
    return True


def resolve_resources(experiment: ExperimentSpec) -> dict[str, Any]:
    """Concrete per-trial resources and concurrency from the spec and the cluster's resources now."""
    import ray

    spec = experiment.resources
    total = ray.cluster_resources()
    cluster_gpus, cluster_cpus = float(total.get("GPU", 0)), float(total.get("CPU", 0))
    gpus = spec.gpus_per_trial
    if gpus == "auto":
        gpus = 1.0 if cluster_gpus >= 1 else 0.0
    cpus = float(spec.cpus_per_trial)
    concurrent = spec.max_concurrent_trials
    if concurrent == "auto":
        if gpus > 0:
            concurrent = int(cluster_gpus // gpus)
        else:
            concurrent = int(cluster_cpus // cpus)
        if concurrent < 1:
            print(f"rft sweep: the cluster has {cluster_cpus:g} CPUs and {cluster_gpus:g} GPUs now, less than one "
                  f"trial's {cpus:g} CPU / {gpus:g} GPU; running one trial at a time (set "
                  "resources.max_concurrent_trials for an autoscaling cluster)", file=sys.stderr)
            concurrent = 1
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) > 1 and not experiment.is_remote:
        print(f"rft sweep: note: {len(nodes)} nodes share a local storage path ({experiment.storage_root}); "
              "that works only on a shared file system (use s3:// or gs:// otherwise)", file=sys.stderr)
    return {"cpus_per_trial": cpus, "gpus_per_trial": float(gpus), "max_concurrent_trials": int(concurrent),
            "cluster_cpus": cluster_cpus, "cluster_gpus": cluster_gpus, "nodes": len(nodes)}


# ---------------------------------------------------------------------------------------------------
# One group


def _domain(rng):
    from ray import tune

    if rng.log:
        return tune.loguniform(rng.low, rng.high)
    return tune.uniform(rng.low, rng.high)


def absolute_paths(run: dict[str, Any]) -> dict[str, Any]:
    """Make the run's local paths absolute (relative to where the sweep starts): Ray Train runs each worker
    in its own trial folder, where a relative `dataset.root` would point nowhere."""
    def fix(value: Any) -> Any:
        if isinstance(value, str) and value and "://" not in value and not os.path.isabs(value):
            return os.path.abspath(os.path.expanduser(value))
        return value

    dataset, model = run.get("dataset") or {}, run.get("model") or {}
    if dataset.get("root"):
        dataset["root"] = fix(dataset["root"])
    elif isinstance(dataset.get("options"), dict):  # parquet splits are relative to root, else to here
        for key in ("train", "test"):
            if dataset["options"].get(key):
                dataset["options"][key] = fix(dataset["options"][key])
    if model.get("weights"):
        model["weights"] = fix(model["weights"])
    return run


def check_local_inputs(experiment: ExperimentSpec) -> None:
    """Fail before Ray starts when a group's local data or weight file is missing (every trial would fail on
    it, one Ray Train start-up each): the error names the field, the group and the path."""
    for group in experiment.groups:
        run = absolute_paths(json.loads(json.dumps(group.run)))
        dataset, model = run.get("dataset") or {}, run.get("model") or {}
        needed = []
        root = dataset.get("root")
        if root and "://" not in root:
            needed.append(("dataset.root", root, os.path.isdir))
        options = dataset.get("options") if isinstance(dataset.get("options"), dict) else {}
        if dataset.get("name") == "parquet":
            for key in ("train", "test"):
                value = options.get(key)
                if isinstance(value, str) and value and "://" not in value and not (root and "://" in root):
                    path = value if os.path.isabs(value) or not root else os.path.join(root, value)
                    needed.append((f"dataset.options.{key}", path, os.path.isfile))
        if model.get("source") == "file" and model.get("weights") and "://" not in model["weights"]:
            needed.append(("model.weights", model["weights"], os.path.isfile))
        for field_name, path, exists in needed:
            if not exists(os.path.expanduser(path)):
                kind = "folder" if exists is os.path.isdir else "file"
                raise SpecError(f"group {group.name}: the {kind} {path} does not exist (on this machine: a sweep "
                                "reads local data from the same path on every node)", field_name)


def param_space(experiment: ExperimentSpec, group: Group, resources: dict[str, Any]) -> dict[str, Any]:
    """The Tune config of every trial of a group: lr and weight decay searched, the rest constant."""
    from ray import tune

    search = experiment.search
    if search.mode == "grid":
        lr, wd = tune.grid_search(list(group.grid.lr)), tune.grid_search(list(group.grid.weight_decay))
    else:
        lr, wd = _domain(group.space.lr), _domain(group.space.weight_decay)
    run = absolute_paths(json.loads(json.dumps(group.run)))
    run["output"] = {"results": experiment.store_root}
    return {
        "lr": lr,
        "weight_decay": wd,
        "group": group.name,
        "run": json.dumps(run, sort_keys=True),  # one line in Tune's output; the worker parses it
        "objectives": [asdict(o) for o in search.objectives],
        "resources": {"cpus_per_trial": resources["cpus_per_trial"], "gpus_per_trial": resources["gpus_per_trial"]},
        "train_storage": f"{experiment.storage_root}/train",
        "worker_max_failures": experiment.failure.worker_max_failures,
    }


def _tune_config(experiment: ExperimentSpec, group: Group, resources: dict[str, Any]):
    from ray import tune

    search = experiment.search
    objectives = search.objectives
    scheduler = None
    if search.asha.enabled:
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(time_attr="step", metric=objectives[0].key, mode=objectives[0].mode,
                                  max_t=search.asha.max_t, grace_period=search.asha.grace_period,
                                  reduction_factor=search.asha.reduction_factor)
    if search.mode == "grid":
        return tune.TuneConfig(num_samples=1, scheduler=scheduler,
                               max_concurrent_trials=resources["max_concurrent_trials"])
    multi = search.multi_objective
    searcher = BudgetAwareOptunaSearch(
        metric=[o.key for o in objectives] if multi else objectives[0].key,
        mode=[o.mode for o in objectives] if multi else objectives[0].mode,
        points_to_evaluate=[asdict(p) for p in group.points_to_evaluate] or None,
        sampler=make_sampler(search, group_seed(search, group.name)),
        study_name=group.name,
    )
    return tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=search.num_samples,
                           max_concurrent_trials=resources["max_concurrent_trials"])


def _expected_trials(experiment: ExperimentSpec, group: Group) -> int:
    return group.grid.size if experiment.search.mode == "grid" else int(experiment.search.num_samples)


def _summaries(path: str, group: Group, objectives: list[Objective]) -> list[TrialSummary]:
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(path)
    out = []
    for trial in sorted(analysis.trials, key=lambda t: t.trial_id):
        last = trial.last_result or {}
        step, total = last.get("step"), last.get("total_steps")
        if trial.status == "ERROR":
            status = "error"
        elif trial.status != "TERMINATED":
            status = "unfinished"
        elif step is not None and total is not None and step >= total:
            status = "completed"
        else:
            status = "stopped early"
        values = {o.key: float(last[o.key]) for o in objectives if last.get(o.key) is not None}
        out.append(TrialSummary(
            trial_id=trial.trial_id, run_id=f"{group.name}-{trial.trial_id}", lr=float(trial.config["lr"]),
            weight_decay=float(trial.config["weight_decay"]), status=status,
            step=int(step) if step is not None else None, total_steps=int(total) if total is not None else None,
            objectives=values, error=_trial_error(trial) if status == "error" else None))
    return out


def _trial_error(trial) -> str:
    """One line saying why a trial failed: its exception, not Ray's wrappers."""
    try:
        err = trial.get_pickled_error()
    except Exception:  # noqa: BLE001 - unreadable error file: fall back to the text file
        err = None
    while err is not None and getattr(err, "cause", None) is not None and err.cause is not err:
        err = err.cause  # RayTaskError -> the trainable's own exception
    if err is not None:
        text = str(err).strip().splitlines()
        return f"{type(err).__name__}: {text[0] if text else ''}".strip()
    try:
        lines = [line for line in Path(trial.error_file).read_text().splitlines() if line.strip()]
        return lines[-1].strip() if lines else "unknown error"
    except (OSError, TypeError):
        return "unknown error"


def _set_aside_orphans(folder: SweepFolder, experiment: ExperimentSpec, group: Group,
                       trials: list[TrialSummary]) -> list[str]:
    """Runs of this group whose trial Tune does not know (the driver died before Tune saved the trial):
    their partial rows would pollute the store, so they move to `orphans/`."""
    known = {t.trial_id for t in trials}
    prefix = f"{group.name}-"
    orphans = []
    for run_id in ResultStore(experiment.store_root).run_ids():
        suffix = run_id[len(prefix):]
        if run_id.startswith(prefix) and "-" not in suffix and suffix not in known:
            folder.move(f"store/{run_id}.parquet", "orphans")
            orphans.append(run_id)
    if orphans:
        print(f"rft sweep: {group.name}: set aside {len(orphans)} run(s) of trials lost with an interrupted driver "
              f"({', '.join(orphans)}) in {folder.uri('orphans')}", file=sys.stderr)
    return orphans


def _run_group(experiment: ExperimentSpec, group: Group, resources: dict[str, Any], folder: SweepFolder,
               callbacks: list) -> GroupResult:
    from ray import tune

    tune_root = folder.uri("tune")
    path = folder.uri("tune", group.name)
    space = param_space(experiment, group, resources)
    trainable = tune.with_resources(trial_driver, DRIVER_RESOURCES)
    if tune.Tuner.can_restore(path):
        print(f"rft sweep: {group.name}: restoring the interrupted search from {path}", flush=True)
        tuner = tune.Tuner.restore(path, trainable=trainable, param_space=space, resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=_tune_config(experiment, group, resources),
            run_config=tune.RunConfig(
                name=group.name,
                storage_path=tune_root,
                callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=experiment.failure.max_failures),
            ),
        )
    tuner.fit()
    trials = _summaries(path, group, experiment.search.objectives)
    for trial in trials:
        if trial.status == "error":
            print(f"rft sweep: {group.name}: trial {trial.trial_id} (lr {trial.lr:.3g}, wd {trial.weight_decay:.3g}) "
                  f"ended with an error: {trial.error}; its evaluation points so far are in the store",
                  file=sys.stderr, flush=True)
    _set_aside_orphans(folder, experiment, group, trials)
    finished = len(trials) >= _expected_trials(experiment, group) and all(
        t.status in ("completed", "stopped early", "error") for t in trials)
    status = "interrupted" if not finished else ("errors" if any(t.status == "error" for t in trials) else "done")
    return GroupResult(group.name, group.strategy, group.dataset, status, trials,
                       pareto_set(trials, experiment.search.objectives))


# ---------------------------------------------------------------------------------------------------
# Summary


def summarize_store(store_root: str) -> list[dict[str, Any]]:
    """Per strategy and dataset: best final and peak accuracy and robustness, and the frontier AUC."""
    from analysis.frontier import hypervolume_auc

    table = ResultStore(store_root).read()
    if table.num_rows == 0:
        return []
    rows = table.select(["run_id", "strategy", "dataset", "lr", "weight_decay", "step", "total_steps",
                         "test_clean_acc", "pgd_adv_acc", "test_ood_accuracy"]).to_pylist()
    groups: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for row in rows:
        groups.setdefault((row["strategy"], row["dataset"]), {}).setdefault(row["run_id"], []).append(row)
    out = []
    for (strategy, dataset), runs in groups.items():
        finals = [max(points, key=lambda r: r["step"]) for points in runs.values()]
        complete = [r for r in finals if r["step"] >= r["total_steps"]]
        pool = complete or finals
        best_acc = max(pool, key=lambda r: r["test_clean_acc"])
        best_pgd = max(pool, key=lambda r: r["pgd_adv_acc"])
        points = [r for pts in runs.values() for r in pts]
        out.append({
            "strategy": strategy, "dataset": dataset, "trials": len(runs), "complete": len(complete),
            "final_acc": best_acc["test_clean_acc"], "final_acc_lr": best_acc["lr"],
            "final_acc_wd": best_acc["weight_decay"], "final_pgd": best_pgd["pgd_adv_acc"],
            "final_pgd_lr": best_pgd["lr"], "final_pgd_wd": best_pgd["weight_decay"],
            "peak_acc": max(r["test_clean_acc"] for r in points), "peak_pgd": max(r["pgd_adv_acc"] for r in points),
            "best_ood": max(r["test_ood_accuracy"] for r in pool),
            "frontier_auc": hypervolume_auc([(r["test_clean_acc"], r["pgd_adv_acc"]) for r in points]),
        })
    from rft_ray.models.strategies import strategy_names

    order = {name: i for i, name in enumerate(strategy_names())}
    return sorted(out, key=lambda r: (r["dataset"], order.get(r["strategy"], 99), r["strategy"]))


def summary_markdown(rows: list[dict[str, Any]], groups: list[GroupResult], objectives: list[Objective]) -> str:
    lines = ["| dataset | strategy | trials (complete) | best final acc (lr, wd) | best final PGD acc (lr, wd) | "
             "peak acc | peak PGD | best OOD | frontier AUC |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['strategy']} | {r['trials']} ({r['complete']}) | {r['final_acc']:.3f} "
            f"({r['final_acc_lr']:.2g}, {r['final_acc_wd']:.2g}) | {r['final_pgd']:.3f} ({r['final_pgd_lr']:.2g}, "
            f"{r['final_pgd_wd']:.2g}) | {r['peak_acc']:.3f} | {r['peak_pgd']:.3f} | {r['best_ood']:.3f} | "
            f"{r['frontier_auc']:.4f} |")
    keys = [o.key for o in objectives]
    lines += ["", f"Pareto set of hyperparameters per group (objectives: {', '.join(keys)}):", ""]
    for g in groups:
        if not g.pareto:
            lines.append(f"- {g.name}: no completed trial")
            continue
        items = ", ".join(f"lr {t.lr:.3g} wd {t.weight_decay:.3g} -> "
                          + " / ".join(f"{t.objectives[k]:.3f}" for k in keys) for t in g.pareto)
        lines.append(f"- {g.name}: {items}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# The sweep


def run_sweep(experiment: ExperimentSpec, resume: bool = False, overwrite: bool = False,
              address: str | None = None, spec_path: str | None = None, analyze: bool = True) -> SweepResult:
    """Run (or with `resume`, continue) every group of the experiment; see the module docstring."""
    began = time.time()
    folder = SweepFolder(experiment.storage_root)
    state = folder.read_state()
    if resume:
        if state is None:
            raise SweepError(f"nothing to resume: no {STATE_FILE} in {experiment.storage_root}; run without --resume")
        if state.get("fingerprint") != experiment.fingerprint():
            raise SpecError(f"the spec changed since the sweep in {experiment.storage_root} started (name, base, "
                            "strategies, datasets or search differ); resume with the same spec, or start anew with "
                            "--overwrite or another storage.path")
    elif state is not None:
        if not overwrite:
            raise SweepError(f"{experiment.storage_root} already holds a sweep ({STATE_FILE}); continue it with "
                             "--resume, or start again with --overwrite (its results are replaced)")
        folder.clear()
        state = None
    if state is None:
        state = {"name": experiment.name, "fingerprint": experiment.fingerprint(), "spec": experiment.to_dict(),
                 "groups": {}, "parent_run_id": None, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    ResultStore(experiment.store_root).ensure_writable()
    check_local_inputs(experiment)

    started_ray = _ensure_ray(address)
    try:
        resources = resolve_resources(experiment)
        tracker, experiment_id, parent = _start_tracking(experiment, state, spec_path)
        state["parent_run_id"] = parent or state.get("parent_run_id")
        folder.write_state(state)
        groups = experiment.groups
        print(f"rft sweep {experiment.name}: {len(groups)} group(s) (strategy x dataset), "
              f"{experiment.search.mode} search, up to {resources['max_concurrent_trials']} trial(s) at once, "
              f"{resources['cpus_per_trial']:g} CPU / {resources['gpus_per_trial']:g} GPU per trial; "
              f"results in {experiment.storage_root}", flush=True)
        results: list[GroupResult] = []
        for index, group in enumerate(groups, 1):
            saved = state["groups"].get(group.name)
            if saved and saved["status"] == "done":
                print(f"rft sweep: [{index}/{len(groups)}] {group.name}: finished before, skipped", flush=True)
                results.append(GroupResult.from_dict(saved))
                continue
            print(f"rft sweep: [{index}/{len(groups)}] {group.name}", flush=True)
            callbacks = []
            if tracker is not None and parent is not None:
                from rft_ray.tracking.callback import MLflowTrialCallback

                callbacks.append(MLflowTrialCallback(
                    tracker.uri, experiment_id, parent, group.name, tags=_child_tags(group),
                    params=_child_params(group), store_root=experiment.store_root))
            result = _run_group(experiment, group, resources, folder, callbacks)
            state["groups"][group.name] = result.to_dict()
            folder.write_state(state)
            if result.status == "interrupted":
                raise SweepInterrupted(f"group {group.name} stopped before its trials finished; continue with "
                                       f"`rft sweep {spec_path or '<spec>'} --resume`")
            results.append(result)
        return _finish(experiment, state, folder, results, tracker, parent, began, spec_path, analyze)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def _child_tags(group: Group) -> dict[str, str]:
    run = group.run
    return {"strategy": group.strategy, "dataset": group.dataset,
            "model": str((run.get("model") or {}).get("name", "rft_vit_cifar_patch8_32")),
            "seed": str((run.get("training") or {}).get("seed", 0))}


def source_commit() -> str:
    """The git commit of the rft_ray source that ran (with '+changes' when the checkout differs from it)."""
    import subprocess

    folder = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return f"unknown (not a git checkout; rft-ray {version('rft-ray')})"
    return commit + (" +changes" if dirty else "")


def sweep_provenance(experiment: ExperimentSpec, spec_path: str | None, wall_seconds: float) -> dict[str, str]:
    """What a report needs to be traced to its run: spec, seeds, code, time."""
    training = experiment.base.get("training") or {}
    return {"sweep": experiment.name, "spec": spec_path or "",
            "spec as run": f"{experiment.local_dir() / 'experiment.json'} (fingerprint {experiment.fingerprint()})",
            "search seed": str(experiment.search.seed), "training seed": str(training.get("seed", 0)),
            "commit": source_commit(), "storage": experiment.storage_root,
            "wall seconds": f"{wall_seconds:.0f}"}


def extra_radii(experiment: ExperimentSpec) -> list[float]:
    """The evaluation.pgd.extra_eps radii the sweep's runs measure."""
    from rft_ray.config import RunSpec

    radii: list[float] = []
    for group in experiment.groups:
        for radius in RunSpec.from_dict(group.run).evaluation.pgd.extra_eps:
            if not any(math.isclose(radius, r, rel_tol=1e-9) for r in radii):
                radii.append(radius)
    return radii


def _child_params(group: Group) -> dict[str, Any]:
    options = (group.run.get("strategy") or {}).get("options") or {}
    from rft_ray.config import to_plain
    from rft_ray.models.strategies import strategy_config

    try:
        resolved = to_plain(strategy_config(group.strategy, options))
    except Exception:  # noqa: BLE001 - validated already; params are informative only
        resolved = options
    return {f"strategy.{k}": v for k, v in (resolved or {}).items()}


def _start_tracking(experiment: ExperimentSpec, state: dict[str, Any], spec_path: str | None):
    if not experiment.tracking.enabled:
        return None, None, None
    from rft_ray.tracking.callback import tracker_for

    tracker = tracker_for(experiment.tracking_uri())
    if not tracker.check_reachable():
        return None, None, None
    artifacts = None
    if not experiment.tracking.mlflow_uri:
        artifacts = (experiment.local_dir() / "mlartifacts").resolve().as_uri()
    experiment_id = tracker.experiment_id(experiment.experiment_name(), artifacts)
    search = experiment.search
    params = {"strategies": [s.name for s in experiment.strategies], "datasets": [g.dataset for g in experiment.groups],
              "search.mode": search.mode, "search.objectives": [o.key for o in search.objectives],
              "search.num_samples": search.num_samples, "search.sampler": search.sampler_name(),
              "search.asha": search.asha.enabled, "storage": experiment.storage_root}
    parent = tracker.start_parent(experiment_id, state.get("parent_run_id"), experiment.name, params,
                                  tags={"sweep": experiment.name, "fingerprint": experiment.fingerprint(),
                                        "spec": spec_path or ""})
    if parent is None:
        return None, None, None
    return tracker, experiment_id, parent


def _finish(experiment: ExperimentSpec, state: dict[str, Any], folder: SweepFolder, results: list[GroupResult],
            tracker, parent: str | None, began: float, spec_path: str | None, analyze: bool) -> SweepResult:
    rows = summarize_store(experiment.store_root)
    markdown = summary_markdown(rows, results, experiment.search.objectives)
    local = experiment.local_dir()
    local.mkdir(parents=True, exist_ok=True)
    files = []
    for name, text in (("summary.md", markdown),
                       ("summary.json", json.dumps({"summary": rows, "groups": [g.to_dict() for g in results]},
                                                   indent=1, default=str)),
                       ("experiment.json", json.dumps(experiment.to_dict(), indent=1, default=str))):
        (local / name).write_text(text)
        files.append(str(local / name))
    print(f"\nrft sweep {experiment.name}: summary (store {experiment.store_root})\n\n{markdown}", flush=True)
    analysis_dir = None
    if analyze and rows:
        analysis_dir = str(local / "analysis")
        try:
            from analysis.report import analyze as run_analysis
            from rft_ray.results.record import eps_label

            provenance = sweep_provenance(experiment, spec_path, time.time() - began)
            report = run_analysis(experiment.store_root, analysis_dir, provenance=provenance)
            files += list(report.files)
            print(f"analysis: {analysis_dir}/report.html", flush=True)
            # One more report per extra PGD radius (evaluation.pgd.extra_eps): radii are never pooled.
            for radius in extra_radii(experiment):
                folder_name = "eps-" + eps_label(radius).replace("/", "_")
                report = run_analysis(experiment.store_root, f"{analysis_dir}/{folder_name}", eps=radius,
                                      provenance=provenance)
                files += list(report.files)
                print(f"analysis at eps {eps_label(radius)}: {analysis_dir}/{folder_name}/report.html", flush=True)
        except Exception as err:  # noqa: BLE001 - the sweep's results stand without the report
            print(f"rft sweep: warning: the analysis failed ({type(err).__name__}: {err}); run `rft analyze "
                  f"{experiment.store_root}` to retry", file=sys.stderr)
            analysis_dir = None
    if tracker is not None and parent is not None:
        tracker.log_artifacts(parent, [local / "summary.md", local / "summary.json", local / "experiment.json"])
        if spec_path and Path(spec_path).is_file():
            tracker.log_artifacts(parent, [spec_path], "spec")
        if analysis_dir:
            tracker.log_artifacts(parent, [analysis_dir], "analysis")
        tracker.finish(parent)
    wall = time.time() - began
    state["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    state["wall_seconds_last_invocation"] = round(wall, 1)
    folder.write_state(state)
    uri = tracker.uri if tracker is not None and not tracker.disabled else None
    if uri:
        where = f"`rft ui --results {local}`" if uri.startswith("sqlite:///") else uri
        print(f"MLflow: {uri} (parent run {parent}); browse with {where}", flush=True)
    print(f"rft sweep {experiment.name}: done in {wall:.0f} s", flush=True)
    return SweepResult(experiment.name, experiment.storage_root, experiment.store_root, results, rows, markdown, uri,
                       parent, analysis_dir, wall, files)
