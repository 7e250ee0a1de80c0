"""Pareto ASHA: Ray's asynchronous successive halving with rungs that rank trials over every objective.

Rungs sit where Ray's ASHA puts them (grace_period * reduction_factor^k on the time attribute, the optimizer
step, up to max_t; one bracket). The first time a trial reports at or past a rung it has not been recorded at,
its objective vector (smoothed over the reports of its last doubling of steps) and its learning curve's forecast
(`pareto_rank.trend_forecast`, allowing for the measurement noise `noise` pooled from the scatter of every judged
trial's reports around its trend) are recorded there, and it continues or stops by `pareto_rank.keeps_at_rung`
among the trials recorded at that rung so far: a trial whose forecast no peer dominates continues; of the
others, ASHA's top ceil(n / reduction_factor) by non-dominated front, then crowding distance. Each decision
keeps at least ceil(n / reduction_factor) of the n recorded so far, more where the front (or the trend) protects
more: on a clean-vs-PGD trade-off at reduction factor 2 the simulator (benchmarks/asha_compare.py) measured a
mean keep rate of about 0.77 per rung (nominal 0.5), and a first rung that keeps nearly every trial still rising
fast.
Decisions are taken as trials arrive, so, as in Ray's ASHA, a rung can end a little under 1/reduction_factor.
The keep rate each rung really had is in `debug_string` and `keep_rates`. A trial reaching max_t stops (it is
done). The state is plain dicts and tuples (`save` writes it as JSON, `restore` reads it back), but a resumed
sweep does not get it back: in Ray 2.60 `TuneController.__getstate__` leaves the scheduler out of its
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

from rft_ray.sweep.pareto_rank import Vector, keeps_at_rung, signed_vector, trend_forecast, trend_scatter

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
                 stop_last_trials: bool = True, optimism: float = 2.0):
        if len(metrics) != len(modes) or not metrics:
            raise ValueError(f"give one mode per metric, got metrics {list(metrics)} and modes {list(modes)}")
        if any(mode not in ("max", "min") for mode in modes):
            raise ValueError(f"modes must be 'max' or 'min', got {list(modes)}")
        if not (grace_period > 0 and max_t >= grace_period and reduction_factor > 1 and optimism >= 0):
            raise ValueError(f"need 0 < grace_period <= max_t and reduction_factor > 1, got grace_period "
                             f"{grace_period}, max_t {max_t}, reduction_factor {reduction_factor}; and optimism "
                             f">= 0, got {optimism}")
        super().__init__()
        self._metrics, self._modes = list(metrics), list(modes)
        self._time_attr, self._max_t = time_attr, max_t
        self._reduction_factor = reduction_factor
        self._stop_last_trials, self._optimism = stop_last_trials, optimism
        # Descending, like Ray's bracket: a result is judged at the highest rung it reached and was not recorded at.
        # Per trial id: (current maximised vector, forecast at max_t, continued past the rung).
        self._rungs: list[tuple[float, dict[str, tuple[Vector, Vector, bool]]]] = [
            (milestone, {}) for milestone in reversed(rung_milestones(grace_period, max_t, reduction_factor))]
        # Each running trial's reports of its last doubling of steps: (step, maximised vector).
        self._curves: dict[str, list[tuple[float, Vector]]] = {}
        self._num_stopped = 0
        # Per objective, [sum of squared residuals, degrees of freedom] of the judged trials' reports around their
        # trend lines: the measurement noise the forecasts allow for (`noise`).
        self._scatter = [[0.0, 0] for _ in self._metrics]

    def noise(self) -> list[float | None]:
        """Per objective, the standard deviation of one report around its trial's trend, pooled over every trial
        judged so far with three reports or more in its last doubling of steps (None before there is one)."""
        return [math.sqrt(rss / dof) if dof else None for rss, dof in self._scatter]

    @property
    def rungs(self) -> list[tuple[float, dict[str, Vector]]]:
        """(milestone, {trial id: recorded maximised vector, smoothed}) per rung, ascending."""
        return [(m, {t: entry[0] for t, entry in r.items()}) for m, r in reversed(self._rungs)]

    def keep_rates(self) -> list[tuple[float, int, int]]:
        """(milestone, trials judged there, of them continued) per rung but max_t's, ascending: the real keep
        rate, about 1/reduction_factor or more where trials are protected."""
        return [(m, len(r), sum(entry[2] for entry in r.values())) for m, r in reversed(self._rungs)
                if m < self._max_t]

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
        self._curves.pop(trial.trial_id, None)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._curves.pop(trial.trial_id, None)

    def _record(self, trial_id: str, result: dict) -> str:
        now = result[self._time_attr]
        vector = signed_vector([result.get(key) for key in self._metrics], self._modes)
        curve = self._curves.setdefault(trial_id, [])
        if not curve or curve[-1][0] < now:
            curve.append((now, vector))
        curve[:] = [point for point in curve if point[0] >= now / 2]  # the last doubling is all a forecast reads
        for milestone, recorded in self._rungs:
            if now < milestone or trial_id in recorded:
                continue
            recorded[trial_id] = (*trend_forecast(curve, self._max_t, self._optimism, self.noise()), False)
            for pooled, scatter in zip(self._scatter, trend_scatter(curve)):
                if scatter is not None:
                    pooled[0] += scatter[0]
                    pooled[1] += scatter[1]
            ids = list(recorded)
            keep = keeps_at_rung([recorded[t][0] for t in ids], [recorded[t][1] for t in ids], ids.index(trial_id),
                                 self._reduction_factor)
            if keep:
                recorded[trial_id] = (*recorded[trial_id][:2], True)
                return TrialScheduler.CONTINUE
            logger.debug("Pareto ASHA stops trial %s at the %s=%g rung (%d recorded)", trial_id, self._time_attr,
                         milestone, len(recorded))
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def keep_rate_summary(self) -> str:
        """Per rung, the trials judged there and the share that continued (the real keep rate), next to the
        nominal 1/reduction_factor: one line for the sweep's console."""
        rates = ", ".join(f"{self._time_attr} {m:g} kept {kept} of {judged}"
                          + (f" ({kept / judged:.2f})" if judged else "") for m, judged, kept in self.keep_rates())
        return (f"keep rate per rung (nominal 1/{self._reduction_factor:g} = {1 / self._reduction_factor:.2f}, more "
                f"where trials are protected): {rates or 'no rung reached yet'}")

    def debug_string(self) -> str:
        return (f"Using Pareto ASHA on {', '.join(self._metrics)}: num_stopped={self._num_stopped}; "
                f"{self.keep_rate_summary()}")

    def save(self, checkpoint_path: str) -> None:
        """The rungs' records as JSON (-inf, a missing objective, as JSON's Infinity): no pickle to load back."""
        state = {"rungs": [[m, {t: [list(now), list(ahead), kept] for t, (now, ahead, kept) in r.items()}]
                           for m, r in self._rungs],
                 "num_stopped": self._num_stopped, "scatter": self._scatter}
        with open(checkpoint_path, "w") as out:
            json.dump(state, out)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as source:
            state = json.load(source)
        saved = {float(m): r for m, r in state["rungs"]}
        self._rungs = [(m, {t: (tuple(now), tuple(ahead), bool(kept)) for t, (now, ahead, kept) in
                            saved.get(float(m), {}).items()}) for m, _ in self._rungs]
        self._num_stopped = int(state["num_stopped"])
        self._scatter = [[float(rss), int(dof)] for rss, dof in state.get("scatter", self._scatter)]
