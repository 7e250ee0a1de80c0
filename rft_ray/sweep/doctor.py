"""`rft doctor`: the preflight checks of a machine, or of every node of a Ray cluster, before a sweep.

Each check is a row (check, status, detail) with status pass, warn or fail. A node's checks run where the
node's trials would run: `check_node` is a module-level function of the installed package, so the Ray tasks of
`check_cluster` import it by name on every node.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any

from rft_ray.sweep.inputs import Input, absolute_paths, run_inputs

PASS, WARN, FAIL = "pass", "warn", "fail"
MIN_PYTHON = (3, 10)  # pyproject.toml: requires-python = ">=3.10"
# The oldest Linux driver that runs any build of a CUDA major version (NVIDIA's CUDA release notes, "minimum
# required driver for CUDA minor version compatibility"): older drivers fail at the first CUDA call.
MIN_DRIVER = {13: (580,), 12: (525,), 11: (450,)}
# PGD evaluation's peak GPU memory, measured on an H200: ViT-B/16 at 224 px, evaluation batch 256, fp32 (the
# attack keeps every iterate's activations for its backward pass, so it needs far more than training).
PGD_PEAK_GIB = 15.9
NO_GPU = "no NVIDIA GPU visible: trials run on CPU"
NVIDIA_SMI_TIMEOUT_S = 10
NODE_TIMEOUT_S = 180  # a node's checks import torch and may wait 10 s for nvidia-smi


@dataclass(frozen=True)
class Row:
    check: str
    status: str  # pass, warn or fail
    detail: str


@dataclass
class Report:
    """One table: this machine, the cluster as a whole, or one node."""

    title: str
    rows: list[Row] = field(default_factory=list)


@dataclass(frozen=True)
class SpecInput:
    """A local input of the experiment, once however many groups read it."""

    input: Input
    groups: tuple[str, ...]


# -- this machine's software and GPUs ----------------------------------------------------------------------


def python_row(version: tuple[int, ...]) -> Row:
    text = ".".join(str(v) for v in version[:3])
    need = ".".join(str(v) for v in MIN_PYTHON)
    ok = tuple(version[:2]) >= MIN_PYTHON
    return Row("Python", PASS if ok else FAIL, f"{text} ({'>=' if ok else 'older than'} {need})")


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.strip().split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def driver_check(cuda_build: str | None, driver: str) -> Row:
    """The NVIDIA driver against what torch's CUDA build needs (a GPU is present: `driver` is its version)."""
    if not cuda_build:
        return Row("NVIDIA driver", FAIL, f"driver {driver}, but torch is a CPU-only build: trials would train on "
                                          "CPU; install a CUDA build of torch")
    major = _version(cuda_build)[:1]
    need = MIN_DRIVER.get(major[0]) if major else None
    if need is None:
        return Row("NVIDIA driver", WARN, f"driver {driver}; no known minimum driver for torch's CUDA {cuda_build} "
                                          "build (check NVIDIA's CUDA release notes)")
    wanted = ".".join(str(v) for v in need)
    if _version(driver) < need:
        return Row("NVIDIA driver", FAIL, f"driver {driver} is older than the {wanted} that torch's CUDA "
                                          f"{cuda_build} build needs: update the driver or install an older "
                                          "CUDA build of torch")
    return Row("NVIDIA driver", PASS, f"driver {driver} (>= {wanted} for torch's CUDA {cuda_build} build)")


def query_nvidia_smi() -> tuple[list[dict[str, Any]], str]:
    """(GPUs as nvidia-smi lists them, why none when none): never raises."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return [], "nvidia-smi not found"
    try:
        done = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return [], f"nvidia-smi did not answer in {NVIDIA_SMI_TIMEOUT_S} s"
    except OSError as err:
        return [], f"nvidia-smi: {err}"
    if done.returncode != 0:  # e.g. "No devices were found", or a driver it cannot talk to
        said = (done.stdout + done.stderr).strip().splitlines()
        return [], f"nvidia-smi: {said[0] if said else f'exit status {done.returncode}'}"
    gpus = []
    for line in done.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            memory = float(parts[2]) / 1024 if parts[2].replace(".", "", 1).isdigit() else None
            gpus.append({"name": parts[0], "driver": parts[1], "memory_gib": memory})
    return gpus, "" if gpus else "nvidia-smi lists no GPU"


def memory_row(gpus: list[tuple[str, float]]) -> Row:
    """GPUs as (name, GiB) against the PGD evaluation's measured peak."""
    names = sorted({name for name, _ in gpus})
    smallest = min(gib for _, gib in gpus)
    detail = (f"{len(gpus)} x {', '.join(names)}, {smallest:.1f} GiB{' (smallest)' if len(gpus) > 1 else ''}; "
              f"PGD on ViT-B/16 at 224 px, evaluation batch 256, fp32 peaks at {PGD_PEAK_GIB} GiB (measured on "
              "an H200)")
    if smallest < PGD_PEAK_GIB:
        return Row("GPU", WARN, detail + ": set a smaller evaluation.pgd.batch_size (e.g. 64) for such runs")
    return Row("GPU", PASS, detail)


def gpu_rows(torch, cuda_build: str | None) -> list[Row]:
    smi, why = query_nvidia_smi()
    with warnings.catch_warnings():  # a CUDA build without a driver warns on the first query
        warnings.simplefilter("ignore")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not smi and not count:  # the driver row has nvidia-smi's word, the GPU row torch's
        return [Row("NVIDIA driver", WARN, f"{NO_GPU} ({why})"),
                Row("GPU", WARN, f"{NO_GPU} (torch sees no CUDA device)"),
                Row("bf16", PASS, "no GPU: training.precision auto trains in fp32 here")]
    rows = [driver_check(cuda_build, smi[0]["driver"]) if smi else
            Row("NVIDIA driver", WARN, f"not checked ({why}); torch sees {count} GPU(s)")]
    if not count:
        listed = [(g["name"], g["memory_gib"]) for g in smi if g["memory_gib"] is not None]
        if cuda_build:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            rows.append(Row("GPU", FAIL, f"nvidia-smi lists {len(smi)} GPU(s), but torch (CUDA {cuda_build} build) "
                                         "sees none" + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None
                                                        else "")))
        elif listed:  # the CPU-only build already failed the driver row; the memory still tells something
            rows.append(memory_row(listed))
        return rows
    props = [torch.cuda.get_device_properties(i) for i in range(count)]
    rows.append(memory_row([(p.name, p.total_memory / 2**30) for p in props]))
    lacking = []
    for i in range(count):
        with torch.cuda.device(i):
            if not torch.cuda.is_bf16_supported(including_emulation=False):
                lacking.append(f"{i} ({props[i].name})")
    if lacking:  # rft_ray.training.setup.autocast_dtype falls back to fp32 there
        rows.append(Row("bf16", WARN, f"GPU {', '.join(lacking)} has no native bf16: training.precision auto trains "
                                      "in fp32 there (slower; training.precision bf16 would fail)"))
    else:
        rows.append(Row("bf16", PASS, "native bf16 on every GPU: training.precision auto trains with bf16 autocast"))
    return rows


def machine_rows() -> list[Row]:
    rows = [python_row(tuple(sys.version_info[:3]))]
    try:
        import torch
    except Exception as err:  # noqa: BLE001 - a broken install is a finding, not a crash
        return rows + [Row("torch", FAIL, f"cannot import torch: {type(err).__name__}: {err}")]
    cuda_build = torch.version.cuda
    rows.append(Row("torch", PASS, f"{torch.__version__}, " + (f"CUDA {cuda_build} build" if cuda_build
                                                               else "CPU-only build")))
    try:
        return rows + gpu_rows(torch, cuda_build)
    except Exception as err:  # noqa: BLE001 - e.g. a CUDA call failing on a sick GPU: a finding, not a crash
        return rows + [Row("GPU", FAIL, f"querying the GPUs failed: {type(err).__name__}: {err}")]


# -- the experiment's inputs, storage and MLflow ------------------------------------------------------------


def spec_inputs(experiment) -> list[SpecInput]:
    """Every group's local inputs (paths absolute, as the sweep makes them), each once."""
    seen: dict[Input, list[str]] = {}
    for group in experiment.groups:
        run = absolute_paths(json.loads(json.dumps(group.run)))
        for item in run_inputs(run):
            seen.setdefault(item, []).append(group.name)
    return [SpecInput(item, tuple(groups)) for item, groups in seen.items()]


def input_row(entry: SpecInput, runs_trials: bool | None) -> Row:
    """`runs_trials`: None on this machine (a sweep's driver needs the inputs it shares with the nodes; node-local
    data is each trial node's business), else whether this node of the cluster can hold a trial (a node that runs
    none needs no data)."""
    item = entry.input
    groups = ", ".join(entry.groups[:3]) + (f" and {len(entry.groups) - 3} more" if len(entry.groups) > 3 else "")
    check = f"{item.field} ({'node-local' if not item.on_head else 'shared'})"
    if item.exists():
        return Row(check, PASS, f"{item.kind} {item.path} exists (groups {groups})")
    detail = f"{item.kind} {item.path} does not exist (groups {groups})"
    if runs_trials is False:
        return Row(check, WARN, detail + "; this node cannot hold a trial, so it reads no data")
    if runs_trials is None and not item.on_head:
        return Row(check, WARN, detail + "; dataset.node_local: it must be on every node that runs trials "
                                         "(rft doctor --cluster checks them)")
    hint = ("a sweep reads local data from the same path on every node" if item.on_head else
            "dataset.node_local: the data must be at this path on every node that runs trials")
    return Row(check, FAIL, f"{detail}; {hint}")


def storage_row(root: str) -> Row:
    """Write and delete a probe file under the sweep's folder (local or a URI), as every trial's writes will. A
    local folder not made yet is probed in its nearest existing parent, where the sweep will make it: the probe
    makes no folders, so nodes probing one shared folder at once cannot remove one from under another."""
    from rft_ray.results.files import filesystem_for, is_uri, write_bytes

    where = root
    if not is_uri(root):
        where = os.path.abspath(os.path.expanduser(root))
        while not os.path.exists(where) and os.path.dirname(where) != where:
            where = os.path.dirname(where)
    try:
        filesystem, base = filesystem_for(where)
        probe = f"{base}/.rft-doctor-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        write_bytes(filesystem, probe, b"rft doctor probe\n")
        filesystem.delete_file(probe)
    except Exception as err:  # noqa: BLE001 - any failure is the finding
        return Row("storage writable", FAIL, f"{root}: {type(err).__name__}: {err}")
    made = "" if where == root or is_uri(root) else f" in {where}, where the sweep will make its folder"
    return Row("storage writable", PASS, f"{root}: wrote and deleted a probe file{made}")


def mlflow_row(experiment) -> Row:
    """The check the sweep's driver makes before logging (an HTTP server answers /health)."""
    from rft_ray.tracking.client import TrackingError, check_server

    if not experiment.tracking.enabled:
        return Row("MLflow", PASS, "tracking.enabled is false: not used")
    uri = experiment.tracking_uri()
    if uri.startswith("sqlite:///"):  # check_server would make the folder; the doctor leaves no trace
        folder = os.path.dirname(uri[len("sqlite:///"):])
        while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
            folder = os.path.dirname(folder)
        ok = os.access(folder, os.W_OK)
        return Row("MLflow", PASS if ok else FAIL, f"SQLite store {uri[len('sqlite:///'):]}: {folder} is "
                                                   f"{'' if ok else 'not '}writable")
    if not uri.startswith(("http://", "https://")):
        return Row("MLflow", WARN, f"{uri}: not checked before first use (only HTTP servers answer /health)")
    # check_server, not Tracker.check_reachable: the latter prints the sweep's "tracking is off" warning and
    # keeps only a boolean, where the doctor wants the error text in its row.
    try:
        check_server(uri, timeout=10.0)
    except TrackingError as err:
        return Row("MLflow", FAIL, f"{err} (a sweep would go on without MLflow; back-fill with rft sync-mlflow)")
    return Row("MLflow", PASS, f"{uri} answers /health")


# -- one node, and every node -------------------------------------------------------------------------------


def check_node(inputs: list[SpecInput], storage_root: str | None, runs_trials: bool | None) -> list[Row]:
    """Every check that depends on the machine it runs on (a Ray task per node runs this)."""
    rows = machine_rows()
    rows += [input_row(entry, runs_trials) for entry in inputs]
    if storage_root is not None:
        rows.append(storage_row(storage_root))
    return rows


def check_local(experiment) -> Report:
    if experiment is None:
        return Report(f"this machine ({socket.gethostname()})", machine_rows())
    rows = check_node(spec_inputs(experiment), experiment.storage_root, None) + [mlflow_row(experiment)]
    return Report(f"this machine ({socket.gethostname()})", rows)


def _resources_text(resources: dict[str, float]) -> str:
    parts = [f"{resources.get('CPU', 0):g} CPU", f"{resources.get('GPU', 0):g} GPU",
             f"{resources.get('memory', 0) / 2**30:.1f} GiB memory"]
    parts += [f"{key} {value:g}" for key, value in sorted(resources.items())
              if key not in ("CPU", "GPU", "memory", "object_store_memory") and not key.startswith("node:")]
    return ", ".join(parts)


def _trial_plan(experiment, nodes) -> tuple[Row, float, float]:
    """The "trial fits a node" row and the per-trial CPUs and GPUs it resolved (the spec's, where it failed)."""
    from rft_ray.sweep.resources import find_launcher_config, launcher_node_types, plan_resources
    from rft_ray.sweep.state import SweepError

    spec = experiment.resources
    cpus = float(spec.cpus_per_trial)
    gpus = float(spec.gpus_per_trial) if spec.gpus_per_trial != "auto" else float(any(n.gpus >= 1 for n in nodes))
    try:
        config = find_launcher_config(None)
        plan = plan_resources(experiment, nodes, launcher_node_types(config) if config else None)
    except SweepError as err:
        return Row("trial fits a node", FAIL, str(err)), cpus, gpus
    cpus, gpus = plan["cpus_per_trial"], plan["gpus_per_trial"]
    source = f"node types of {config}" if plan["autoscaling"] else "the nodes alive now"
    workers = plan["workers_per_trial"]
    each = f"{cpus:g} CPU, {gpus:g} GPU" if workers == 1 else \
        f"{workers} workers x ({cpus:g} CPU, {gpus:g} GPU) on one node"
    return Row("trial fits a node", PASS, f"each trial asks {each}; up to "
                                          f"{plan['max_concurrent_trials']} at once on {source}"), cpus, gpus


def check_cluster(address: str | None, experiment, timeout: float = NODE_TIMEOUT_S) -> list[Report]:
    """Connect to a running Ray cluster (never start one), then run `check_node` on every alive node."""
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
        return _check_connected(experiment, timeout)
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


def _check_connected(experiment, timeout: float) -> list[Report]:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from rft_ray.sweep.resources import NodeOffer, live_nodes

    alive = sorted((n for n in ray.nodes() if n.get("Alive")),
                   key=lambda n: "node:__internal_head__" not in n.get("Resources", {}))  # the head first
    totals = ray.cluster_resources()
    cluster = Report("cluster", [Row("Ray", PASS, f"connected to {ray.get_runtime_context().gcs_address}: "
                                                  f"{len(alive)} alive node(s), {totals.get('CPU', 0):g} CPU, "
                                                  f"{totals.get('GPU', 0):g} GPU")])
    inputs, root, cpus, gpus = [], None, 0.0, 0.0
    if experiment is not None:
        row, cpus, gpus = _trial_plan(experiment, live_nodes())
        cluster.rows += [row, mlflow_row(experiment)]
        inputs, root = spec_inputs(experiment), experiment.storage_root
    remote = ray.remote(num_cpus=0, max_retries=0)(check_node)  # 0 CPU: runs beside busy trials too
    refs = []
    for node in alive:
        resources = node.get("Resources", {})
        runs_trials = None
        if experiment is not None:
            offer = NodeOffer("", float(resources.get("CPU", 0)), float(resources.get("GPU", 0)), 1)
            runs_trials = offer.fits(cpus, gpus) > 0
        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        refs.append(remote.options(scheduling_strategy=strategy).remote(inputs, root, runs_trials))
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    reports = [cluster]
    for node, ref in zip(alive, refs):
        head = " head" if "node:__internal_head__" in node.get("Resources", {}) else ""
        title = (f"node {node.get('NodeManagerAddress', '?')}{head} ({node.get('NodeManagerHostname', '?')}, "
                 f"id {node['NodeID']}): {_resources_text(node.get('Resources', {}))}")
        if ref not in ready:
            ray.cancel(ref, force=True)
            rows = [Row("node checks", FAIL, f"no answer within {timeout:g} s (node unreachable, or its workers "
                                             "cannot start)")]
        else:
            try:
                rows = ray.get(ref)
            except Exception as err:  # noqa: BLE001 - e.g. the package is not installed on that node
                said = str(err).strip().splitlines()
                rows = [Row("node checks", FAIL, f"{type(err).__name__}: {said[-1] if said else ''}")]
        reports.append(Report(title, rows))
    return reports


def failed(reports: list[Report]) -> bool:
    return any(row.status == FAIL for report in reports for row in report.rows)
