"""`rft sweep` on Ray: Tune trials driving Ray Train workers, Optuna, grid, MLflow, fault tolerance, cluster.

The tests that start Ray share one Ray session (each trial costs ~20 s of Ray Train start-up here), with
tiny runs: a random-init 16px ViT on digits, 20-60 steps, evaluation subsets of 40 images.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import two_node_cluster
from fault_plugins import KILL_FILE, KILL_FIRED_FILE, fault_env

from rft_ray.config import SpecError
from rft_ray.config.experiment import ExperimentSpec, Objective
from rft_ray.evaluation.schedule import EvalSchedule
from rft_ray.results.store import ResultStore
from rft_ray.specs import experiment_spec, run_spec
from rft_ray.sweep.driver import run_sweep
from rft_ray.sweep.report import summarize_store
from rft_ray.sweep.results import TrialSummary, pareto_set
from rft_ray.sweep.search import BudgetAwareOptunaSearch, _optuna_outcome
from rft_ray.sweep.state import STATE_FILE, SweepError, SweepFolder

ROOT = Path(__file__).resolve().parents[1]
TINY_BASE = {
    "model": {"name": "rft_vit_cifar_patch8_32", "source": "random", "image_size": 16},
    "dataset": {"name": "digits", "corruptions": ["contrast"]},
    "training": {"steps": 40, "batch_size": 16, "seed": 0},
    "evaluation": {"schedule": [{"until": None, "every": 20}], "train_examples": 40, "test_examples": 40,
                   "ood_examples": 20, "batch_size": 64, "pgd": {"eps": "4/255", "alpha": "1/255", "steps": 3}},
}


def tiny_experiment(path: Path, **top) -> dict:
    data = {
        "name": "tiny",
        "base": json.loads(json.dumps(TINY_BASE)),
        "strategies": ["lora"],
        "search": {"mode": "optuna", "num_samples": 2, "objectives": [{"metric": "test_clean_acc"}],
                   "space": {"lr": {"low": 1e-3, "high": 1e-2}, "weight_decay": {"low": 1e-3, "high": 1e-1}}},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent_trials": 2},
        "tracking": {"enabled": False},
        "storage": {"path": str(path)},
        "failure": {"max_failures": 1, "worker_max_failures": 2},
    }
    data.update(top)
    return data


def schedule_of(experiment: ExperimentSpec) -> list[int]:
    run = run_spec(experiment.groups[0].run)
    return EvalSchedule.from_spec(run.evaluation).points(run.training.steps)


def steps_by_run(store_root: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for row in ResultStore(store_root).read().to_pylist():
        out.setdefault(row["run_id"], []).append(row["step"])
    return out


# ---------------------------------------------------------------------------------------------------
# Without Ray


def _trial(i, status="completed", **objectives):
    return TrialSummary(trial_id=f"t{i}", run_id=f"g-t{i}", lr=1e-3 * (i + 1), weight_decay=0.01, status=status,
                        step=40, total_steps=40, objectives=objectives)


def test_pareto_set_two_objectives_and_modes():
    from rft_ray.config.search import SearchSpec

    both = SearchSpec(objectives=[Objective("test_clean_acc"), Objective("pgd_adv_acc")])  # on validation
    trials = [_trial(0, val_clean_acc=0.9, val_pgd_adv_acc=0.1), _trial(1, val_clean_acc=0.5, val_pgd_adv_acc=0.5),
              _trial(2, val_clean_acc=0.4, val_pgd_adv_acc=0.4),  # dominated by 1
              _trial(3, val_clean_acc=0.95, val_pgd_adv_acc=0.6, status="stopped early"),  # not completed: out
              _trial(4, val_clean_acc=float("nan"), val_pgd_adv_acc=0.9),  # NaN: out
              _trial(5, val_clean_acc=0.5, val_pgd_adv_acc=0.5),  # tie with 1: both kept
              _trial(6, test_clean_acc=0.99, pgd_adv_acc=0.99)]  # test values alone choose nothing
    assert [t.trial_id for t in pareto_set(trials, both)] == ["t0", "t1", "t5"]
    loss = SearchSpec(objectives=[Objective("train_loss", mode="min")])
    assert [t.trial_id for t in pareto_set([_trial(0, train_loss=0.3), _trial(1, train_loss=0.2)], loss)] == ["t1"]
    assert pareto_set([], both) == []


def test_the_summary_markdown_says_which_split_chose_and_shows_test_beside():
    from rft_ray.config.search import SearchSpec
    from rft_ray.sweep.report import summary_markdown
    from rft_ray.sweep.results import GroupResult

    search = SearchSpec(objectives=[Objective("test_clean_acc")])
    chosen = _trial(0, val_clean_acc=0.81)
    chosen.reported = {"val_clean_acc": 0.79}
    text = summary_markdown([], [GroupResult("lora-digits", "lora", "digits", "done", [chosen], [chosen])], search)
    assert "Pareto set of hyperparameters per group (selected on validation; test reported; objectives: " \
           "val_clean_acc (test: test_clean_acc))" in text
    assert "lr 0.001 wd 0.01 -> 0.810 (test 0.790)" in text


@pytest.mark.parametrize("result, error, metric, expected", [
    ({"step": 40, "total_steps": 40, "a": 0.5}, False, "a", ("COMPLETE", 0.5)),
    ({"step": 20, "total_steps": 40, "a": 0.9}, False, "a", ("PRUNED", None)),  # ASHA stopped it
    ({"step": 40, "total_steps": 40, "a": 0.5, "b": 0.2}, False, ["a", "b"], ("COMPLETE", [0.5, 0.2])),
    ({"step": 20, "total_steps": 40, "a": 0.5, "b": 0.2}, False, ["a", "b"], ("PRUNED", None)),
    ({"step": 40, "total_steps": 40, "a": float("nan")}, False, "a", ("FAIL", None)),
    ({"step": 40, "total_steps": 40, "a": 0.5}, True, "a", ("FAIL", None)),
    (None, False, "a", ("PRUNED", None)),
])
def test_optuna_outcome(result, error, metric, expected):
    assert _optuna_outcome(result, error, metric) == expected


def test_optuna_search_prunes_trials_stopped_before_their_budget():
    import optuna
    from ray import tune

    cls = BudgetAwareOptunaSearch
    single = cls(metric="acc", mode="max", sampler=optuna.samplers.RandomSampler(seed=0))
    single.set_search_properties(None, None, {"lr": tune.loguniform(1e-4, 1e-2)})
    for trial_id in ("full", "stopped"):
        single.suggest(trial_id)
    for step, acc in ((0, 0.1), (20, 0.5)):
        single.on_trial_result("full", {"acc": acc, "step": step, "total_steps": 40})
        single.on_trial_result("stopped", {"acc": acc + 0.3, "step": step, "total_steps": 40})
    single.on_trial_result("full", {"acc": 0.6, "step": 40, "total_steps": 40})
    single.on_trial_complete("full", {"acc": 0.6, "step": 40, "total_steps": 40})
    single.on_trial_complete("stopped", {"acc": 0.8, "step": 20, "total_steps": 40})  # better, but not final
    trials = {t.number: t for t in single._ot_study.trials}
    assert trials[0].state == optuna.trial.TrialState.COMPLETE and trials[0].value == 0.6
    assert trials[0].intermediate_values == {0: 0.1, 20: 0.5, 40: 0.6}  # keyed by optimizer step
    assert trials[1].state == optuna.trial.TrialState.PRUNED and trials[1].intermediate_values[20] == 0.8
    assert single._ot_study.best_trial.number == 0

    multi = cls(metric=["a", "b"], mode=["max", "max"], sampler=optuna.samplers.RandomSampler(seed=0))
    multi.set_search_properties(None, None, {"lr": tune.loguniform(1e-4, 1e-2)})
    multi.suggest("x")
    multi.suggest("y")
    multi.on_trial_complete("x", {"a": 0.5, "b": 0.2, "step": 10, "total_steps": 40})
    multi.on_trial_complete("y", {"a": 0.4, "b": 0.3, "step": 40, "total_steps": 40})
    states = [t.state for t in multi._ot_study.trials]
    assert states == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE]
    assert [t.number for t in multi._ot_study.best_trials] == [1]


def test_group_seeds_differ_and_local_paths_become_absolute(tmp_path, monkeypatch):
    from rft_ray.sweep.inputs import absolute_paths
    from rft_ray.sweep.search import group_seed

    search = experiment_spec(tiny_experiment(tmp_path)).search
    assert group_seed(search, "lora-digits") != group_seed(search, "full-digits")
    assert group_seed(search, "lora-digits") == group_seed(search, "lora-digits")
    monkeypatch.chdir(tmp_path)
    run = absolute_paths({"dataset": {"name": "cifar10", "root": "data/c10"}, "model": {"weights": "w.safetensors"}})
    assert run["dataset"]["root"] == str(tmp_path / "data" / "c10") and run["model"]["weights"] == str(tmp_path / "w.safetensors")
    run = absolute_paths({"dataset": {"name": "parquet", "options": {"train": "a.parquet", "test": "s3://b/t.parquet"}}})
    assert run["dataset"]["options"] == {"train": str(tmp_path / "a.parquet"), "test": "s3://b/t.parquet"}


def test_the_sweep_summary_is_the_analysis_summary_in_registry_order(tmp_path):
    """`summarize_store` reads the store and orders strategies as the registry does (lora before ia3), where
    the analysis alone would sort them by name; the numbers are analysis.summary's (tested there)."""
    from analysis.summary import sweep_summary
    from rft_ray.results.record import EvalRecord

    store = ResultStore(tmp_path / "store")
    common = dict(dataset="digits", model="m", seed=0, total_steps=40, epoch=0.0, examples_seen=0, train_loss=0.1,
                  train_clean_acc=0.5, pgd_eps=0.01, test_ood_accuracy=0.3, trainable_params=10, total_params=100,
                  wall_seconds=1.0, eval_seconds=0.1, lr=1e-3, weight_decay=0.0)
    for run, strategy in (("a", "ia3"), ("b", "lora")):
        store.write_run(run, [EvalRecord(run_id=run, strategy=strategy, step=s, test_clean_acc=0.5 + s / 100,
                                         pgd_adv_acc=0.2, **common) for s in (0, 40)])
    rows = summarize_store(str(tmp_path / "store"), select_on="test")
    assert [r["strategy"] for r in rows] == ["lora", "ia3"]
    assert [r["strategy"] for r in sweep_summary(store.read(), select_on="test")] == ["ia3", "lora"]
    assert rows[0]["final_acc"] == pytest.approx(0.9) and rows[0]["frontier_auc"] == pytest.approx(0.9 * 0.2)


def test_sweep_folder_refuses_to_clobber_or_resume_wrongly(tmp_path):
    experiment = experiment_spec(tiny_experiment(tmp_path / "sweep"))
    with pytest.raises(SweepError, match="nothing to resume"):
        run_sweep(experiment, resume=True)
    folder = SweepFolder(experiment.storage_root)
    folder.write_state({"fingerprint": experiment.fingerprint(), "groups": {}})
    assert folder.read_state()["fingerprint"] == experiment.fingerprint()
    with pytest.raises(SweepError, match="--resume"):
        run_sweep(experiment)
    changed = experiment_spec(tiny_experiment(tmp_path / "sweep", strategies=["bitfit"]))
    with pytest.raises(SpecError, match="spec changed"):
        run_sweep(changed, resume=True)


def test_unreachable_tracking_server_warns_once(capsys):
    from rft_ray.tracking.client import Tracker

    tracker = Tracker("http://127.0.0.1:9")  # nothing listens on the discard port
    assert tracker.check_reachable(timeout=2) is False
    assert tracker.call("anything", lambda: 1 / 0) is None
    err = capsys.readouterr().err
    assert err.count("MLflow tracking at http://127.0.0.1:9 is off") == 1 and "Parquet" in err


def test_mlflow_callback_backfills_points_tune_never_relayed(tmp_path, monkeypatch):
    """After a driver died, a restored trial resumes past a point Tune never heard of: the callback logs it
    from the result store, at its own step, once, and at the time it was measured (as it logs a relayed point)."""
    from types import SimpleNamespace

    from rft_ray.config.experiment import Group, SearchSpace
    from rft_ray.results.record import EvalRecord
    from rft_ray.tracking import callback as tracking

    logged, times = [], []

    class FakeTracker:
        disabled, uri = False, "fake"

        def call(self, what, action):
            return action()

        def log_batch(self, run_id, metrics=None, step=0, params=None, tags=None, timestamp=None):
            logged.append((run_id, step, sorted(metrics or {})))
            times.append(timestamp)

    monkeypatch.setattr(tracking, "tracker_for", lambda uri: FakeTracker())
    common = dict(run_id="g-t1", strategy="lora", dataset="digits", model="m", lr=1e-3, weight_decay=0.0, seed=0,
                  total_steps=40, epoch=0.0, examples_seen=0, train_loss=0.1, train_clean_acc=0.5, pgd_eps=0.01,
                  test_ood_accuracy=0.3, trainable_params=10, total_params=100, wall_seconds=1.0, eval_seconds=0.1)
    ResultStore(tmp_path / "store").write_run("g-t1", [EvalRecord(step=s, test_clean_acc=0.5, pgd_adv_acc=0.2,
                                                                  measured_at=1.7e9 + s, **common) for s in (0, 20, 40)])
    group = Group(name="g", strategy="lora", dataset="digits", run={}, space=SearchSpace(), grid=None)
    callback = tracking.MLflowTrialCallback("fake", "1", "parent", group, store_root=str(tmp_path / "store"))
    callback._children["t1"], callback._last_step["t1"] = "child", 0  # found in MLflow with step 0 logged
    trial = SimpleNamespace(trial_id="t1", config={"objectives": [{"metric": "pareto_auc"}]}, last_result={})
    result = {"step": 40, "total_steps": 40, "test_clean_acc": 0.5, "pareto_auc": 0.1, "trainable_params": 10,
              "total_params": 100, "training_iteration": 3, "measured_at": 1.7e9 + 40}
    callback.on_trial_result(0, [], trial, result)
    callback.on_trial_result(0, [], trial, result)  # a repeat of a logged step is ignored
    assert [(run, step) for run, step, _ in logged] == [("child", 20), ("child", 40)]
    assert "pareto_auc" in logged[0][2] and "training_iteration" not in logged[1][2]
    assert "measured_at" not in logged[1][2] and times == [int((1.7e9 + 20) * 1000), int((1.7e9 + 40) * 1000)]


def test_cluster_yaml_passes_rays_schema():
    import copy

    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # as written: no unknown keys anywhere
    validate_config(prepare_config(copy.deepcopy(config)))  # as `ray up` fills it in (offline, no AWS calls)
    workers = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    assert all(t["min_workers"] == 0 and t["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
               for t in workers)
    assert all(t["node_config"]["InstanceType"].startswith(("g", "p")) for t in workers)
    assert config["idle_timeout_minutes"] > 0
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
    # the project comes in the image (no pip at setup), the code over it (file_mounts): tests/test_cluster.py
    assert config["docker"]["image"].rsplit("/", 1)[-1].startswith("rft-ray:")
    assert config["file_mounts"] == {"~/rft-ray": "."}
    text = (ROOT / "cluster.yaml").read_text().lower()
    assert "aws_secret" not in text and "access_key" not in text
    bad = copy.deepcopy(config)
    bad["available_node_types"]["gpu_spot"]["min_wrkers"] = 1
    with pytest.raises(jsonschema.ValidationError, match="'min_wrkers' was unexpected"):
        jsonschema.validate(bad, schema)


def test_demo_sweep_matches_the_embedded_default():
    """experiments/demo.yaml is rft_ray/demo.py's embedded default (model, data, training, eps, schedule),
    shortened and with smaller evaluation subsets; each strategy's search starts from demo.py's learning rate."""
    from rft_ray.cli.demo import DEMO, DEMO_LR, demo_experiment

    experiment = demo_experiment(Path("/tmp/rft-demo-check"))
    assert len(experiment.groups) == 7 and experiment.search.num_samples == 2
    for group in experiment.groups:
        run = json.loads(json.dumps(group.run))
        expected = json.loads(json.dumps(DEMO))
        assert run["dataset"].pop("label") == group.dataset == "digits"  # the group names its dataset
        assert run["model"] == expected["model"] and run["dataset"] == expected["dataset"]
        training = {k: v for k, v in expected["training"].items() if k not in ("lr", "weight_decay", "steps")}
        assert {k: v for k, v in run["training"].items() if k != "steps"} == training
        assert 200 <= run["training"]["steps"] <= expected["training"]["steps"]
        evaluation, demo_evaluation = run["evaluation"], expected["evaluation"]
        assert evaluation["schedule"] == demo_evaluation["schedule"]
        assert evaluation["test_examples"] == demo_evaluation["test_examples"]
        assert {k: evaluation["pgd"][k] for k in ("eps", "alpha", "steps")} == demo_evaluation["pgd"]
        for key in ("train_examples", "ood_examples"):
            assert evaluation[key] <= demo_evaluation[key]
        assert group.points_to_evaluate[0].lr == DEMO_LR[group.strategy]


def test_ui_command_binds_localhost(tmp_path, capsys):
    from rft_ray.cli import main

    (tmp_path / "mlflow.db").write_bytes(b"")
    assert main(["ui", "--results", str(tmp_path), "--port", "5055", "--print-command"]) == 0
    out = capsys.readouterr().out
    assert f"--backend-store-uri sqlite:///{tmp_path / 'mlflow.db'}" in out and "--host 127.0.0.1 --port 5055" in out
    assert main(["ui", "--results", str(tmp_path / "nowhere")]) == 2


# ---------------------------------------------------------------------------------------------------
# With Ray (one session for the module)


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    import ray

    faults = tmp_path_factory.mktemp("faults")
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": fault_env(faults)})
    yield faults
    ray.shutdown()


def test_sweep_end_to_end_pareto_store_mlflow_and_a_killed_worker(ray_session, tmp_path):
    """A multi-objective Optuna search (clean accuracy, best PGD accuracy; one seeded point), three trials at
    once, MLflow on. One trial's worker is SIGKILLed at step 40 after writing the store and before reporting:
    Ray Train restarts it from its last registered checkpoint, the store file is rewritten whole from the
    checkpoint's records, and every run ends with its schedule exactly once, in the store, in Tune's
    results and in MLflow. The search returns the Pareto set of its trials."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from rft_ray.training.weights import front_steps, load_finetuned, read_weights

    data = tiny_experiment(tmp_path / "sweep", tracking={"enabled": True, "experiment_name": "tiny"}, search={
        "mode": "optuna", "num_samples": 3,
        "objectives": [{"metric": "test_clean_acc"}, {"metric": "pgd_adv_acc", "reduce": "best"}],
        "points_to_evaluate": [{"lr": 1e-3, "weight_decay": 1e-2}],
        "space": {"lr": {"low": 1e-3, "high": 3e-2}, "weight_decay": {"low": 1e-3, "high": 1e-1}}},
        resources={"cpus_per_trial": 0.5, "gpus_per_trial": 0, "max_concurrent_trials": 3})
    data["base"]["training"]["steps"] = 60
    experiment = experiment_spec(data)
    assert experiment.search.sampler_name() == "gp"
    (ray_session / KILL_FILE).write_text(json.dumps({"step": 40, "run_id_contains": "lora-digits"}))
    result = run_sweep(experiment)

    fired = json.loads((ray_session / KILL_FIRED_FILE).read_text())
    assert fired["step"] == 40 and not (ray_session / KILL_FILE).exists()
    [group] = result.groups
    assert group.status == "done" and len(group.trials) == 3
    assert all(t.status == "completed" and t.step == 60 for t in group.trials)
    assert any(abs(t.lr - 1e-3) < 1e-12 for t in group.trials)  # the seeded point ran
    runs = steps_by_run(experiment.store_root)
    assert sorted(runs) == sorted(t.run_id for t in group.trials) and fired["run_id"] in runs
    for steps in runs.values():
        assert steps == schedule_of(experiment) == [0, 20, 40, 60]  # each point exactly once, none missing
    # Tune heard of each point once too, in each of the three trials: the killed one resumed from its checkpoint.
    reported = {path.parent.name: [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]
                for path in Path(experiment.storage_root, "tune", "lora-digits").glob("*/result.json")}
    assert sorted(reported.values()) == [[0, 20, 40, 60]] * 3, reported

    # Each trial's objectives are its run's final clean accuracy and best PGD accuracy on validation in the store
    # (search.select_on's default), the test values at those points reported beside them, and the Pareto set is
    # exactly the trials no other trial dominates on the validation points.
    keys = ["val_clean_acc", "best/val_pgd_adv_acc"]
    rows = ResultStore(experiment.store_root).read().to_pylist()
    points = {}
    for t in group.trials:
        mine = sorted((r for r in rows if r["run_id"] == t.run_id), key=lambda r: r["step"])
        best = max(mine, key=lambda r: (r["val_pgd_adv_acc"], -r["step"]))  # the earliest best validation point
        points[t.trial_id] = (mine[-1]["val_clean_acc"], best["val_pgd_adv_acc"])
        assert tuple(t.objectives[k] for k in keys) == pytest.approx(points[t.trial_id])
        assert (t.reported["val_clean_acc"], t.reported["best/val_pgd_adv_acc"]) == pytest.approx(
            (mine[-1]["test_clean_acc"], best["pgd_adv_acc"]))
    front = {i for i, p in points.items() if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points.values())}
    assert {t.trial_id for t in group.pareto} == front, (points, [t.trial_id for t in group.pareto])
    assert "Pareto set" in result.summary_markdown and result.summary[0]["trials"] == 3

    # The Optuna study outlives the sweep (SQLite beside the results): the same trials, told complete with both
    # objectives, under a name a later --overwrite run does not merge into.
    import optuna

    started = SweepFolder(experiment.storage_root).read_state()["started"]
    study = optuna.load_study(study_name=f"lora-digits {started}", storage=experiment.optuna_storage_url())
    assert experiment.optuna_storage_url() == f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}"
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3 and len(study.directions) == 2
    assert sorted(t.params["lr"] for t in study.trials) == pytest.approx(sorted(t.lr for t in group.trials))
    assert sorted(t.values[0] for t in study.trials) == pytest.approx(sorted(p[0] for p in points.values()))

    client = MlflowClient(tracking_uri=experiment.tracking_uri())
    mlflow_experiment = client.get_experiment_by_name("tiny")
    runs_ = client.search_runs([mlflow_experiment.experiment_id])
    parents = [r for r in runs_ if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs_ if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id]
    assert [p.info.run_id for p in parents] == [result.parent_run_id] and parents[0].info.status == "FINISHED"
    assert len(children) == 3
    for child in children:
        tags, params = child.data.tags, child.data.params
        assert child.info.run_name == tags["run_id"] and tags["run_id"] in runs
        assert {tags["strategy"], tags["dataset"], tags["model"], tags["seed"]} == {
            "lora", "digits", "rft_vit_cifar_patch8_32", "0"}
        assert int(tags["trainable_params"]) > 0 and child.info.status == "FINISHED"
        assert float(params["lr"]) == next(t.lr for t in group.trials if t.run_id == tags["run_id"])
        assert "weight_decay" in params and params["strategy.r"] == "8" and params["head_init"] == "fresh"
        records = ResultStore(experiment.store_root).read_run(tags["run_id"])
        for key in ("test_clean_acc", "pgd_adv_acc", "val_clean_acc", "best/val_pgd_adv_acc",
                    "test_at/best/val_pgd_adv_acc", "ood_acc/contrast"):
            history = client.get_metric_history(child.info.run_id, key)
            assert sorted(m.step for m in history) == [0, 20, 40, 60]  # the optimizer step, once each
            # at the time each point was measured (the killed worker's restart re-measured its step 40)
            assert sorted((m.step, m.timestamp) for m in history) == [(r.step, int(r.measured_at * 1000))
                                                                        for r in records]
        assert tags.get("mlflow.source.git.commit") == parents[0].data.tags.get("mlflow.source.git.commit")
        assert tags["spec_fingerprint"] == experiment.fingerprint()
        # The weights of the run's Pareto-optimal points, carried from the worker in its checkpoints; the one
        # documented call loads them back.
        weights = sorted(a.path for a in client.list_artifacts(child.info.run_id, "weights"))
        assert weights == sorted(f"weights/step-{s}.safetensors" for s in front_steps(records, "validation")), weights
        path = mlflow.artifacts.download_artifacts(run_id=child.info.run_id, artifact_path=weights[-1],
                                                   tracking_uri=experiment.tracking_uri())
        assert read_weights(path)[1]["run_id"] == tags["run_id"] and load_finetuned(path).training is False
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"summary.md", "summary.json", "analysis"} <= artifacts
    parent_data = parents[0].data
    assert parent_data.metrics["lora-digits/frontier_auc"] == pytest.approx(result.summary[0]["frontier_auc"])
    assert {"lora-digits/best_final_acc", "lora-digits/best_final_pgd_acc", "lora-digits/peak_pgd_acc",
            "lora-digits/pgd_drop", "lora-digits/best_final_val_acc", "lora-digits/knee_val_clean_acc"
            } <= set(parent_data.metrics)
    assert result.summary[0]["select_on"] == "validation" and "selected on validation; test reported" in (
        result.summary_markdown)
    assert parent_data.tags["spec_fingerprint"] == experiment.fingerprint()


def test_grid_mode_runs_exactly_its_grid(ray_session, tmp_path):
    grid = {"lr": [1e-3, 3e-3], "weight_decay": [0.0, 0.05]}
    data = tiny_experiment(tmp_path / "sweep", search={"mode": "grid", "grid": grid,
                                                      "objectives": [{"metric": "test_clean_acc"}]},
                           resources={"cpus_per_trial": 0.5, "gpus_per_trial": 0, "max_concurrent_trials": 4})
    data["base"]["training"]["steps"] = 20
    experiment = experiment_spec(data)
    result = run_sweep(experiment, analyze=False)
    [group] = result.groups
    assert group.status == "done"
    assert sorted((t.lr, t.weight_decay) for t in group.trials) == sorted(
        (lr, wd) for lr in grid["lr"] for wd in grid["weight_decay"])
    runs = steps_by_run(experiment.store_root)
    assert sorted(runs) == sorted(t.run_id for t in group.trials)
    assert all(steps == [0, 20] for steps in runs.values())
    rows = ResultStore(experiment.store_root).read().to_pylist()
    assert sorted({(r["run_id"], r["lr"], r["weight_decay"]) for r in rows}) == sorted(
        (t.run_id, t.lr, t.weight_decay) for t in group.trials)


def test_asha_stops_a_trial_at_an_optimizer_step_rung(ray_session, tmp_path):
    """Trials one at a time: the second (a learning rate far too small) reaches the step-20 rung with a
    higher training loss than the first had there, so ASHA stops it at step 20 of 40."""
    data = tiny_experiment(tmp_path / "sweep", search={
        "mode": "grid", "grid": {"lr": [1e-2, 1e-5], "weight_decay": [0.0]},
        "objectives": [{"metric": "train_loss", "mode": "min"}],
        "asha": {"enabled": True, "grace_period": 20, "reduction_factor": 2}},
        resources={"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent_trials": 1})
    experiment = experiment_spec(data)
    assert experiment.search.asha.max_t == 40
    result = run_sweep(experiment, analyze=False)
    [group] = result.groups
    by_lr = {t.lr: t for t in group.trials}
    assert by_lr[1e-2].status == "completed" and by_lr[1e-2].step == 40
    assert by_lr[1e-5].status == "stopped early" and by_lr[1e-5].step == 20
    assert [t.lr for t in group.pareto] == [1e-2]  # a stopped trial never counts as complete
    # The store holds what the worker computed: the full schedule of the completed trial, and a prefix of
    # it (each point once) for the stopped one, whose worker may finish a point while Tune stops it.
    runs = steps_by_run(experiment.store_root)
    assert runs[by_lr[1e-2].run_id] == [0, 20, 40]
    assert runs[by_lr[1e-5].run_id] in ([0, 20], [0, 20, 40])


# ---------------------------------------------------------------------------------------------------
# The sweep's driver killed mid-sweep, then `rft sweep --resume` (subprocesses, their own Ray)


def _ray_pids() -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return {int(line.split(None, 1)[0]) for line in out.splitlines()
            if any(k in line for k in ("raylet", "gcs_server", "ray::", "ray/dashboard", "default_worker.py",
                                       "log_monitor.py", "monitor.py", "runtime_env/agent"))}


@pytest.mark.slow
def test_driver_killed_mid_sweep_resumes_with_each_schedule_once(tmp_path):
    data = tiny_experiment(tmp_path / "sweep", strategies=["lora", "bitfit"],
                           tracking={"enabled": True, "experiment_name": "resume"})
    data["base"]["training"]["steps"] = 60
    spec_file = tmp_path / "sweep.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    experiment = experiment_spec(data)
    env = {**os.environ, "RAY_ADDRESS": "local", "PYTHONUNBUFFERED": "1"}
    rft = [sys.executable, "-m", "rft_ray.cli"]
    before = _ray_pids()
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen([*rft, "sweep", str(spec_file)], env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    folder = SweepFolder(experiment.storage_root)
    deadline = time.time() + 600
    try:
        # Kill once the first group finished and the second one has rows in the store.
        while time.time() < deadline and first.poll() is None:
            state = folder.read_state() if (Path(experiment.storage_root) / STATE_FILE).exists() else None
            done = state is not None and state["groups"].get("lora-digits", {}).get("status") == "done"
            second = [r for r in ResultStore(experiment.store_root).run_ids() if r.startswith("bitfit-digits-")]
            if done and second:
                break
            time.sleep(0.5)
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        log.close()
        time.sleep(3)
        for pid in _ray_pids() - before:  # Ray processes the killed sweep left (only those it started)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    partial = steps_by_run(experiment.store_root)
    assert any(r.startswith("bitfit-digits-") for r in partial)

    second = subprocess.run([*rft, "sweep", str(spec_file), "--resume"], env=env, capture_output=True, text=True,
                            timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "lora-digits: finished before, skipped" in second.stdout
    state = folder.read_state()
    assert {g: s["status"] for g, s in state["groups"].items()} == {"lora-digits": "done", "bitfit-digits": "done"}
    runs = steps_by_run(experiment.store_root)
    trials = [t for g in state["groups"].values() for t in g["trials"]]
    assert sorted(runs) == sorted(t["run_id"] for t in trials) and len(runs) == 4
    for steps in runs.values():
        assert steps == [0, 20, 40, 60]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=experiment.tracking_uri())
    exp = client.get_experiment_by_name("resume")
    all_runs = client.search_runs([exp.experiment_id])
    parents = [r for r in all_runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.run_id == state["parent_run_id"]
    logged: dict[str, list[int]] = {}  # run id -> the steps MLflow holds for it, over all its child runs
    for child in all_runs:
        if child.data.tags.get("run_id") in runs:
            logged.setdefault(child.data.tags["run_id"], []).extend(
                m.step for m in client.get_metric_history(child.info.run_id, "test_clean_acc"))
    assert {r: sorted(steps) for r, steps in logged.items()} == {r: [0, 20, 40, 60] for r in runs}


# ---------------------------------------------------------------------------------------------------
# The `ray submit` entry script on a local two-node cluster


@pytest.mark.slow
def test_launch_script_spreads_trials_over_two_nodes(tmp_path):
    with two_node_cluster() as (cluster, worker):
        data = tiny_experiment(tmp_path / "sweep", resources={"cpus_per_trial": 1, "gpus_per_trial": "auto",
                                                              "max_concurrent_trials": "auto"})
        data["search"]["num_samples"] = 2
        data["base"]["training"]["steps"] = 20
        spec_file = tmp_path / "sweep.yaml"
        spec_file.write_text(yaml.safe_dump(data))
        env = {**os.environ, "RAY_ADDRESS": cluster.address, "PYTHONUNBUFFERED": "1"}
        done = subprocess.run([sys.executable, str(ROOT / "experiments" / "launch.py"), str(spec_file)], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "up to 2 trial(s) at once" in done.stdout  # "auto" counted both nodes' CPUs
        nodes = set()
        for result_file in (tmp_path / "sweep" / "tune").glob("*/*/result.json"):
            nodes |= {json.loads(line)["node_id"] for line in result_file.read_text().splitlines() if line.strip()}
        assert nodes == {cluster.head_node.node_id, worker.node_id}
        assert sorted(steps_by_run(str(tmp_path / "sweep" / "store")).values()) == [[0, 20], [0, 20]]
