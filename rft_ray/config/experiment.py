"""The experiment (sweep) spec: which runs a sweep makes, how it searches, where it runs and reports.

Validated once, up front, with the same strict builder as the run spec (`rft_ray.config.build`): unknown
keys, wrong types and out-of-range values are errors naming the dotted field (`search.space.lr.low`),
and every group's run spec (`base` with a strategy and a dataset substituted) is built with
`RunSpec.from_dict` (types and ranges); `rft_ray.specs.experiment_spec` then checks each group's strategy
and dataset names and options against their registries, so a typo fails before Ray starts.

A sweep is a list of *groups*, one per strategy x dataset; each group is one hyperparameter search
(Optuna, or a fixed grid) over the learning rate and the weight decay (its section: `rft_ray.config.search`).
"""
from __future__ import annotations

import hashlib
import json
import os
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
from rft_ray.config.run import RunSpec, dataset_title
from rft_ray.config.search import (  # noqa: F401  (re-exported: the experiment spec's sections)
    OBJECTIVE_METRICS,
    PARETO_AUC,
    SAMPLERS,
    AshaSpec,
    Grid,
    Objective,
    Point,
    Range,
    SearchSpace,
    SearchSpec,
    startup_trials,
)

_GROUP_SAFE = re.compile(r"[^A-Za-z0-9_.=-]+")
_ENV_NAME = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Where a sweep with s3:// / gs:// storage keeps its local files (SQLite, summary, log): RFT_RESULTS_DIR/<name>,
# else results/<name> under the current folder (experiments/launch.py sets it, since a Ray Job's current folder is
# Ray's temporary package folder).
RESULTS_DIR_ENV = "RFT_RESULTS_DIR"


def expand_env(text: str, field_path: str) -> str:
    """`${NAME}` replaced by the environment's NAME (e.g. storage.path: s3://${RFT_BUCKET}/paper, the bucket named once
    in cluster.yaml); an unset or empty NAME is a SpecError naming the field and the variable."""
    def value(match: re.Match) -> str:
        name = match.group(1)
        got = os.environ.get(name, "")
        if not got:
            raise SpecError(f"{text!r} names ${{{name}}}, which is not set in this environment: export {name}=<value> "
                            f"(on the cluster: cluster.yaml's docker.run_options or kuberay/rayjob.yaml's env), or "
                            f"give the path itself with --set {field_path}=...", field_path)
        return got
    return _ENV_NAME.sub(value, text)


@dataclass
class StrategyEntry:
    name: str = described("fine-tuning strategy: full, linear, bitfit, lora, ia3, adapter, compacter, lp_ft", "lora")
    options: dict[str, Any] = described("the strategy's own hyperparameters", factory=dict)
    space: SearchSpace | None = described("replaces search.space for this strategy", None)
    grid: Grid | None = described("replaces search.grid for this strategy", None)
    points_to_evaluate: list[Point] | None = described("replace search.points_to_evaluate for this strategy", None)
    sharding: Literal["ddp", "fsdp"] | None = described(
        "replaces base.training.sharding for this strategy (e.g. fsdp for full beside PEFT strategies on ddp)", None)


@dataclass
class ResourcesSpec:
    cpus_per_trial: float = described("CPU cores per Ray Train worker of a trial (a trial holds workers_per_trial "
                                      "times this)", 1.0, bounds="(0, 512]")
    gpus_per_trial: Union[float, Literal["auto"]] = described(
        "GPUs per Ray Train worker of a trial, 0 to 1 (a fraction shares a GPU; for more GPUs per trial raise "
        "workers_per_trial); auto: 1 when the cluster has or can add GPU nodes, else 0 (CPU)", "auto",
        bounds="[0, 1]", note="a worker trains on one device; give a trial several GPUs with workers_per_trial")
    workers_per_trial: Union[int, Literal["auto"]] = described(
        "data-parallel Ray Train workers per trial (torch DDP: gloo on CPU, NCCL with one GPU each); the global "
        "batch stays training.batch_size, split evenly, so it must divide by this; auto: the most GPUs of any "
        "node (type) the cluster offers, 1 without GPUs", 1, bounds="[1, 64]")
    max_concurrent_trials: Union[int, Literal["auto"]] = described(
        "trials at once; auto: what the cluster's nodes (or its launcher config's node types) hold, at most a third "
        "of search.num_samples beyond the sampler's start-up trials for model-based samplers", "auto",
        bounds="[1, inf)")


@dataclass
class TrackingSpec:
    enabled: bool = described("log to MLflow", True)
    mlflow_uri: str | None = described("tracking URI, e.g. http://mlflow.internal:5000 (null: a SQLite store "
                                       "<storage.path>/mlflow.db next to the results)", None)
    experiment_name: str | None = described("MLflow experiment (default: the sweep's name)", None)
    optuna_storage: str | None = described("Optuna RDB storage URL holding each group's study, e.g. "
                                           "postgresql://host/db (null: SQLite <storage.path>/optuna.db; for s3:// "
                                           "storage a local results/<name>/optuna.db, uploaded at the end)", None)


@dataclass
class StorageSpec:
    path: str | None = described("the sweep's folder: a local path, or an s3:// / gs:// URI for multi-node clusters "
                                 "(default: results/<name>); ${NAME} is the environment variable NAME, e.g. "
                                 "s3://${RFT_BUCKET}/paper", None)


@dataclass
class FailureSpec:
    max_failures: int = described("retries of a failed trial (Tune), each resuming from the last checkpoint; -1: "
                                  "forever", 2, bounds="[-1, 100]")
    worker_max_failures: int = described("restarts of a trial's failed Train worker inside one try (Ray Train); -1: "
                                         "forever", 2, bounds="[-1, 100]")


@dataclass
class ExperimentSpec:
    name: str = described("the sweep's name (its folder, its MLflow experiment)", "sweep")
    base: dict[str, Any] = described("a run spec without strategy (and of output only keep_checkpoints): model, dataset, training, evaluation",
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
        check("strategy" not in self.base, "base.strategy", "is set by the sweep (strategies); remove it from base")
        output = self.base.get("output")
        check(output is None or (isinstance(output, dict) and set(output) <= {"keep_checkpoints"}), "base.output",
              "may set keep_checkpoints only (the store and run ids are set by the sweep: storage.path), got "
              f"{output!r}")
        training = self.base.get("training") or {}
        for key in ("lr", "weight_decay"):
            if isinstance(training, dict) and key in training:
                warnings.warn(f"base.training.{key} is ignored: the search sets it (search.space / search.grid)",
                              stacklevel=2)
        if isinstance(training, dict) and "seed" in training and self.search.seeds:
            warnings.warn("base.training.seed is ignored: search.seeds sets each trial's seed", stacklevel=2)
        if isinstance(training, dict) and training.get("checkpoint") is False:
            raise SpecError("must be true in a sweep: trials resume from their checkpoints after failures",
                            "base.training.checkpoint")
        for i, entry in enumerate(self.strategies):
            if self.search.mode == "grid":
                check(entry.points_to_evaluate is None, f"strategies[{i}].points_to_evaluate",
                      "only used in optuna mode")
        check_worker_split(self.resources.workers_per_trial, training)
        if self.search.scheduler != "none":
            self._check_rungs(training.get("steps") if isinstance(training, dict) else None)
        self._groups = self._build_groups()

    def _check_rungs(self, steps) -> None:
        """max_t defaults to the trials' step budget and must equal it when it is known: a larger one is never
        reached (every trial would end "stopped early" and count as pruned in Optuna), a smaller one cuts every
        trial before its budget (none would complete). The first rung, grace_period, must come before it. (That
        the evaluation points reach the rungs is checked where the schedule is known: rft_ray.sweep.search.)"""
        asha = self.search.asha
        if asha.max_t is None:
            check(steps is not None, "search.asha.max_t",
                  "ASHA needs the trials' step budget: set base.training.steps or search.asha.max_t")
            asha.max_t = int(steps)
        elif isinstance(steps, int) and asha.max_t != steps:
            raise SpecError(
                  f"is {asha.max_t} but base.training.steps is {steps}: the rungs' max_t must be the trials' step "
                  f"budget (a larger one is never reached, so every trial would count as stopped early; a smaller "
                  f"one stops every trial before its budget); set it to {steps} or remove it", "search.asha.max_t")
        budget = f"base.training.steps ({steps})" if isinstance(steps, int) else f"search.asha.max_t ({asha.max_t})"
        check(asha.grace_period < asha.max_t, "search.asha.grace_period",
              f"is {asha.grace_period}, but the trials run {budget} steps: the first rung must come before the "
              f"budget, or {self.search.scheduler} stops nothing; set it below {asha.max_t} (rungs at grace_period "
              f"x reduction_factor^k), or use search.scheduler: none")

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
            root, label = section.get("root"), section.get("label")
            if label is not None and not isinstance(label, str):  # before it names groups; DatasetSpec checks the rest
                raise SpecError(f"must be a string (the dataset's name in results), got {label!r}", f"{path}.label")
            labels.append(dataset_title(str(section.get("name", "digits")), label,
                                        root if isinstance(root, str) else None))
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
                if entry.sharding is not None:
                    run = apply_overrides(run, {"training.sharding": entry.sharding})
                try:
                    self._check_validation(RunSpec.from_dict(run))
                except SpecError as err:
                    if err.field_path == "training.sharding" and entry.sharding is not None:
                        raise SpecError(err.reason, f"strategies[{i}].sharding") from None
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

    def _check_validation(self, run: RunSpec) -> None:
        """Selecting on validation (search.select_on), every run must measure what the selections read: refused
        up front, not after the trials ran with nothing to choose on."""
        if self.search.select_on != "validation":
            return
        fix = "or choose on test with search.select_on: test (optimistic)"
        check(run.evaluation.validation.enabled, "evaluation.validation.enabled",
              f"is false, but search.select_on is validation: every selection reads the validation metrics; turn "
              f"it on, {fix}")
        check(run.dataset.val_fraction > 0, "dataset.val_fraction",
              f"is 0, so there is no validation split, but search.select_on is validation; hold out a share "
              f"(e.g. 0.1), {fix}")
        if any(o.metric == "test_ood_accuracy" for o in self.search.objectives):
            check(run.evaluation.validation.ood, "evaluation.validation.ood",
                  f"is false, but an objective reads test_ood_accuracy, which selecting on validation reads as "
                  f"val_ood_accuracy; set it true, {fix}")

    @property
    def groups(self) -> list["Group"]:
        return list(self._groups)

    # -- places ---------------------------------------------------------------------------------------

    @property
    def storage_root(self) -> str:
        """The sweep's folder: an absolute local path, or a URI."""
        path = expand_env(self.storage.path or f"results/{self.name}", "storage.path")
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
        return Path(os.environ.get(RESULTS_DIR_ENV) or "results", self.name).expanduser().resolve()

    def tracking_uri(self) -> str:
        if self.tracking.mlflow_uri:
            return self.tracking.mlflow_uri
        return f"sqlite:///{self.local_dir() / 'mlflow.db'}"

    def optuna_storage_url(self) -> str:
        return self.tracking.optuna_storage or f"sqlite:///{self.local_dir() / 'optuna.db'}"

    def experiment_name(self) -> str:
        return self.tracking.experiment_name or self.name

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def fingerprint(self, before_select_on: bool = False) -> str:
        """Hash of what decides the trials (not resources, tracking or retries, which a resume may change);
        `before_select_on`: as rft-ray before 0.2.0 hashed it, whose search had no select_on field (a sweep
        started then resumes with it: `rft_ray.sweep.driver`)."""
        plain = self.to_dict()
        decisive = {k: plain[k] for k in ("name", "base", "strategies", "datasets", "search")}
        if before_select_on:
            decisive["search"] = {k: v for k, v in decisive["search"].items() if k != "select_on"}
        return hashlib.sha256(json.dumps(decisive, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def trials(self, group: "Group") -> int:
        """How many trials a group runs: each grid configuration once per search.seeds seed, or the Optuna budget."""
        if self.search.mode == "grid":
            return group.grid.size * max(1, len(self.search.seeds))
        return int(self.search.num_samples)

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


def check_worker_split(workers: int | str, training: Any) -> None:
    """The global batch (base.training.batch_size) is split evenly over a trial's data-parallel workers, so that
    step k trains on the same images whatever their number; a size that does not divide is refused here (for
    `auto`, once the sweep knows the number: `rft_ray.sweep.resources`)."""
    from rft_ray.config.run import TrainingSpec

    if workers == "auto" or not isinstance(training, dict):
        return
    batch = training.get("batch_size", TrainingSpec.batch_size)
    if isinstance(batch, int) and isinstance(workers, int) and batch % workers:
        raise SpecError(f"base.training.batch_size {batch} does not divide evenly over {workers} workers; make "
                        "the batch size a multiple of the workers, or the workers a divisor of the batch size",
                        "resources.workers_per_trial")
