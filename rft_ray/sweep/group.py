"""One group (strategy x dataset): one Tune experiment, started or restored, its trials summarised and runs of
trials Tune lost set aside."""
from __future__ import annotations

from typing import Any

from rft_ray.config.experiment import ExperimentSpec, Group
from rft_ray.results.store import ResultStore
from rft_ray.results.verdicts import VERDICTS_DIR
from rft_ray.sweep.console import say, warn
from rft_ray.sweep.results import GroupResult, TrialSummary, pareto_set, trial_summaries
from rft_ray.sweep.search import param_space, tune_config
from rft_ray.sweep.state import SweepFolder
from rft_ray.sweep.trial import trial_driver


def _set_aside_orphans(folder: SweepFolder, experiment: ExperimentSpec, group: Group,
                       trials: list[TrialSummary]) -> list[str]:
    """Runs of this group whose trial Tune does not know (the driver died before Tune saved the trial):
    their partial rows would pollute the store, so they move to `orphans/`, with what was measured on their
    weights (kept checkpoints, attack results, interpolated files: `ResultStore.derived_files`) at the same
    paths under it, so `orphans/` reads as a store of its own and a later trial never finds them."""
    known = {t.trial_id for t in trials}
    prefix = f"{group.name}-"
    orphans = []
    store = ResultStore(experiment.store_root)
    for run_id in store.run_ids():
        suffix = run_id[len(prefix):]
        if run_id.startswith(prefix) and "-" not in suffix and suffix not in known:
            relatives = [path for paths in store.derived_files(run_id).values() for path in paths]
            # its per-image verdicts go with it, and first the identities of the images they name (kept once
            # per store, shared with the store's other runs: copied, not moved)
            verdicts = [f"{VERDICTS_DIR}/{run_id}.parquet"] if store.has_verdicts(run_id) else []
            store.share_identities(relatives + verdicts, ResultStore(folder.uri("orphans")))
            for relative in relatives + verdicts:
                folder.move(f"store/{relative}", "/".join(["orphans", *relative.split("/")[:-1]]))
            folder.move(f"store/{run_id}.parquet", "orphans")
            orphans.append(run_id)
    if orphans:
        warn(f"rft sweep: {group.name}: set aside {len(orphans)} run(s) of trials lost with an interrupted driver "
             f"({', '.join(orphans)}) in {folder.uri('orphans')}")
    return orphans


def run_group(experiment: ExperimentSpec, group: Group, resources: dict[str, Any], folder: SweepFolder,
              callbacks: list, sweep_started: str) -> GroupResult:
    from ray import tune

    tune_root = folder.uri("tune")
    path = folder.uri("tune", group.name)
    space = param_space(experiment, group, resources)
    trainable = tune.with_resources(trial_driver, resources["driver_resources"])
    scheduler = None
    if tune.Tuner.can_restore(path):
        say(f"rft sweep: {group.name}: restoring the interrupted search from {path}")
        tuner = tune.Tuner.restore(path, trainable=trainable, param_space=space, resume_unfinished=True,
                                   resume_errored=True)
    else:
        config = tune_config(experiment, group, resources, sweep_started)
        scheduler = config.scheduler  # Tune drives this very object in this process: its rungs are read below
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=config,
            run_config=tune.RunConfig(
                name=group.name,
                storage_path=tune_root,
                callbacks=callbacks,
                verbose=0,  # Tune's status tables: the sweep's own console (rft_ray.sweep.console) says less, better
                failure_config=tune.FailureConfig(max_failures=experiment.failure.max_failures),
            ),
        )
    tuner.fit()
    if hasattr(scheduler, "keep_rate_summary"):  # Pareto ASHA: what it really kept (issue 26)
        say(f"rft sweep: {group.name}: pareto_asha {scheduler.keep_rate_summary()}")
    trials = trial_summaries(path, group, experiment.search)
    _set_aside_orphans(folder, experiment, group, trials)
    finished = len(trials) >= experiment.trials(group) and all(
        t.status in ("completed", "stopped early", "error") for t in trials)
    status = "interrupted" if not finished else ("errors" if any(t.status == "error" for t in trials) else "done")
    return GroupResult(group.name, group.strategy, group.dataset, status, trials,
                       pareto_set(trials, experiment.search))
