"""What a sweep found: a summary per trial (from Tune's experiment state), per group (with the Pareto set of
its trials on the search's objectives, read on search.select_on's split, with the test values of the points
they chose beside them) and for the whole sweep."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rft_ray.config.experiment import Group
from rft_ray.config.search import SearchSpec


@dataclass
class TrialSummary:
    trial_id: str
    run_id: str
    lr: float
    weight_decay: float
    status: str  # completed | stopped early | error | unfinished
    step: int | None
    total_steps: int | None
    objectives: dict[str, float]  # result key (`SearchSpec.keys`, on search.select_on's split) -> last value
    error: str | None = None  # why an errored trial failed (its exception, one line)
    # result key -> the test value at the point that objective chose (`SearchSpec.reported_keys`); {} where the
    # search selects on test (the objectives are the test values) and in summaries saved before it existed.
    reported: dict[str, float] = field(default_factory=dict)
    seed: int | None = None  # the training seed search.seeds gave the trial (None: the group's own)

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


def pareto_set(trials: list[TrialSummary], search: SearchSpec) -> list[TrialSummary]:
    """The completed trials no other completed trial dominates on the objectives (mode-aware), read on
    search.select_on's split.

    One objective: the best trial (ties all kept). Trials with a missing or NaN objective are left out.
    """
    objectives, keys = search.objectives, search.keys()

    def vector(t: TrialSummary) -> list[float] | None:
        values = [t.objectives.get(k) for k in keys]
        if any(v is None or not math.isfinite(v) for v in values):
            return None
        return [v if o.mode == "max" else -v for v, o in zip(values, objectives)]

    candidates = [(t, v) for t in trials if t.completed for v in [vector(t)] if v is not None]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    front = [t for t, v in candidates if not any(dominates(w, v) for _, w in candidates)]
    return sorted(front, key=lambda t: t.objectives[keys[0]], reverse=objectives[0].mode == "max")


def trial_summaries(path: str, group: Group, search: SearchSpec) -> list[TrialSummary]:
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
        values = {k: float(last[k]) for k in search.keys() if last.get(k) is not None}
        reported = {k: float(last[r]) for k, r in zip(search.keys(), search.reported_keys())
                    if r is not None and r != k and last.get(r) is not None}
        out.append(TrialSummary(
            trial_id=trial.trial_id, run_id=f"{group.name}-{trial.trial_id}", lr=float(trial.config["lr"]),
            weight_decay=float(trial.config["weight_decay"]), status=status,
            step=int(step) if step is not None else None, total_steps=int(total) if total is not None else None,
            objectives=values, error=trial_error(trial) if status == "error" else None, reported=reported,
            seed=None if trial.config.get("seed") is None else int(trial.config["seed"])))
    return out


def trial_error(trial) -> str:
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
