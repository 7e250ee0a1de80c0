"""`rft doctor --cluster`: the checks of `rft_ray.sweep.doctor` on every alive node of a running Ray cluster, and
on a node trials will run on.

A node that can hold a trial (the spec's CPUs and GPUs per trial) gets every check: GPU, driver, bf16, the
node-local data, a write and delete under the storage URI, and each strategy's training-step memory. Where no alive
node can hold one (an autoscaling cluster with no GPU worker yet), a probe task asking for one trial's CPUs and
GPUs makes the autoscaler start such a node and runs the checks there; if none starts within the probe's timeout,
a failed row says that no trial node was checked (a quota of 0, a bad image, a node type no instance fits).
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Any

from rft_ray.sweep.doctor import (
    FAIL,
    NODE_TIMEOUT_S,
    PASS,
    Report,
    Row,
    check_node,
    mlflow_row,
    spec_inputs,
    step_memories,
    wants_gpu,
)

PROBE_TIMEOUT_S = 900  # a cold spot GPU node: launch, pull the image, sync the data, start Ray


def probe_node(inputs, storage_root, memories, gpu_wanted) -> tuple[dict[str, str], list[Row]]:
    """The probe task's body, on the node the autoscaler found or started for it: where it ran, and its checks."""
    import ray

    context = ray.get_runtime_context()
    where = {"node_id": context.get_node_id(), "ip": ray.util.get_node_ip_address(), "host": socket.gethostname()}
    return where, check_node(inputs, storage_root, True, memories, gpu_wanted)


def _resources_text(resources: dict[str, float]) -> str:
    parts = [f"{resources.get('CPU', 0):g} CPU", f"{resources.get('GPU', 0):g} GPU",
             f"{resources.get('memory', 0) / 2**30:.1f} GiB memory"]
    parts += [f"{key} {value:g}" for key, value in sorted(resources.items())
              if key not in ("CPU", "GPU", "memory", "object_store_memory") and not key.startswith("node:")]
    return ", ".join(parts)


def _trial_plan(experiment, nodes) -> tuple[Row, float, float, bool]:
    """The "trial fits a node" row, the per-trial CPUs and GPUs it resolved (the spec's, where it failed), and
    whether a node that holds one may exist (now or from the autoscaler)."""
    from rft_ray.sweep.resources import find_launcher_config, launcher_node_types, plan_resources
    from rft_ray.sweep.state import SweepError

    spec = experiment.resources
    cpus = float(spec.cpus_per_trial)
    gpus = float(spec.gpus_per_trial) if spec.gpus_per_trial != "auto" else float(any(n.gpus >= 1 for n in nodes))
    try:
        config = find_launcher_config(None)
        plan = plan_resources(experiment, nodes, launcher_node_types(config) if config else None)
    except SweepError as err:
        return Row("trial fits a node", FAIL, str(err)), cpus, gpus, False
    cpus, gpus = plan["cpus_per_trial"], plan["gpus_per_trial"]
    source = f"node types of {config}" if plan["autoscaling"] else "the nodes alive now"
    workers = plan["workers_per_trial"]
    each = f"{cpus:g} CPU, {gpus:g} GPU" if workers == 1 else \
        f"{workers} workers x ({cpus:g} CPU, {gpus:g} GPU) on one node"
    return Row("trial fits a node", PASS, f"each trial asks {each}; up to "
                                          f"{plan['max_concurrent_trials']} at once on {source}"), cpus, gpus, True


def check_cluster(address: str | None, experiment, timeout: float = NODE_TIMEOUT_S,
                  probe_timeout: float = PROBE_TIMEOUT_S) -> list[Report]:
    """Connect to a running Ray cluster (never start one), then run `check_node` on every alive node, and on a
    trial node the probe brings up where none is alive."""
    import ray

    connected_here = not ray.is_initialized()
    if connected_here:
        where = address or os.environ.get("RAY_ADDRESS") or "auto"
        try:  # "auto": RAY_ADDRESS when set, else a Ray running on this machine; never a new one
            _answers(where)
            ray.init(address=address or "auto", log_to_driver=False, logging_level=logging.WARNING)
        except Exception as err:  # noqa: BLE001 - ConnectionError, a bad address: the finding itself
            return [Report("cluster", [Row("Ray", FAIL, f"cannot connect to {where}: {type(err).__name__}: {err}")])]
    try:
        return _check_connected(experiment, timeout, probe_timeout)
    finally:
        if connected_here:
            ray.shutdown()  # only this driver's connection: the cluster runs on


def _answers(address: str, timeout: float = 10.0) -> None:
    """Raise OSError unless host:port accepts a TCP connection: ray.init retries an address nobody answers at
    for many minutes, where a preflight should say so at once."""
    if address in ("auto", "local"):
        return  # Ray looks for one on this machine and says at once when there is none
    host, _, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not host:port: {address!r}")
    socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()


def _node_title(node: dict[str, Any], note: str = "") -> str:
    head = " head" if "node:__internal_head__" in node.get("Resources", {}) else ""
    return (f"node {node.get('NodeManagerAddress', '?')}{head} ({node.get('NodeManagerHostname', '?')}, "
            f"id {node['NodeID']}){note}: {_resources_text(node.get('Resources', {}))}")


def _check_connected(experiment, timeout: float, probe_timeout: float) -> list[Report]:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from rft_ray.sweep.resources import NodeOffer, live_nodes

    alive = sorted((n for n in ray.nodes() if n.get("Alive")),
                   key=lambda n: "node:__internal_head__" not in n.get("Resources", {}))  # the head first
    totals = ray.cluster_resources()
    cluster = Report("cluster", [Row("Ray", PASS, f"connected to {ray.get_runtime_context().gcs_address}: "
                                                  f"{len(alive)} alive node(s), {totals.get('CPU', 0):g} CPU, "
                                                  f"{totals.get('GPU', 0):g} GPU")])
    inputs, root, cpus, gpus, plannable, memories, gpu = [], None, 0.0, 0.0, False, None, False
    if experiment is not None:
        row, cpus, gpus, plannable = _trial_plan(experiment, live_nodes())
        cluster.rows += [row, mlflow_row(experiment)]
        inputs, root, gpu = spec_inputs(experiment), experiment.storage_root, wants_gpu(experiment)
        memories = step_memories(experiment) if gpus > 0 else None  # computed here, compared on each GPU node
    remote = ray.remote(num_cpus=0, max_retries=0)(check_node)  # 0 CPU: runs beside busy trials too
    refs, trial_nodes = [], 0
    for node in alive:
        resources = node.get("Resources", {})
        runs_trials = None
        if experiment is not None:
            offer = NodeOffer("", float(resources.get("CPU", 0)), float(resources.get("GPU", 0)), 1)
            runs_trials = offer.fits(cpus, gpus) > 0
            trial_nodes += runs_trials
        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        refs.append(remote.options(scheduling_strategy=strategy).remote(inputs, root, runs_trials, memories, gpu))
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    reports = [cluster]
    for node, ref in zip(alive, refs):
        reports.append(Report(_node_title(node), _node_rows(ref, ready, timeout)))
    if experiment is not None and not trial_nodes:
        reports += _probe(cluster, inputs, root, memories, gpu, cpus, gpus, plannable, probe_timeout)
    return reports


def _node_rows(ref, ready, timeout: float) -> list[Row]:
    import ray

    if ref not in ready:
        ray.cancel(ref, force=True)
        return [Row("node checks", FAIL, f"no answer within {timeout:g} s (node unreachable, or its workers "
                                         "cannot start)")]
    try:
        return ray.get(ref)
    except Exception as err:  # noqa: BLE001 - e.g. the package is not installed on that node
        said = str(err).strip().splitlines()
        return [Row("node checks", FAIL, f"{type(err).__name__}: {said[-1] if said else ''}")]


def _probe(cluster: Report, inputs, root, memories, gpu: bool, cpus: float, gpus: float, plannable: bool,
           probe_timeout: float) -> list[Report]:
    """No alive node holds a trial: ask for one with a task of one trial's resources (the autoscaler starts a
    node for it), check that node, or say plainly that no trial node was checked."""
    import ray

    asked = f"{cpus:g} CPU, {gpus:g} GPU"
    if not plannable or probe_timeout <= 0:
        why = ("no node type can hold a trial (the row above)" if not plannable else
               "--probe-timeout 0: not asking the autoscaler for one")
        cluster.rows.append(Row("trial node", FAIL, f"no trial node was checked: no alive node holds a trial "
                                                    f"({asked}) and {why}"))
        return []
    ref = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(probe_node).remote(inputs, root, memories, gpu)
    ready, _ = ray.wait([ref], timeout=probe_timeout)
    if not ready:
        ray.cancel(ref, force=True)
        cluster.rows.append(Row("trial node", FAIL, f"no trial node was checked: no alive node holds a trial ({asked}) "
                                                    f"and none started for a probe task asking for that within "
                                                    f"{probe_timeout:g} s (see `ray status` and the autoscaler's log: "
                                                    "a GPU quota of 0, spot capacity, the image or setup failing)"))
        return []
    try:
        where, rows = ray.get(ref)
    except Exception as err:  # noqa: BLE001 - the node came up but the checks could not run there
        said = str(err).strip().splitlines()
        cluster.rows.append(Row("trial node", FAIL, f"a probe task reached a trial node but failed: "
                                                    f"{type(err).__name__}: {said[-1] if said else ''}"))
        return []
    node = next((n for n in ray.nodes() if n["NodeID"] == where["node_id"]),
                {"NodeID": where["node_id"], "NodeManagerAddress": where["ip"], "NodeManagerHostname": where["host"]})
    cluster.rows.append(Row("trial node", PASS, f"no alive node held a trial ({asked}); a probe task asking for that "
                                                f"ran on node {where['ip']} (checked below)"))
    return [Report(_node_title(node, ", started for the probe"), rows)]
