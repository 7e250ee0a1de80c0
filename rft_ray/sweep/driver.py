"""`rft sweep`: one Ray Tune search per strategy x dataset, each trial a Ray Train run of the one loop.

    experiment spec ──► groups (strategy x dataset), one after another (sweep.group)
                          │  Tuner(trial_driver): OptunaSearch or a grid, optional ASHA (sweep.search)
                          ▼
           trial_driver (Tune, 0 CPU) ──► TorchTrainer ──► train_worker (sweep.trial; 1 worker: cpus_per_trial,
                                                              │ GPUs if any)      every evaluation point
                          ┌───────────────────────────────────┼──────────────────────────┐
                          ▼                                   ▼                          ▼
              Parquet store <storage>/store        ray.train.report + checkpoint   MLflow child run (driver
              (file rewritten whole per point)     ──► TuneReportCallback ──► Tune  callback, rft_ray.tracking)

The sweep's folder and state are described in `rft_ray.sweep.state`. `--resume` skips finished groups and
restores the others with `Tuner.restore` (searcher state included).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from rft_ray.config import SpecError
from rft_ray.config.experiment import ExperimentSpec
from rft_ray.config.metrics import optimistic_warning
from rft_ray.results.store import ResultStore
from rft_ray.sweep.console import LOG_FILE, GroupProgress, SweepConsole, say, warn
from rft_ray.sweep.group import run_group
from rft_ray.sweep.report import write_analysis, write_summary
from rft_ray.sweep.inputs import check_head_inputs
from rft_ray.sweep.resources import ensure_ray, resolve_resources
from rft_ray.sweep.results import GroupResult, SweepResult
from rft_ray.sweep.search import unjudged_rungs
from rft_ray.sweep.state import (
    STATE_FILE,
    SweepError,
    SweepFolder,
    SweepInterrupted,
    changed_settings,
    settings_of,
    started_before_select_on,
)


def run_sweep(experiment: ExperimentSpec, resume: bool = False, overwrite: bool = False,
              address: str | None = None, spec_path: str | None = None, analyze: bool = True,
              cluster_config: str | None = None, verbose: bool = False, dashboard: bool | None = None) -> SweepResult:
    """Run (or with `resume`, continue) every group of the experiment; see the module docstring. Ray's, Tune's
    and the trials' own output go to `<local dir>/sweep.log` (and to the terminal too when `verbose`)."""
    began = time.time()
    folder = SweepFolder(experiment.storage_root)
    with folder.lease():  # one sweep per folder, from before its state is read (rft_ray.results.lease)
        try:
            return _run_held(experiment, folder, resume, overwrite, address, spec_path, analyze, cluster_config,
                             verbose, dashboard, began)
        finally:  # however the driver stops (but SIGKILL): the head's disk may go next (rft_ray.sweep.state_copies)
            _copy_state(experiment)


def _copy_state(experiment: ExperimentSpec) -> None:
    databases = _local_databases(experiment)
    if databases and any(d.is_file() for d in databases):
        from rft_ray.sweep.state_copies import save_copies_warning

        written = save_copies_warning(experiment.storage_root, databases, "as the sweep stopped")
        if written:
            say(f"rft sweep: copied {', '.join(Path(u).name for u in written)} to {experiment.storage_root}")


def _local_databases(experiment: ExperimentSpec) -> list[Path]:
    """Optuna's and MLflow's SQLite files on this machine's disk only (s3:// / gs:// storage), else []."""
    if not experiment.is_remote:
        return []
    from rft_ray.sweep.state_copies import local_databases

    return local_databases(experiment)


def _run_held(experiment: ExperimentSpec, folder: SweepFolder, resume: bool, overwrite: bool, address: str | None,
              spec_path: str | None, analyze: bool, cluster_config: str | None, verbose: bool,
              dashboard: bool | None, began: float) -> SweepResult:
    rungs_line = unjudged_rungs(experiment)  # refused before the sweep's folder is touched
    state = _open_state(experiment, folder, resume, overwrite)
    experiment = _selection_as_started(experiment, state)
    if rungs_line:
        warn(rungs_line)
    if resume and _local_databases(experiment):  # a fresh head or pod: Optuna's and MLflow's from their copies
        from rft_ray.sweep.state_copies import restore_copies

        restore_copies(experiment.storage_root, _local_databases(experiment))
    ResultStore(experiment.store_root).ensure_writable()
    check_head_inputs(experiment)
    _warn_default_length(experiment)

    with SweepConsole(experiment.local_dir() / LOG_FILE, verbose).capturing():
        started_ray = ensure_ray(address, dashboard)
        try:
            resources = resolve_resources(experiment, cluster_config)
            tracking = _start_tracking(experiment, state, spec_path)
            state["parent_run_id"] = tracking.parent or state.get("parent_run_id")
            folder.write_state(state)
            say(f"rft sweep {experiment.name}: {len(experiment.groups)} group(s) (strategy x dataset), "
                f"{experiment.search.mode} search, up to {resources['max_concurrent_trials']} trial(s) at once, "
                f"{_per_trial(resources)}; "
                f"results in {experiment.storage_root}")
            results = _run_groups(experiment, state, folder, resources, tracking, spec_path)
            return _finish(experiment, state, folder, results, tracking, began, spec_path, analyze)
        finally:
            if started_ray:
                import ray

                ray.shutdown()


def _warn_default_length(experiment: ExperimentSpec) -> None:
    """One line when the spec gives neither steps nor epochs (each trial trains one epoch), with the steps that
    makes per dataset where its size can be counted here (`rft_ray.cost.counts`)."""
    from rft_ray.config import RunSpec

    runs = {group.dataset: RunSpec.from_dict(group.run) for group in experiment.groups}
    runs = {name: run for name, run in runs.items() if run.training.length_defaulted}
    if not runs:
        return
    from rft_ray.cost.counts import split_sizes

    counted = []
    for name, run in runs.items():
        try:
            train = split_sizes(run).train
        except (ValueError, OSError):  # not countable on this machine: each trial's sweep.log lines say it
            continue
        counted.append(f"{max(1, train // min(run.training.batch_size, train))} steps on {name}")
    warn("rft sweep: warning: the spec gives neither training.steps nor training.epochs, so each trial trains 1 "
         "epoch" + (f" = {', '.join(counted)}" if counted else "") + " (set base.training.steps or epochs)")


def _open_state(experiment: ExperimentSpec, folder: SweepFolder, resume: bool, overwrite: bool) -> dict[str, Any]:
    """The sweep's state: the saved one to resume, or a new one (a previous sweep's only with `overwrite`)."""
    state = folder.read_state()
    if resume:
        if state is None:
            raise SweepError(f"nothing to resume: no {STATE_FILE} in {experiment.storage_root}; run without --resume")
        if state.get("fingerprint") != experiment.fingerprint(before_select_on=started_before_select_on(state)):
            raise SpecError(f"the spec changed since the sweep in {experiment.storage_root} started (name, base, "
                            "strategies, datasets or search differ); resume with the same spec, or start anew with "
                            "--overwrite or another storage.path")
        _check_resumable_settings(experiment, state, folder)
        return state
    stray = state is None and bool(folder.fs.get_file_info(pafs.FileSelector(folder.path + "/tune",
                                                                              allow_not_found=True)))
    if stray and not overwrite:  # Tune would restore it as this sweep's own (and unpickle its tuner.pkl)
        raise SweepError(f"{folder.uri('tune')} holds a Tune experiment but there is no {STATE_FILE}: another "
                         "sweep's, or one that stopped before saving its state; start anew with --overwrite (it "
                         "deletes tune/, train/, store/ and orphans/ there), or use another storage.path")
    if state is not None or stray:
        if not overwrite:
            raise SweepError(f"{experiment.storage_root} already holds a sweep ({STATE_FILE}); continue it with "
                             "--resume, or start again with --overwrite (its results are replaced)")
        folder.clear()
    spec = experiment.to_dict()
    return {"name": experiment.name, "fingerprint": experiment.fingerprint(), "spec": spec,
            "settings": settings_of(spec), "groups": {}, "parent_run_id": None,
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def _selection_as_started(experiment: ExperimentSpec, state: dict[str, Any]) -> ExperimentSpec:
    """The experiment a sweep goes on with: a sweep started before search.select_on existed resumes entirely on
    test, as it started (as Tune restores a searcher with the metric it began with): its Optuna study, restored
    searcher and scheduler read test keys, its trials report them and its rows have no validation metrics, so
    new trials choosing on validation would mix two splits in one search. One line warns it is optimistic."""
    if not started_before_select_on(state) or experiment.search.select_on == "test":
        return experiment
    import dataclasses
    import warnings

    warn("rft sweep: warning: this sweep was started before search.select_on existed (rft-ray < 0.2.0) and chose "
         f"on test, so it resumes on test to the end; {optimistic_warning('search.select_on')}")
    with warnings.catch_warnings():  # the spec's own warnings were shown when it was read
        warnings.simplefilter("ignore")
        return dataclasses.replace(experiment, search=dataclasses.replace(experiment.search, select_on="test"))


def _check_resumable_settings(experiment: ExperimentSpec, state: dict[str, Any], folder: SweepFolder) -> None:
    """Settings changed since the sweep started apply to the groups not started yet; a group Tune restores keeps
    its own, so with one left the resume is refused, naming what changed. Accepted settings become the state's."""
    now = settings_of(experiment.to_dict())
    changed = changed_settings(state.get("settings") or now, now)
    if not changed:
        return
    from ray import tune

    left = [g.name for g in experiment.groups if state["groups"].get(g.name, {}).get("status") != "done"
            and tune.Tuner.can_restore(folder.uri("tune", g.name))]
    if left:
        raise SweepError(f"--resume would restore the interrupted group {left[0]} with the settings it started with, "
                         f"not the changed {'; '.join(changed)}; resume with those settings (they apply to groups not "
                         "started yet only when no group is half done), or start anew with --overwrite")
    warn(f"rft sweep: resuming with changed settings for the groups not started yet: {'; '.join(changed)}")
    state["settings"] = now


def _run_groups(experiment: ExperimentSpec, state: dict[str, Any], folder: SweepFolder, resources: dict[str, Any],
                tracking: "_Tracking", spec_path: str | None) -> list[GroupResult]:
    """Every group, one after another; finished ones (from a resumed state) are skipped."""
    groups, results = experiment.groups, []
    for index, group in enumerate(groups, 1):
        saved = state["groups"].get(group.name)
        if saved and saved["status"] == "done":
            say(f"rft sweep: [{index}/{len(groups)}] {group.name}: finished before, skipped")
            results.append(GroupResult.from_dict(saved))
            continue
        say(f"rft sweep: [{index}/{len(groups)}] {group.name}")
        trials = experiment.trials(group)
        callbacks = [GroupProgress(group.name, index, len(groups), trials, experiment.search.select_on)]
        if tracking.active:
            from rft_ray.tracking.callback import MLflowTrialCallback

            callbacks.append(MLflowTrialCallback(tracking.tracker.uri, tracking.experiment_id, tracking.parent,
                                                 group, store_root=experiment.store_root))
        if _local_databases(experiment):  # last: after MLflow's callback has written the trial's end
            from rft_ray.sweep.state_copies import StateCopyCallback

            callbacks.append(StateCopyCallback(experiment.storage_root, _local_databases(experiment)))
        result = run_group(experiment, group, resources, folder, callbacks, state["started"])
        state["groups"][group.name] = result.to_dict()
        folder.write_state(state)
        if result.status == "interrupted":
            raise SweepInterrupted(f"group {group.name} stopped before its trials finished; continue with "
                                   f"`rft sweep {spec_path or '<spec>'} --resume`")
        results.append(result)
    return results


def _upload_local_outputs(experiment: ExperimentSpec, folder: SweepFolder, local: Path) -> None:
    """The summary, analysis/ and the log (the databases: `_copy_state`, as the sweep stops)."""
    names = ["summary.md", "summary.json", "experiment.json", "analysis", LOG_FILE]
    written = [uri for uri in (folder.upload(local / name) for name in names) if uri]
    say(f"rft sweep: copied {', '.join(Path(u).name for u in written)} to {folder.root}")


class _Tracking:
    """The sweep's MLflow parent run, when tracking is on and reachable."""

    def __init__(self, tracker=None, experiment_id: str | None = None, parent: str | None = None):
        self.tracker, self.experiment_id, self.parent = tracker, experiment_id, parent

    @property
    def active(self) -> bool:
        return self.tracker is not None and self.parent is not None

    @property
    def uri(self) -> str | None:
        return self.tracker.uri if self.tracker is not None and not self.tracker.disabled else None


def _start_tracking(experiment: ExperimentSpec, state: dict[str, Any], spec_path: str | None) -> _Tracking:
    if not experiment.tracking.enabled:
        return _Tracking()
    from rft_ray.tracking.client import tracker_for
    from rft_ray.tracking.naming import artifact_location, parent_params, parent_tags

    tracker = tracker_for(experiment.tracking_uri())
    if not tracker.check_reachable():
        return _Tracking()
    experiment_id = tracker.experiment_id(experiment.experiment_name(), artifact_location(experiment))
    parent = tracker.start_parent(experiment_id, state.get("parent_run_id"), experiment.name,
                                  parent_params(experiment), tags=parent_tags(experiment, spec_path))
    if parent is None:
        return _Tracking()
    return _Tracking(tracker, experiment_id, parent)


def _finish(experiment: ExperimentSpec, state: dict[str, Any], folder: SweepFolder, results: list[GroupResult],
            tracking: _Tracking, began: float, spec_path: str | None, analyze: bool) -> SweepResult:
    local = experiment.local_dir()
    rows, markdown, files = write_summary(experiment, results, local)
    say(f"\nrft sweep {experiment.name}: summary (store {experiment.store_root})\n\n{markdown}")
    analysis_dir = None
    if analyze and rows:
        analysis_dir, written = write_analysis(experiment, local / "analysis", spec_path, time.time() - began)
        files += written
    if tracking.active:
        tracker, parent = tracking.tracker, tracking.parent
        from rft_ray.tracking.metrics import group_metrics  # each group's summary numbers, so sweeps compare in MLflow

        tracker.log_metrics(parent, group_metrics(rows, experiment.groups))
        tracker.log_artifacts(parent, [local / "summary.md", local / "summary.json", local / "experiment.json"])
        if spec_path and Path(spec_path).is_file():
            tracker.log_artifacts(parent, [spec_path], "spec")
        if analysis_dir:
            tracker.log_artifacts(parent, [analysis_dir], "analysis")
        tracker.finish(parent)
    if experiment.is_remote:  # the head's disk goes with `ray down`: keep what only it holds with the results
        _upload_local_outputs(experiment, folder, local)
    wall = time.time() - began
    state["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    state["wall_seconds_last_invocation"] = round(wall, 1)
    folder.write_state(state)
    uri = tracking.uri
    if uri:
        where = f"`rft ui --results {local}`" if uri.startswith("sqlite:///") else uri
        say(f"MLflow: {uri} (parent run {tracking.parent}); browse with {where}")
    say(f"rft sweep {experiment.name}: done in {wall:.0f} s")
    return SweepResult(experiment.name, experiment.storage_root, experiment.store_root, results, rows, markdown, uri,
                       tracking.parent, analysis_dir, wall, files)


def _per_trial(resources: dict) -> str:
    workers = int(resources.get("workers_per_trial", 1))
    each = f"{resources['cpus_per_trial']:g} CPU / {resources['gpus_per_trial']:g} GPU"
    return f"{each} per trial" if workers == 1 else f"{workers} workers per trial, {each} each"
