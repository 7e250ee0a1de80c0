"""Sweep state never only on a dying disk (rft_ray.sweep.state_copies): with s3:// / gs:// storage (a file:// URI
stands in here, through the same pyarrow filesystem code), Optuna's and MLflow's SQLite files are copied into the
sweep's folder after every trial that ends and when the driver stops, and `--resume` on a fresh machine starts from
those copies."""
from __future__ import annotations

import pickle
import sqlite3
from pathlib import Path

import pytest
from test_sweep import tiny_experiment

from rft_ray.specs import experiment_spec
from rft_ray.sweep import driver as driver_module
from rft_ray.sweep.state import SweepFolder
from rft_ray.sweep.state_copies import (
    StateCopyCallback,
    local_databases,
    restore_copies,
    save_copies,
)


def remote_experiment(tmp_path: Path, monkeypatch, head: str = "head", **top):
    """The tiny sweep with its storage in a 'bucket' and its local files on the given 'head' machine."""
    monkeypatch.setenv("RFT_RESULTS_DIR", str(tmp_path / head))
    return experiment_spec(tiny_experiment(f"file://{tmp_path / 'bucket' / 'tiny'}",
                                           **{"tracking": {"enabled": True}, **top}))


def rows(database: Path) -> list[tuple]:
    with sqlite3.connect(database) as connection:
        return connection.execute("select name from trials order by name").fetchall()


def make_database(path: Path, names: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as connection:
        connection.execute("create table if not exists trials (name text)")
        connection.executemany("insert into trials values (?)", [(n,) for n in names])


def test_the_databases_only_the_driver_holds(tmp_path, monkeypatch):
    experiment = remote_experiment(tmp_path, monkeypatch)
    assert local_databases(experiment) == [tmp_path / "head" / "tiny" / "optuna.db",
                                           tmp_path / "head" / "tiny" / "mlflow.db"]
    served = remote_experiment(tmp_path, monkeypatch, tracking={"enabled": True, "mlflow_uri": "http://mlflow:5000",
                                                                "optuna_storage": "postgresql://db/optuna"})
    assert local_databases(served) == []
    local = experiment_spec(tiny_experiment(tmp_path / "sweep", tracking={"enabled": True}))
    assert local_databases(local) == []  # already in the sweep's folder


def test_a_copy_is_a_consistent_snapshot_and_a_fresh_head_resumes_from_it(tmp_path, monkeypatch):
    experiment = remote_experiment(tmp_path, monkeypatch)
    optuna_db, mlflow_db = local_databases(experiment)
    make_database(optuna_db, ["trial-0", "trial-1"])
    make_database(mlflow_db, ["run-0"])
    writer = sqlite3.connect(optuna_db)  # a writer mid-transaction: its row is not in the copy
    writer.execute("insert into trials values ('half-written')")
    try:
        written = save_copies(experiment.storage_root, [optuna_db, mlflow_db])
    finally:
        writer.rollback()
        writer.close()
    bucket = tmp_path / "bucket" / "tiny"
    assert written == [f"{experiment.storage_root}/optuna.db", f"{experiment.storage_root}/mlflow.db"]
    assert rows(bucket / "optuna.db") == [("trial-0",), ("trial-1",)]
    assert rows(bucket / "mlflow.db") == [("run-0",)]

    fresh = remote_experiment(tmp_path, monkeypatch, head="new-head")
    databases = local_databases(fresh)
    assert not any(d.exists() for d in databases)
    assert restore_copies(fresh.storage_root, databases) == databases
    assert rows(databases[0]) == [("trial-0",), ("trial-1",)] and rows(databases[1]) == [("run-0",)]
    make_database(databases[0], ["trial-2"])  # the new head goes on; a second restore keeps its newer file
    assert restore_copies(fresh.storage_root, databases) == []
    assert rows(databases[0]) == [("trial-0",), ("trial-1",), ("trial-2",)]


def test_the_tune_callback_copies_after_every_ended_trial_and_only_warns_on_failure(tmp_path, monkeypatch, capsys):
    experiment = remote_experiment(tmp_path, monkeypatch)
    optuna_db, mlflow_db = local_databases(experiment)
    make_database(optuna_db, ["trial-0"])
    callback = pickle.loads(pickle.dumps(StateCopyCallback(experiment.storage_root, [optuna_db, mlflow_db])))
    trial = type("Trial", (), {"trial_id": "abc_00000"})()
    callback.on_trial_complete(1, [trial], trial)
    assert rows(tmp_path / "bucket" / "tiny" / "optuna.db") == [("trial-0",)]
    assert not (tmp_path / "bucket" / "tiny" / "mlflow.db").exists()  # not made yet: nothing to copy
    make_database(optuna_db, ["trial-1"])
    make_database(mlflow_db, ["run-1"])
    callback.on_trial_error(2, [trial], trial)
    assert rows(tmp_path / "bucket" / "tiny" / "optuna.db") == [("trial-0",), ("trial-1",)]
    assert rows(tmp_path / "bucket" / "tiny" / "mlflow.db") == [("run-1",)]

    (tmp_path / "blocked").write_text("a file where the bucket's folder should be")
    broken = StateCopyCallback(f"file://{tmp_path / 'blocked' / 'tiny'}", [optuna_db])
    broken.on_trial_complete(3, [trial], trial)  # the sweep goes on
    err = capsys.readouterr().err
    assert "could not copy optuna.db to file://" in err and "after trial abc_00000" in err


def test_a_sweep_that_fails_copies_its_databases_and_resume_on_a_fresh_head_restores_them(tmp_path, monkeypatch):
    """The driver's `finally` and its resume, with Ray and the groups replaced: the first run makes Optuna's
    database and dies; the second, on a machine without it, finds it restored before its groups run."""
    monkeypatch.setattr(driver_module, "ensure_ray", lambda *a, **k: False)
    monkeypatch.setattr(driver_module, "resolve_resources", lambda *a, **k: {
        "max_concurrent_trials": 1, "cpus_per_trial": 1.0, "gpus_per_trial": 0.0})
    monkeypatch.setattr(driver_module, "_start_tracking", lambda *a, **k: driver_module._Tracking())
    seen = []

    def dying_groups(experiment, state, folder, resources, tracking, spec_path):
        optuna_db = local_databases(experiment)[0]
        seen.append(rows(optuna_db) if optuna_db.exists() else None)
        make_database(optuna_db, [f"trial-{len(seen)}"])
        raise RuntimeError("the head node was lost")

    monkeypatch.setattr(driver_module, "_run_groups", dying_groups)
    experiment = remote_experiment(tmp_path, monkeypatch)
    with pytest.raises(RuntimeError, match="head node was lost"):
        driver_module.run_sweep(experiment)
    assert rows(tmp_path / "bucket" / "tiny" / "optuna.db") == [("trial-1",)]
    assert SweepFolder(experiment.storage_root).read_state() is not None

    fresh = remote_experiment(tmp_path, monkeypatch, head="new-head")
    with pytest.raises(RuntimeError, match="head node was lost"):
        driver_module.run_sweep(fresh, resume=True)
    assert seen == [None, [("trial-1",)]]  # restored before the groups ran
    assert rows(tmp_path / "bucket" / "tiny" / "optuna.db") == [("trial-1",), ("trial-2",)]


@pytest.mark.slow
def test_a_real_sweep_copies_after_each_trial_and_at_the_end(tmp_path, monkeypatch):
    """Tune calls the callback on the driver after each trial: two trials, two copies, then the final one; the
    bucket's optuna.db then holds both trials of the group's study."""
    import optuna

    from rft_ray.sweep import state_copies

    calls = []
    real = state_copies.save_copies_warning

    def recording(storage_root, databases, when):
        calls.append(when)
        return real(storage_root, databases, when)

    monkeypatch.setattr(state_copies, "save_copies_warning", recording)
    data = tiny_experiment(f"file://{tmp_path / 'bucket' / 'tiny'}", tracking={"enabled": True},
                           resources={"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent_trials": 1})
    data["base"]["training"]["steps"] = 20
    monkeypatch.setenv("RFT_RESULTS_DIR", str(tmp_path / "head"))
    experiment = experiment_spec(data)
    result = driver_module.run_sweep(experiment, analyze=False)
    assert [g.status for g in result.groups] == ["done"]
    assert [c.split(" ")[0] for c in calls] == ["after", "after", "as"], calls
    copied = tmp_path / "bucket" / "tiny" / "optuna.db"
    [study] = optuna.get_all_study_summaries(f"sqlite:///{copied}")
    assert study.n_trials == 2
    assert (tmp_path / "bucket" / "tiny" / "mlflow.db").is_file()
