"""In-process runs: the training loop with the Parquet store, kept checkpoints, a paper-style JSON file, and
resume; one writer per run id (`ResultStore.lease`), and nothing of an earlier run deleted unless asked.

A run id the store already has results of, without a checkpoint to resume from, is refused (`--restart`
discards it; the message lists what exists). With `--restart` the earlier run's files go only once the new run's
first point is written (`DiscardEarlier`), and what went is printed.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow.fs as pafs

from rft_ray.config import RunSpec
from rft_ray.evaluation.evaluator import verdict_subset
from rft_ray.results.files import atomic_write, check_file_destination, check_folder
from rft_ray.results.lease import Lease, holding
from rft_ray.results.record import EvalRecord
from rft_ray.results.store import ResultStore, StoreError, check_run_id
from rft_ray.results.verdicts import RunVerdicts
from rft_ray.training.checkpoint import CHECKPOINT_FILE
from rft_ray.training.describe import RunSummary
from rft_ray.training.loop import train_loop
from rft_ray.training.plugins import plugins_from_env
from rft_ray.training.weights import CheckpointKeeper


class StoreObserver:
    """Writes the run's records to the result store (and optionally the paper's JSON) at every point, with the
    run's class names and head (`head_init`) in the file's metadata, after `guard` (a lease's `check`) says this process still holds the
    run."""

    def __init__(self, store: ResultStore, run_id: str, json_path: Path | None = None,
                 guard: Callable[[], None] | None = None):
        self.store, self.run_id, self.json_path, self.guard = store, run_id, json_path, guard
        self.class_names: list[str] | None = None
        self.head_init: str | None = None
        self.verdicts: RunVerdicts | None = None  # per-image verdicts of the run's points (verdicts_measured)

    def on_run_start(self, context) -> None:
        self.class_names = list(context.class_names)
        self.head_init = getattr(context.model, "head_init", None)

    def verdicts_measured(self, step: int, verdicts: dict, subsets: dict) -> None:
        """Keep a point's per-image verdicts until `records_changed` writes them beside its record."""
        kept = self._verdicts()
        kept.points[int(step)] = dict(verdicts)
        kept.metric_subsets.update({metric: verdict_subset(metric) for metric in verdicts})
        kept.subsets.update(subsets)

    def _verdicts(self) -> RunVerdicts:
        """The run's verdicts so far: a resumed run starts from what its sidecar holds."""
        if self.verdicts is None:
            self.verdicts = self.store.read_verdicts(self.run_id) or RunVerdicts({}, {}, {})
        return self.verdicts

    def records_changed(self, records: list[EvalRecord], checkpoint_dir: Path | None) -> None:
        if self.guard is not None:
            self.guard()
        if self.class_names is None:  # a restored run's records come before on_run_start: keep what the file has
            self.class_names = self.store.class_names(self.run_id)
            self.head_init = self.store.head_init(self.run_id)
        kept = self._verdicts()
        steps = {record.step for record in records}
        kept.points = {step: v for step, v in kept.points.items() if step in steps}  # a resumed run's later ones go
        if kept.points:  # first, so that every row the run's file shows has its verdicts
            self.store.write_verdicts(self.run_id, kept)
        self.store.write_run(self.run_id, records, self.class_names, self.head_init)
        if self.json_path is not None:
            write_paper_json(self.json_path, records)


def write_paper_json(path: Path, records: list[EvalRecord]) -> None:
    """The keys the paper's public code wrote, one object per evaluation point, replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps([r.paper_json() for r in records], indent=1))


class DiscardEarlier:
    """`--restart`: once the new run's first point is in the store (this observer follows `StoreObserver`), deletes
    what the earlier run of the id left (kept weights, attack results, interpolated files) and says so."""

    def __init__(self, store: ResultStore, run_id: str, relatives: list[str], log: Callable[[str], None]):
        self.store, self.run_id, self.pending, self.log = store, run_id, list(relatives), log

    def records_changed(self, records: list[EvalRecord], checkpoint_dir: Path | None) -> None:
        if self.pending:
            deleted, self.pending = self.store.delete(self.pending), []
            if deleted:
                self.log(f"rft run --restart: deleted what run {self.run_id} measured before: {', '.join(deleted)}")


@dataclass
class RunResult:
    records: list[EvalRecord]
    store: ResultStore
    checkpoint_dir: Path
    resumed: bool
    kept_checkpoints: dict[int, str]  # step -> weights file on store.fs (output.keep_checkpoints)


def run_in_process(spec: RunSpec, *, progress: bool = True, json_path: str | Path | None = None,
                   restart: bool = False, summary: bool = False, log: Callable[[str], None] = print) -> RunResult:
    """Run one spec here (with the plugins $RFT_PLUGINS names): resumes from the run's checkpoint; refuses a run
    id with results but no checkpoint unless `restart`, which trains from step 0 and replaces what the earlier run
    left once the new run's first point is written (module docstring). Every destination is checked, and the run's
    leases taken, before any training. With `summary`, what the run loaded is printed before its first step
    (`RunSummary`)."""
    run_id = check_run_id(spec.run_id)
    store = ResultStore(spec.output.results)
    store.ensure_writable()  # fail before training, not after
    checkpoints = check_folder(spec.output.checkpoints, "output.checkpoints")
    checkpoint_dir = check_folder(checkpoints / run_id, "output.checkpoints")
    json_file = check_file_destination(json_path, "--json") if json_path else None
    folder_lease = Lease(pafs.LocalFileSystem(), str(checkpoints), f"run-{run_id}", "rft run",
                         f"run {run_id}'s checkpoint folder {checkpoint_dir}")
    with holding([store.lease(run_id, "rft run"), folder_lease]) as (lease, _):
        checkpoint = checkpoint_dir / CHECKPOINT_FILE
        resume = checkpoint_dir if checkpoint.is_file() and not restart else None
        rows, files = _earlier(store, run_id)
        observers = [RunSummary()] if summary else []
        observers.append(StoreObserver(store, run_id, json_file, lease.check))
        if restart and (rows is not None or files or checkpoint.is_file()):
            replaced = [f"{run_id}.parquet ({len(rows)} rows: replaced)"] if rows is not None else []
            replaced += [f"{checkpoint} (replaced)"] if checkpoint.is_file() else []
            log(f"rft run --restart: run {run_id} starts again from step 0; once its first point is written, this "
                f"deletes: {', '.join(replaced + files)} (in {store.root})")
            observers.append(DiscardEarlier(store, run_id, files, log))
        elif resume is None and (rows is not None or files):
            raise StoreError(_refusal(store, run_id, checkpoint_dir, rows, files))
        observers += [CheckpointKeeper(store, run_id, spec.output.keep_checkpoints), *plugins_from_env()]
        records = train_loop(spec, observers, checkpoint_dir=checkpoint_dir, resume_from=resume, progress=progress)
        return RunResult(records, store, checkpoint_dir, resume is not None, store.checkpoints(run_id))


def _earlier(store: ResultStore, run_id: str) -> tuple[list[EvalRecord] | None, list[str]]:
    """What the store holds of the run: its rows (None without a file), and its other files (kept weights, attack
    results, interpolated files) relative to the store's root."""
    has_file = store.fs.get_file_info(store.run_path(run_id)).type == pafs.FileType.File
    derived = store.derived_files(run_id)
    return (store.read_run(run_id) if has_file else None), derived["checkpoints"] + derived["attacks"] + \
        derived["interpolated"]


def _refusal(store: ResultStore, run_id: str, checkpoint_dir: Path, rows: list[EvalRecord] | None,
             files: list[str]) -> str:
    steps = [r.step for r in rows or []]
    held = [f"{run_id}.parquet with {len(steps)} rows" + (f" (steps {min(steps)} to {max(steps)})" if steps else "")
            ] if rows is not None else []
    return (f"run {run_id} already has results in result store {store.root}: {'; '.join(held + _compact(files))}; "
            f"but there is no checkpoint to resume from in {checkpoint_dir}. To resume it, point --checkpoints at the "
            f"folder that holds {run_id}/checkpoint.pt (output.checkpoints); to discard it and train again from step "
            "0, add --restart (it lists what it deletes, and deletes nothing before the new run's first point is "
            "written)")


def _compact(files: list[str]) -> list[str]:
    """['checkpoints/r/step-0.safetensors', 'checkpoints/r/step-20.safetensors'] -> ['checkpoints/r/step-{0,20}
    .safetensors']: files that differ in their step only, shown once."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name in files:
        match = re.match(r"^(.*(?:step-|wise-step))(\d+)(\.\w+)$", name)
        prefix, number, suffix = match.groups() if match else (name, "", "")
        groups.setdefault((prefix, suffix), []).append(number)
    return [f"{prefix}{numbers[0]}{suffix}" if len(numbers) == 1 else f"{prefix}{{{','.join(numbers)}}}{suffix}"
            for (prefix, suffix), numbers in groups.items()]
