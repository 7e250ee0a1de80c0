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
NO_GPU_WANTED = "no NVIDIA GPU visible"  # where the spec asks for one: the "trial fits" row fails instead
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


def cuda_device_count(torch) -> int:
    with warnings.catch_warnings():  # a CUDA build without a driver warns on the first query
        warnings.simplefilter("ignore")
        return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpu_rows(torch, cuda_build: str | None, wants_gpu: bool = False) -> list[Row]:
    smi, why = query_nvidia_smi()
    count = cuda_device_count(torch)
    if not smi and not count:  # the driver row has nvidia-smi's word, the GPU row torch's
        none = NO_GPU_WANTED if wants_gpu else NO_GPU
        return [Row("NVIDIA driver", WARN, f"{none} ({why})"),
                Row("GPU", WARN, f"{none} (torch sees no CUDA device)"),
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


def machine_rows(wants_gpu: bool = False) -> list[Row]:
    rows = [python_row(tuple(sys.version_info[:3]))]
    try:
        import torch
    except Exception as err:  # noqa: BLE001 - a broken install is a finding, not a crash
        return rows + [Row("torch", FAIL, f"cannot import torch: {type(err).__name__}: {err}")]
    cuda_build = torch.version.cuda
    rows.append(Row("torch", PASS, f"{torch.__version__}, " + (f"CUDA {cuda_build} build" if cuda_build
                                                               else "CPU-only build")))
    try:
        return rows + gpu_rows(torch, cuda_build, wants_gpu)
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


def smallest_gpu_gib() -> float | None:
    """The smallest visible GPU's memory in GiB (None without a GPU or torch): what one trial may get."""
    try:
        import torch

        count = cuda_device_count(torch)
        return min(torch.cuda.get_device_properties(i).total_memory for i in range(count)) / 2**30 if count else None
    except Exception:  # noqa: BLE001 - the GPU row already says what is wrong
        return None


def step_memory_rows(memories: list[dict[str, Any]], gib: float | None) -> list[Row]:
    """Each strategy's training step (`rft_ray.cost.memory`, computed on the machine that runs the doctor) against
    this node's smallest GPU."""
    from rft_ray.cost.memory import verdict

    rows = []
    for m in memories if gib is not None else []:
        said = verdict(m["total"], gib)
        status = {"fits": PASS, "tight": WARN}.get(said, FAIL)
        hint = "" if status == PASS else ": lower training.batch_size (or evaluate/attack with smaller batches)"
        if status != PASS and m.get("shardable"):
            hint += ", or shard the model over a trial's GPUs: training.sharding fsdp with resources.workers_per_trial"
        rows.append(Row(f"memory: {m['strategy']} step", status,
                        f"batch {m['batch']}: {m['total']:.1f} GiB of {gib:.1f} GiB, {said} (computed, not measured: "
                        f"{m['parts']}){hint}"))
    return rows


def step_memories(experiment) -> list[dict[str, Any]]:
    """The training-step memory of each strategy x batch size of the spec (computed: `rft_ray.cost.memory`)."""
    from rft_ray.config import RunSpec
    from rft_ray.config.run import FSDP_STRATEGIES
    from rft_ray.cost.memory import step_memory

    runs: dict[tuple[str, int], Any] = {}
    for group in experiment.groups:
        run = RunSpec.from_dict(group.run)
        runs.setdefault((run.strategy.name, run.training.batch_size), run)
    workers = experiment.resources.workers_per_trial
    workers = workers if isinstance(workers, int) else 1  # auto: known once the sweep sees the cluster
    out = []
    for run in runs.values():
        m = step_memory(run, workers)
        out.append({"strategy": m.strategy, "batch": m.batch, "total": m.total, "parts": m.parts(),
                    "shardable": m.strategy in FSDP_STRATEGIES and m.sharding != "fsdp"})
    return out


def wants_gpu(experiment) -> bool:
    gpus = experiment.resources.gpus_per_trial
    return gpus != "auto" and float(gpus) > 0


def check_node(inputs: list[SpecInput], storage_root: str | None, runs_trials: bool | None,
               memories: list[dict[str, Any]] | None = None, gpu_wanted: bool = False) -> list[Row]:
    """Every check that depends on the machine it runs on (a Ray task per node runs this)."""
    rows = machine_rows(gpu_wanted)
    rows += [input_row(entry, runs_trials) for entry in inputs]
    if storage_root is not None:
        rows.append(storage_row(storage_root))
    if memories and runs_trials is not False:
        rows += step_memory_rows(memories, smallest_gpu_gib())
    return rows


def local_trial_row(experiment) -> Row:
    """Whether one trial of the spec fits this machine, as `rft sweep` here would need."""
    import torch

    spec = experiment.resources
    gpus_here, cpus_here = cuda_device_count(torch), os.cpu_count() or 1
    workers = spec.workers_per_trial if isinstance(spec.workers_per_trial, int) else 1  # auto: this machine's
    cpus = float(spec.cpus_per_trial) * workers
    gpus = (float(spec.gpus_per_trial) if spec.gpus_per_trial != "auto" else float(gpus_here > 0)) * workers
    have = f"this machine has {cpus_here} CPU, {gpus_here} GPU"
    of = f" ({workers} workers)" if workers > 1 else ""
    if gpus > gpus_here:
        return Row("trial fits this machine", FAIL, f"each trial asks {gpus:g} GPU{of} and {have}: rft sweep here would "
                                                    "refuse to start; run it on a GPU machine or a cluster (rft doctor "
                                                    "--cluster checks its nodes), or --set resources.gpus_per_trial=0 "
                                                    "to train on CPU")
    if cpus > cpus_here:
        return Row("trial fits this machine", FAIL, f"each trial asks {cpus:g} CPU{of} and {have}: lower "
                                                    "resources.cpus_per_trial or resources.workers_per_trial")
    auto = " (gpus_per_trial auto)" if spec.gpus_per_trial == "auto" else ""
    return Row("trial fits this machine", PASS, f"each trial asks {cpus:g} CPU, {gpus:g} GPU{auto}{of}; {have}")


def check_local(experiment) -> Report:
    if experiment is None:
        return Report(f"this machine ({socket.gethostname()})", machine_rows())
    gpu = wants_gpu(experiment)
    memories = step_memories(experiment) if smallest_gpu_gib() is not None else None
    rows = check_node(spec_inputs(experiment), experiment.storage_root, None, memories, gpu)
    rows += [local_trial_row(experiment), mlflow_row(experiment)]
    return Report(f"this machine ({socket.gethostname()})", rows)


def failed(reports: list[Report]) -> bool:
    return any(row.status == FAIL for report in reports for row in report.rows)
