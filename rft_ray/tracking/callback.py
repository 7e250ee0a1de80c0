"""The live MLflow path of a sweep: a Tune callback in the driver process (the one calling `Tuner.fit`).

Not `MLflowLoggerCallback`: that logs Tune's iteration counter as MLflow's step; here the step is the
optimizer step of the evaluation point, and child runs nest under the sweep's parent run. Names, tags and
params come from `rft_ray.tracking.naming`, the metrics from `rft_ray.tracking.metrics`, as in the back-fill.
"""
from __future__ import annotations

import math

from ray.tune import Callback

from rft_ray.config.experiment import Group
from rft_ray.tracking.client import Tracker, tracker_for
from rft_ray.tracking.metrics import loggable, measured_ms, numeric_metrics, trial_metrics
from rft_ray.tracking.naming import (
    child_filter,
    child_params,
    child_run_name,
    child_tags,
    inherited_tags,
)


class MLflowTrialCallback(Callback):
    """Tune callback: a child run per trial under the sweep's parent run (with its provenance tags), metrics at
    the optimizer step and the time they were measured, and at the trial's end the weights its run kept in the
    result store (`output.keep_checkpoints`; `rft_ray.tracking.artifacts`).

    Picklable (Tune stores it with the experiment): it keeps names and ids only and finds a trial's
    child run again by tag after a restore, logging only evaluation points it has not logged yet.
    """

    def __init__(self, uri: str, experiment_id: str | None, parent_run_id: str | None, group: Group,
                 store_root: str | None = None):
        self.uri, self.experiment_id, self.parent_run_id = uri, experiment_id, parent_run_id
        self.group, self.store_root = group, store_root
        self._children: dict[str, str] = {}
        self._last_step: dict[str, int] = {}
        self._seen: set[str] = set()
        self._provenance: dict[str, str] | None = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_children"], state["_last_step"], state["_seen"], state["_provenance"] = {}, {}, set(), None
        return state

    def _parent_provenance(self, client) -> dict[str, str]:
        """The parent's commit and spec fingerprint tags, which each child run carries too (read once)."""
        if self._provenance is None:
            self._provenance = inherited_tags(client.get_run(self.parent_run_id).data.tags)
        return self._provenance

    @property
    def tracker(self) -> Tracker:
        return tracker_for(self.uri)

    @property
    def active(self) -> bool:
        return self.experiment_id is not None and self.parent_run_id is not None and not self.tracker.disabled

    def _child(self, trial) -> str | None:
        trial_id = trial.trial_id
        if trial_id in self._children:
            return self._children[trial_id]
        tracker = self.tracker

        def find_or_create():
            client = tracker.client
            found = client.search_runs([self.experiment_id], max_results=1,
                                       filter_string=child_filter(self.parent_run_id, trial_id=trial_id))
            if found:
                run_id = found[0].info.run_id
                history = client.get_metric_history(run_id, "test_clean_acc")
                self._last_step[trial_id] = max((m.step for m in history), default=-1)
                if found[0].info.status != "RUNNING":
                    client.update_run(run_id, status="RUNNING")
                return run_id
            config = trial.config or {}
            tags = child_tags(self.group, trial_id, self.parent_run_id, self._parent_provenance(client),
                              seed=config.get("seed"))
            run = client.create_run(self.experiment_id, run_name=child_run_name(self.group.name, trial_id), tags=tags)
            tracker.log_batch(run.info.run_id, params=child_params(self.group, config.get("lr"),
                                                                   config.get("weight_decay")))
            self._last_step[trial_id] = -1
            return run.info.run_id

        run_id = tracker.call("creating a trial's child run", find_or_create)
        if run_id:
            self._children[trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        if self.active:
            self._child(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not self.active or "step" not in result:
            return
        run_id = self._child(trial)
        if run_id is None:
            return
        step = int(result["step"])
        last = self._last_step.get(trial.trial_id, -1)
        if step <= last:
            return  # already logged (a restored trial re-reporting its final point)
        first_here = trial.trial_id not in self._seen
        self._seen.add(trial.trial_id)
        if first_here and step > last + 1:
            self._backfill(trial, run_id, last, step)
        metrics = loggable(numeric_metrics(result))
        tags = {}
        if "trainable_params" in result and first_here:
            tags = {"trainable_params": int(result["trainable_params"]), "total_params": int(result["total_params"])}
        when = measured_ms(result.get("measured_at"))
        self.tracker.call("logging metrics", lambda: self.tracker.log_batch(run_id, metrics=metrics, step=step, tags=tags,
                                                                            timestamp=when))
        self._last_step[trial.trial_id] = step

    def _backfill(self, trial, run_id: str, last: int, step: int) -> None:
        """Log the evaluation points between `last` and `step` that Tune never relayed, from the result store.

        Within one driver process Tune relays every reported point. When a sweep's driver dies, a point
        Ray Train already checkpointed may not have reached Tune; the restored trial resumes after it and
        never reports it again. The worker wrote it to the store before reporting, so it is there.
        """
        if not self.store_root:
            return
        from rft_ray.results.store import ResultStore

        def backfill():
            records = ResultStore(self.store_root).read_run(child_run_name(self.group.name, trial.trial_id))
            objectives = (trial.config or {}).get("objectives") or []
            select_on = (trial.config or {}).get("select_on", "test")  # trials configured before it existed: test
            for i, record in enumerate(records):
                if last < record.step < step:
                    metrics = loggable(numeric_metrics(trial_metrics(records[: i + 1], objectives, select_on)))
                    self.tracker.log_batch(run_id, metrics=metrics, step=record.step,
                                           timestamp=measured_ms(record.measured_at))

        self.tracker.call("logging missed evaluation points", backfill)

    def _end(self, trial, status: str, outcome: str) -> None:
        if not self.active:
            return
        run_id = self._child(trial)
        if run_id is None:
            return

        if self.store_root:  # the weights the trial kept (output.keep_checkpoints), from the result store
            from rft_ray.tracking.artifacts import log_trial_weights

            self.tracker.call("logging a trial's weights", lambda: log_trial_weights(
                self.tracker.client, run_id, self.store_root, child_run_name(self.group.name, trial.trial_id)))

        def end():
            self.tracker.client.set_tag(run_id, "outcome", outcome)
            self.tracker.client.set_terminated(run_id, status)

        self.tracker.call("ending a child run", end)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        finished = "step" in last and last.get("step", 0) >= last.get("total_steps", math.inf)
        self._end(trial, "FINISHED", "completed" if finished else "stopped early")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "FAILED", "error")
