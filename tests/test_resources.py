"""Where a sweep's trials run on a cluster: resources planned from live nodes or an autoscaling cluster's node
types, requests no node can hold refused at once, trial drivers on the head, inputs checked where they are read,
--resume refusing settings Tune would not apply, and what only the head holds copied to remote storage."""
import json
import socket
from pathlib import Path

import pytest
import yaml
from conftest import cli_error
from test_sweep import tiny_experiment

from rft_ray.config import SpecError
from rft_ray.specs import experiment_spec
from rft_ray.sweep.inputs import check_head_inputs, check_trial_inputs
from rft_ray.sweep.resources import (
    DRIVER_NODE_RESOURCE,
    NodeOffer,
    driver_resources,
    launcher_node_types,
    learning_cap,
    plan_resources,
)
from rft_ray.sweep.state import STATE_FILE, SweepError, SweepFolder, changed_settings, settings_of

ROOT = Path(__file__).resolve().parents[1]
LAPTOP = [NodeOffer("node 127.0.0.1", 2, 0, 1)]


def spec(tmp_path, **top):
    return experiment_spec(tiny_experiment(tmp_path / "sweep", **top))


def test_a_request_no_node_can_hold_is_refused_naming_request_and_offers(tmp_path):
    experiment = spec(tmp_path, resources={"cpus_per_trial": 64, "gpus_per_trial": 0, "max_concurrent_trials": 1})
    with pytest.raises(SweepError) as err:
        plan_resources(experiment, LAPTOP, None)
    message = str(err.value)
    assert "64 CPU and 0 GPU" in message and "resources.cpus_per_trial" in message
    assert "node 127.0.0.1: 2 CPU, 0 GPU" in message
    gpu = spec(tmp_path, resources={"cpus_per_trial": 1, "gpus_per_trial": 1, "max_concurrent_trials": "auto"})
    with pytest.raises(SweepError, match="1 CPU and 1 GPU"):
        plan_resources(gpu, LAPTOP, None)


def test_more_workers_per_trial_than_the_gpus_of_any_node_is_refused_naming_request_and_nodes(tmp_path):
    """Four one-GPU workers on nodes of two GPUs each: the cluster has four GPUs, but a trial's workers must share
    one node, so no node can hold it."""
    experiment = spec(tmp_path, resources={"workers_per_trial": 4, "cpus_per_trial": 1, "gpus_per_trial": 1,
                                           "max_concurrent_trials": 1})
    two_gpu_nodes = [NodeOffer("node a", 8, 2, 1), NodeOffer("node b", 8, 2, 1)]
    with pytest.raises(SweepError) as err:
        plan_resources(experiment, two_gpu_nodes, None)
    message = str(err.value)
    assert "each asks for 4 CPU and 4 GPU (4 worker(s)" in message and "resources.workers_per_trial" in message
    assert "node a: 8 CPU, 2 GPU; node b: 8 CPU, 2 GPU" in message
    assert plan_resources(experiment, [NodeOffer("node c", 8, 4, 1)], None)["workers_per_trial"] == 4


def test_more_than_one_gpu_per_trial_is_refused():
    with pytest.raises(SpecError, match=r"must be in \[0, 1\] or auto") as err:
        experiment_spec(tiny_experiment(Path("/tmp/x"), resources={"gpus_per_trial": 2}))
    assert err.value.field_path == "resources.gpus_per_trial"


def test_auto_counts_the_gpu_node_types_of_an_autoscaling_cluster(tmp_path):
    """cluster.yaml's GPU workers start at 0 nodes: `auto` reads its node types, not the GPU-less cluster now."""
    types = launcher_node_types(ROOT / "cluster.yaml")
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    gpu_types = [t for t in config["available_node_types"].values() if t.get("resources", {}).get("GPU")]
    assert gpu_types and all(t["min_workers"] == 0 for t in gpu_types)
    assert sum(o.gpus * o.count for o in types) == sum(t["resources"]["GPU"] * t["max_workers"] for t in gpu_types)
    grid = spec(tmp_path, search={"mode": "grid", "grid": {"lr": [1e-3, 2e-3], "weight_decay": [0.0]},
                                  "objectives": [{"metric": "test_clean_acc"}]},
                resources={"cpus_per_trial": 4, "gpus_per_trial": "auto", "max_concurrent_trials": "auto"})
    head_now = [NodeOffer("node 10.0.0.1", 8, 0, 1)]
    plan = plan_resources(grid, head_now, types)
    assert plan["gpus_per_trial"] == 1 and plan["max_concurrent_trials"] == 8 and plan["autoscaling"]
    without = plan_resources(grid, head_now, None)  # what the cluster holds now: no GPU, CPU trials on the head
    assert without["gpus_per_trial"] == 0 and without["max_concurrent_trials"] == 2
    with pytest.raises(SweepError, match="node types of the cluster launcher config"):
        plan_resources(spec(tmp_path, resources={"cpus_per_trial": 16, "gpus_per_trial": 1}), head_now, types)


def test_auto_concurrency_leaves_a_model_based_sampler_something_to_learn(tmp_path):
    def experiment(num_samples, sampler="auto"):
        return spec(tmp_path, search={"mode": "optuna", "num_samples": num_samples, "sampler": sampler,
                                      "objectives": [{"metric": "test_clean_acc"}]},
                    resources={"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent_trials": "auto"})

    big = [NodeOffer("node a", 64, 0, 1)]
    assert learning_cap(experiment(2)) is None  # both trials are the sampler's start-up trials
    tpe = experiment(30)
    assert learning_cap(tpe) == 10  # its 10 start-up trials at once, a third of the budget
    plan = plan_resources(tpe, big, None)
    assert plan["max_concurrent_trials"] == 10 and "learn from finished trials" in plan["concurrency_notes"][-1]
    assert plan_resources(experiment(30, "random"), big, None)["max_concurrent_trials"] == 64
    fixed = spec(tmp_path, resources={"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent_trials": 5})
    assert plan_resources(fixed, big, None)["max_concurrent_trials"] == 5  # an explicit number is kept


def test_trial_drivers_ask_for_the_head_only_where_the_cluster_marks_it():
    assert DRIVER_NODE_RESOURCE not in driver_resources({"CPU": 2.0})
    assert driver_resources({"CPU": 2.0, DRIVER_NODE_RESOURCE: 1000.0})[DRIVER_NODE_RESOURCE] == 1
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"][DRIVER_NODE_RESOURCE] >= 1
    workers = [t for n, t in config["available_node_types"].items() if n != config["head_node_type"]]
    assert all(DRIVER_NODE_RESOURCE not in t.get("resources", {}) for t in workers)


def test_inputs_are_checked_where_they_are_read(tmp_path):
    """The head checks shared data; data that downloads itself is nobody's to check; node-local data is
    checked by each trial on its node, with the same message naming the field, the path and the node."""
    absent = str(tmp_path / "absent")
    shared = spec(tmp_path, base={**tiny_experiment(tmp_path)["base"],
                                  "dataset": {"name": "cifar10", "root": absent}})
    with pytest.raises(SpecError, match=f"the folder {absent} does not exist") as err:
        check_head_inputs(shared)
    assert err.value.field_path == "dataset.root" and "group lora-cifar10" in str(err.value)
    for extra in ({"download": True}, {"node_local": True}):
        dataset = {"name": "cifar10", "root": absent, **extra}
        check_head_inputs(spec(tmp_path, base={**tiny_experiment(tmp_path)["base"], "dataset": dataset}))
    run = {"dataset": {"name": "cifar10", "root": absent, "node_local": True}}
    with pytest.raises(SpecError, match=f"on node {socket.gethostname()}: the folder {absent}") as err:
        check_trial_inputs(run)
    assert "every node that runs trials" in str(err.value) and err.value.field_path == "dataset.root"
    (tmp_path / "absent").mkdir()
    check_trial_inputs(run)
    check_trial_inputs({"dataset": {"name": "cifar10", "root": str(tmp_path / "nowhere"), "download": True}})


def test_paper_spec_checks_synced_datasets_on_the_nodes_not_the_head():
    from rft_ray.specs import load_experiment

    experiment = load_experiment(str(ROOT / "experiments" / "paper.yaml"))
    check_head_inputs(experiment)  # nothing under /home/ubuntu/data here, and nothing the head must hold
    for group in experiment.groups:
        dataset = group.run["dataset"]
        assert dataset.get("download") or dataset.get("node_local"), group.name


def test_resume_refuses_settings_an_interrupted_group_would_not_apply(tmp_path, capsys):
    from rft_ray.sweep.driver import _open_state

    data = tiny_experiment(tmp_path / "sweep", strategies=["lora", "bitfit"])
    first = experiment_spec(data)
    folder = SweepFolder(first.storage_root)
    state = _open_state(first, folder, resume=False, overwrite=False)
    folder.write_state(state)
    data["resources"]["max_concurrent_trials"] = 1
    data["failure"]["max_failures"] = 3
    changed = experiment_spec(data)
    assert changed.fingerprint() == first.fingerprint()  # a resume is allowed to change these...
    assert changed_settings(state["settings"], settings_of(changed.to_dict())) == [
        "failure.max_failures: 1 -> 3", "resources.max_concurrent_trials: 2 -> 1"]
    # ...and with no group started, they apply to every group
    resumed = _open_state(changed, folder, resume=True, overwrite=False)
    assert resumed["settings"]["resources"]["max_concurrent_trials"] == 1
    assert "resuming with changed settings" in capsys.readouterr().err
    folder.write_state(resumed)
    # a half-done group: Tune would restore it with the settings it started with
    (Path(first.storage_root) / "tune" / "lora-digits").mkdir(parents=True)
    (Path(first.storage_root) / "tune" / "lora-digits" / "tuner.pkl").write_bytes(b"")
    data["resources"]["max_concurrent_trials"] = 2
    before = (Path(first.storage_root) / STATE_FILE).read_bytes()
    with pytest.raises(SweepError) as err:
        _open_state(experiment_spec(data), folder, resume=True, overwrite=False)
    assert "interrupted group lora-digits" in str(err.value)
    assert "resources.max_concurrent_trials: 1 -> 2" in str(err.value)
    assert (Path(first.storage_root) / STATE_FILE).read_bytes() == before  # nothing written


def _as_before_select_on(state: dict) -> dict:
    """The state rft-ray < 0.2.0 wrote for the same spec: its search had no select_on, and its fingerprint was the
    hash of the decisive sections without it (that version's `ExperimentSpec.fingerprint`, written out here)."""
    import hashlib

    spec = json.loads(json.dumps(state["spec"]))
    del spec["search"]["select_on"]
    decisive = {k: spec[k] for k in ("name", "base", "strategies", "datasets", "search")}
    fingerprint = hashlib.sha256(json.dumps(decisive, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {**state, "spec": spec, "fingerprint": fingerprint}


def test_a_sweep_started_before_select_on_resumes_entirely_on_test_with_one_warning(tmp_path, capsys):
    """Its trials and restored searcher chose on test and its rows have no validation metrics: the resumed sweep
    goes on on test (new trials' config, searcher and scheduler keys, progress, summary), never a mix; a sweep
    started with select_on resumes on the split it names, silently."""
    from rft_ray.sweep.driver import _open_state, _selection_as_started
    from rft_ray.sweep.search import early_stopping, param_space

    data = tiny_experiment(tmp_path / "sweep")
    data["search"].update(scheduler="asha", asha={"grace_period": 20}, objectives=[{"metric": "pgd_adv_acc"}])
    experiment = experiment_spec(data)
    assert experiment.search.select_on == "validation"  # the default: what the same spec file reads as today
    folder = SweepFolder(experiment.storage_root)
    state = _open_state(experiment, folder, resume=False, overwrite=False)
    folder.write_state(state)
    assert _selection_as_started(experiment, _open_state(experiment, folder, resume=True, overwrite=False)) \
        is experiment and capsys.readouterr().err == ""

    folder.write_state(_as_before_select_on(state))
    legacy = _open_state(experiment, folder, resume=True, overwrite=False)  # the same spec file: not "changed"
    resumed = _selection_as_started(experiment, legacy)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "started before search.select_on existed" in err and "optimistic" in err, err
    assert resumed.search.select_on == "test" and resumed.search.keys() == ["pgd_adv_acc"]
    assert experiment.search.keys() == ["val_pgd_adv_acc"]  # what a fresh searcher would have read: the mix
    assert early_stopping(resumed.search).metric == "pgd_adv_acc"
    resources = {"cpus_per_trial": 1, "gpus_per_trial": 0}
    assert param_space(resumed, resumed.groups[0], resources)["select_on"] == "test"  # new trials report test
    assert resumed.fingerprint(before_select_on=True) == legacy["fingerprint"]
    # ...and a spec that changed otherwise is still refused
    data["search"]["num_samples"] = 3
    with pytest.raises(SpecError, match="the spec changed since the sweep"):
        _open_state(experiment_spec(data), folder, resume=True, overwrite=False)


def test_changed_settings_names_each_dotted_field():
    before = {"resources": {"cpus_per_trial": 1.0, "max_concurrent_trials": "auto"}, "tracking": {"enabled": True}}
    now = {"resources": {"cpus_per_trial": 2.0, "max_concurrent_trials": "auto"}, "tracking": {"enabled": False}}
    assert changed_settings(before, now) == ["resources.cpus_per_trial: 1.0 -> 2.0", "tracking.enabled: True -> False"]


def test_upload_copies_files_and_folders_into_a_remote_sweep_folder(tmp_path):
    local = tmp_path / "local"
    (local / "analysis" / "figures").mkdir(parents=True)
    (local / "analysis" / "report.md").write_text("# report")
    (local / "analysis" / "figures" / "a.png").write_bytes(b"png")
    (local / "summary.md").write_text("| a |")
    folder = SweepFolder(f"file://{tmp_path / 'bucket' / 'sweep'}")
    assert folder.upload(local / "summary.md") == f"file://{tmp_path / 'bucket' / 'sweep'}/summary.md"
    assert folder.upload(local / "analysis") is not None and folder.upload(local / "absent.db") is None
    (local / "analysis" / "report.md").write_text("# report, again")
    folder.upload(local / "analysis")  # replaces the previous copy
    remote = tmp_path / "bucket" / "sweep"
    assert (remote / "summary.md").read_text() == "| a |"
    assert (remote / "analysis" / "report.md").read_text() == "# report, again"
    assert (remote / "analysis" / "figures" / "a.png").read_bytes() == b"png"


def test_sweep_refuses_an_unsatisfiable_request_before_any_trial(tmp_path, capsys):
    """On this 2-CPU machine, a trial of 64 CPUs would wait forever in Ray; `rft sweep` stops at once, naming
    the request and what the nodes offer, and leaves no sweep state behind."""
    import ray

    from rft_ray.cli import main

    data = tiny_experiment(tmp_path / "sweep", resources={"cpus_per_trial": 64, "gpus_per_trial": 0,
                                                          "max_concurrent_trials": 1})
    spec_file = tmp_path / "sweep.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    assert not ray.is_initialized()
    try:
        assert main(["sweep", str(spec_file), "--address", "local"]) == 2
    finally:
        ray.shutdown()
    message = cli_error(capsys.readouterr().err)
    assert "no node can run a trial: each asks for 64 CPU and 0 GPU" in message and "2 CPU, 0 GPU" in message
    assert not (tmp_path / "sweep" / STATE_FILE).exists() and not (tmp_path / "sweep" / "tune").exists()
    json.dumps(data)  # the spec stays as written


def test_the_shipped_specs_concurrency_is_what_auto_picks_on_the_clusters_head():
    """paper.yaml and domainnet_ood.yaml write their concurrency out (for `rft estimate`); on the head of
    `ray up cluster.yaml`, `auto` picks the same: 8 GPU trials for the grid, 3 for the 8-trial GP search."""
    from rft_ray.specs import load_experiment

    types = launcher_node_types(ROOT / "cluster.yaml")
    head_now = [NodeOffer("node head", 8, 0, 1)]
    for name, expected in (("paper", 8), ("domainnet_ood", 3)):
        written = load_experiment(str(ROOT / "experiments" / f"{name}.yaml"))
        auto = load_experiment(str(ROOT / "experiments" / f"{name}.yaml"), {"resources.max_concurrent_trials": "auto"})
        assert written.resources.max_concurrent_trials == expected
        plan = plan_resources(auto, head_now, types)
        assert (plan["max_concurrent_trials"], plan["gpus_per_trial"]) == (expected, 1), name


def test_a_remote_sweep_copies_what_only_the_head_holds_into_its_storage(tmp_path, monkeypatch):
    """With s3:// (here file://) storage the summary, analysis/ and the log live in a local results/<name> on the
    head, which `ray down` deletes: the end of the sweep copies them over (the SQLite files of MLflow and Optuna
    are copied after every trial and as the sweep stops: tests/test_state_copies.py)."""
    from rft_ray.sweep.driver import _upload_local_outputs

    monkeypatch.chdir(tmp_path)
    remote = f"file://{tmp_path / 'bucket' / 'tiny'}"
    experiment = experiment_spec(tiny_experiment(remote, tracking={"enabled": True}))
    assert experiment.is_remote
    local = experiment.local_dir()
    assert local == tmp_path / "results" / "tiny"
    (local / "analysis").mkdir(parents=True)
    for name in ("summary.md", "summary.json", "experiment.json", "sweep.log", "mlflow.db", "optuna.db",
                 "analysis/report.html"):
        (local / name).write_text(name)
    _upload_local_outputs(experiment, SweepFolder(experiment.storage_root), local)
    copied = tmp_path / "bucket" / "tiny"
    for name in ("summary.md", "summary.json", "experiment.json", "sweep.log", "analysis/report.html"):
        assert (copied / name).read_text() == name
