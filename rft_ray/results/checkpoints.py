"""The kept checkpoints of a result store (`output.keep_checkpoints`), listed without loading a tensor.

A run keeps the trainable weights of some evaluation points as `<store>/checkpoints/<run_id>/step-<step>
.safetensors` (`ResultStore.checkpoint_folder`; written by `rft_ray.training.weights.CheckpointKeeper`, loaded
with `rft_ray.training.weights.load_finetuned`). Each file's safetensors metadata names its run, step and the
point's two metrics, so listing reads only each file's header: the 8-byte little-endian header length, then
that many bytes of JSON whose `__metadata__` holds those strings (the safetensors format), on any filesystem
pyarrow reaches and without downloading the tensors. The header also says where each tensor ends, so a file
shorter or longer than its header describes (a copy cut short, a full disk) is known bad without reading it
(`inspect_checkpoint`); listings show bad files as bad and the commands that load them leave them out.

`select_kept_points` is the one answer to "which kept points" for every command that works on them (`rft
attack`, `rft interpolate`, their `--on` and `--runs`).
"""
from __future__ import annotations

import fnmatch
import json
import math
import struct
from dataclasses import dataclass

import pyarrow.fs as pafs

from rft_ray.config.metrics import VALIDATION_COLUMNS, check_select_on
from rft_ray.results.record import EvalRecord
from rft_ray.results.store import CHECKPOINTS_DIR, ResultStore, StoreError, check_run_id

# `--on` of the commands that work on kept points (`select_kept_points`)
POINT_CHOICES = ("frontier", "all", "final")

_MAX_HEADER = 100_000_000  # safetensors' own limit on a header's size
FORMAT = "rft-ray frontier weights 1"  # CheckpointKeeper's files; unchanged since they held frontier points only
# The (clean, PGD) columns of the front a run keeps, per split (`front_split`); a file's metadata names the split
# its run kept on under FRONT_KEY (files kept before it was recorded: test, the only front there was).
_TEST_FRONT = ("test_clean_acc", "pgd_adv_acc")
FRONT_COLUMNS = {"test": _TEST_FRONT, "validation": tuple(VALIDATION_COLUMNS[c] for c in _TEST_FRONT)}
FRONT_KEY = "front"


@dataclass(frozen=True)
class KeptCheckpoint:
    run_id: str
    step: int
    path: str  # on the store's filesystem (`ResultStore.fs`): a local path, or `bucket/key` for object stores
    size_bytes: int
    test_clean_acc: float  # the point's metrics as its run measured them, from the file's metadata
    pgd_adv_acc: float
    strategy: str
    problem: str | None = None  # why the file is bad (`inspect_checkpoint`); None for a good one
    front: str = "test"  # the split whose front its run kept (`front_split`; FRONT_KEY of its metadata)


def checkpoint_metadata(filesystem: pafs.FileSystem, path: str) -> dict[str, str]:
    """The safetensors metadata of the file at `path` (StoreError when it is not a safetensors file)."""
    try:
        with filesystem.open_input_file(path) as handle:
            head = handle.read(8)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 0 < size <= _MAX_HEADER:
                raise StoreError(f"checkpoint {path} is not a safetensors file (header length {size})")
            header = json.loads(handle.read(size))
    except (OSError, ValueError) as err:
        if isinstance(err, StoreError):
            raise
        raise StoreError(f"checkpoint {path} cannot be read as safetensors: {err}") from err
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return dict(metadata) if isinstance(metadata, dict) else {}


def inspect_checkpoint(filesystem: pafs.FileSystem, path: str) -> tuple[dict[str, str], int, str | None]:
    """(metadata, size in bytes, problem) of a kept weights file: problem None when its header parses, it is one
    of CheckpointKeeper's files, and its size is exactly what its header describes (header plus tensor data)."""
    size = filesystem.get_file_info(path).size or 0
    try:
        metadata = checkpoint_metadata(filesystem, path)
        with filesystem.open_input_file(path) as handle:
            length = struct.unpack("<Q", handle.read(8))[0]
            header = json.loads(handle.read(length))
        ends = [int(entry["data_offsets"][1]) for name, entry in header.items() if name != "__metadata__"]
    except (StoreError, OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, struct.error) as err:
        if isinstance(err, StoreError):  # checkpoint_metadata's own words, without the path
            return {}, size, str(err).removeprefix(f"checkpoint {path} ").removeprefix("is ")
        return {}, size, f"not a safetensors file ({type(err).__name__}: {err})"
    described = 8 + length + max(ends, default=0)
    if size < described:
        return metadata, size, f"truncated: {size} bytes, its header describes {described}"
    if size > described:
        return metadata, size, f"{size} bytes, {size - described} more than its header describes"
    if metadata.get("format") != FORMAT:
        return metadata, size, "not a weights file of rft-ray (its metadata names no run spec)"
    return metadata, size, None


def list_checkpoints(store: ResultStore, run_ids: list[str] | None = None) -> list[KeptCheckpoint]:
    """Every kept checkpoint in the store (or of `run_ids`), by run then step, with the metrics its file names;
    a bad file is listed with its `problem` and NaN metrics (never an error for the whole listing)."""
    if run_ids is None:
        infos = store.fs.get_file_info(pafs.FileSelector(f"{store.path}/{CHECKPOINTS_DIR}", allow_not_found=True))
        run_ids = sorted(info.base_name for info in infos
                         if info.type == pafs.FileType.Directory and _is_run_id(info.base_name))
    kept = []
    for run_id in run_ids:
        for step, path in store.checkpoints(run_id).items():
            metadata, size, problem = inspect_checkpoint(store.fs, path)
            try:
                metrics = (float(metadata.get("test_clean_acc", "nan")), float(metadata.get("pgd_adv_acc", "nan")))
                strategy = str((json.loads(metadata.get("spec") or "{}").get("strategy") or {}).get("name", ""))
            except (ValueError, TypeError, AttributeError) as err:
                metrics, strategy = (math.nan, math.nan), ""
                problem = problem or f"its metadata cannot be read ({type(err).__name__}: {err})"
            kept.append(KeptCheckpoint(run_id, step, path, size, *metrics, strategy, problem,
                                       metadata.get(FRONT_KEY, "test")))
    return kept


def _is_run_id(name: str) -> bool:
    try:
        return bool(check_run_id(name))
    except StoreError:
        return False  # a folder someone else put there


def describe_checkpoints(kept: list[KeptCheckpoint]) -> str:
    """One line per kept checkpoint, for commands that list them: run, step, test metrics (or why the file is
    bad), the split whose front its run kept, size, path."""
    return "\n".join(f"{c.run_id:<40} step {c.step:>7}  "
                     + (f"BAD: {c.problem}  " if c.problem else f"clean {c.test_clean_acc:.3f}  PGD "
                        f"{c.pgd_adv_acc:.3f}  {'val' if c.front == 'validation' else 'test'} front  ")
                     + f"{c.size_bytes / 1e6:>9.2f} MB  {c.path}" for c in kept)


def front_split(records: list[EvalRecord], select_on: str = "validation") -> str:
    """The split whose (clean, PGD) front a run keeps (`output.keep_checkpoints: frontier`) and `--on frontier`
    chooses: validation when its selections read validation (search.select_on, the default) and every record
    measured both validation metrics; test when they read test, or validation was not measured (off, no
    validation split, rows written before it was), as every selection of the run would then read test."""
    check_select_on(select_on)
    columns = FRONT_COLUMNS["validation"]
    if select_on == "validation" and records and all(_finite(getattr(r, c)) for r in records for c in columns):
        return "validation"
    return "test"


def front_steps(records: list[EvalRecord], split: str = "test") -> set[int]:
    """The steps of the records on their Pareto front of `split`'s (clean, PGD) metrics (`FRONT_COLUMNS`), the
    front `analysis.frontier.pareto_frontier` draws (this floor cannot import analysis); of points measured
    alike, the earliest, so a later tie never replaces a kept file. Records with a NaN metric are on no front."""
    clean, robust = FRONT_COLUMNS[check_select_on(split)]
    points = [(float(getattr(r, clean)), float(getattr(r, robust)), int(r.step)) for r in records
              if _finite(getattr(r, clean)) and _finite(getattr(r, robust))]
    front, best_rob = set(), -math.inf
    # From the highest accuracy down (ties: most robust first), a point is on the front exactly when it is more
    # robust than every point of at least its accuracy.
    for acc, rob in sorted({(a, b) for a, b, _ in points}, key=lambda p: (-p[0], -p[1])):
        if rob > best_rob:
            front.add((acc, rob))
            best_rob = rob
    first: dict[tuple[float, float], int] = {}
    for acc, rob, step in sorted(points, key=lambda p: p[2]):
        if (acc, rob) in front:
            first.setdefault((acc, rob), step)
    return set(first.values())


def _finite(value) -> bool:
    return value is not None and math.isfinite(float(value))


def kept_front(store: ResultStore, kept: dict[int, str]) -> str:
    """The split whose front a run kept its weights on, as its latest readable kept file names it (test for files
    kept before the split was recorded: test was the only front then)."""
    for step in sorted(kept, reverse=True):
        try:
            return checkpoint_metadata(store.fs, kept[step]).get(FRONT_KEY, "test")
        except StoreError:
            continue  # a bad file: the next one says
    return "test"


@dataclass(frozen=True)
class KeptPoint:
    """One kept evaluation point chosen by `select_kept_points`: its weights file and the run's row of its step
    (None when the run's file has no row of that step)."""

    run_id: str
    step: int
    path: str  # the weights file on the store's filesystem (`ResultStore.fs`)
    record: EvalRecord | None

    @property
    def clean_acc(self) -> float:  # as the run measured the point; NaN without a row
        return float(self.record.test_clean_acc) if self.record else math.nan

    @property
    def pgd_acc(self) -> float:
        return float(self.record.pgd_adv_acc) if self.record else math.nan

    @property
    def pgd_eps(self) -> float:
        return float(self.record.pgd_eps) if self.record else math.nan


def select_kept_points(store: ResultStore, on: str = "frontier", runs: str | None = None
                       ) -> tuple[list[KeptPoint], list[str]]:
    """The kept points of the runs whose id matches the glob `runs` (None: every run), and a note for each point
    asked for that has no kept file. `on`: `frontier`, the kept points on the run's own front of its stored rows,
    on the split its kept files name (`kept_front`: the front `keep_checkpoints: frontier` keeps); `all`,
    every kept file; `final`, the run's last kept step (noted when it is not the run's last evaluated step).
    StoreError for an unknown `on` or a glob no run matches."""
    if on not in POINT_CHOICES:
        raise StoreError(f"--on must be one of {', '.join(POINT_CHOICES)}, got {on!r}")
    every_run = store.run_ids()
    run_ids = [r for r in every_run if fnmatch.fnmatchcase(r, runs)] if runs else every_run
    if runs and not run_ids:
        shown = ", ".join(every_run[:5]) + (", ..." if len(every_run) > 5 else "") or "none"
        raise StoreError(f"--runs {runs!r} matches no run in result store {store.root} (runs there: {shown})")
    points, notes = [], []
    for run_id in run_ids:
        kept, records = store.checkpoints(run_id), store.read_run(run_id)
        by_step = {r.step: r for r in records}
        if not kept:
            notes.append(f"run {run_id}: no kept weights in {store.checkpoint_folder(run_id)} (train with "
                         "output.keep_checkpoints: frontier or all to keep them)")
            continue
        if on == "all":
            wanted = sorted(kept)
        elif on == "final":
            wanted = [max(kept)]
            if records and records[-1].step != wanted[0]:
                notes.append(f"run {run_id}: its last point, step {records[-1].step}, has no kept weights; taking "
                             f"its last kept step, {wanted[0]}")
        else:
            split = kept_front(store, kept)
            wanted = sorted(front_steps(records, split))
        for step in wanted:
            if step not in kept:
                notes.append(f"run {run_id}: step {step} is on its {split} frontier but has no kept weights file "
                             f"(kept: steps {', '.join(map(str, kept))})")
                continue
            problem = inspect_checkpoint(store.fs, kept[step])[2]
            if problem:
                notes.append(f"run {run_id} step {step}: its weights file is bad ({problem}); left out")
                continue
            points.append(KeptPoint(run_id, step, kept[step], by_step.get(step)))
    return points, notes
