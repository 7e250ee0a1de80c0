"""A sweep's folder and its state file, readable without Ray.

The folder (`storage.path`, local or s3:// / gs://) holds `sweep.json` (state: fingerprint, spec, parent
MLflow run, finished groups), `store/` (Parquet), `tune/<group>/` (Tune experiments, restorable),
`train/<run id>/` (Train runs and their checkpoints), `orphans/`, `.rft-leases/sweep.json` (the lease of the sweep
writing it: one at a time, `SweepFolder.lease`), and locally `mlflow.db`, `optuna.db`, the
summary and `analysis/` (for s3:// / gs:// folders a local results/<name>, uploaded into the folder at the end).

A state whose stored spec has no `search.select_on` is of a sweep started before it existed (rft-ray < 0.2.0):
its trials, searcher and scheduler chose on test (`started_before_select_on`); `--resume` goes on on test.

`settings` in the state are the spec's sections a resume may not silently ignore (`CHANGEABLE`): Tune restores an
interrupted group with the concurrency, retries and callbacks it started with, so `--resume` refuses to go on
with different ones while such a group is left (`changed_settings`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from rft_ray.results.files import filesystem_for, is_uri, read_bytes, write_bytes
from rft_ray.results.lease import Lease

STATE_FILE = "sweep.json"
SUBFOLDERS = ("tune", "train", "store", "orphans")


class SweepError(RuntimeError):
    """A sweep that cannot start or continue as asked (the message says what to do)."""


class SweepInterrupted(SweepError):
    """The sweep stopped before its groups finished; `rft sweep --resume` continues it."""


def normalize_root(root: str) -> str:
    """A sweep folder as given by a user: a URI without its trailing slash, or an absolute local path."""
    return root.rstrip("/") if is_uri(root) else str(Path(root).expanduser().resolve())


class SweepFolder:
    """The sweep's storage: a local folder or an object-store prefix (pyarrow filesystems)."""

    def __init__(self, root: str):
        self.root = root
        self.fs, self.path = filesystem_for(root)
        self.local = not is_uri(root)

    def uri(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _p(self, *parts: str) -> str:
        return "/".join([self.path, *parts])

    def lease(self) -> Lease:
        """One sweep writes this folder at a time (`rft_ray.results.lease`): held from before the state is read
        until the sweep ends."""
        return Lease(self.fs, self.path, "sweep", "rft sweep", f"sweep folder {self.root}")

    def read_state(self) -> dict[str, Any] | None:
        data = read_bytes(self.fs, self._p(STATE_FILE))
        return None if data is None else json.loads(data.decode())

    def write_state(self, state: dict[str, Any]) -> None:
        write_bytes(self.fs, self._p(STATE_FILE), json.dumps(state, indent=1, default=str).encode())

    def clear(self) -> None:
        """Remove a previous sweep's state and results (`--overwrite`); MLflow's history stays."""
        for name in SUBFOLDERS:
            if self.fs.get_file_info(self._p(name)).type == pafs.FileType.Directory:
                self.fs.delete_dir(self._p(name))
        if self.fs.get_file_info(self._p(STATE_FILE)).type == pafs.FileType.File:
            self.fs.delete_file(self._p(STATE_FILE))

    def upload(self, local: Path) -> str | None:
        """Copy a local file or folder (e.g. the summary, analysis/, mlflow.db) into the sweep's folder under
        its own name, replacing what was there; the URI written, or None when `local` does not exist."""
        local = Path(local)
        if not local.exists():
            return None
        target = self._p(local.name)
        if local.is_dir() and self.fs.get_file_info(target).type == pafs.FileType.Directory:
            self.fs.delete_dir(target)
        # local file:// folders are not made by the copy (object stores have no folders to make)
        self.fs.create_dir(target if local.is_dir() else self.path, recursive=True)
        for sub in (p for p in local.rglob("*") if p.is_dir()):
            self.fs.create_dir(f"{target}/{sub.relative_to(local).as_posix()}", recursive=True)
        pafs.copy_files(str(local.resolve()), target, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)
        return self.uri(local.name)

    def move(self, source: str, target_dir: str) -> None:
        self.fs.create_dir(self._p(target_dir), recursive=True)
        self.fs.move(self._p(source), self._p(target_dir, Path(source).name))


def started_before_select_on(state: dict[str, Any]) -> bool:
    """The sweep's stored spec predates search.select_on (its search section has none): it chose on test."""
    search = (state.get("spec") or {}).get("search")
    return isinstance(search, dict) and "select_on" not in search


# What the fingerprint leaves out (a resume may change it) but an interrupted group keeps from its start.
CHANGEABLE = ("resources", "failure", "tracking")


def settings_of(spec: dict[str, Any]) -> dict[str, Any]:
    return {key: spec.get(key) for key in CHANGEABLE}


def changed_settings(before: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted fields whose values differ, e.g. ['resources.max_concurrent_trials: 2 -> 4']."""
    out = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out += changed_settings(old, new, f"{prefix}{key}.")
        elif old != new:
            out.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return out


def read_sweep(root: str) -> tuple[str, SweepFolder, dict[str, Any]]:
    """(normalised root, folder, state) of an existing sweep; SweepError when `root` holds none."""
    root = normalize_root(root)
    folder = SweepFolder(root)
    state = folder.read_state()
    if state is None:
        raise SweepError(f"no sweep in {root}: it has no {STATE_FILE} (give the sweep's storage.path, e.g. "
                         "results/demo)")
    return root, folder, state
