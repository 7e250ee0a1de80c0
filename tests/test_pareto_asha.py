"""Pareto ASHA (`search.scheduler: pareto_asha`): the ranking functions, the scheduler's decisions on synthetic
trials fed straight to `on_trial_result`, its config, its Optuna bookkeeping, and one real small sweep (what it
keeps of whole fronts against running everything: tests/test_scheduler_sim.py)."""
import math
import pickle
import random
from types import SimpleNamespace

import pytest

from rft_ray.config import SpecError
from rft_ray.sweep.pareto_asha import ParetoAshaScheduler, rung_milestones
from rft_ray.sweep.pareto_rank import (
    crowding_distance,
    dominates,
    keeps_at_rung,
    non_dominated_sort,
    promotion_slots,
    protected,
    signed_vector,
    trend_forecast,
    trend_scatter,
)

CONTINUE, STOP = "CONTINUE", "STOP"
NAN = float("nan")


def scheduler(metrics=("acc", "pgd"), modes=("max", "max"), grace=10, rf=2, max_t=80):
    return ParetoAshaScheduler(list(metrics), list(modes), time_attr="step", grace_period=grace,
                               reduction_factor=rf, max_t=max_t)


def report(sched, trial_id, step, **values):
    return sched.on_trial_result(None, SimpleNamespace(trial_id=trial_id), {"step": step, **values})


# ---------------------------------------------------------------------------------------------------
# The pure ranking functions


def test_non_dominated_sort_finds_known_fronts():
    points = [(1, 5), (2, 4), (3, 3), (1, 3), (2, 2), (0, 0), (3, 3)]
    assert non_dominated_sort(points) == [[0, 1, 2, 6], [3, 4], [5]]
    assert non_dominated_sort([]) == []
    assert dominates((1, 1), (1, 0)) and not dominates((1, 1), (1, 1)) and not dominates((2, 0), (0, 2))


def test_crowding_distance_extremes_infinite_interior_by_gaps_duplicates_shared_missing_zero():
    # Objective ranges 4 and 4; each middle point: neighbours 3 apart in both objectives, 3/4 + 3/4.
    front = [(0, 4), (1, 3), (3, 1), (4, 0)]
    assert crowding_distance(front) == [math.inf, pytest.approx(1.5), pytest.approx(1.5), math.inf]
    assert crowding_distance([(0, 4), (2, 2), (2, 2), (4, 0)])[1:3] == [2.0, 2.0]  # equal points, equal room
    distances = crowding_distance([(0, 4), (2, -math.inf), (4, 0), (1, 3)])
    assert distances[1] == 0.0 and distances[3] == pytest.approx(2.0)  # the missing one is left out
    assert crowding_distance([(1, 1)]) == [math.inf]


def test_signed_vector_flips_min_and_makes_missing_the_worst():
    assert signed_vector([0.5, 0.2], ["max", "min"]) == (0.5, -0.2)
    assert signed_vector([None, NAN], ["max", "min"]) == (-math.inf, -math.inf)


def test_rung_positions_are_ashas():
    assert rung_milestones(50, 200, 2) == [50, 100, 200]
    assert rung_milestones(10, 90, 3) == [10, 30, 90]  # log(9)/log(3) is not exactly 2 in floating point
    assert rung_milestones(20, 100, 2) == [20, 40, 80]
    assert rung_milestones(5, 5, 4) == [5]
    assert [promotion_slots(n, 2) for n in (1, 2, 3, 4, 5)] == [1, 1, 2, 2, 3]
    assert promotion_slots(6, 1.5) == 4  # 6 / 1.5 is 4 exactly, not 5 after rounding


# ---------------------------------------------------------------------------------------------------
# The scheduler on synthetic trials


def test_trials_are_judged_at_the_highest_rung_they_reached_and_stop_at_max_t():
    sched = scheduler(grace=10, rf=2, max_t=80)
    assert [m for m, _ in sched.rungs] == [10, 20, 40, 80]
    assert report(sched, "a", 5, acc=0.5, pgd=0.5) == CONTINUE and all(not r for _, r in sched.rungs)
    assert report(sched, "a", 10, acc=0.5, pgd=0.5) == CONTINUE
    assert report(sched, "a", 15, acc=0.1, pgd=0.1) == CONTINUE  # no new rung: nothing recorded
    assert report(sched, "b", 25, acc=0.1, pgd=0.1) == CONTINUE  # first seen past 20: judged at 20, alone there
    rungs = dict(sched.rungs)
    assert rungs[10] == {"a": (0.5, 0.5)} and rungs[20] == {"b": (0.1, 0.1)}  # the value at the judging report
    assert report(sched, "c", 10, acc=0.4, pgd=0.4) == STOP  # at rung 10, dominated by a
    assert report(sched, "a", 20, acc=0.6, pgd=0.6) == CONTINUE
    assert report(sched, "a", 80, acc=0.9, pgd=0.9) == STOP  # its budget: done


def test_dominated_trial_stops_and_non_dominated_continues():
    sched = scheduler()
    assert report(sched, "a", 10, acc=0.5, pgd=0.5) == CONTINUE
    assert report(sched, "b", 10, acc=0.4, pgd=0.5) == STOP  # dominated by a: 1 of 1 peers, top ceil(2/2) = 1
    assert report(sched, "c", 10, acc=0.9, pgd=0.1) == CONTINUE  # a trade-off: dominated by none
    assert sched.debug_string().startswith("Using Pareto ASHA on acc, pgd: num_stopped=1")


def test_mode_min_flips_the_comparison():
    loss_min = scheduler(metrics=("acc", "loss"), modes=("max", "min"))
    assert report(loss_min, "a", 10, acc=0.8, loss=0.2) == CONTINUE
    assert report(loss_min, "b", 10, acc=0.8, loss=0.5) == STOP
    loss_max = scheduler(metrics=("acc", "loss"), modes=("max", "max"))
    assert report(loss_max, "a", 10, acc=0.8, loss=0.2) == CONTINUE
    assert report(loss_max, "b", 10, acc=0.8, loss=0.5) == CONTINUE


@pytest.mark.parametrize("values", [{"acc": 0.5, "pgd": NAN}, {"acc": 0.5}, {"acc": NAN, "pgd": None}])
def test_missing_or_nan_objectives_count_as_the_worst_value(values):
    sched = scheduler()
    assert report(sched, "a", 10, acc=0.5, pgd=0.01) == CONTINUE
    assert report(sched, "b", 10, **values) == STOP  # as good at best on acc, worst on pgd: dominated


def test_nan_is_not_worse_where_the_other_objective_is_better():
    sched = scheduler()
    assert report(sched, "a", 10, acc=0.5, pgd=0.5) == CONTINUE
    assert report(sched, "b", 10, acc=0.9, pgd=NAN) == CONTINUE  # better clean accuracy: not dominated


def test_crowding_distance_breaks_the_tie_between_equally_dominated_trials():
    """Five trials at a rung, reduction factor 2: top ceil(5/2) = 3 continue, and rule 2 keeps only trials with
    fewer than 2 dominators. f1, f2 form front 0; l, m, r front 1, each dominated by both. The extremes l and
    r have infinite crowding distance, the middle m less: the last to arrive continues if it is l, not if m."""
    front0 = {"f1": (10, 10.5), "f2": (10.5, 10)}
    front1 = {"l": (0, 9), "m": (5, 5), "r": (9, 0)}
    for last, expected in (("m", STOP), ("l", CONTINUE)):
        sched = scheduler()
        order = [*front0, *(k for k in front1 if k != last), last]
        points = {**front0, **front1}
        decisions = [report(sched, k, 10, acc=points[k][0], pgd=points[k][1]) for k in order]
        assert decisions[-1] == expected, (last, decisions)


def test_single_objective_it_keeps_the_top_ceil_n_over_r_where_ray_uses_a_percentile():
    """The docstring's example: peers [1, 3], r = 2, candidate 1.5."""
    from ray.tune.schedulers import AsyncHyperBandScheduler

    ray_asha = AsyncHyperBandScheduler(time_attr="step", metric="acc", mode="max", grace_period=10,
                                       reduction_factor=2, max_t=80)
    ours = scheduler(metrics=("acc",), modes=("max",), rf=2)
    decisions = {"ray": [], "ours": []}
    for i, value in enumerate([1.0, 3.0, 1.5]):
        trial = SimpleNamespace(trial_id=f"t{i}")
        ray_asha.on_trial_add(None, trial)
        decisions["ray"].append(ray_asha.on_trial_result(None, trial, {"step": 10, "acc": value}))
        decisions["ours"].append(report(ours, f"t{i}", 10, acc=value))
    assert decisions == {"ray": [CONTINUE, CONTINUE, STOP], "ours": [CONTINUE, CONTINUE, CONTINUE]}


def test_single_objective_it_keeps_the_top_ceil_n_over_r():
    rng = random.Random(7)
    for _ in range(200):
        rf = rng.choice([2, 3, 4])
        sched = scheduler(metrics=("acc",), modes=("max",), rf=rf)
        seen = []
        for i in range(rng.randint(1, 12)):
            value = round(rng.random(), 2)
            seen.append(value)
            better = sum(v > value for v in seen)
            expected = CONTINUE if better < math.ceil(len(seen) / rf) else STOP
            assert report(sched, f"t{i}", 10, acc=value) == expected


def _random_rung(rng, n, dims):
    """n trials with objective vectors correlated or not, with ties and the odd missing value."""
    rho = rng.choice([0.0, 0.6, 0.95])
    out = []
    for _ in range(n):
        base = rng.random()
        vector = [round(rho * base + (1 - rho) * rng.random(), rng.choice([1, 3])) for _ in range(dims)]
        if rng.random() < 0.05:
            vector[rng.randrange(dims)] = NAN
        out.append(vector)
    return out


def test_property_undominated_trials_and_the_top_ceil_n_over_r_continue_and_the_rest_stop():
    """Random rungs (seeded), one report per trial (so each forecast is its current value): every trial no peer
    dominates continues; so does every trial with fewer than ceil(n/rf) peers ahead of it (undominated first, then
    front, then crowding); every other trial stops; and the rule is not vacuous: trials are stopped."""
    rng = random.Random(2024)
    stopped = protected_count = 0
    for _ in range(400):
        dims, rf = rng.choice([2, 3]), rng.choice([2, 3, 4])
        sched = scheduler(metrics=[f"m{i}" for i in range(dims)], modes=[rng.choice(["max", "min"])] * dims, rf=rf)
        modes = sched._modes
        vectors = _random_rung(rng, rng.randint(1, 14), dims)
        recorded = []
        for i, values in enumerate(vectors):
            decision = report(sched, f"t{i}", 10, **{f"m{j}": v for j, v in enumerate(values)})
            recorded.append(signed_vector(values, modes))
            me, n = recorded[-1], len(recorded)
            undominated = [not any(dominates(p, q) for k, p in enumerate(recorded) if k != j)
                           for j, q in enumerate(recorded)]
            if undominated[-1]:
                protected_count += 1
                assert decision == CONTINUE, (recorded, rf)
                continue
            fronts = non_dominated_sort(recorded)
            [mine] = [f for f in fronts if n - 1 in f]
            crowd = dict(zip(mine, crowding_distance([recorded[i] for i in mine])))
            front_of = {i: k for k, f in enumerate(fronts) for i in f}
            ahead = sum(1 for j in range(n - 1) if undominated[j] or front_of[j] < front_of[n - 1] or (
                front_of[j] == front_of[n - 1] and crowd[j] > crowd[n - 1]))
            assert decision == (CONTINUE if ahead < math.ceil(n / rf) else STOP), (recorded, rf, ahead)
            stopped += decision == STOP
            assert keeps_at_rung(recorded, recorded, n - 1, rf) is (decision == CONTINUE)
    assert stopped > 200 and protected_count > 1000, (stopped, protected_count)


def test_trend_forecast_extrapolates_a_rise_in_log_step_and_never_lowers():
    def forecast(history, horizon=800, optimism=1.0):
        return trend_forecast(history, horizon, optimism)[1]
    rising = [(25, (0.20, 0.05)), (50, (0.30, 0.10))]  # +0.10 and +0.05 per doubling
    assert forecast(rising) == pytest.approx((0.30 + 4 * 0.10, 0.10 + 4 * 0.05))
    assert forecast(rising, optimism=0.5) == pytest.approx((0.30 + 2 * 0.10, 0.10 + 2 * 0.05))
    assert trend_forecast(rising, 800, 1.0)[0] == (0.30, 0.10)  # two reports: the value now is the last one
    falling = [(25, (0.5, 0.4)), (50, (0.6, 0.3))]  # robustness peaking early: its forecast stays where it is
    assert forecast(falling) == pytest.approx((0.6 + 4 * 0.1, 0.3))
    assert trend_forecast([(50, (0.3, 0.1))], 800, 1.0) == ((0.3, 0.1), (0.3, 0.1))  # one report: no trend
    old = [(10, (0.0, 0.0)), (40, (0.2, 0.1)), (50, (0.2, 0.1))]  # only the last doubling (>= 25) counts: flat
    assert forecast(old) == pytest.approx((0.2, 0.1))
    missing = [(25, (-math.inf, 0.1)), (50, (-math.inf, 0.2))]
    assert forecast(missing) == pytest.approx((-math.inf, 0.2 + 4 * 0.1))
    assert forecast(rising, horizon=50) == pytest.approx((0.30, 0.10))  # at the budget: nothing left to extrapolate
    # Three reports on a flat curve, the last one noisy: the value now is the line through all three.
    now, ahead = trend_forecast([(50, (0.50, 0.30)), (75, (0.50, 0.30)), (100, (0.56, 0.24))], 800, 1.0)
    assert 0.50 < now[0] < 0.56 and 0.24 < now[1] < 0.30
    assert ahead[1] == pytest.approx(now[1])  # PGD falling: no rise added
    assert protected([(0.5, 0.5), (0.3, 0.1)], [(0.5, 0.5), (0.9, 0.3)]) == [True, True]
    assert protected([(0.5, 0.5), (0.3, 0.1)], [(0.5, 0.5), (0.4, 0.2)]) == [True, False]


def test_with_the_noise_known_a_rise_within_it_is_no_trend_and_a_gap_within_it_no_reason_to_stop():
    """noise sd 0.04 per report; three reports at 50, 75, 100 (log2 spread 0.51): the slope counted is the
    measured one less sd / sqrt(spread), and the forecast gets sd / sqrt(3) on top; with two reports the slope
    counts as measured (no scatter to judge it by), the margin still applies."""
    sd = 0.04
    three = [(50, (0.50, 0.30)), (75, (0.55, 0.30)), (100, (0.60, 0.30))]
    now, ahead = trend_forecast(three, 800, 1.0, [sd, None])
    plain_now, plain_ahead = trend_forecast(three, 800, 1.0)
    xs = [math.log2(s) for s, _ in three]
    spread = sum((x - sum(xs) / 3) ** 2 for x in xs)
    slope = (plain_ahead[0] - plain_now[0]) / 3  # three doublings to 800
    assert now == plain_now
    assert ahead[0] == pytest.approx(now[0] + 3 * (slope - sd / math.sqrt(spread)) + sd / math.sqrt(3))
    assert ahead[1] == pytest.approx(now[1])  # no noise known for PGD: as without
    flat_noisy = [(50, (0.50, 0.30)), (75, (0.52, 0.30)), (100, (0.51, 0.30))]
    assert trend_forecast(flat_noisy, 800, 2.0, [sd, sd])[1][0] == pytest.approx(
        trend_forecast(flat_noisy, 800, 2.0)[0][0] + sd / math.sqrt(3))  # its small rise is within the noise
    two = [(25, (0.20, 0.05)), (50, (0.30, 0.10))]
    assert trend_forecast(two, 800, 1.0, [sd, sd])[1] == pytest.approx((0.30 + 0.4 + sd / math.sqrt(2),
                                                                         0.10 + 0.2 + sd / math.sqrt(2)))
    # The scatter behind the noise: residuals of the line, with n - 2 degrees of freedom, from three reports on.
    [(rss, dof), none] = trend_scatter([(50, (0.50, -math.inf)), (75, (0.56, -math.inf)), (100, (0.58, 0.3))])
    assert dof == 1 and rss > 0 and none is None
    assert trend_scatter(two) == [None, None]


def test_the_scheduler_pools_the_noise_over_judged_trials_and_keeps_it_across_save(tmp_path):
    sched = scheduler(grace=20, rf=2, max_t=80)
    assert sched.noise() == [None, None]
    for trial, wobble in (("a", 0.02), ("b", -0.03)):
        for step, acc in ((10, 0.50), (15, 0.55 + wobble), (20, 0.60)):
            report(sched, trial, step, acc=acc, pgd=0.3)
    acc_noise, pgd_noise = sched.noise()
    assert acc_noise > 0 and pgd_noise == 0.0  # flat PGD reports: no scatter
    sched.save(str(tmp_path / "sched.json"))
    restored = scheduler(grace=20, rf=2, max_t=80)
    restored.restore(str(tmp_path / "sched.json"))
    assert restored.noise() == sched.noise()


def test_a_late_bloomer_survives_where_its_flat_twin_stops():
    """Three fast trials already high at the step-50 rung, then a trial low in both objectives there: if it is
    still rising steeply (a low learning rate) its forecast is not dominated and it continues; the same values
    with a flat curve stop: dominated by all three, it is not among the top ceil(4/2) = 2."""
    def run(late_curve):
        sched = scheduler(grace=50, rf=2, max_t=800)
        for name, (acc, pgd) in {"f1": (0.80, 0.20), "f2": (0.75, 0.25), "f3": (0.70, 0.30)}.items():
            report(sched, name, 25, acc=acc, pgd=pgd)
            assert report(sched, name, 50, acc=acc, pgd=pgd) == CONTINUE
        decision = None
        for step, (acc, pgd) in late_curve:
            decision = report(sched, "late", step, acc=acc, pgd=pgd)
        return decision, sched
    rising, sched = run([(25, (0.15, 0.03)), (50, (0.30, 0.10))])
    assert rising == CONTINUE
    assert "step 50 kept 4 of 4 (1.00)" in sched.debug_string()
    flat, sched = run([(25, (0.30, 0.10)), (50, (0.30, 0.10))])
    assert flat == STOP
    assert "step 50 kept 3 of 4 (0.75)" in sched.debug_string() and "nominal 1/2 = 0.50" in sched.debug_string()
    assert [(m, judged, kept) for m, judged, kept in sched.keep_rates()] == [(50, 4, 3), (100, 0, 0), (200, 0, 0),
                                                                              (400, 0, 0)]


def test_known_front_trials_are_never_stopped():
    """Trials with fixed vectors arriving in random order, at every rung: those on the known Pareto front of
    all of them are never stopped (no peer dominates them at any rung), while dominated ones are."""
    rng = random.Random(11)
    stopped_off_front = 0
    for _ in range(100):
        vectors = [(rng.random(), rng.random()) for _ in range(rng.randint(4, 16))]
        front = set(non_dominated_sort(vectors)[0])
        sched = scheduler(rf=rng.choice([2, 3]))
        alive = list(range(len(vectors)))
        for step in (10, 20, 40):
            rng.shuffle(alive)
            decisions = {i: report(sched, f"t{i}", step, acc=vectors[i][0], pgd=vectors[i][1]) for i in alive}
            assert all(decisions[i] == CONTINUE for i in front if i in decisions)
            stopped_off_front += sum(d == STOP for d in decisions.values())
            alive = [i for i in alive if decisions[i] == CONTINUE]
    assert stopped_off_front > 50


def test_completed_trials_are_peers_and_the_state_survives_pickling(tmp_path):
    sched = scheduler()
    sched.on_trial_complete(None, SimpleNamespace(trial_id="done"), {"step": 15, "acc": 0.9, "pgd": 0.9})
    assert set(dict(sched.rungs)[10]) == {"done"}
    copy = pickle.loads(pickle.dumps(sched))
    assert report(copy, "b", 10, acc=0.5, pgd=0.5) == STOP  # the completed trial dominates it
    sched.on_trial_complete(None, SimpleNamespace(trial_id="broken"), {"step": 12, "acc": NAN, "pgd": 0.2})
    sched.save(str(tmp_path / "sched.json"))
    restored = scheduler()
    restored.restore(str(tmp_path / "sched.json"))
    assert dict(restored.rungs)[10] == {"done": (0.9, 0.9), "broken": (-math.inf, 0.2)}
    assert report(restored, "c", 10, acc=0.95, pgd=0.1) == CONTINUE


def test_scheduler_refuses_a_metric_from_tune_and_bad_arguments():
    sched = scheduler()
    assert sched.set_search_properties(None, None) is True
    assert sched.set_search_properties("acc", "max") is False  # its objectives are its own
    with pytest.raises(ValueError, match="one mode per metric"):
        ParetoAshaScheduler(["a", "b"], ["max"])
    with pytest.raises(ValueError, match="reduction_factor"):
        ParetoAshaScheduler(["a", "b"], ["max", "max"], reduction_factor=1)
    with pytest.raises(ValueError, match="optimism >= 0, got -1"):
        ParetoAshaScheduler(["a", "b"], ["max", "max"], optimism=-1)


# ---------------------------------------------------------------------------------------------------
# Config and wiring


def _experiment(search):
    from rft_ray.specs import experiment_spec

    return experiment_spec({"name": "t", "strategies": ["lora"], "base": {"training": {"steps": 40}},
                            "search": search})


TWO = [{"metric": "test_clean_acc"}, {"metric": "pgd_adv_acc"}]


def test_rungs_no_evaluation_point_reaches_are_named_and_none_reached_is_refused():
    """A trial reports at its evaluation points only, so a rung with no point before the next rung judges
    nobody: named in a line; when that is every rung below max_t the sweep is refused, naming the field."""
    from rft_ray.specs import experiment_spec
    from rft_ray.sweep.search import unjudged_rungs

    def experiment(schedule, grace, steps=100):
        return experiment_spec({"name": "t", "strategies": ["lora"],
                                "base": {"training": {"steps": steps}, "evaluation": {"schedule": schedule}},
                                "search": {"scheduler": "asha", "asha": {"grace_period": grace}}})
    every = lambda n: [{"until": None, "every": n}]  # noqa: E731
    assert unjudged_rungs(experiment(every(10), 10)) is None  # rungs 10, 20, 40, 80 all on points
    line = unjudged_rungs(experiment(every(50), 10))  # points 0, 50, 100: rung 40 is judged at 50, not 10, 20, 80
    assert "judges no trial at the rungs at steps 10, 20, 80" in line and "base.evaluation.schedule" in line
    with pytest.raises(SpecError, match="could stop no trial") as err:
        unjudged_rungs(experiment(every(1000), 10))  # points 0 and 100 only
    assert err.value.field_path == "search.asha.grace_period"
    assert unjudged_rungs(_experiment({"objectives": TWO})) is None  # no scheduler: nothing to check



@pytest.mark.parametrize("search, words", [
    ({"scheduler": "pareto_asha"}, "use scheduler: asha"),
    ({"scheduler": "none", "asha": {"enabled": True}}, "deprecated spelling"),
    ({"scheduler": "pareto_asha", "objectives": TWO, "asha": {"enabled": True}}, "asha.enabled is true"),
    ({"scheduler": "hyperband", "objectives": TWO}, "pareto_asha"),
])
def test_scheduler_errors_name_the_field(search, words):
    with pytest.raises(SpecError) as caught:
        _experiment(search)
    assert caught.value.field_path == "search.scheduler", str(caught.value)
    assert words in str(caught.value)


def test_scheduler_choice_and_the_deprecated_asha_enabled():
    from ray.tune.schedulers import AsyncHyperBandScheduler

    from rft_ray.sweep.search import early_stopping

    plain = _experiment({})
    assert plain.search.scheduler == "none" and early_stopping(plain.search) is None
    old = _experiment({"asha": {"enabled": True, "grace_period": 10}})
    new = _experiment({"scheduler": "asha", "asha": {"grace_period": 10}})
    assert old.search.scheduler == "asha" and old.fingerprint() == new.fingerprint()
    assert isinstance(early_stopping(new.search), AsyncHyperBandScheduler)
    pareto = _experiment({"scheduler": "pareto_asha", "objectives": [*TWO, {"metric": "train_loss", "mode": "min"}],
                          "asha": {"grace_period": 10, "reduction_factor": 2}})
    assert pareto.search.asha.max_t == 40  # max_t from base.training.steps
    assert not pareto.search.asha.enabled  # the deprecated spelling of asha alone
    sched = early_stopping(pareto.search)
    assert isinstance(sched, ParetoAshaScheduler)
    # The rungs rank trials on validation (search.select_on's default); training metrics are the same either way.
    assert sched._metrics == ["val_clean_acc", "val_pgd_adv_acc", "train_loss"] and sched._modes == ["max", "max", "min"]
    assert early_stopping(new.search).metric == "val_clean_acc"  # ASHA's one objective, on validation too
    with pytest.warns(UserWarning, match="optimistic"):
        on_test = _experiment({**pareto.to_dict()["search"], "select_on": "test"})
    assert early_stopping(on_test.search)._metrics == ["test_clean_acc", "pgd_adv_acc", "train_loss"]
    assert [m for m, _ in sched.rungs] == [10, 20, 40]
    assert _experiment(pareto.to_dict()["search"]).fingerprint() == pareto.fingerprint()  # resolved spec rebuilds


def test_multi_objective_study_gets_pruned_trials_with_the_values_they_stopped_with():
    import optuna
    from ray import tune

    from rft_ray.sweep.search import BudgetAwareOptunaSearch

    search = BudgetAwareOptunaSearch(metric=["a", "b"], mode=["max", "max"],
                                     sampler=optuna.samplers.RandomSampler(seed=0))
    search.set_search_properties(None, None, {"lr": tune.loguniform(1e-4, 1e-2)})
    search.suggest("x")
    search.on_trial_result("x", {"a": 0.5, "b": 0.2, "step": 10, "total_steps": 40})  # no intermediate values
    search.on_trial_complete("x", {"a": 0.5, "b": NAN, "step": 10, "total_steps": 40})
    [trial] = search._ot_study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.intermediate_values == {}
    assert trial.user_attrs == {"stopped_at_step": 10, "values_when_stopped": {"a": 0.5, "b": None}}


# ---------------------------------------------------------------------------------------------------
# A real sweep (Ray)


@pytest.mark.slow
def test_pareto_asha_stops_a_dominated_trial_in_a_real_sweep(tmp_path, capsys):
    """Two trials one after the other, two objectives (train loss down, train accuracy up): the second trial's
    learning rate (1e-5) is far too small, so at the step-20 rung its loss is higher and its accuracy no
    better than the first trial's there: dominated, it stops at step 20 of 40, and Optuna has it PRUNED."""
    import optuna
    import ray
    from test_sweep import tiny_experiment

    from rft_ray.specs import experiment_spec
    from rft_ray.sweep.driver import run_sweep

    data = tiny_experiment(tmp_path / "sweep", search={
        "mode": "optuna", "num_samples": 2, "sampler": "random",
        "objectives": [{"metric": "train_loss", "mode": "min"}, {"metric": "train_clean_acc"}],
        "points_to_evaluate": [{"lr": 1e-2, "weight_decay": 0.0}, {"lr": 1e-5, "weight_decay": 0.0}],
        "space": {"lr": {"low": 1e-6, "high": 1e-1}, "weight_decay": {"low": 0.0, "high": 0.1, "log": False}},
        "scheduler": "pareto_asha", "asha": {"grace_period": 20, "reduction_factor": 2}},
        resources={"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent_trials": 1})
    experiment = experiment_spec(data)
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        result = run_sweep(experiment, analyze=False)
    finally:
        ray.shutdown()
    [group] = result.groups
    by_lr = {t.lr: t for t in group.trials}
    assert by_lr[1e-2].status == "completed" and by_lr[1e-2].step == 40
    assert by_lr[1e-5].status == "stopped early" and by_lr[1e-5].step == 20
    assert "pareto_asha keep rate per rung (nominal 1/2 = 0.50" in capsys.readouterr().out  # the console line
    [summary] = optuna.get_all_study_summaries(experiment.optuna_storage_url())
    study = optuna.load_study(study_name=summary.study_name, storage=experiment.optuna_storage_url())
    states = {t.params["lr"]: t.state for t in study.trials}
    assert states == {1e-2: optuna.trial.TrialState.COMPLETE, 1e-5: optuna.trial.TrialState.PRUNED}
    [pruned] = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned.user_attrs["stopped_at_step"] == 20
