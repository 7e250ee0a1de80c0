"""`rft sync-mlflow`: back-fill a sweep's runs into MLflow from its Parquet result store.

The store is the sweep's record of truth: every evaluation point of every trial is there, whether or not
MLflow was reachable while the sweep ran (tracking is never fatal; see `rft_ray.tracking.callback`). This puts into
MLflow whatever it is missing, in the same shape the live callback logs: the sweep's parent run, one child
run per trial (same tags, params and run name), every metric at every evaluation point with the optimizer
step as MLflow's step, and the end status of each run from the sweep's state. It only adds what is missing,
so running it twice, or after a sweep whose tracking never failed, changes nothing.
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rft_ray.results.store import ResultStore

PARENT_TAG = "mlflow.parentRunId"


@dataclass
class SyncReport:
    uri: str
    experiment_id: str
    parent_run_id: str
    runs: int = 0
    created_runs: list[str] = field(default_factory=list)
    points_logged: int = 0
    ended_runs: list[str] = field(default_factory=list)
    parent_created: bool = False


def default_uri(experiment, root: str) -> str:
    if experiment.tracking.mlflow_uri:
        return experiment.tracking.mlflow_uri
    if "://" not in root:
        return f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"
    return experiment.tracking_uri()


def _group_of(run_id: str, groups) -> Any | None:
    matches = [g for g in groups if run_id.startswith(f"{g.name}-") and "-" not in run_id[len(g.name) + 1:]]
    return max(matches, key=lambda g: len(g.name)) if matches else None


def sync_mlflow(root: str, mlflow_uri: str | None = None, log=print) -> SyncReport:
    """Back-fill the sweep in `root` (its storage.path: a folder or URI) into MLflow; see the module docstring."""
    from rft_ray.config.experiment import ExperimentSpec
    from rft_ray.sweep.driver import SweepError, SweepFolder

    root = root.rstrip("/") if "://" in root else str(Path(root).expanduser().resolve())
    folder = SweepFolder(root)
    state = folder.read_state()
    if state is None:
        raise SweepError(f"no sweep in {root}: it has no sweep.json (give the sweep's storage.path, e.g. results/demo)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        experiment = ExperimentSpec.from_dict(state["spec"])
    uri = mlflow_uri or default_uri(experiment, root)
    try:
        return _sync(root, folder, state, experiment, uri, log)
    except SweepError:
        raise
    except Exception as err:  # noqa: BLE001 - MLflow's errors come in many types; say which call failed
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise SweepError(f"MLflow at {uri} failed during the back-fill ({type(err).__name__}: {first}); the result "
                         "store is untouched, and running `rft sync-mlflow` again continues where this stopped") from err


def _check_server(uri: str) -> None:
    if not uri.startswith(("http://", "https://")):
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    import urllib.request

    from rft_ray.sweep.driver import SweepError

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as response:
            response.read()
    except Exception as err:  # noqa: BLE001
        raise SweepError(f"MLflow at {uri} is not reachable ({err}); nothing was back-filled") from err


def _sync(root: str, folder, state: dict[str, Any], experiment, uri: str, log) -> SyncReport:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from rft_ray.sweep.driver import _child_params, _child_tags
    from rft_ray.tracking.callback import _loggable, _param_text, _quiet_mlflow_logs, numeric_metrics
    from rft_ray.sweep.trial import trial_metrics

    _check_server(uri)
    _quiet_mlflow_logs()
    client = MlflowClient(tracking_uri=uri)
    name = experiment.experiment_name()
    found = client.get_experiment_by_name(name)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        artifacts = None
        if not experiment.tracking.mlflow_uri and "://" not in root:
            artifacts = (Path(root) / "mlartifacts").resolve().as_uri()
        experiment_id = client.create_experiment(name, artifact_location=artifacts)

    parent, created = _parent(client, experiment_id, experiment, state)
    report = SyncReport(uri, experiment_id, parent, parent_created=created)
    now = int(time.time() * 1000)

    statuses = {t["run_id"]: t for g in (state.get("groups") or {}).values() for t in g.get("trials", [])}
    store = ResultStore(f"{root}/store")
    objectives = [{"metric": o.metric, "mode": o.mode, "reduce": o.reduce} for o in experiment.search.objectives]
    groups = experiment.groups
    for run_id in store.run_ids():
        group = _group_of(run_id, groups)
        records = store.read_run(run_id)
        if group is None or not records:
            continue
        report.runs += 1
        trial_id = run_id[len(group.name) + 1:]
        hits = client.search_runs([experiment_id], max_results=1, filter_string=(
            f"tags.run_id = '{run_id}' and tags.`{PARENT_TAG}` = '{parent}'"))
        if hits:
            child, status = hits[0].info.run_id, hits[0].info.status
        else:
            tags = {**_child_tags(group), PARENT_TAG: parent, "trial_id": trial_id, "group": group.name,
                    "run_id": run_id, "synced_by": "rft sync-mlflow",
                    "trainable_params": int(records[0].trainable_params), "total_params": int(records[0].total_params)}
            child = client.create_run(experiment_id, run_name=run_id, tags={k: str(v) for k, v in tags.items()}).info.run_id
            params = {"lr": records[0].lr, "weight_decay": records[0].weight_decay, **_child_params(group)}
            client.log_batch(child, params=[Param(k, _param_text(v)) for k, v in params.items()])
            status = "RUNNING"
            report.created_runs.append(run_id)
        logged = {m.step for m in client.get_metric_history(child, "test_clean_acc")}
        for i, record in enumerate(records):
            if record.step in logged:
                continue
            metrics = _loggable(numeric_metrics(trial_metrics(records[: i + 1], objectives)))
            client.log_batch(child, metrics=[Metric(k, float(v), now, int(record.step)) for k, v in metrics.items()])
            report.points_logged += 1
        trial = statuses.get(run_id)
        if trial is not None and status == "RUNNING" and trial["status"] in ("completed", "stopped early", "error"):
            outcome = trial["status"]
            tags = [RunTag("outcome", outcome)]
            if trial.get("error"):
                tags.append(RunTag("error", str(trial["error"])[:5000]))
            client.log_batch(child, tags=tags)
            client.set_terminated(child, "FAILED" if outcome == "error" else "FINISHED")
            report.ended_runs.append(run_id)

    if state.get("finished") and client.get_run(parent).info.status == "RUNNING":
        local = Path(root) if "://" not in root else experiment.local_dir()
        if not client.list_artifacts(parent):
            for file in ("summary.md", "summary.json", "experiment.json"):
                if (local / file).is_file():
                    client.log_artifact(parent, str(local / file))
            if (local / "analysis").is_dir():
                client.log_artifacts(parent, str(local / "analysis"), "analysis")
        client.set_terminated(parent, "FINISHED")
        report.ended_runs.append(f"parent {parent}")
    log(f"rft sync-mlflow: {uri}: {report.runs} run(s) in the store; created {len(report.created_runs)} run(s)"
        f"{' and the parent run' if created else ''}, logged {report.points_logged} missing evaluation point(s), "
        f"ended {len(report.ended_runs)} run(s) (parent run {parent})")
    return report


def _parent(client, experiment_id: str, experiment, state: dict[str, Any]) -> tuple[str, bool]:
    """The sweep's parent run: the one its state names, else one tagged with its fingerprint, else a new one."""
    wanted = state.get("parent_run_id")
    if wanted:
        try:
            run = client.get_run(wanted)
            if run.info.experiment_id == experiment_id and run.info.lifecycle_stage == "active":
                return wanted, False
        except Exception:  # noqa: BLE001 - not in this MLflow (another server, deleted): look further
            pass
    fingerprint = state.get("fingerprint") or experiment.fingerprint()
    hits = client.search_runs([experiment_id], filter_string=(
        f"tags.fingerprint = '{fingerprint}' and tags.sweep = '{experiment.name}'"))
    hits = [r for r in hits if PARENT_TAG not in r.data.tags]
    if hits:
        return sorted(hits, key=lambda r: r.info.start_time)[0].info.run_id, False
    search = experiment.search
    run = client.create_run(experiment_id, run_name=experiment.name, tags={
        "sweep": experiment.name, "fingerprint": fingerprint, "spec": "", "synced_by": "rft sync-mlflow"})
    from mlflow.entities import Param

    from rft_ray.tracking.callback import _param_text

    params = {"strategies": [s.name for s in experiment.strategies], "datasets": [g.dataset for g in experiment.groups],
              "search.mode": search.mode, "search.objectives": [o.key for o in search.objectives],
              "search.num_samples": search.num_samples, "search.sampler": search.sampler_name(),
              "search.asha": search.asha.enabled, "storage": experiment.storage_root}
    client.log_batch(run.info.run_id, params=[Param(k, _param_text(v)) for k, v in params.items()])
    return run.info.run_id, True
