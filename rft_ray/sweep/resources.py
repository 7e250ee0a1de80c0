"""Where a sweep's trials run: Ray connected or started, per-trial resources and concurrency resolved from
the cluster, and each group's local inputs checked (and made absolute) before any trial starts."""
from __future__ import annotations

import json
import os
import sys
from typing import Any

from rft_ray.config import SpecError
from rft_ray.config.experiment import ExperimentSpec

# The Tune driver of a trial holds no CPU (its Train worker does); a non-zero resource keeps Tune from
# defaulting it to one CPU.
DRIVER_RESOURCES = {"cpu": 0, "memory": 1}


def ensure_ray(address: str | None) -> bool:
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
