"""A trial's kept weights (`output.keep_checkpoints`, `rft_ray.training.weights`) from the result store to its
MLflow child run, as artifacts under `weights/`.

The worker keeps them in the sweep's result store (`<store>/checkpoints/<run_id>/step-<step>.safetensors`), which
every node and the driver reach, local or on an object store; this copies the files there when the trial ends
(the live callback) or when `rft sync-mlflow` back-fills the trial.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow.fs as pafs

from rft_ray.results.store import ResultStore

ARTIFACT_DIR = "weights"  # the MLflow artifact path of a child run's weight files


def log_trial_weights(client, mlflow_run_id: str, store_root: str, run_id: str) -> list[str]:
    """Log the run's kept weights in the store as `weights/<file>` artifacts of the MLflow run; their names."""
    store = ResultStore(store_root)
    files = list(store.checkpoints(run_id).values())
    if not files:
        return []
    names = [Path(path).name for path in files]
    with tempfile.TemporaryDirectory(prefix="rft-weights-") as local:
        for path, name in zip(files, names):  # copied whole, as MLflow logs local files
            pafs.copy_files(path, f"{local}/{name}", source_filesystem=store.fs,
                            destination_filesystem=pafs.LocalFileSystem())
        client.log_artifacts(mlflow_run_id, local, ARTIFACT_DIR)
    return names
