"""MLflow for sweeps: one parent run per sweep, one child run per trial, metrics per evaluation point.

Everything here runs in the sweep's driver process (the one calling `Tuner.fit`). Tracking is never
fatal: the first failure (an unreachable server, a locked database) prints one warning and turns
tracking off for the rest of the sweep; the Parquet result store stays complete regardless.

Not `MLflowLoggerCallback`: that logs Tune's iteration counter as MLflow's step; here the step is the
optimizer step of the evaluation point, and child runs nest under the sweep's parent run.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ray.tune import Callback

PARENT_TAG = "mlflow.parentRunId"
# Keys Tune adds to every result; not metrics of the run.
TUNE_KEYS = frozenset({
    "timestamp", "checkpoint_dir_name", "done", "training_iteration", "trial_id", "date", "time_this_iter_s",
    "time_total_s", "pid", "hostname", "node_ip", "config", "time_since_restore", "iterations_since_restore",
    "experiment_tag", "checkpoint_path", "should_checkpoint", "step", "total_steps", "trainable_params",
    "total_params",
})


class Tracker:
    """A guarded MlflowClient: the first error warns once and disables tracking."""

    def __init__(self, uri: str):
        self.uri = uri
        self.disabled = False
        self._client = None

    @property
    def client(self):
        if self._client is None:
            _quiet_mlflow_logs()
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def call(self, what: str, action: Callable[[], Any]) -> Any:
        if self.disabled:
            return None
        try:
            return action()
        except Exception as err:  # noqa: BLE001 - tracking must never stop a sweep
            self.disable(f"{what} failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            return None

    def disable(self, reason: str) -> None:
        if not self.disabled:
            self.disabled = True
            print(f"rft sweep: warning: MLflow tracking at {self.uri} is off for the rest of this sweep ({reason}); "
                  "the Parquet result store still gets every evaluation point; back-fill MLflow from it later with "
                  "`rft sync-mlflow <storage.path>`", file=sys.stderr)

    def check_reachable(self, timeout: float = 5.0) -> bool:
        """An HTTP tracking server answers /health; other URIs are tried on first use."""
        if self.disabled:
            return False
        if self.uri.startswith(("http://", "https://")):
            # Fail fast later too: MLflow's default retries would stall the sweep for minutes per call.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
            import urllib.request

            try:
                with urllib.request.urlopen(self.uri.rstrip("/") + "/health", timeout=timeout) as response:
                    response.read()
            except Exception as err:  # noqa: BLE001
                self.disable(f"server unreachable: {err}")
                return False
        elif self.uri.startswith("sqlite:///"):
            Path(self.uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return True

    # -- experiment and parent run ---------------------------------------------------------------------

    def experiment_id(self, name: str, artifact_location: str | None) -> str | None:
        def get_or_create():
            existing = self.client.get_experiment_by_name(name)
            if existing is not None:
                return existing.experiment_id
            return self.client.create_experiment(name, artifact_location=artifact_location)

        return self.call("creating the MLflow experiment", get_or_create)

    def start_parent(self, experiment_id: str | None, parent_run_id: str | None, name: str,
                     params: dict[str, Any], tags: dict[str, str]) -> str | None:
        """Reuse the sweep's parent run (on resume) or create it."""
        if experiment_id is None:
            return None

        def start():
            if parent_run_id:
                try:
                    self.client.update_run(parent_run_id, status="RUNNING")
                    return parent_run_id
                except Exception:  # noqa: BLE001 - deleted, or another store: make a new one
                    pass
            run = self.client.create_run(experiment_id, run_name=name, tags=tags)
            self._log(run.info.run_id, params=params)
            return run.info.run_id

        return self.call("starting the sweep's parent run", start)

    def finish(self, run_id: str | None, status: str = "FINISHED") -> None:
        if run_id:
            self.call("ending a run", lambda: self.client.set_terminated(run_id, status))

    def log_artifacts(self, run_id: str | None, paths: list[str | Path], artifact_path: str | None = None) -> None:
        if not run_id:
            return

        def log():
            for path in paths:
                path = Path(path)
                if path.is_dir():
                    self.client.log_artifacts(run_id, str(path), artifact_path)
                elif path.is_file():
                    self.client.log_artifact(run_id, str(path), artifact_path)

        self.call("logging artifacts", log)

    def _log(self, run_id: str, metrics: dict[str, float] | None = None, step: int = 0,
             params: dict[str, Any] | None = None, tags: dict[str, Any] | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items()],
            params=[Param(k, _param_text(v)) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )


_TRACKERS: dict[str, Tracker] = {}


def tracker_for(uri: str) -> Tracker:
    """One tracker per URI per process, so a failure warns once for the whole sweep."""
    if uri not in _TRACKERS:
        _TRACKERS[uri] = Tracker(uri)
    return _TRACKERS[uri]


def _param_text(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text[:6000]


def _quiet_mlflow_logs() -> None:
    for name in ("alembic", "alembic.runtime.migration", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)


def numeric_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The run's metrics in a Tune result: numbers that are not Tune's bookkeeping."""
    out = {}
    for key, value in result.items():
        if key in TUNE_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[key] = float(value)
    return out


def _loggable(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not math.isinf(v)}


class MLflowTrialCallback(Callback):
    """Tune callback: a child run per trial under the sweep's parent run, metrics at the optimizer step.

    Picklable (Tune stores it with the experiment): it keeps names and ids only and finds a trial's
    child run again by tag after a restore, logging only evaluation points it has not logged yet.
    """

    def __init__(self, uri: str, experiment_id: str | None, parent_run_id: str | None, group: str,
                 tags: dict[str, str], params: dict[str, Any], store_root: str | None = None):
        self.uri, self.experiment_id, self.parent_run_id = uri, experiment_id, parent_run_id
        self.group, self.tags, self.params, self.store_root = group, tags, params, store_root
        self._children: dict[str, str] = {}
        self._last_step: dict[str, int] = {}
        self._seen: set[str] = set()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_children"], state["_last_step"], state["_seen"] = {}, {}, set()
        return state

    @property
    def tracker(self) -> Tracker:
        return tracker_for(self.uri)

    @property
    def active(self) -> bool:
        return self.experiment_id is not None and self.parent_run_id is not None and not self.tracker.disabled

    def _child(self, trial) -> str | None:
        trial_id = trial.trial_id
        if trial_id in self._children:
            return self._children[trial_id]
        tracker = self.tracker
        run_name = f"{self.group}-{trial_id}"

        def find_or_create():
            client = tracker.client
            found = client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.trial_id = '{trial_id}' and tags.`{PARENT_TAG}` = '{self.parent_run_id}'",
                max_results=1)
            if found:
                run_id = found[0].info.run_id
                history = client.get_metric_history(run_id, "test_clean_acc")
                self._last_step[trial_id] = max((m.step for m in history), default=-1)
                if found[0].info.status != "RUNNING":
                    client.update_run(run_id, status="RUNNING")
                return run_id
            tags = {**self.tags, PARENT_TAG: self.parent_run_id, "trial_id": trial_id, "group": self.group,
                    "run_id": run_name}
            run = client.create_run(self.experiment_id, run_name=run_name, tags=tags)
            config = trial.config or {}
            params = {"lr": config.get("lr"), "weight_decay": config.get("weight_decay"), **self.params}
            tracker._log(run.info.run_id, params=params)
            self._last_step[trial_id] = -1
            return run.info.run_id

        run_id = tracker.call("creating a trial's child run", find_or_create)
        if run_id:
            self._children[trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        if self.active:
            self._child(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not self.active or "step" not in result:
            return
        run_id = self._child(trial)
        if run_id is None:
            return
        step = int(result["step"])
        last = self._last_step.get(trial.trial_id, -1)
        if step <= last:
            return  # already logged (a restored trial re-reporting its final point)
        first_here = trial.trial_id not in self._seen
        self._seen.add(trial.trial_id)
        if first_here and step > last + 1:
            self._backfill(trial, run_id, last, step)
        metrics = _loggable(numeric_metrics(result))
        tags = {}
        if "trainable_params" in result and first_here:
            tags = {"trainable_params": int(result["trainable_params"]), "total_params": int(result["total_params"])}
        self.tracker.call("logging metrics", lambda: self.tracker._log(run_id, metrics=metrics, step=step, tags=tags))
        self._last_step[trial.trial_id] = step

    def _backfill(self, trial, run_id: str, last: int, step: int) -> None:
        """Log the evaluation points between `last` and `step` that Tune never relayed, from the result store.

        Within one driver process Tune relays every reported point. When a sweep's driver dies, a point
        Ray Train already checkpointed may not have reached Tune; the restored trial resumes after it and
        never reports it again. The worker wrote it to the store before reporting, so it is there.
        """
        if not self.store_root:
            return
        from rft_ray.results.store import ResultStore
        from rft_ray.sweep.trial import trial_metrics

        def backfill():
            records = ResultStore(self.store_root).read_run(f"{self.group}-{trial.trial_id}")
            objectives = (trial.config or {}).get("objectives") or []
            for i, record in enumerate(records):
                if last < record.step < step:
                    metrics = _loggable(numeric_metrics(trial_metrics(records[: i + 1], objectives)))
                    self.tracker._log(run_id, metrics=metrics, step=record.step)

        self.tracker.call("logging missed evaluation points", backfill)

    def _end(self, trial, status: str, outcome: str) -> None:
        if not self.active:
            return
        run_id = self._child(trial)
        if run_id is None:
            return

        def end():
            self.tracker.client.set_tag(run_id, "outcome", outcome)
            self.tracker.client.set_terminated(run_id, status)

        self.tracker.call("ending a child run", end)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        finished = "step" in last and last.get("step", 0) >= last.get("total_steps", math.inf)
        self._end(trial, "FINISHED", "completed" if finished else "stopped early")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "FAILED", "error")
