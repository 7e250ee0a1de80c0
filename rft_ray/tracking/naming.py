"""How a sweep appears in MLflow: one experiment per sweep, a parent run per sweep, a child run per trial.

The live callback and the back-fill both name, tag and parametrise runs with these functions, so a
back-filled run is indistinguishable from one logged live (bar its `synced_by` tag).
"""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

from rft_ray.config.experiment import ExperimentSpec, Group

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag for nesting runs
COMMIT_TAG = "mlflow.source.git.commit"  # MLflow's own tag: the UI shows it as the run's source version
DIRTY_TAG = "source_dirty"
FINGERPRINT_TAG = "spec_fingerprint"
# What every run of a sweep carries about the code and the spec that made it (children copy the parent's).
PROVENANCE_TAGS = (COMMIT_TAG, DIRTY_TAG, FINGERPRINT_TAG)


def child_run_name(group: str, trial_id: str) -> str:
    """A trial's child run: named like its run id in the result store (`<group>-<trial id>`)."""
    return f"{group}-{trial_id}"


def child_tags(group: Group, trial_id: str, parent_run_id: str,
               provenance: dict[str, str] | None = None, seed: Any = None) -> dict[str, str]:
    """`provenance`: the parent's `inherited_tags`, so a trial names the code and spec of its sweep; `seed`: the
    trial's training seed where search.seeds set it (else the group's)."""
    run = group.run
    return {"strategy": group.strategy, "dataset": group.dataset,
            "model": str((run.get("model") or {}).get("name", "rft_vit_cifar_patch8_32")),
            "seed": str((run.get("training") or {}).get("seed", 0) if seed is None else seed),
            PARENT_TAG: parent_run_id, "trial_id": trial_id, "group": group.name,
            "run_id": child_run_name(group.name, trial_id), **(provenance or {})}


def child_params(group: Group, lr: Any, weight_decay: Any) -> dict[str, Any]:
    """The trial's hyperparameters, which head it starts from (`head_init`: fresh, or pretrained with
    model.keep_head) and the group's strategy options, resolved with their defaults."""
    from rft_ray.config import to_plain
    from rft_ray.models.strategies import strategy_config

    options = (group.run.get("strategy") or {}).get("options") or {}
    try:
        resolved = to_plain(strategy_config(group.strategy, options))
    except Exception:  # noqa: BLE001 - validated already; params are informative only
        resolved = options
    head = "pretrained" if (group.run.get("model") or {}).get("keep_head") else "fresh"  # create_classifier's rule
    return {"lr": lr, "weight_decay": weight_decay, "head_init": head,
            **{f"strategy.{k}": v for k, v in (resolved or {}).items()}}


def child_filter(parent_run_id: str, *, trial_id: str | None = None, run_id: str | None = None) -> str:
    """MLflow search filter finding a trial's child run under the sweep's parent run."""
    key, value = ("trial_id", trial_id) if trial_id is not None else ("run_id", run_id)
    return f"tags.{key} = '{value}' and tags.`{PARENT_TAG}` = '{parent_run_id}'"


def parent_params(experiment: ExperimentSpec) -> dict[str, Any]:
    search = experiment.search
    return {"strategies": [s.name for s in experiment.strategies], "datasets": [g.dataset for g in experiment.groups],
            "search.mode": search.mode, "search.objectives": search.keys(),
            "search.select_on": search.select_on,
            "search.num_samples": search.num_samples, "search.sampler": search.sampler_name(),
            "search.asha": search.asha.enabled, "search.scheduler": search.scheduler,
            "storage": experiment.storage_root}


def parent_tags(experiment: ExperimentSpec, spec_path: str | None, fingerprint: str | None = None) -> dict[str, str]:
    fingerprint = fingerprint or experiment.fingerprint()
    return {"sweep": experiment.name, "fingerprint": fingerprint, "spec": spec_path or "",
            **source_tags(), FINGERPRINT_TAG: fingerprint}


def inherited_tags(parent: dict[str, str]) -> dict[str, str]:
    """The provenance tags a child run copies from its parent's tags (a parent logged before they existed has
    only `fingerprint`: that is the spec fingerprint too)."""
    out = {key: parent[key] for key in PROVENANCE_TAGS if key in parent}
    if FINGERPRINT_TAG not in out and "fingerprint" in parent:
        out[FINGERPRINT_TAG] = parent["fingerprint"]
    return out


@functools.lru_cache(maxsize=1)
def source_tags() -> dict[str, str]:
    """The git commit of the checkout this package runs from and whether tracked files differ from it; {} when
    the package is not a checkout's (an installed wheel, or no git). Once per process: git is slow on big trees."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        top, commit = git("rev-parse", "--show-toplevel", "HEAD").splitlines()
        if Path(top).resolve() != root:  # installed inside some other repository: its commit is not ours
            return {}
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, ValueError, subprocess.SubprocessError):
        return {}
    return {COMMIT_TAG: commit, DIRTY_TAG: str(dirty).lower()}


def parent_filter(experiment: ExperimentSpec, fingerprint: str) -> str:
    return f"tags.fingerprint = '{fingerprint}' and tags.sweep = '{experiment.name}'"


def tracking_uri(experiment: ExperimentSpec, root: str | None = None) -> str:
    """The spec's tracking.mlflow_uri, else the SQLite store beside the sweep (in `root` when given)."""
    if experiment.tracking.mlflow_uri:
        return experiment.tracking.mlflow_uri
    if root is not None and "://" not in root:
        return f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"
    return experiment.tracking_uri()


def artifact_location(experiment: ExperimentSpec, root: str | None = None) -> str | None:
    """Artifacts beside a local SQLite store (`mlartifacts/`); a tracking server keeps its own."""
    if experiment.tracking.mlflow_uri:
        return None
    if root is not None:
        return None if "://" in root else (Path(root) / "mlartifacts").resolve().as_uri()
    return (experiment.local_dir() / "mlartifacts").resolve().as_uri()
