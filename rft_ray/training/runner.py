"""In-process runs: the training loop with the Parquet store, kept checkpoints, a paper-style JSON file, and
resume."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from rft_ray.config import RunSpec
from rft_ray.results.files import atomic_write
from rft_ray.results.record import EvalRecord
from rft_ray.results.store import ResultStore, check_run_id
from rft_ray.training.checkpoint import CHECKPOINT_FILE
from rft_ray.training.describe import RunSummary
from rft_ray.training.loop import train_loop
from rft_ray.training.plugins import plugins_from_env
from rft_ray.training.weights import CheckpointKeeper


class StoreObserver:
    """Writes the run's records to the result store (and optionally the paper's JSON) at every point, with the
    run's class names in the file's metadata."""

    def __init__(self, store: ResultStore, run_id: str, json_path: Path | None = None):
        self.store, self.run_id, self.json_path = store, run_id, json_path
        self.class_names: list[str] | None = None

    def on_run_start(self, context) -> None:
        self.class_names = list(context.class_names)

    def records_changed(self, records: list[EvalRecord], checkpoint_dir: Path | None) -> None:
        if self.class_names is None:  # a restored run's records come before on_run_start: keep what the file has
            self.class_names = self.store.class_names(self.run_id)
        self.store.write_run(self.run_id, records, self.class_names)
        if self.json_path is not None:
            write_paper_json(self.json_path, records)


def write_paper_json(path: Path, records: list[EvalRecord]) -> None:
    """The keys the paper's public code wrote, one object per evaluation point, replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps([r.paper_json() for r in records], indent=1))


@dataclass
class RunResult:
    records: list[EvalRecord]
    store: ResultStore
    checkpoint_dir: Path
    resumed: bool
    kept_checkpoints: dict[int, str]  # step -> weights file on store.fs (output.keep_checkpoints)


def run_in_process(spec: RunSpec, *, progress: bool = True, json_path: str | Path | None = None,
                   restart: bool = False, summary: bool = False) -> RunResult:
    """Run one spec here (with the plugins $RFT_PLUGINS names); resumes from the run's checkpoint unless
    `restart`. With `summary`, what the run loaded is printed before its first step (`RunSummary`)."""
    run_id = check_run_id(spec.run_id)
    store = ResultStore(spec.output.results)
    store.ensure_writable()  # fail before training, not after
    checkpoint_dir = Path(spec.output.checkpoints).expanduser() / run_id
    if restart and checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)
    resume = checkpoint_dir if (checkpoint_dir / CHECKPOINT_FILE).is_file() else None
    if resume is None:
        store.forget_derived(run_id)  # attacked and interpolated on weights this run is about to replace
    observers = [StoreObserver(store, run_id, Path(json_path) if json_path else None),
                 CheckpointKeeper(store, run_id, spec.output.keep_checkpoints), *plugins_from_env()]
    if summary:
        observers.insert(0, RunSummary())
    records = train_loop(spec, observers, checkpoint_dir=checkpoint_dir, resume_from=resume, progress=progress)
    return RunResult(records, store, checkpoint_dir, resume is not None, store.checkpoints(run_id))
