"""The guarded MLflow client of a sweep, and the one health check of a tracking server.

Tracking is never fatal: the first failure (an unreachable server, a locked database) prints one warning
and turns tracking off for the rest of the sweep; the Parquet result store stays complete regardless, and
`rft sync-mlflow` back-fills MLflow from it later.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable


class TrackingError(RuntimeError):
    """MLflow cannot be reached or refused a call (the message says which and what to do)."""


def check_server(uri: str, timeout: float = 10.0) -> None:
    """Raise TrackingError unless an HTTP tracking server answers /health; make a SQLite store's folder."""
    if uri.startswith(("http://", "https://")):
        # Fail fast later too: MLflow's default retries would stall a sweep for minutes per call.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
                response.read()
        except Exception as err:  # noqa: BLE001 - any failure means: not reachable
            raise TrackingError(f"MLflow at {uri} is not reachable ({err})") from err
    elif uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)


class Tracker:
    """A guarded MlflowClient: the first error warns once and disables tracking."""

    def __init__(self, uri: str):
        self.uri = uri
        self.disabled = False
        self._client = None

    @property
    def client(self):
        if self._client is None:
            quiet_mlflow_logs()
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
        try:
            check_server(self.uri, timeout)
        except TrackingError as err:
            self.disable(str(err))
            return False
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
            self.log_batch(run.info.run_id, params=params)
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

    def log_metrics(self, run_id: str | None, metrics: dict[str, float]) -> None:
        """Metrics of one moment (step 0), e.g. the parent run's per-group summary."""
        if run_id and metrics:
            self.call("logging metrics", lambda: self.log_batch(run_id, metrics=metrics))

    def log_batch(self, run_id: str, metrics: dict[str, float] | None = None, step: int = 0,
             params: dict[str, Any] | None = None, tags: dict[str, Any] | None = None,
             timestamp: int | None = None) -> None:
        """`timestamp`: the metrics' time in ms (when they were measured); now when not given."""
        from mlflow.entities import Metric, Param, RunTag

        when = int(time.time() * 1000) if timestamp is None else int(timestamp)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), when, step) for k, v in (metrics or {}).items()],
            params=[Param(k, param_text(v)) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )


_TRACKERS: dict[str, Tracker] = {}


def tracker_for(uri: str) -> Tracker:
    """One tracker per URI per process, so a failure warns once for the whole sweep."""
    if uri not in _TRACKERS:
        _TRACKERS[uri] = Tracker(uri)
    return _TRACKERS[uri]


def param_text(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text[:6000]


def quiet_mlflow_logs() -> None:
    for name in ("alembic", "alembic.runtime.migration", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
