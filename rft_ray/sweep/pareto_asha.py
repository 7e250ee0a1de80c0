"""Pareto ASHA: Ray's asynchronous successive halving with rungs that rank trials over every objective.

Rungs sit where Ray's ASHA puts them (grace_period * reduction_factor^k on the time attribute, the optimizer
step, up to max_t; one bracket). The first time a trial reports at or past a rung it has not been recorded
at, its objective vector is recorded there and it continues or stops by `pareto_rank.survives_rung` among
the trials recorded at that rung so far: non-dominated sorting, crowding distance, and the guarantee that a
trial fewer than 1/reduction_factor of its peers dominate is never stopped. A trial reaching max_t stops (it
is done). The state is plain dicts and tuples (`save` writes it as JSON, `restore` reads it back), but a
resumed sweep does not get it back: in Ray 2.60 `TuneController.__getstate__` leaves the scheduler out of its
experiment checkpoint and `Tuner.restore` rebuilds it from the copy pickled when the experiment started, so
after `rft sweep --resume` the rungs start empty and trials resumed past a rung are judged only against trials
recorded after the resume. Ray's own ASHA has the same limitation.
"""
from __future__ import annotations

import json
import logging
import math
from typing import Any, Sequence

from ray.tune.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler

from rft_ray.sweep.pareto_rank import Vector, signed_vector, survives_rung

logger = logging.getLogger(__name__)


def rung_milestones(grace_period: float, max_t: float, reduction_factor: float) -> list[float]:
    """The rungs, ascending: grace_period * reduction_factor^k <= max_t (as Ray's ASHA with one bracket; the
    small tolerance keeps e.g. 10 * 3^2 = 90 a rung of max_t 90 despite floating-point logarithms)."""
    count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1e-9) + 1
    return [grace_period * reduction_factor ** k for k in range(count)]


class ParetoAshaScheduler(FIFOScheduler):
    """ASHA over several objectives (`metrics`, each with its `modes` entry, "max" or "min")."""

    def __init__(self, metrics: Sequence[str], modes: Sequence[str], *, time_attr: str = "step",
                 max_t: float = 100, grace_period: float = 1, reduction_factor: float = 4,
                 stop_last_trials: bool = True):
        if len(metrics) != len(modes) or not metrics:
            raise ValueError(f"give one mode per metric, got metrics {list(metrics)} and modes {list(modes)}")
        if any(mode not in ("max", "min") for mode in modes):
            raise ValueError(f"modes must be 'max' or 'min', got {list(modes)}")
        if not (grace_period > 0 and max_t >= grace_period and reduction_factor > 1):
            raise ValueError(f"need 0 < grace_period <= max_t and reduction_factor > 1, got grace_period "
                             f"{grace_period}, max_t {max_t}, reduction_factor {reduction_factor}")
        super().__init__()
        self._metrics, self._modes = list(metrics), list(modes)
        self._time_attr, self._max_t = time_attr, max_t
        self._reduction_factor = reduction_factor
        self._stop_last_trials = stop_last_trials
        # Descending, like Ray's bracket: a result is judged at the highest rung it reached and was not recorded at.
        self._rungs: list[tuple[float, dict[str, Vector]]] = [
            (milestone, {}) for milestone in reversed(rung_milestones(grace_period, max_t, reduction_factor))]
        self._num_stopped = 0

    @property
    def rungs(self) -> list[tuple[float, dict[str, Vector]]]:
        """(milestone, {trial id: recorded maximised vector}) per rung, ascending."""
        return list(reversed(self._rungs))

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        return metric is None and mode is None  # the objectives are fixed at construction

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if self._time_attr not in result:
            return TrialScheduler.CONTINUE
        if result[self._time_attr] >= self._max_t and self._stop_last_trials:
            action = TrialScheduler.STOP
        else:
            action = self._record(trial.trial_id, result)
        if action == TrialScheduler.STOP:
            self._num_stopped += 1
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if result and self._time_attr in result:
            self._record(trial.trial_id, result)  # a peer at the rungs it reached, as ASHA counts it

    def _record(self, trial_id: str, result: dict) -> str:
        now = result[self._time_attr]
        vector = signed_vector([result.get(key) for key in self._metrics], self._modes)
        for milestone, recorded in self._rungs:
            if now < milestone or trial_id in recorded:
                continue
            recorded[trial_id] = vector
            if survives_rung(list(recorded.values()), list(recorded).index(trial_id), self._reduction_factor):
                return TrialScheduler.CONTINUE
            logger.debug("Pareto ASHA stops trial %s at the %s=%g rung (%d recorded)", trial_id, self._time_attr,
                         milestone, len(recorded))
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        rungs = " | ".join(f"{self._time_attr} {m:g}: {len(r)} recorded" for m, r in reversed(self._rungs))
        return f"Using Pareto ASHA on {', '.join(self._metrics)}: num_stopped={self._num_stopped}\n{rungs}"

    def save(self, checkpoint_path: str) -> None:
        """The rungs' records as JSON (-inf, a missing objective, as JSON's Infinity): no pickle to load back."""
        state = {"rungs": [[m, {t: list(v) for t, v in r.items()}] for m, r in self._rungs],
                 "num_stopped": self._num_stopped}
        with open(checkpoint_path, "w") as out:
            json.dump(state, out)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as source:
            state = json.load(source)
        saved = {float(m): r for m, r in state["rungs"]}
        self._rungs = [(m, {t: tuple(v) for t, v in saved.get(float(m), {}).items()}) for m, _ in self._rungs]
        self._num_stopped = int(state["num_stopped"])
