"""A trial's kept weights (`rft_ray.training.weights`) from its Ray Train checkpoint to its MLflow child run,
as artifacts under `weights/`.

The worker that wrote them and the driver that logs them may be on different nodes, so they travel the way
checkpoints do: the worker keeps them inside the checkpoint folder it reports, Ray Train copies each reported
folder to `<train storage>/<Train run>/checkpoint_<time>/` (keeping the newest only), and this reads the
newest one there, on any filesystem pyarrow reaches.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow.fs as pafs

from rft_ray.results.files import filesystem_for
from rft_ray.training.weights import WEIGHTS_DIR

CHECKPOINT_PREFIX = "checkpoint_"  # Ray Train's folder names, checkpoint_<local time with microseconds>


def latest_weights(train_storage: str, train_run: str) -> tuple[pafs.FileSystem, list[str]]:
    """The weight files of the Train run's newest checkpoint in storage (none when it has no checkpoint)."""
    fs, base = filesystem_for(train_storage)
    folders = sorted(info.path for info in fs.get_file_info(pafs.FileSelector(f"{base}/{train_run}",
                                                                                allow_not_found=True))
                     if info.type == pafs.FileType.Directory and Path(info.path).name.startswith(CHECKPOINT_PREFIX))
    if not folders:
        return fs, []
    infos = fs.get_file_info(pafs.FileSelector(f"{folders[-1]}/{WEIGHTS_DIR}", allow_not_found=True))
    return fs, sorted(info.path for info in infos
                      if info.type == pafs.FileType.File and info.path.endswith(".safetensors"))


def log_trial_weights(client, run_id: str, train_storage: str, train_run: str) -> list[str]:
    """Log the Train run's kept weights as `weights/<file>` artifacts of the MLflow run; their names."""
    fs, files = latest_weights(train_storage, train_run)
    if not files:
        return []
    names = [Path(path).name for path in files]
    with tempfile.TemporaryDirectory(prefix="rft-weights-") as local:
        for path, name in zip(files, names):  # copied whole, as MLflow logs local files
            pafs.copy_files(path, f"{local}/{name}", source_filesystem=fs,
                            destination_filesystem=pafs.LocalFileSystem())
        client.log_artifacts(run_id, local, WEIGHTS_DIR)
    return names
