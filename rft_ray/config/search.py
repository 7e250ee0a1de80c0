"""The search section of an experiment spec: ranges or a grid over the learning rate and the weight decay,
the objectives (one, or two or three for a Pareto search), the sampler and optional early stopping (ASHA on the
first objective, or Pareto ASHA on all of them)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import warnings

from rft_ray.config.fields import SpecError, check, described
from rft_ray.config.metrics import (
    OOD_PREFIX,
    PARETO_AUC,
    SELECT_ON,
    VALIDATION_COLUMNS,
    SelectionError,
    optimistic_warning,
    reported_column,
    selection_column,
)

# Per-evaluation-point metrics a search may optimise (plus `ood_acc/<domain>` and `pareto_auc`), named by their
# test column; search.select_on says which split the search reads (`rft_ray.config.metrics.selection_column`).
OBJECTIVE_METRICS = ("test_clean_acc", "pgd_adv_acc", "test_ood_accuracy", "train_clean_acc", "train_loss")
SAMPLERS = ("auto", "tpe", "gp", "nsga2", "random")
SCHEDULERS = ("none", "asha", "pareto_asha")


class OptimisticSelectionWarning(UserWarning):
    """A selection reads the test split (search.select_on: test, --select-on test)."""


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
    lr: list[float] = described("learning rates of the grid", factory=list, bounds="(0, 10)")
    weight_decay: list[float] = described("weight decays of the grid", factory=list, bounds="[0, 10)")

    def __post_init__(self):
        for name in ("lr", "weight_decay"):
            values = getattr(self, name)
            check(len(values) > 0, name, "a grid needs at least one value")
            check(len(set(values)) == len(values), name, f"has duplicate values: {values}")

    @property
    def size(self) -> int:
        return len(self.lr) * len(self.weight_decay)


@dataclass
class Point:
    lr: float = described("learning rate", 1e-3)
    weight_decay: float = described("weight decay", 1e-2)


@dataclass
class Objective:
    metric: str = described("what to optimise, named by its test column: test_clean_acc, pgd_adv_acc, "
                            "test_ood_accuracy, train_clean_acc, train_loss, ood_acc/<domain>, or pareto_auc (the "
                            "hypervolume AUC of the trial's own (clean, PGD) points); search.select_on says which "
                            "split is read (validation: val_clean_acc, val_pgd_adv_acc, val_ood_accuracy)",
                            "test_clean_acc")
    mode: Literal["max", "min"] = described("maximise or minimise", "max")
    reduce: Literal["final", "best"] = described("the value at the trial's last step, or its best over all evaluation "
                                                 "points (pareto_auc is cumulative, so both are the same)", "final")

    def __post_init__(self):
        validation = {v: t for t, v in VALIDATION_COLUMNS.items()}
        check(self.metric not in validation, "metric",
              f"name the quantity by its test column ({validation.get(self.metric)}) and the split with "
              f"search.select_on (validation by default), got {self.metric!r}")
        ok = self.metric in OBJECTIVE_METRICS or self.metric == PARETO_AUC or (
            self.metric.startswith(OOD_PREFIX) and len(self.metric) > len(OOD_PREFIX))
        check(ok, "metric", f"must be one of {', '.join(OBJECTIVE_METRICS + (PARETO_AUC,))} or "
                            f"{OOD_PREFIX}<domain>, got {self.metric!r}")

    def key_on(self, select_on: str) -> str:
        """The result key Tune, Optuna and ASHA read for this objective when selecting on `select_on`."""
        column = selection_column(self.metric, select_on)
        if self.metric == PARETO_AUC or self.reduce == "final":
            return column
        return f"best/{column}"

    def reported_key(self, select_on: str) -> str | None:
        """The result key of the test value at the point the objective chose (None for training metrics):
        `final` the test column itself; `best` the test value at the best selection point; on test, the key."""
        column = reported_column(self.metric)
        if column is None or select_on == "test":
            return None if column is None else self.key_on(select_on)
        if self.metric == PARETO_AUC or self.reduce == "final":
            return column
        return f"test_at/{self.key_on(select_on)}"


@dataclass
class AshaSpec:
    enabled: bool = described("deprecated spelling of search.scheduler: asha (set from search.scheduler: true "
                              "exactly when the scheduler is asha)", False)
    grace_period: int = described("steps every trial runs before it can be stopped", 50, bounds="[1, inf)")
    reduction_factor: float = described(
        "rungs at grace_period x reduction_factor^k steps; asha keeps about the top 1/reduction_factor of the trials "
        "at each rung; pareto_asha keeps at least that many plus every trial whose learning-curve trend, beyond the "
        "measurement noise, no peer dominates: at 2, about 0.77 per rung on a clean-vs-PGD trade-off in the "
        "simulator (nominal 0.5), every trial at a first rung where all are still rising fast; the sweep prints "
        "each rung's real keep rate", 2.0, bounds="(1, inf)")
    max_t: int | None = described("the trials' step budget (default and only allowed value with steps: "
                                  "base.training.steps; required with epochs)", None)

    def __post_init__(self):
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
    num_samples: int | None = described("trials per group in optuna mode (default 8); grid mode runs its grid once", None,
                                        bounds="[1, inf)")
    points_to_evaluate: list[Point] = described("known-good settings the search tries first (optuna mode)", factory=list)
    sampler: Literal["auto", "tpe", "gp", "nsga2", "random"] = described(
        "auto: tpe for one objective, gp (Gaussian-process logEHVI, sample-efficient with small budgets) for several",
        "auto")
    startup_trials: int | None = described("random trials before tpe/gp model the results (default: a third of the "
                                           "budget, at least 2, at most 10)", None, bounds="[1, inf)")
    seed: int = described("seed of the sampler", 0)
    seeds: list[int] = described(
        "training seeds (training.seed) every configuration of the grid is repeated over: each (lr, weight_decay) "
        "runs once per seed, as one more axis of Tune's grid, and each run's records say its seed; the analysis "
        "separates seed-to-seed from image-sampling variation. Grid mode only with more than one seed (an Optuna "
        "search samples each configuration once; repeat it over seeds with a grid of the configurations it "
        "found). Default: none (base.training.seed, once)", factory=list, bounds="[0, 2^32)")
    scheduler: Literal["none", "asha", "pareto_asha"] | None = described(
        "early stopping on the optimizer step: none; asha (Ray's ASHA on the first objective); pareto_asha (ASHA "
        "over all objectives: a trial whose learning curve, extrapolated to max_t beyond the measurement noise, no "
        "peer dominates continues, the rest by non-dominated sorting, then crowding distance; needs two or three). "
        "Default: none (asha if the deprecated asha.enabled is true)", None)
    asha: AshaSpec = described("the rungs of asha and pareto_asha: grace_period, reduction_factor, max_t",
                               factory=AshaSpec)
    min_acc: float | None = described(
        "clean-accuracy floor, a fraction in [0, 1]: the sweep's summary, MLflow (<group>/floor_*) and analysis "
        "report add each group's most robust evaluation point with test_clean_acc >= min_acc (analysis/knee.py); "
        "it does not steer the search. Default: none", None, bounds="[0, 1]", note="a fraction: 0.9 = 90%")
    select_on: Literal["validation", "test"] = described(
        "which split every selection reads (objectives, ASHA and Pareto ASHA, the Pareto set, the summary's best "
        "points, the knee and the floor point): validation (the held-out validation subset; the chosen point's "
        "test metrics are reported beside it) or test (optimistic, warned; reproduces the paper's test-only "
        "curves)", "validation")

    def __post_init__(self):
        check(1 <= len(self.objectives) <= 3, "objectives",
              f"give one objective, or two or three for a multi-objective search; got {len(self.objectives)}")
        check(self.select_on in SELECT_ON, "select_on",
              f"must be one of {', '.join(SELECT_ON)}, got {self.select_on!r}")
        for i, objective in enumerate(self.objectives):
            try:
                objective.key_on(self.select_on)
            except SelectionError as err:
                raise SpecError(str(err), f"objectives[{i}].metric") from None
        keys = self.keys()
        check(len(set(keys)) == len(keys), "objectives", f"the same objective appears twice: {keys}")
        if self.select_on == "test":
            warnings.warn(optimistic_warning("search.select_on"), OptimisticSelectionWarning, stacklevel=1)
        check(len(set(self.seeds)) == len(self.seeds), "seeds", f"has duplicate values: {self.seeds}")
        for i, value in enumerate(self.seeds):
            check(isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32, f"seeds[{i}]",
                  f"must be a whole number in [0, 2^32) (a training.seed), got {value!r}")
        check(self.mode == "grid" or len(self.seeds) <= 1, "seeds",
              f"repeats grid configurations over training seeds, but mode is {self.mode}: an Optuna search samples "
              f"each configuration once and its objective would be one seed's. Use mode: grid (with the "
              f"configurations to compare), or give one seed; got {len(self.seeds)} seeds")
        if self.mode == "grid":
            check(self.grid is not None, "grid", "mode is grid, so a grid {lr: [...], weight_decay: [...]} is required")
            check(self.num_samples in (None, 1), "num_samples",
                  f"grid mode runs its grid exactly once; remove num_samples (got {self.num_samples})")
            check(not self.points_to_evaluate, "points_to_evaluate", "only used in optuna mode; put them in the grid")
        else:
            if self.num_samples is None:
                self.num_samples = 8
            check(len(self.points_to_evaluate) <= self.num_samples, "points_to_evaluate",
                  f"{len(self.points_to_evaluate)} points but a budget of {self.num_samples} trials")
        self._resolve_scheduler()

    def _resolve_scheduler(self) -> None:
        """One source of truth: `scheduler`; `asha.enabled` follows it, true exactly for asha (so both spellings of
        ASHA give the same spec and fingerprint, and a resolved spec rebuilds); "is early stopping on?" is
        `scheduler != "none"`."""
        if self.scheduler is None:
            self.scheduler = "asha" if self.asha.enabled else "none"
        check(self.scheduler in SCHEDULERS, "scheduler", f"must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        check(not (self.scheduler == "none" and self.asha.enabled), "scheduler",
              "is none but asha.enabled is true (the deprecated spelling of scheduler: asha); keep one of them")
        check(not (self.scheduler == "pareto_asha" and self.asha.enabled), "scheduler",
              "is pareto_asha but asha.enabled is true (the deprecated spelling of scheduler: asha); remove "
              "asha.enabled (pareto_asha reads the rungs grace_period, reduction_factor, max_t from asha)")
        check(self.scheduler != "pareto_asha" or self.multi_objective, "scheduler",
              f"pareto_asha ranks trials over several objectives, but the search has {len(self.objectives)}; "
              "give two or three objectives, or use scheduler: asha for one")
        self.asha.enabled = self.scheduler == "asha"

    def keys(self) -> list[str]:
        """The result keys the search reads, one per objective (`Objective.key_on` under select_on)."""
        return [o.key_on(self.select_on) for o in self.objectives]

    def reported_keys(self) -> list[str | None]:
        """Per objective, the result key of the chosen point's test value (`Objective.reported_key`)."""
        return [o.reported_key(self.select_on) for o in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def sampler_name(self) -> str:
        if self.sampler != "auto":
            return self.sampler
        return "gp" if self.multi_objective else "tpe"


def startup_trials(search: SearchSpec) -> int:
    if search.startup_trials is not None:
        return search.startup_trials
    budget = search.num_samples or 1
    return max(2, min(10, math.ceil(budget / 3)))
