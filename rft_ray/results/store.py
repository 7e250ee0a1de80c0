"""Parquet result store: one file per run, replaced atomically at each evaluation point.

Each run owns `<root>/<run_id>.parquet` and rewrites it whole (a run has at most a few hundred
rows), written to a hidden temporary name and renamed into place, so readers only ever see complete
files, concurrent runs never touch each other's rows, and a rerun or resumed run replaces its rows
instead of appending duplicates. `root` is a local path or any URI pyarrow's filesystems take
(`s3://bucket/prefix`, `gs://...`); object stores replace an object atomically on write.
"""
from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rft_ray.config.metrics import OOD_PREFIX
from rft_ray.results.attacks import ATTACKS_DIR, AttackError, join_attack_results, read_attack_results
from rft_ray.results.files import WriteError, atomic_path, filesystem_for, folder_problem, is_uri
from rft_ray.results.lease import Lease
from rft_ray.results.record import REQUIRED_COLUMNS, EvalRecord, arrow_schema
from rft_ray.results.verdicts import (
    ATTACK_VERDICTS_DIR,
    VERDICTS_DIR,
    RunVerdicts,
    SubsetFiles,
    named_subsets,
    read_verdicts,
    store_identities,
    verdicts_path,
    write_verdicts,
)

CLASS_NAMES_KEY = "rft.class_names"  # a run file's schema metadata: its class names, a JSON list
HEAD_INIT_KEY = "rft.head_init"  # and which head the run started from: "fresh" or "pretrained" (model.keep_head)
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,199}$")
# Kept weights of evaluation points (`output.keep_checkpoints`): <root>/checkpoints/<run_id>/step-<step>.safetensors
CHECKPOINTS_DIR = "checkpoints"
_CHECKPOINT_FILE = re.compile(r"^step-(\d+)\.safetensors$")
# `rft interpolate`'s WiSE-FT rows: a result store of its own, <root>/interpolated/<run_id>.wise-step<step>.parquet
# (`analysis.wise` reads it)
INTERPOLATED_DIR = "interpolated"
WISE_STEP_SUFFIX = re.compile(r"\.wise-step(\d+)$")


class StoreError(ValueError):
    """A result store that cannot be read or written as asked."""


class StoreWriteError(StoreError, WriteError):
    """Writing a run's file failed (disk full, no permission, network); its previous version is intact."""


def check_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id or ""):
        raise StoreError(
            f"run id {run_id!r} is not allowed: use 1-200 letters, digits, '_', '.', '=' or '-', "
            "starting with a letter or digit (it names a file in the result store)"
        )
    return run_id


class ResultStore:
    def __init__(self, root: str | os.PathLike):
        root = str(root)
        self.fs, self.path = filesystem_for(root)
        self.local = not is_uri(root)
        self.root = root
        # the subset identities its verdicts name, kept in this store so that it reads alone (`rft interpolate`'s
        # store inside a result store keeps its own copies; `rft_ray.results.verdict_subsets`)
        self.identities: SubsetFiles = store_identities(self.fs, self.path)

    def run_path(self, run_id: str) -> str:
        return f"{self.path}/{check_run_id(run_id)}.parquet"

    def checkpoint_folder(self, run_id: str) -> str:
        """Where the run's kept weights live, one `step-<step>.safetensors` per kept evaluation point."""
        return f"{self.path}/{CHECKPOINTS_DIR}/{check_run_id(run_id)}"

    def checkpoint_path(self, run_id: str, step: int) -> str:
        return f"{self.checkpoint_folder(run_id)}/step-{int(step)}.safetensors"

    def checkpoints(self, run_id: str) -> dict[int, str]:
        """The run's kept weight files by step (paths on `self.fs`); empty when it kept none."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.checkpoint_folder(run_id), allow_not_found=True))
        except OSError as err:
            raise StoreError(f"cannot list the checkpoints of run {run_id!r} in {self.root!r}: {err}") from err
        found = {}
        for info in infos:
            match = _CHECKPOINT_FILE.match(Path(info.path).name)
            if info.type == pafs.FileType.File and match:
                found[int(match.group(1))] = info.path
        return dict(sorted(found.items()))

    def derived_files(self, run_id: str) -> dict[str, list[str]]:
        """The files measured on the run's weights, beside its own file, as paths relative to the store's root:
        "checkpoints" (its kept weights), "attacks" (`rft attack`'s results and their per-image verdicts) and
        "interpolated" (`rft interpolate`'s files and theirs); the lists are empty where it has none."""
        check_run_id(run_id)
        found: dict[str, list[str]] = {"checkpoints": [], "attacks": [], "interpolated": []}
        prefix = f"{self.path}/"
        found["checkpoints"] = [path[len(prefix):] for path in self.checkpoints(run_id).values()]
        for attacks in (f"{ATTACKS_DIR}/{run_id}.parquet", f"{ATTACK_VERDICTS_DIR}/{run_id}.parquet"):
            if self.fs.get_file_info(prefix + attacks).type == pafs.FileType.File:
                found["attacks"].append(attacks)
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(prefix + INTERPOLATED_DIR, allow_not_found=True))
        except OSError as err:
            raise StoreError(f"cannot list {self.root}/{INTERPOLATED_DIR}: {err}") from err
        for info in infos:
            stem = Path(info.path).name[: -len(".parquet")] if info.path.endswith(".parquet") else ""
            match = WISE_STEP_SUFFIX.search(stem)
            if info.type == pafs.FileType.File and match and stem[: match.start()] == run_id:
                found["interpolated"].append(f"{INTERPOLATED_DIR}/{Path(info.path).name}")
                measured = f"{INTERPOLATED_DIR}/{VERDICTS_DIR}/{Path(info.path).name}"  # its per-image verdicts
                if self.fs.get_file_info(prefix + measured).type == pafs.FileType.File:
                    found["interpolated"].append(measured)
        found["interpolated"].sort()
        return found

    def forget_derived(self, run_id: str) -> list[str]:
        """Delete what was measured on the run's earlier weights: its attack results and interpolated files (a
        trial trained again from scratch under the same id would otherwise be shown the old numbers; its kept
        weights are `CheckpointKeeper`'s to replace). Returns the deleted paths, relative to the root."""
        derived = self.derived_files(run_id)
        return self.delete(derived["attacks"] + derived["interpolated"])

    def delete(self, relatives: list[str]) -> list[str]:
        """Delete these files (paths relative to the root); returns those that were there."""
        deleted = []
        for relative in relatives:
            try:
                self.fs.delete_file(f"{self.path}/{relative}")
            except FileNotFoundError:
                continue
            except OSError as err:
                raise StoreError(f"cannot delete {self.root}/{relative}: {err}") from err
            deleted.append(relative)
        return deleted

    def lease(self, run_id: str, purpose: str) -> Lease:
        """The lease every command writing anything of the run holds (`rft run`, `rft attack`, `rft interpolate`;
        `rft_ray.results.lease`)."""
        return Lease(self.fs, self.path, f"run-{check_run_id(run_id)}", purpose,
                     f"run {run_id} in result store {self.root}")

    def must_exist(self) -> "ResultStore":
        """The store, when it is there to read (a local folder; an object store's prefix always is)."""
        if self.local and self.fs.get_file_info(self.path).type != pafs.FileType.Directory:
            raise StoreError(f"result store {self.root} does not exist (or is not a folder)")
        return self

    def ensure_writable(self, sub: str = "") -> None:
        """Fail before any work if the store (or its folder `sub`, e.g. `attacks`) cannot be written: a file
        where the folder must be, missing permission, a bad URI. Makes no folder."""
        target, shown = (f"{self.path}/{sub}", f"{self.root}/{sub}") if sub else (self.path, self.root)
        if isinstance(self.fs, pafs.LocalFileSystem):
            problem = folder_problem(target)
            if problem:
                raise StoreError(f"result store {self.root!r} is not writable: {problem}")
            return
        probe = f"{target}/.probe-{uuid.uuid4().hex}"
        try:
            with self.fs.open_output_stream(probe) as out:  # an object store has no folders to make
                out.write(b"ok")
            self.fs.delete_file(probe)
        except OSError as err:
            raise StoreError(f"result store {self.root!r} is not writable ({shown}: {err})") from err

    def write_run(self, run_id: str, records: Iterable[EvalRecord], class_names: list[str] | None = None,
                  head_init: str | None = None, metadata: dict[str, str] | None = None) -> None:
        """Replace the run's file with `records`; `class_names` (the model's outputs, in order), `head_init`
        (which head the run started from) and `metadata` (more "rft."-prefixed keys) go into the file's metadata
        (`class_names`, `head_init` and `file_metadata` read them)."""
        rows = [record.to_row() for record in records]
        if any(row["run_id"] != run_id for row in rows):
            raise StoreError(f"records written under run id {run_id!r} carry another run id")
        columns = dict.fromkeys(key for row in rows for key in row)
        table = pa.Table.from_pylist(rows, schema=arrow_schema(columns)) if rows else pa.table({})
        kept = {CLASS_NAMES_KEY: json.dumps(list(class_names)) if class_names is not None else None,
                HEAD_INIT_KEY: head_init, **(metadata or {})}
        if any(value is not None for value in kept.values()):
            table = table.replace_schema_metadata({k: v for k, v in kept.items() if v is not None})
        final = self.run_path(run_id)
        try:
            self.fs.create_dir(self.path, recursive=True)
            if not self.local:
                pq.write_table(table, final, filesystem=self.fs)  # an object is replaced whole, or not at all
                return
            with atomic_path(final) as temporary:  # readers see the old file or the new one
                pq.write_table(table, str(temporary), filesystem=self.fs)
        except OSError as err:
            cause = err.__cause__ if isinstance(err, WriteError) and isinstance(err.__cause__, OSError) else err
            raise StoreWriteError(f"cannot write result file {final} ({cause.strerror or cause}); its previous "
                                  "version, if any, is intact and readers are unaffected", cause.errno) from err

    def write_verdicts(self, run_id: str, verdicts: RunVerdicts, folder: str = VERDICTS_DIR) -> None:
        """Replace the run's per-image verdicts (`rft_ray.results.verdicts`; `rft attack`'s in
        ATTACK_VERDICTS_DIR), atomically, before its file."""
        try:
            write_verdicts(self.fs, self.path, check_run_id(run_id), verdicts, folder, self.identities)
        except OSError as err:
            raise StoreWriteError(f"cannot write the verdicts of run {run_id} in {self.root} ({err}); their previous "
                                  "version, if any, is intact", getattr(err, "errno", None)) from err

    def share_identities(self, relatives: list[str], target: "ResultStore") -> None:
        """Put into `target`'s subset identities those that the verdict files among `relatives` (paths relative
        to the root, e.g. `derived_files`') name: before those files move or are copied there."""
        for relative in relatives:
            if relative.endswith(".parquet") and relative.split("/")[-2:-1] == [VERDICTS_DIR]:
                path = f"{self.path}/{relative}"
                source, destination = self._identities_for(relative), target._identities_for(relative)
                for fingerprint, n in named_subsets(self.fs, path).values():
                    destination.put(source.get(fingerprint, n, path))

    def _identities_for(self, relative: str) -> SubsetFiles:
        """The subset identities a sidecar at `relative` names: `rft interpolate`'s store keeps its own; every
        other sidecar (the runs', `rft attack`'s) names this store's."""
        if relative.startswith(f"{INTERPOLATED_DIR}/"):
            return ResultStore(f"{self.root}/{INTERPOLATED_DIR}").identities
        return self.identities

    def has_verdicts(self, run_id: str) -> bool:
        return self.fs.get_file_info(verdicts_path(self.path, check_run_id(run_id))).type == pafs.FileType.File

    def read_verdicts(self, run_id: str, folder: str = VERDICTS_DIR) -> RunVerdicts | None:
        """The run's per-image verdicts (in `folder`); None for a run written before they were kept."""
        return read_verdicts(self.fs, self.path, check_run_id(run_id), folder, self.identities)

    def class_names(self, run_id: str) -> list[str] | None:
        """The run's class names in the order of its model's outputs, from its file's metadata; None for a run
        without a file, or written before they were kept."""
        value = self._metadata(run_id).get(CLASS_NAMES_KEY.encode())
        return list(json.loads(value)) if value else None

    def head_init(self, run_id: str) -> str | None:
        """Which head the run started from, from its file's metadata: "fresh" (a new, seeded classifier) or
        "pretrained" (`model.keep_head`); None for a run without a file, or written before it was kept (those
        loaded a pretrained classifier whenever its class count matched the task's)."""
        value = self._metadata(run_id).get(HEAD_INIT_KEY.encode())
        return value.decode() if value else None

    def file_metadata(self, run_id: str) -> dict[str, str]:
        """Every key of the run file's metadata (empty for a run without a file)."""
        return {k.decode(): v.decode() for k, v in self._metadata(run_id).items()}

    def _metadata(self, run_id: str) -> dict[bytes, bytes]:
        path = self.run_path(run_id)
        try:
            with self.fs.open_input_file(path) as handle:
                return pq.read_schema(handle).metadata or {}
        except FileNotFoundError:
            return {}
        except (OSError, pa.ArrowInvalid) as err:
            raise StoreError(f"result file {path} is not readable Parquet: {err}") from err

    def run_ids(self) -> list[str]:
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        except OSError as err:
            raise StoreError(f"cannot list result store {self.root!r}: {err}") from err
        names = [Path(info.path).name for info in infos if info.type == pafs.FileType.File]
        return sorted(n[: -len(".parquet")] for n in names if n.endswith(".parquet") and not n.startswith((".", "_")))

    def read_run(self, run_id: str) -> list[EvalRecord]:
        path = self.run_path(run_id)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return []
        table = self._read_file(path)
        return [EvalRecord.from_row(row) for row in table.to_pylist()] if table.num_rows else []

    def read(self) -> pa.Table:
        """Every run's rows as one table; OOD columns of runs that lack them are null. The columns `rft attack`
        stored beside the runs (`rft_ray.results.attacks`) are joined on by (run_id, step), null where a point
        was not attacked."""
        tables = []
        run_ids = self.run_ids()
        for run_id in run_ids:
            try:
                tables.append(self._read_file(self.run_path(run_id)))
            except FileNotFoundError:
                continue  # moved away (e.g. to orphans/) between listing and reading
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return pa.table({})
        try:
            table = pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise StoreError(f"the result files in {self.root} do not combine into one table: {err}") from err
        table = table.sort_by([("run_id", "ascending"), ("step", "ascending")])
        try:
            attacked = read_attack_results(self.fs, self.path, run_ids)
            return table if attacked is None else join_attack_results(table, attacked)
        except (AttackError, pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise StoreError(f"the attack results in {self.root}/{ATTACKS_DIR} cannot be joined to its runs' "
                             f"rows: {err}") from err

    def _read_file(self, path: str) -> pa.Table:
        """One file, read through one open handle: a writer replacing it meanwhile cannot mix two versions."""
        try:
            with self.fs.open_input_file(path) as handle:
                table = pq.read_table(handle)
        except FileNotFoundError:
            raise
        except (OSError, pa.ArrowInvalid) as err:
            raise StoreError(f"result file {path} is not readable Parquet: {err}") from err
        if table.num_rows or table.num_columns:
            check_schema(table.schema, path)
        return table


def check_schema(schema: pa.Schema, path: str) -> None:
    """A result file has every EvalRecord column with its type; the error names the file and the columns."""
    problems, missing = [], []
    for name, family in REQUIRED_COLUMNS.items():
        index = schema.get_field_index(name)
        if index < 0:
            missing.append(f"no column {name!r}")
            continue
        tp = schema.field(index).type
        ok = {"string": pa.types.is_string(tp) or pa.types.is_large_string(tp),
              "integer": pa.types.is_integer(tp),
              "number": pa.types.is_floating(tp) or pa.types.is_integer(tp) or pa.types.is_null(tp)}[family]
        if not ok:
            problems.append(f"column {name!r} is {tp}, not {family}")
    for field in schema:
        if field.name.startswith(OOD_PREFIX) and not (pa.types.is_floating(field.type) or pa.types.is_null(field.type)):
            problems.append(f"column {field.name!r} is {field.type}, not number")
    problems += missing
    if problems:
        shown = "; ".join(problems[:6]) + (f"; ... ({len(problems)} problems)" if len(problems) > 6 else "")
        raise StoreError(f"result file {path} is not a result file of this platform (wrong schema: {shown})")
