"""`rft sync-mlflow`: back-fill a sweep's runs into MLflow from its Parquet result store.

The store is the sweep's record of truth: every evaluation point of every trial is there, whether or not
MLflow was reachable while the sweep ran (tracking is never fatal; see `rft_ray.tracking.client`). This puts into
MLflow whatever it is missing, in the same shape the live callback logs: the sweep's parent run, one child
run per trial (same tags, params and run name), every metric at every evaluation point with the optimizer
step as MLflow's step and the time it was measured, each ended trial's kept weights (from the result store's
`checkpoints/`, as the live callback logs them), the end status of each run from the sweep's state, and for a
finished sweep the per-group summary metrics of the parent run. It only adds what is missing, so running it
twice, or after a sweep whose tracking never failed, changes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rft_ray.config.experiment import ExperimentSpec
from rft_ray.results.store import ResultStore
from rft_ray.tracking.client import (
    TrackingError,
    check_server,
    param_text,
    quiet_mlflow_logs,
)
from rft_ray.tracking.metrics import group_metrics, loggable, measured_ms, numeric_metrics, trial_metrics
from rft_ray.tracking.naming import (
    PARENT_TAG,
    artifact_location,
    child_filter,
    child_params,
    child_tags,
    inherited_tags,
    parent_filter,
    parent_params,
    parent_tags,
    tracking_uri,
)


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
    weights_logged: int = 0


def _group_of(run_id: str, groups) -> Any | None:
    matches = [g for g in groups if run_id.startswith(f"{g.name}-") and "-" not in run_id[len(g.name) + 1:]]
    return max(matches, key=lambda g: len(g.name)) if matches else None


def sync_mlflow(root: str, state: dict[str, Any], mlflow_uri: str | None = None, log=print) -> SyncReport:
    """Back-fill the sweep in `root` (its storage.path: a folder or URI, with its `sweep.json` state already
    read) into MLflow; see the module docstring."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        experiment = ExperimentSpec.from_dict(state["spec"])
    uri = mlflow_uri or tracking_uri(experiment, root)
    try:
        return _sync(root, state, experiment, uri, log)
    except TrackingError:
        raise
    except Exception as err:  # noqa: BLE001 - MLflow's errors come in many types; say which call failed
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise TrackingError(f"MLflow at {uri} failed during the back-fill ({type(err).__name__}: {first}); the "
                            "result store is untouched, and running `rft sync-mlflow` again continues where this "
                            "stopped") from err


def _sync(root: str, state: dict[str, Any], experiment: ExperimentSpec, uri: str, log) -> SyncReport:
    from mlflow.tracking import MlflowClient

    try:
        check_server(uri)
    except TrackingError as err:
        raise TrackingError(f"{err}; nothing was back-filled") from err
    quiet_mlflow_logs()
    client = MlflowClient(tracking_uri=uri)
    name = experiment.experiment_name()
    found = client.get_experiment_by_name(name)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(
        name, artifact_location=artifact_location(experiment, root))
    parent, created = _parent(client, experiment_id, experiment, state)
    report = SyncReport(uri, experiment_id, parent, parent_created=created)
    statuses = {t["run_id"]: t for g in (state.get("groups") or {}).values() for t in g.get("trials", [])}
    store = ResultStore(f"{root}/store")
    provenance = inherited_tags(client.get_run(parent).data.tags)
    for run_id in store.run_ids():
        group = _group_of(run_id, experiment.groups)
        records = store.read_run(run_id)
        if group is not None and records:
            report.runs += 1
            _sync_run(client, experiment, experiment_id, parent, group, records, statuses.get(run_id), report,
                      provenance=provenance, store_root=store.root)
    if state.get("finished"):
        _log_group_metrics(client, parent, experiment, store)
    if state.get("finished") and client.get_run(parent).info.status == "RUNNING":
        _end_parent(client, parent, Path(root) if "://" not in root else experiment.local_dir())
        report.ended_runs.append(f"parent {parent}")
    log(f"rft sync-mlflow: {uri}: {report.runs} run(s) in the store; created {len(report.created_runs)} run(s)"
        f"{' and the parent run' if created else ''}, logged {report.points_logged} missing evaluation point(s), "
        f"ended {len(report.ended_runs)} run(s) (parent run {parent})"
        + (f"; logged {report.weights_logged} weight file(s)" if report.weights_logged else ""))
    return report


def _sync_run(client, experiment: ExperimentSpec, experiment_id: str, parent: str, group, records: list,
              trial: dict[str, Any] | None, report: SyncReport, *, provenance: dict[str, str],
              store_root: str) -> None:
    """One trial's child run: created when missing (with the parent's provenance tags), its missing points
    logged at the time they were measured, its weights logged and the run ended as the sweep saw it end."""
    from mlflow.entities import Metric, Param, RunTag

    from rft_ray.tracking.artifacts import ARTIFACT_DIR, log_trial_weights

    run_id = records[0].run_id
    trial_id = run_id[len(group.name) + 1:]
    hits = client.search_runs([experiment_id], max_results=1, filter_string=child_filter(parent, run_id=run_id))
    if hits:
        child, status = hits[0].info.run_id, hits[0].info.status
    else:
        tags = {**child_tags(group, trial_id, parent, provenance, seed=records[0].seed), "synced_by": "rft sync-mlflow",
                "trainable_params": int(records[0].trainable_params), "total_params": int(records[0].total_params)}
        child = client.create_run(experiment_id, run_name=run_id, tags={k: str(v) for k, v in tags.items()}).info.run_id
        params = child_params(group, records[0].lr, records[0].weight_decay)
        client.log_batch(child, params=[Param(k, param_text(v)) for k, v in params.items()])
        status = "RUNNING"
        report.created_runs.append(run_id)
    objectives = [{"metric": o.metric, "mode": o.mode, "reduce": o.reduce} for o in experiment.search.objectives]
    logged = {m.step for m in client.get_metric_history(child, "test_clean_acc")}
    for i, record in enumerate(records):
        if record.step in logged:
            continue
        metrics = loggable(numeric_metrics(trial_metrics(records[: i + 1], objectives, experiment.search.select_on)))
        when = measured_ms(record.measured_at)
        client.log_batch(child, metrics=[Metric(k, float(v), when, int(record.step)) for k, v in metrics.items()])
        report.points_logged += 1
    ended = trial is not None and trial["status"] in ("completed", "stopped early", "error")
    if ended and not client.list_artifacts(child, ARTIFACT_DIR):
        report.weights_logged += len(log_trial_weights(client, child, store_root, run_id))
    if ended and status == "RUNNING":
        outcome = trial["status"]
        tags = [RunTag("outcome", outcome)]
        if trial.get("error"):
            tags.append(RunTag("error", str(trial["error"])[:5000]))
        client.log_batch(child, tags=tags)
        client.set_terminated(child, "FAILED" if outcome == "error" else "FINISHED")
        report.ended_runs.append(run_id)


def _log_group_metrics(client, parent: str, experiment: ExperimentSpec, store: ResultStore) -> None:
    """A finished sweep's per-group summary metrics that its parent run lacks (the live sweep logs them at its
    end), timed at the last evaluation point's measurement."""
    from mlflow.entities import Metric

    from analysis.auc_intervals import add_summary_intervals
    from analysis.summary import sweep_summary

    table = store.read()
    have = client.get_run(parent).data.metrics
    rows = sweep_summary(table, min_acc=experiment.search.min_acc, select_on=experiment.search.select_on)
    add_summary_intervals(store, table, rows)
    missing = {k: v for k, v in group_metrics(rows, experiment.groups).items() if k not in have}
    if missing:
        times = [t for t in table.column("measured_at").to_pylist() if t is not None] \
            if "measured_at" in table.column_names else []
        when = measured_ms(max(times) if times else None)
        client.log_batch(parent, metrics=[Metric(k, v, when, 0) for k, v in missing.items()])


def _end_parent(client, parent: str, local: Path) -> None:
    """A finished sweep's parent run: its summary and analysis as artifacts (unless it has some), ended."""
    if not client.list_artifacts(parent):
        for file in ("summary.md", "summary.json", "experiment.json"):
            if (local / file).is_file():
                client.log_artifact(parent, str(local / file))
        if (local / "analysis").is_dir():
            client.log_artifacts(parent, str(local / "analysis"), "analysis")
    client.set_terminated(parent, "FINISHED")


def _parent(client, experiment_id: str, experiment: ExperimentSpec, state: dict[str, Any]) -> tuple[str, bool]:
    """The sweep's parent run: the one its state names, else one tagged with its fingerprint, else a new one."""
    from mlflow.entities import Param

    wanted = state.get("parent_run_id")
    if wanted:
        try:
            run = client.get_run(wanted)
            if run.info.experiment_id == experiment_id and run.info.lifecycle_stage == "active":
                return wanted, False
        except Exception:  # noqa: BLE001 - not in this MLflow (another server, deleted): look further
            pass
    fingerprint = state.get("fingerprint") or experiment.fingerprint()
    hits = client.search_runs([experiment_id], filter_string=parent_filter(experiment, fingerprint))
    hits = [r for r in hits if PARENT_TAG not in r.data.tags]
    if hits:
        return sorted(hits, key=lambda r: r.info.start_time)[0].info.run_id, False
    tags = {**parent_tags(experiment, None, fingerprint), "synced_by": "rft sync-mlflow"}
    run = client.create_run(experiment_id, run_name=experiment.name, tags=tags)
    params = parent_params(experiment)
    client.log_batch(run.info.run_id, params=[Param(k, param_text(v)) for k, v in params.items()])
    return run.info.run_id, True
