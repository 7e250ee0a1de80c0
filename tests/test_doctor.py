"""`rft doctor`: the preflight table of this machine and, on a local two-node Ray cluster, of every node."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import two_node_cluster

from rft_ray.cli import main
from rft_ray.sweep import doctor as doctor_module
from rft_ray.sweep.doctor import FAIL, PASS, WARN, driver_check, gpu_rows, memory_row, step_memory_rows

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^(\S(?:.*?\S)?)\s{2,}(pass|warn|fail)\s+(.*)$")


def table_rows(out: str) -> list[tuple[str, str, str]]:
    """(check, status, detail) of every row printed, wrapped details joined again."""
    rows: list[list[str]] = []
    for line in out.splitlines():
        match = ROW.match(line)
        if match:
            rows.append(list(match.groups()))
        elif rows and line.startswith(" ") and line.strip():  # only a wrapped detail starts with spaces
            rows[-1][2] += " " + line.strip()
    return [tuple(r) for r in rows]


def row(rows, check: str) -> tuple[str, str]:
    found = [(status, detail) for name, status, detail in rows if name == check]
    assert len(found) == 1, (check, rows)
    return found[0]


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine as a CPU node, whatever it has: no nvidia-smi on PATH, torch sees no CUDA device."""
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "nvidia-smi" else real_which(name, *a, **k))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def doctor(capsys, *argv) -> tuple[int, list, str, str]:
    code = main(["doctor", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", out)  # plain text: newlines only
    return code, table_rows(out), out, err


def write_spec(tmp_path: Path, root: Path, **top) -> Path:
    """tests/test_sweep.py's tiny experiment on a CIFAR-10 folder (which none of these tests reads)."""
    data = {
        "name": "tiny",
        "base": {"model": {"name": "rft_vit_cifar_patch8_32", "source": "random", "image_size": 16},
                 "dataset": {"name": "cifar10", "root": str(root)}, "training": {"steps": 40, "batch_size": 16}},
        "strategies": ["lora"],
        "search": {"mode": "optuna", "num_samples": 2, "objectives": [{"metric": "test_clean_acc"}],
                   "space": {"lr": {"low": 1e-3, "high": 1e-2}, "weight_decay": {"low": 1e-3, "high": 1e-1}}},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent_trials": 2},
        "tracking": {"enabled": False},
        "storage": {"path": str(tmp_path / "sweep")},
        **top,
    }
    spec = tmp_path / "experiment.yaml"
    spec.write_text(yaml.safe_dump(data))
    return spec


def test_this_cpu_machine_passes_with_a_gpu_warning(capsys, no_gpu):
    code, rows, out, _ = doctor(capsys)
    assert code == 0, out
    python, torch_row = row(rows, "Python"), row(rows, "torch")
    assert python[0] == PASS and python[1].startswith(".".join(map(str, sys.version_info[:3])))
    assert torch_row[0] == PASS and torch.__version__ in torch_row[1]
    assert row(rows, "GPU")[0] == WARN and "no NVIDIA GPU visible: trials run on CPU" in row(rows, "GPU")[1]
    assert row(rows, "NVIDIA driver")[0] == WARN and "nvidia-smi not found" in row(rows, "NVIDIA driver")[1]
    assert {status for _, status, _ in rows} <= {PASS, WARN}
    assert "no SPEC given" in out and "rft doctor: 0 fail" in out


def test_a_missing_dataset_root_fails_and_a_present_one_passes(tmp_path, capsys, no_gpu):
    absent = tmp_path / "absent"
    spec = write_spec(tmp_path, absent)
    code, rows, out, _ = doctor(capsys, str(spec))
    assert code == 1, out
    status, detail = row(rows, "dataset.root (shared)")
    assert status == FAIL and str(absent) in detail and "lora-cifar10" in detail
    assert row(rows, "storage writable")[0] == PASS
    assert not (tmp_path / "sweep").exists()  # the probe's folders are removed again
    assert row(rows, "MLflow") == (PASS, "tracking.enabled is false: not used")
    code, rows, out, _ = doctor(capsys, str(spec), "--set", "tracking.enabled=true")  # SQLite beside the results
    status, detail = row(rows, "MLflow")
    assert status == PASS and str(tmp_path / "sweep" / "mlflow.db") in detail
    assert not (tmp_path / "sweep").exists()  # nor does the MLflow check make it

    absent.mkdir()
    code, rows, out, _ = doctor(capsys, str(spec))
    assert code == 0, out
    assert row(rows, "dataset.root (shared)")[0] == PASS


def test_storage_and_mlflow_failures_carry_their_error(tmp_path, capsys, no_gpu):
    (tmp_path / "data").mkdir()
    (tmp_path / "file").write_text("not a folder")
    spec = write_spec(tmp_path, tmp_path / "data")
    code, rows, out, _ = doctor(capsys, str(spec), "--set", f"storage.path={tmp_path / 'file' / 'sweep'}",
                                "--set", "tracking.enabled=true", "--set", "tracking.mlflow_uri=http://127.0.0.1:9")
    assert code == 1, out
    status, detail = row(rows, "storage writable")
    assert status == FAIL and str(tmp_path / "file" / "sweep") in detail and "Error" in detail
    status, detail = row(rows, "MLflow")
    assert status == FAIL and "http://127.0.0.1:9 is not reachable" in detail


def test_a_gpu_spec_on_a_machine_without_one_fails_the_trial_row(tmp_path, capsys, no_gpu):
    (tmp_path / "data").mkdir()
    spec = write_spec(tmp_path, tmp_path / "data",
                      resources={"cpus_per_trial": 1, "gpus_per_trial": 1, "max_concurrent_trials": 1})
    code, rows, out, _ = doctor(capsys, str(spec))
    assert code == 1, out
    status, detail = row(rows, "trial fits this machine")
    assert status == FAIL and "each trial asks 1 GPU" in detail and "0 GPU" in detail and "refuse" in detail
    assert "trials run on CPU" not in out  # the spec asks for a GPU: no trial would run here at all
    assert not [r for r in rows if r[0].startswith("memory:")]  # no GPU to compare with
    code, rows, out, _ = doctor(capsys, str(spec), "--set", "resources.gpus_per_trial=auto")
    assert code == 0, out
    assert row(rows, "trial fits this machine") == (PASS, f"each trial asks 1 CPU, 0 GPU (gpus_per_trial auto); "
                                                          f"this machine has {os.cpu_count()} CPU, 0 GPU")


def test_each_strategys_training_step_against_the_gpu(tmp_path, monkeypatch):
    """The memory rows of a GPU node (faked: this machine has none): computed on the tiny spec's strategies."""
    from rft_ray.specs import load_experiment

    (tmp_path / "data").mkdir()
    spec = write_spec(tmp_path, tmp_path / "data", strategies=["full", "linear"],
                      resources={"cpus_per_trial": 1, "gpus_per_trial": 1, "max_concurrent_trials": 1})
    memories = doctor_module.step_memories(load_experiment(str(spec)))
    assert [(m["strategy"], m["batch"]) for m in memories] == [("full", 16), ("linear", 16)]
    full, linear = memories
    assert full["total"] > linear["total"] > 1.0  # both carry the CUDA overhead
    rows = step_memory_rows(memories, 40.0)
    assert [(r.check, r.status) for r in rows] == [("memory: full step", PASS), ("memory: linear step", PASS)]
    assert "computed, not measured" in rows[0].detail and "of 40.0 GiB, fits" in rows[0].detail
    between = (full["total"] + linear["total"]) / 2
    rows = step_memory_rows(memories, between)
    assert [r.status for r in rows] == [FAIL, WARN if linear["total"] > 0.9 * between else PASS]
    assert "does not fit" in rows[0].detail and "training.batch_size" in rows[0].detail
    assert step_memory_rows(memories, None) == []
    assert "shard the model over a trial's GPUs: training.sharding fsdp" in rows[0].detail  # full may shard
    assert "training.sharding fsdp" not in rows[1].detail  # linear keeps ddp
    monkeypatch.setattr(doctor_module, "smallest_gpu_gib", lambda: 40.0)  # a trial node gets them, others not
    node = doctor_module.check_node([], None, True, memories, True)
    assert [r.check for r in node if r.check.startswith("memory:")] == ["memory: full step", "memory: linear step"]
    assert not [r for r in doctor_module.check_node([], None, False, memories, True) if r.check.startswith("memory:")]


def test_the_driver_must_be_as_new_as_the_torch_cuda_build_needs():
    assert driver_check("13.0", "570.124.06").status == FAIL
    assert "580" in driver_check("13.0", "570").detail
    assert driver_check("13.0", "580.65").status == PASS
    assert driver_check("12.4", "535.104.05").status == PASS
    assert driver_check("12.4", "520.61").status == FAIL
    assert driver_check(None, "580.65").status == FAIL  # a CPU-only torch on a GPU node
    assert driver_check("99.0", "580.65").status == WARN  # a CUDA major the table does not know


def test_gpu_memory_against_the_pgd_peak():
    small = memory_row([("Tesla T4", 14.6)])
    assert small.status == WARN and "evaluation.pgd.batch_size" in small.detail and "H200" in small.detail
    assert memory_row([("NVIDIA H200", 139.8), ("NVIDIA H200", 139.8)]).status == PASS
    assert memory_row([("NVIDIA A10G", 22.0), ("Tesla T4", 14.6)]).status == WARN  # the smallest decides


class FakeCuda:
    """torch.cuda of a node with the given GPUs as (name, GiB, native bf16)."""

    def __init__(self, gpus):
        self.gpus, self.current = gpus, 0

    def is_available(self):
        return bool(self.gpus)

    def device_count(self):
        return len(self.gpus)

    def get_device_properties(self, i):
        name, gib, _ = self.gpus[i]
        return type("Props", (), {"name": name, "total_memory": int(gib * 2**30)})()

    def device(self, i):
        cuda = self

        class Select:
            def __enter__(self):
                cuda.current = i

            def __exit__(self, *exc):
                cuda.current = 0

        return Select()

    def is_bf16_supported(self, including_emulation=True):
        assert including_emulation is False  # emulated bf16 is slow: auto must not count it
        return self.gpus[self.current][2]


def test_gpu_rows_of_a_gpu_node(monkeypatch):
    """The GPU branch on fake nodes (this machine has none): a T4 beside an A10G, a CPU-only torch, a hidden GPU."""
    smi = [{"name": "NVIDIA A10G", "driver": "535.104.05", "memory_gib": 22.0},
           {"name": "Tesla T4", "driver": "535.104.05", "memory_gib": 15.0}]
    monkeypatch.setattr(doctor_module, "query_nvidia_smi", lambda: (smi, ""))
    fake = type("Torch", (), {"cuda": FakeCuda([("NVIDIA A10G", 22.0, True), ("Tesla T4", 15.0, False)])})
    rows = {r.check: r for r in gpu_rows(fake, "12.4")}
    assert rows["NVIDIA driver"].status == PASS
    assert rows["GPU"].status == WARN and "2 x NVIDIA A10G, Tesla T4, 15.0 GiB (smallest)" in rows["GPU"].detail
    assert rows["bf16"].status == WARN and "1 (Tesla T4)" in rows["bf16"].detail and "fp32" in rows["bf16"].detail
    assert "0 (NVIDIA A10G)" not in rows["bf16"].detail

    rows = {r.check: r for r in gpu_rows(type("Torch", (), {"cuda": FakeCuda([])}), None)}
    assert rows["NVIDIA driver"].status == FAIL and "CPU-only" in rows["NVIDIA driver"].detail
    assert rows["GPU"].status == WARN  # memory from nvidia-smi: the T4's 15 GiB

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    rows = {r.check: r for r in gpu_rows(type("Torch", (), {"cuda": FakeCuda([])}), "12.4")}
    assert rows["GPU"].status == FAIL and "CUDA_VISIBLE_DEVICES=''" in rows["GPU"].detail


def test_a_cluster_nobody_answers_at_is_one_fail_row_at_once(capsys):
    code, rows, out, _ = doctor(capsys, "--address", "127.0.0.1:1")  # --address implies --cluster
    assert code == 1, out
    status, detail = row(rows, "Ray")
    assert status == FAIL and "cannot connect to 127.0.0.1:1" in detail and "refused" in detail
    assert "trial resources not checked" in out


# ---------------------------------------------------------------------------------------------------
# A local two-node Ray cluster


@pytest.mark.slow
def test_cluster_mode_prints_every_node_and_refuses_a_trial_no_node_holds(tmp_path):
    with two_node_cluster() as (cluster, worker):
        command = [sys.executable, "-m", "rft_ray.cli", "doctor", "--cluster", "--address", cluster.address]
        done = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=ROOT)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        rows = table_rows(done.stdout)
        titles = [line for line in done.stdout.splitlines() if line.startswith("node ")]
        assert len(titles) == 2
        assert any(cluster.head_node.node_id in t and " head " in t for t in titles)
        assert any(worker.node_id in t for t in titles)
        assert all("1 CPU, 0 GPU" in t for t in titles)
        assert [name for name, _, _ in rows].count("Python") == 2  # one table per node
        assert [name for name, _, _ in rows].count("GPU") == 2

        (tmp_path / "data").mkdir()
        spec = write_spec(tmp_path, tmp_path / "data",
                          resources={"cpus_per_trial": 64, "gpus_per_trial": 0, "max_concurrent_trials": 1})
        done = subprocess.run(command + [str(spec)], capture_output=True, text=True, timeout=400, cwd=ROOT)
        assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
        rows = table_rows(done.stdout)
        status, detail = row(rows, "trial fits a node")
        assert status == FAIL and "64 CPU" in detail
        assert [r[:2] for r in rows if r[0] == "dataset.root (shared)"] == [("dataset.root (shared)", PASS)] * 2
        assert [r[1] for r in rows if r[0] == "storage writable"] == [PASS, PASS]


@pytest.mark.slow
def test_cluster_mode_with_no_trial_node_probes_for_one_or_says_none_was_checked(tmp_path, monkeypatch):
    """No alive node holds a trial (2 CPU each; the nodes have 1). The launcher config says a node type holds one,
    so the doctor asks for it with a probe task: with none coming it fails saying no trial node was checked; when a
    node that fits joins while it waits (the autoscaler's part, played by the test), that node is checked."""
    import time

    (tmp_path / "data").mkdir()
    spec = write_spec(tmp_path, tmp_path / "data",
                      resources={"cpus_per_trial": 2, "gpus_per_trial": 0, "max_concurrent_trials": 1})
    config = tmp_path / "launcher.yaml"
    config.write_text(yaml.safe_dump({"available_node_types": {
        "head": {"resources": {"CPU": 1}, "node_config": {}},
        "big": {"resources": {"CPU": 2}, "node_config": {}, "min_workers": 0, "max_workers": 1}},
        "head_node_type": "head"}))
    env = {**os.environ, "RFT_CLUSTER_CONFIG": str(config)}
    with two_node_cluster() as (cluster, _):
        command = [sys.executable, "-m", "rft_ray.cli", "doctor", str(spec), "--address", cluster.address]
        done = subprocess.run(command + ["--probe-timeout", "5"], capture_output=True, text=True, timeout=400,
                              cwd=ROOT, env=env)
        assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
        rows = table_rows(done.stdout)
        assert row(rows, "trial fits a node")[0] == PASS
        status, detail = row(rows, "trial node")
        assert status == FAIL and "no trial node was checked" in detail and "within 5 s" in detail

        probing = subprocess.Popen(command + ["--probe-timeout", "300"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        try:
            time.sleep(20)  # the probe task is pending by now: the "autoscaler" adds a node that holds it
            big = cluster.add_node(num_cpus=2)
            out, err = probing.communicate(timeout=300)
        finally:
            if probing.poll() is None:
                probing.kill()
                probing.communicate()
        assert probing.returncode == 0, out[-3000:] + err[-3000:]
        rows = table_rows(out)
        status, detail = row(rows, "trial node")
        assert status == PASS and "a probe task asking for that ran on node" in detail
        titles = [line for line in out.splitlines() if line.startswith("node ")]
        assert any(big.node_id in t and "started for the probe" in t and "2 CPU" in t for t in titles)
        assert [r[1] for r in rows if r[0] == "storage writable"] == [PASS] * 3  # the head, the worker, the probe's node


def test_memory_rows_of_fsdp_workers_are_per_gpu(tmp_path):
    """workers_per_trial 4, full on fsdp beside lora on ddp: each row is per GPU of the trial's four workers."""
    from rft_ray.specs import load_experiment

    (tmp_path / "data").mkdir()
    spec = write_spec(tmp_path, tmp_path / "data", strategies=[{"name": "full", "sharding": "fsdp"}, "lora"],
                      resources={"cpus_per_trial": 1, "gpus_per_trial": 1, "workers_per_trial": 4,
                                 "max_concurrent_trials": 1})
    full, lora = doctor_module.step_memories(load_experiment(str(spec)))
    assert "per GPU of 4 workers (fsdp: weights, gradients and AdamW sharded, batch 4 each)" in full["parts"]
    assert "per GPU of 4 workers (ddp: each holding the model, batch 4 each)" in lora["parts"]
    assert not full["shardable"] and not lora["shardable"]


def test_the_vit_large_spec_is_accepted_and_a_trial_asks_for_four_gpus(tmp_path, capsys, no_gpu):
    """experiments/vit_large.yaml parses and the doctor checks it: each trial is 4 workers of 10 CPU and 1 GPU,
    which this CPU machine cannot hold (the row says so); its memory rows need a GPU (tests/test_estimate.py)."""
    spec = ROOT / "experiments" / "vit_large.yaml"
    code, rows, out, _ = doctor(capsys, str(spec), "--set", f"storage.path={tmp_path / 'sweep'}",
                                "--set", f"base.dataset.root={tmp_path / 'cifar10'}")
    assert code == 1, out
    status, detail = row(rows, "trial fits this machine")
    assert status == FAIL and "each trial asks 4 GPU (4 workers) and this machine has" in detail
    assert row(rows, "storage writable")[0] == PASS
