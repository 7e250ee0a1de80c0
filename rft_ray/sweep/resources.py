"""Where a sweep's trials run: Ray connected or started, per-trial resources and concurrency resolved from the
cluster (the nodes alive now and, on an autoscaling cluster, the node types its launcher config can add), and a
request that no node could ever hold refused before any trial waits for it."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rft_ray.config.experiment import ExperimentSpec
from rft_ray.sweep.console import say, warn
from rft_ray.sweep.state import SweepError

# A trial's Tune driver holds no CPU (its Train worker does); "memory": 1 keeps Tune from defaulting it to one CPU.
DRIVER_RESOURCES = {"cpu": 0, "memory": 1}
# A custom resource the head advertises (cluster.yaml, kuberay/rayjob.yaml): trial drivers request one unit, so
# they and their Ray Train controllers (placed on the driver's node) stay on the head, not on a spot GPU node
# whose pre-emption would kill them. Clusters without it (a laptop, a test cluster) are unaffected.
DRIVER_NODE_RESOURCE = "rft_driver"
# Where `ray up` leaves the launcher config on the head node.
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"


def ensure_ray(address: str | None, dashboard: bool | None = None) -> bool:
    """Connect to (or start) Ray unless this process already did; True when we did it here. `dashboard`: whether
    a Ray started here serves its dashboard (None: when its packages are installed, as Ray decides)."""
    import ray

    if ray.is_initialized():
        return False
    # A Ray started here serves its dashboard on this machine only (reach it through an SSH tunnel); when
    # connecting to a running cluster, the host it was started with applies.
    ray.init(address=address, dashboard_host="127.0.0.1", include_dashboard=dashboard)
    return True


def driver_resources(cluster: dict[str, float]) -> dict[str, float]:
    """What each trial's driver asks for: on the head when the cluster marks it, else anywhere (0 CPU)."""
    if cluster.get(DRIVER_NODE_RESOURCE, 0) >= 1:
        return {**DRIVER_RESOURCES, DRIVER_NODE_RESOURCE: 1}
    return dict(DRIVER_RESOURCES)


@dataclass(frozen=True)
class NodeOffer:
    """What one node (alive now) or one node type (that the autoscaler may add up to `count` of) offers."""

    name: str
    cpus: float
    gpus: float
    count: int  # nodes of this kind: 1 for a live node, max_workers for a node type

    def fits(self, cpus: float, gpus: float) -> int:
        """How many trials one such node holds at once."""
        by_cpu = math.floor(self.cpus / cpus + 1e-9)
        by_gpu = math.floor(self.gpus / gpus + 1e-9) if gpus > 0 else by_cpu
        return max(0, min(by_cpu, by_gpu))

    def describe(self) -> str:
        many = f" (up to {self.count})" if self.count > 1 else ""
        return f"{self.name}{many}: {self.cpus:g} CPU, {self.gpus:g} GPU"


def launcher_node_types(path: str | Path) -> list[NodeOffer]:
    """The node types of a Ray cluster launcher config (cluster.yaml, or the head's bootstrap copy) that declare
    CPUs or GPUs in `resources` (as cluster.yaml does, so that `auto` counts GPU nodes before any exists); empty
    when none does (then the live nodes are all `auto` knows of)."""
    import yaml

    path = Path(path).expanduser()
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SweepError(f"cannot read the cluster launcher config {path}: {err}") from None
    types = config.get("available_node_types") if isinstance(config, dict) else None
    if not isinstance(types, dict) or not types:
        raise SweepError(f"{path} has no available_node_types: not a Ray cluster launcher config")
    head = config.get("head_node_type")
    offers = []
    for name, node_type in types.items():
        declared = node_type.get("resources") or {}
        count = 1 if name == head else int(node_type.get("max_workers", config.get("max_workers", 0)))
        if count > 0 and (declared.get("CPU") or declared.get("GPU")):  # else it offers trials nothing we know of
            offers.append(NodeOffer(f"node type {name}", float(declared.get("CPU", 0)), float(declared.get("GPU", 0)),
                                    count))
    return offers


def find_launcher_config(explicit: str | None) -> str | None:
    """The launcher config `auto` reads: the one given (--cluster-config, RFT_CLUSTER_CONFIG), else the head's
    bootstrap copy when this is the head of a `ray up` cluster, else none (the nodes alive now are all there is)."""
    chosen = explicit or os.environ.get("RFT_CLUSTER_CONFIG")
    if chosen:
        if not Path(chosen).expanduser().is_file():
            raise SweepError(f"the cluster launcher config {chosen} does not exist (--cluster-config or "
                             "RFT_CLUSTER_CONFIG)")
        return chosen
    bootstrap = Path(BOOTSTRAP_CONFIG).expanduser()
    return str(bootstrap) if bootstrap.is_file() else None


def live_nodes() -> list[NodeOffer]:
    import ray

    offers = []
    for node in ray.nodes():
        if node.get("Alive"):
            total = node.get("Resources", {})
            offers.append(NodeOffer(f"node {node.get('NodeManagerAddress', '?')}", float(total.get("CPU", 0)),
                                    float(total.get("GPU", 0)), 1))
    return offers


def plan_resources(experiment: ExperimentSpec, nodes: list[NodeOffer],
                   node_types: list[NodeOffer] | None) -> dict[str, Any]:
    """Per-trial CPUs and GPUs and the number of trials at once, from the spec and what the cluster offers:
    `node_types` (an autoscaling cluster's launcher config) when known, else the live `nodes`. Raises
    SweepError when no node or node type could ever hold one trial (Ray would wait for it forever)."""
    spec = experiment.resources
    offers = node_types if node_types else nodes
    cpus = float(spec.cpus_per_trial)
    gpus = spec.gpus_per_trial
    if gpus == "auto":
        gpus = 1.0 if any(o.gpus >= 1 for o in offers) else 0.0
    gpus = float(gpus)
    workers = resolve_workers_per_trial(experiment, offers, gpus)
    # A trial's workers are placed together: one node holds all of them (DDP's all-reduce stays on the node).
    trial_cpus, trial_gpus = cpus * workers, gpus * workers
    if not any(o.fits(trial_cpus, trial_gpus) for o in offers):
        what = "node types of the cluster launcher config" if node_types else "nodes of the cluster"
        raise SweepError(f"no node can run a trial: each asks for {trial_cpus:g} CPU and {trial_gpus:g} GPU "
                         f"({workers} worker(s) x resources.cpus_per_trial, resources.gpus_per_trial; "
                         f"resources.workers_per_trial), and the {what} offer "
                         f"{'; '.join(o.describe() for o in offers) or 'nothing'}")
    notes = []
    concurrent = spec.max_concurrent_trials
    if concurrent == "auto":
        concurrent = max(1, sum(o.fits(trial_cpus, trial_gpus) * o.count for o in offers))
        notes.append(f"{concurrent} fit the {'node types (at their max_workers)' if node_types else 'nodes now'}")
        cap = learning_cap(experiment)
        if cap is not None and concurrent > cap:
            concurrent = cap
            notes.append(f"at most {cap} at once so that the {experiment.search.sampler_name()} sampler's trials "
                         "after its start-up ones learn from finished trials")
    return {"cpus_per_trial": cpus, "gpus_per_trial": gpus, "workers_per_trial": workers,
            "max_concurrent_trials": int(concurrent),
            "cluster_cpus": sum(o.cpus for o in nodes), "cluster_gpus": sum(o.gpus for o in nodes),
            "nodes": len(nodes), "autoscaling": bool(node_types), "concurrency_notes": notes}


def resolve_workers_per_trial(experiment: ExperimentSpec, offers: list[NodeOffer], gpus_per_worker: float) -> int:
    """resources.workers_per_trial, with `auto` resolved: on GPUs, the most whole GPUs any node (type) offers (a
    trial then fills such a node; nodes with fewer cannot hold it), else 1. The batch must divide by it."""
    from rft_ray.config.experiment import check_worker_split
    from rft_ray.config.fields import SpecError

    workers = experiment.resources.workers_per_trial
    if workers == "auto":
        most = max((int(o.gpus) for o in offers), default=0)
        workers = max(1, most) if gpus_per_worker > 0 else 1
        try:
            check_worker_split(workers, experiment.base.get("training") or {})
        except SpecError as err:
            raise SweepError(f"resources.workers_per_trial auto = {workers} (the GPUs of the largest node): "
                             f"{err.reason}") from None
    return int(workers)


def learning_cap(experiment: ExperimentSpec) -> int | None:
    """Trials at once that leave a model-based sampler (TPE, GP, NSGA-II) something to learn from: its start-up
    trials are drawn independently and may all run together; beyond them, a third of the budget at most. None for
    random search and grids (nothing to learn)."""
    from rft_ray.config.search import startup_trials

    search = experiment.search
    if search.mode != "optuna" or search.sampler_name() == "random":
        return None
    budget = int(search.num_samples or 1)
    startup = startup_trials(search)
    if budget <= startup:
        return None
    return max(1, startup, budget // 3)


def resolve_resources(experiment: ExperimentSpec, cluster_config: str | None = None) -> dict[str, Any]:
    """`plan_resources` for the connected Ray cluster, saying what it chose and why."""
    import ray

    config = find_launcher_config(cluster_config)
    nodes = live_nodes()
    plan = plan_resources(experiment, nodes, launcher_node_types(config) if config else None)
    plan["driver_resources"] = driver_resources(ray.cluster_resources())
    plan["cluster_config"] = config
    if plan["concurrency_notes"]:
        say(f"rft sweep: max_concurrent_trials auto = {plan['max_concurrent_trials']}: "
            f"{'; '.join(plan['concurrency_notes'])}")
    if len(nodes) > 1 and not experiment.is_remote:
        warn(f"rft sweep: note: {len(nodes)} nodes share a local storage path ({experiment.storage_root}); "
             "that works only on a shared file system (use s3:// or gs:// otherwise)")
    return plan
