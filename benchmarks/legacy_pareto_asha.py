"""Earlier Pareto ASHA rules, kept here only so benchmarks/asha_compare.py can measure them beside the current one.

`LegacyParetoAsha`: Pareto ASHA as it was before issue 26 (commit 9b757b9): at each rung a trial continued if it
was in the top ceil(n / r) by non-dominated front, then crowding distance, or if fewer than 1/r of its peers
dominated it (no trend). `RawTrendParetoAsha`: the trend rule without the allowance for measurement noise."""
from __future__ import annotations

from ray.tune.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler

from rft_ray.sweep.pareto_asha import ParetoAshaScheduler, rung_milestones
from rft_ray.sweep.pareto_rank import (Vector, crowding_distance, dominates, non_dominated_sort, promotion_slots,
                                       signed_vector)


def survives_rung(points: list[Vector], candidate: int, reduction_factor: float) -> bool:
    n, me = len(points), points[candidate]
    dominators = sum(1 for j, p in enumerate(points) if j != candidate and dominates(p, me))
    if dominators * reduction_factor < n - 1:
        return True
    front_of, crowding = [0] * n, [0.0] * n
    for index, front in enumerate(non_dominated_sort(points)):
        for i, distance in zip(front, crowding_distance([points[i] for i in front])):
            front_of[i], crowding[i] = index, distance
    ahead = sum(1 for j in range(n) if j != candidate and (front_of[j] < front_of[candidate] or (
        front_of[j] == front_of[candidate] and crowding[j] > crowding[candidate])))
    return ahead < promotion_slots(n, reduction_factor)


class LegacyParetoAsha(FIFOScheduler):
    def __init__(self, metrics, modes, *, time_attr="step", max_t=100, grace_period=1, reduction_factor=4):
        super().__init__()
        self._metrics, self._modes, self._time_attr, self._max_t = list(metrics), list(modes), time_attr, max_t
        self._reduction_factor = reduction_factor
        self._rungs = [(m, {}) for m in reversed(rung_milestones(grace_period, max_t, reduction_factor))]

    def on_trial_result(self, tune_controller, trial, result):
        if result[self._time_attr] >= self._max_t:
            return TrialScheduler.STOP
        return self._record(trial.trial_id, result)

    def on_trial_complete(self, tune_controller, trial, result):
        if result and self._time_attr in result:
            self._record(trial.trial_id, result)

    def _record(self, trial_id, result):
        now = result[self._time_attr]
        vector = signed_vector([result.get(key) for key in self._metrics], self._modes)
        for milestone, recorded in self._rungs:
            if now < milestone or trial_id in recorded:
                continue
            recorded[trial_id] = vector
            keep = survives_rung(list(recorded.values()), list(recorded).index(trial_id), self._reduction_factor)
            return TrialScheduler.CONTINUE if keep else TrialScheduler.STOP
        return TrialScheduler.CONTINUE


class RawTrendParetoAsha(ParetoAshaScheduler):
    """Pareto ASHA as issue 26 first made it (commit 71adda0): the trend's raw slope, optimism 1.5, no allowance
    for measurement noise; kept so benchmarks/asha_compare.py measures what the noise terms save."""

    def __init__(self, metrics, modes, **rungs):
        super().__init__(metrics, modes, optimism=1.5, **rungs)

    def noise(self):
        return [None] * len(self._metrics)
