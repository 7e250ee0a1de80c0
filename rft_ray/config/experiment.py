"""The experiment (sweep) spec: which runs a sweep makes, how it searches, where it runs and reports.

Validated once, up front, with the same strict builder as the run spec (`rft_ray.config.build`): unknown
keys, wrong types and out-of-range values are errors naming the dotted field (`search.space.lr.low`),
and every group's run spec (`base` with a strategy and a dataset substituted) is built with
`RunSpec.from_dict` (types and ranges); `rft_ray.specs.experiment_spec` then checks each group's strategy
and dataset names and options against their registries, so a typo fails before Ray starts.

A sweep is a list of *groups*, one per strategy x dataset; each group is one hyperparameter search
(Optuna, or a fixed grid) over the learning rate and the weight decay.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from rft_ray.config.fields import (
    SpecError,
    apply_overrides,
    build,
    check,
    described,
    to_plain,
)
from rft_ray.config.metrics import OOD_PREFIX
from rft_ray.config.run import RunSpec

# Per-evaluation-point metrics a search may optimise (plus `ood_acc/<domain>` and `pareto_auc`).
OBJECTIVE_METRICS = ("test_clean_acc", "pgd_adv_acc", "test_ood_accuracy", "train_clean_acc", "train_loss")
PARETO_AUC = "pareto_auc"
SAMPLERS = ("auto", "tpe", "gp", "nsga2", "random")
_GROUP_SAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


@dataclass
class Range:
    low: float = described("lower bound (inclusive)", 1e-4)
    high: float = described("upper bound (inclusive)", 1e-2)
    log: bool = described("sample on a log scale (both bounds must be positive)", True)

    def __post_init__(self):
        check(self.high > self.low, "high", f"must be above low ({self.low:g}), got {self.high:g}")
        check(not self.log or self.low > 0, "low", f"must be positive on a log scale, got {self.low:g}")
        check(self.low >= 0, "low", f"must be >= 0, got {self.low:g}")


@dataclass
class SearchSpace:
    lr: Range = described("learning-rate range", factory=lambda: Range(1e-5, 1e-2, True))
    weight_decay: Range = described("weight-decay range", factory=lambda: Range(1e-4, 1e-1, True))

    def __post_init__(self):
        check(self.lr.high < 10, "lr.high", f"must be below 10 (training.lr's limit), got {self.lr.high:g}")
        check(self.weight_decay.high < 10, "weight_decay.high",
              f"must be below 10 (training.weight_decay's limit), got {self.weight_decay.high:g}")


@dataclass
class Grid:
    lr: list[float] = described("learning rates of the grid", factory=list)
    weight_decay: list[float] = described("weight decays of the grid", factory=list)

    def __post_init__(self):
        for name in ("lr", "weight_decay"):
            values = getattr(self, name)
            check(len(values) > 0, name, "a grid needs at least one value")
            check(len(set(values)) == len(values), name, f"has duplicate values: {values}")
            check(all(0 <= v < 10 for v in values), name, f"values must be in [0, 10), got {values}")
        check(all(v > 0 for v in self.lr), "lr", f"learning rates must be positive, got {self.lr}")

    @property
    def size(self) -> int:
        return len(self.lr) * len(self.weight_decay)


@dataclass
class Point:
    lr: float = described("learning rate", 1e-3)
    weight_decay: float = described("weight decay", 1e-2)


@dataclass
class Objective:
    metric: str = described("what to optimise: test_clean_acc, pgd_adv_acc, test_ood_accuracy, train_clean_acc, "
                            "train_loss, ood_acc/<domain>, or pareto_auc (the hypervolume AUC of the trial's own "
                            "(test_clean_acc, pgd_adv_acc) points)", "test_clean_acc")
    mode: Literal["max", "min"] = described("maximise or minimise", "max")
    reduce: Literal["final", "best"] = described("the value at the trial's last step, or its best over all evaluation "
                                                 "points (pareto_auc is cumulative, so both are the same)", "final")

    def __post_init__(self):
        ok = self.metric in OBJECTIVE_METRICS or self.metric == PARETO_AUC or (
            self.metric.startswith(OOD_PREFIX) and len(self.metric) > len(OOD_PREFIX))
        check(ok, "metric", f"must be one of {', '.join(OBJECTIVE_METRICS + (PARETO_AUC,))} or "
                            f"{OOD_PREFIX}<domain>, got {self.metric!r}")

    @property
    def key(self) -> str:
        """The result key Tune, Optuna and ASHA read for this objective."""
        if self.metric == PARETO_AUC or self.reduce == "final":
            return self.metric
        return f"best/{self.metric}"


@dataclass
class AshaSpec:
    enabled: bool = described("stop poor trials early with ASHA (time attribute: the optimizer step)", False)
    grace_period: int = described("steps every trial runs before it can be stopped", 50)
    reduction_factor: float = described("keep the top 1/reduction_factor of trials at each rung", 2.0)
    max_t: int | None = described("the trials' step budget (default: base.training.steps; required with epochs)", None)

    def __post_init__(self):
        check(self.grace_period >= 1, "grace_period", f"must be at least 1 step, got {self.grace_period}")
        check(self.reduction_factor > 1, "reduction_factor", f"must be above 1, got {self.reduction_factor}")
        check(self.max_t is None or self.max_t >= self.grace_period, "max_t",
              f"must be at least grace_period ({self.grace_period}), got {self.max_t}")


@dataclass
class SearchSpec:
    mode: Literal["optuna", "grid"] = described("optuna: a budget of num_samples trials per group chosen by an Optuna "
                                                "sampler; grid: exactly every (lr, weight_decay) of `grid`", "optuna")
    objectives: list[Objective] = described("one objective (single-objective search) or two or three (multi-objective: "
                                            "the search returns a Pareto set)", factory=lambda: [Objective()])
    space: SearchSpace = described("the ranges Optuna samples from", factory=SearchSpace)
    grid: Grid | None = described("the grid of mode grid", None)
    num_samples: int | None = described("trials per group in optuna mode (default 8); grid mode runs its grid once", None)
    points_to_evaluate: list[Point] = described("known-good settings the search tries first (optuna mode)", factory=list)
    sampler: Literal["auto", "tpe", "gp", "nsga2", "random"] = described(
        "auto: tpe for one objective, gp (Gaussian-process logEHVI, sample-efficient with small budgets) for several",
        "auto")
    startup_trials: int | None = described("random trials before tpe/gp model the results (default: a third of the "
                                           "budget, at least 2, at most 10)", None)
    seed: int = described("seed of the sampler", 0)
    asha: AshaSpec = described("optional early stopping", factory=AshaSpec)

    def __post_init__(self):
        check(1 <= len(self.objectives) <= 3, "objectives",
              f"give one objective, or two or three for a multi-objective search; got {len(self.objectives)}")
        keys = [o.key for o in self.objectives]
        check(len(set(keys)) == len(keys), "objectives", f"the same objective appears twice: {keys}")
        if self.mode == "grid":
            check(self.grid is not None, "grid", "mode is grid, so a grid {lr: [...], weight_decay: [...]} is required")
            check(self.num_samples in (None, 1), "num_samples",
                  f"grid mode runs its grid exactly once; remove num_samples (got {self.num_samples})")
            check(not self.points_to_evaluate, "points_to_evaluate", "only used in optuna mode; put them in the grid")
        else:
            check(self.num_samples is None or self.num_samples >= 1, "num_samples",
                  f"must be at least 1, got {self.num_samples}")
            if self.num_samples is None:
                self.num_samples = 8
            check(len(self.points_to_evaluate) <= self.num_samples, "points_to_evaluate",
                  f"{len(self.points_to_evaluate)} points but a budget of {self.num_samples} trials")
        check(self.startup_trials is None or self.startup_trials >= 1, "startup_trials",
              f"must be at least 1, got {self.startup_trials}")

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def sampler_name(self) -> str:
        if self.sampler != "auto":
            return self.sampler
        return "gp" if self.multi_objective else "tpe"


@dataclass
class StrategyEntry:
    name: str = described("fine-tuning strategy: full, linear, bitfit, lora, ia3, adapter, compacter", "lora")
    options: dict[str, Any] = described("the strategy's own hyperparameters", factory=dict)
    space: SearchSpace | None = described("replaces search.space for this strategy", None)
    grid: Grid | None = described("replaces search.grid for this strategy", None)
    points_to_evaluate: list[Point] | None = described("replace search.points_to_evaluate for this strategy", None)


@dataclass
class ResourcesSpec:
    cpus_per_trial: float = described("CPU cores per trial (its one Ray Train worker)", 1.0)
    gpus_per_trial: Union[float, Literal["auto"]] = described(
        "GPUs per trial; auto: 1 when the cluster has GPUs, else 0 (CPU)", "auto")
    max_concurrent_trials: Union[int, Literal["auto"]] = described(
        "trials at once; auto: what the cluster's CPUs (or GPUs) hold", "auto")

    def __post_init__(self):
        check(0 < self.cpus_per_trial <= 512, "cpus_per_trial", f"must be in (0, 512], got {self.cpus_per_trial}")
        check(self.gpus_per_trial == "auto" or 0 <= self.gpus_per_trial <= 16, "gpus_per_trial",
              f"must be 0 to 16 or auto, got {self.gpus_per_trial}")
        check(self.max_concurrent_trials == "auto" or self.max_concurrent_trials >= 1, "max_concurrent_trials",
              f"must be at least 1 or auto, got {self.max_concurrent_trials}")


@dataclass
class TrackingSpec:
    enabled: bool = described("log to MLflow", True)
    mlflow_uri: str | None = described("tracking URI, e.g. http://mlflow.internal:5000 (null: a SQLite store "
                                       "<storage.path>/mlflow.db next to the results)", None)
    experiment_name: str | None = described("MLflow experiment (default: the sweep's name)", None)


@dataclass
class StorageSpec:
    path: str | None = described("the sweep's folder: a local path, or an s3:// / gs:// URI for multi-node clusters "
                                 "(default: results/<name>)", None)


@dataclass
class FailureSpec:
    max_failures: int = described("retries of a failed trial (Tune), each resuming from the last checkpoint", 2)
    worker_max_failures: int = described("restarts of a trial's failed Train worker inside one try (Ray Train)", 2)

    def __post_init__(self):
        check(-1 <= self.max_failures <= 100, "max_failures", f"must be -1 (forever) to 100, got {self.max_failures}")
        check(-1 <= self.worker_max_failures <= 100, "worker_max_failures",
              f"must be -1 (forever) to 100, got {self.worker_max_failures}")


@dataclass
class ExperimentSpec:
    name: str = described("the sweep's name (its folder, its MLflow experiment)", "sweep")
    base: dict[str, Any] = described("a run spec without strategy and output: model, dataset, training, evaluation",
                                     factory=dict)
    strategies: list[Union[str, StrategyEntry]] = described("strategies, by name or as {name, options, space, grid, "
                                                            "points_to_evaluate}", factory=lambda: ["lora"])
    datasets: list[dict[str, Any]] | None = described("dataset sections, each replacing base.dataset (one group per "
                                                      "strategy x dataset); null: base.dataset alone", None)
    search: SearchSpec = described("the hyperparameter search of each group", factory=SearchSpec)
    resources: ResourcesSpec = described("resources per trial", factory=ResourcesSpec)
    tracking: TrackingSpec = described("MLflow", factory=TrackingSpec)
    storage: StorageSpec = described("where everything goes", factory=StorageSpec)
    failure: FailureSpec = described("retries", factory=FailureSpec)
    costs: dict[str, Any] | None = described("per-image costs on a target accelerator, for `rft estimate` only (the "
                                             "sweep ignores them)", None)

    def __post_init__(self):
        check(bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", self.name)), "name",
              f"use 1-100 letters, digits, '_', '.' or '-' (it names folders), got {self.name!r}")
        self.strategies = [StrategyEntry(name=s) if isinstance(s, str) else s for s in self.strategies]
        check(len(self.strategies) > 0, "strategies", "name at least one strategy")
        names = [s.name for s in self.strategies]
        check(len(set(names)) == len(names), "strategies", f"a strategy is listed twice: {names}")
        check(self.datasets is None or len(self.datasets) > 0, "datasets", "give at least one dataset, or null")
        for key in ("strategy", "output"):
            check(key not in self.base, f"base.{key}", f"is set by the sweep ({'strategies' if key == 'strategy' else 'storage.path'}); "
                                                       "remove it from base")
        training = self.base.get("training") or {}
        for key in ("lr", "weight_decay"):
            if isinstance(training, dict) and key in training:
                warnings.warn(f"base.training.{key} is ignored: the search sets it (search.space / search.grid)",
                              stacklevel=2)
        if isinstance(training, dict) and training.get("checkpoint") is False:
            raise SpecError("must be true in a sweep: trials resume from their checkpoints after failures",
                            "base.training.checkpoint")
        for i, entry in enumerate(self.strategies):
            if self.search.mode == "grid":
                check(entry.points_to_evaluate is None, f"strategies[{i}].points_to_evaluate",
                      "only used in optuna mode")
        if self.search.asha.enabled and self.search.asha.max_t is None:
            steps = training.get("steps") if isinstance(training, dict) else None
            check(steps is not None, "search.asha.max_t",
                  "ASHA needs the trials' step budget: set base.training.steps or search.asha.max_t")
            self.search.asha.max_t = int(steps)
        self._groups = self._build_groups()

    # -- groups ---------------------------------------------------------------------------------------

    def _dataset_entries(self) -> list[tuple[str, dict[str, Any], str]]:
        """(label, dataset section, spec path) per dataset; labels are unique and filename-safe."""
        if self.datasets is None:
            section = self.base.get("dataset") or {}
            entries = [(section, "base.dataset")]
        else:
            entries = [(d, f"datasets[{i}]") for i, d in enumerate(self.datasets)]
        labels = []
        for section, path in entries:
            if not isinstance(section, dict):
                raise SpecError(f"must be a dataset section (a mapping), got {section!r}", path)
            labels.append(str(section.get("label") or section.get("name", "digits")))
        if len(set(labels)) < len(labels):  # e.g. one DomainNet entry per training domain
            refined = []
            for (section, _), label in zip(entries, labels):
                domain = (section.get("options") or {}).get("domain") if isinstance(section.get("options"), dict) else None
                refined.append(f"{label}-{domain}" if labels.count(label) > 1 and domain else label)
            labels = refined
        if len(set(labels)) < len(labels):
            labels = [f"{label}-{i}" for i, label in enumerate(labels)]
        return [(_GROUP_SAFE.sub("_", label), section, path) for label, (section, path) in zip(labels, entries)]

    def _build_groups(self) -> list["Group"]:
        groups = []
        for i, entry in enumerate(self.strategies):
            for label, section, path in self._dataset_entries():
                # The group's label names the dataset in every record (e.g. domainnet-clipart per training domain).
                run = apply_overrides(self.base, {"strategy": {"name": entry.name, "options": dict(entry.options)},
                                                  "dataset": {**section, "label": label}})
                try:
                    RunSpec.from_dict(run)
                except SpecError as err:
                    raise relocate(err, i, path) from None
                own = entry.points_to_evaluate is not None
                points = entry.points_to_evaluate if own else self.search.points_to_evaluate
                space = entry.space or self.search.space
                where = f"strategies[{i}].points_to_evaluate" if own else "search.points_to_evaluate"
                for j, point in enumerate(points):
                    for key in ("lr", "weight_decay"):
                        rng, value = getattr(space, key), getattr(point, key)
                        check(rng.low <= value <= rng.high, f"{where}[{j}].{key}",
                              f"{value:g} is outside the search space [{rng.low:g}, {rng.high:g}]")
                groups.append(Group(
                    name=f"{entry.name}-{label}", strategy=entry.name, dataset=label, run=run,
                    space=space, grid=entry.grid or self.search.grid,
                    points_to_evaluate=list(points), written_at=(i, path)))
        return groups

    @property
    def groups(self) -> list["Group"]:
        return list(self._groups)

    # -- places ---------------------------------------------------------------------------------------

    @property
    def storage_root(self) -> str:
        """The sweep's folder: an absolute local path, or a URI."""
        path = self.storage.path or f"results/{self.name}"
        if "://" in path:
            return path.rstrip("/")
        return str(Path(path).expanduser().resolve())

    @property
    def is_remote(self) -> bool:
        return "://" in self.storage_root

    @property
    def store_root(self) -> str:
        return f"{self.storage_root}/store"

    def local_dir(self) -> Path:
        """A local folder for files that need one (SQLite, analysis) even when storage is a URI."""
        if not self.is_remote:
            return Path(self.storage_root)
        return Path("results", self.name).resolve()

    def tracking_uri(self) -> str:
        if self.tracking.mlflow_uri:
            return self.tracking.mlflow_uri
        return f"sqlite:///{self.local_dir() / 'mlflow.db'}"

    def experiment_name(self) -> str:
        return self.tracking.experiment_name or self.name

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def fingerprint(self) -> str:
        """Hash of what decides the trials (not resources, tracking or retries, which a resume may change)."""
        plain = self.to_dict()
        decisive = {k: plain[k] for k in ("name", "base", "strategies", "datasets", "search")}
        return hashlib.sha256(json.dumps(decisive, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Any) -> "ExperimentSpec":
        return build(cls, data, "")


@dataclass
class Group:
    """One strategy x dataset: one Tune experiment (one search)."""

    name: str
    strategy: str
    dataset: str
    run: dict[str, Any]  # the run spec of every trial, lr / weight_decay / output aside
    space: SearchSpace
    grid: Grid | None
    points_to_evaluate: list[Point] = field(default_factory=list)
    written_at: tuple[int, str] = (0, "base.dataset")  # (strategy index, dataset section) in the spec: for errors

    def relocate(self, err: SpecError) -> SpecError:
        """An error in this group's run spec, named where the value was written in the experiment spec."""
        return relocate(err, *self.written_at)


def relocate(err: SpecError, strategy_index: int, dataset_path: str) -> SpecError:
    """Map an error in a group's run spec back to where the value was written in the experiment spec."""
    path = err.field_path
    if path.startswith("strategy.options"):
        return SpecError(err.reason, f"strategies[{strategy_index}].options" + path[len("strategy.options"):])
    if path.startswith("strategy"):
        return SpecError(err.reason, f"strategies[{strategy_index}]" + path[len("strategy"):])
    if path.startswith("dataset"):
        return SpecError(err.reason, dataset_path + path[len("dataset"):])
    return err.within("base")


def startup_trials(search: SearchSpec) -> int:
    if search.startup_trials is not None:
        return search.startup_trials
    budget = search.num_samples or 1
    return max(2, min(10, math.ceil(budget / 3)))
