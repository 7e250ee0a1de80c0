"""The sweep state only the driver's disk holds, kept in the sweep's folder too.

With `s3://` / `gs://` storage, Optuna's studies and MLflow's runs live in SQLite files on the driver's machine
(`ExperimentSpec.local_dir`: the head node, or a pod), which `ray down`, a lost head or KubeRay's clean-up delete.
So each file is copied into the sweep's folder (`<storage.path>/optuna.db`, `<storage.path>/mlflow.db`) after
every finished or failed trial (`StateCopyCallback`, a Tune callback on the driver) and when the driver stops,
however it stops short of a SIGKILL (`run_sweep`'s `finally`); `--resume` on a machine without them starts from
those copies (`restore_copies`). A copy is a consistent snapshot (SQLite's backup API), never a half-written page.
"""
from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from ray.tune import Callback

from rft_ray.config.experiment import ExperimentSpec
from rft_ray.results.files import filesystem_for, read_bytes, write_bytes
from rft_ray.sweep.console import say, warn


def local_databases(experiment: ExperimentSpec) -> list[Path]:
    """The SQLite files of this sweep that live on the driver's disk only: none when the storage is local (they
    are in the sweep's folder already) or when Optuna and MLflow use servers."""
    if not experiment.is_remote:
        return []
    local = experiment.local_dir()
    found = []
    for uri in (experiment.optuna_storage_url(), experiment.tracking_uri()):
        if uri.startswith("sqlite:///") and Path(uri[len("sqlite:///"):]).parent == local:
            found.append(Path(uri[len("sqlite:///"):]))
    return found


def _snapshot(database: Path) -> bytes:
    """The database as one consistent file, while other connections may be writing it."""
    with tempfile.TemporaryDirectory(prefix="rft-copy-") as scratch:
        target = Path(scratch) / database.name
        source = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=60)
        try:
            copy = sqlite3.connect(target)
            try:
                source.backup(copy)
            finally:
                copy.close()
        finally:
            source.close()
        return target.read_bytes()


def save_copies(storage_root: str, databases: list[Path]) -> list[str]:
    """Copy each existing database into the sweep's folder under its own name; the URIs written. Raises on the
    first failure (the callers warn and go on: a copy missed now is made after the next trial)."""
    filesystem, base = filesystem_for(storage_root)
    written = []
    for database in databases:
        if database.is_file():
            write_bytes(filesystem, f"{base}/{database.name}", _snapshot(database))
            written.append(f"{storage_root}/{database.name}")
    return written


def save_copies_warning(storage_root: str, databases: list[Path], when: str) -> list[str]:
    """`save_copies`, a failure turned into one warning line (the sweep goes on)."""
    try:
        return save_copies(storage_root, databases)
    except Exception as err:  # noqa: BLE001 - any failure: the sweep's results are in storage already
        warn(f"rft sweep: warning: could not copy {', '.join(d.name for d in databases)} to {storage_root} "
             f"{when}: {type(err).__name__}: {err}")
        return []


def restore_copies(storage_root: str, databases: list[Path]) -> list[Path]:
    """Before a resume: each database missing here is fetched from the sweep's folder (a fresh head or pod);
    one present here is kept (this machine ran the sweep, so its file is at least as new as the copy)."""
    filesystem, base = filesystem_for(storage_root)
    restored = []
    for database in databases:
        if database.exists():
            continue
        data = read_bytes(filesystem, f"{base}/{database.name}")
        if data is None:
            continue
        database.parent.mkdir(parents=True, exist_ok=True)
        partial = database.with_name(database.name + ".part")
        partial.write_bytes(data)
        partial.replace(database)
        restored.append(database)
    if restored:
        say(f"rft sweep: resuming from the copies in {storage_root}: {', '.join(d.name for d in restored)} "
            f"restored to {restored[0].parent}")
    return restored


class StateCopyCallback(Callback):
    """After every trial that ends (finished, stopped early or failed), the databases copied into storage. Holds
    only paths, since Tune pickles it with the experiment and a resumed group restores it."""

    def __init__(self, storage_root: str, databases: list[Path]):
        self.storage_root, self.databases = storage_root, [Path(d) for d in databases]

    def _copy(self, trial) -> None:
        save_copies_warning(self.storage_root, self.databases, f"after trial {trial.trial_id}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._copy(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._copy(trial)
