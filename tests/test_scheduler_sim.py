"""Pareto ASHA against running everything, on the seeded learning-curve simulator (benchmarks/scheduler_sim.py,
issue 26): fixed seeds, so each bound below is a regression check of the scheduler's rule, not of luck. The
figures over more seeds and all sides are in benchmarks/RESULTS.md (benchmarks/asha_compare.py)."""
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from legacy_pareto_asha import LegacyParetoAsha, RawTrendParetoAsha  # noqa: E402
from scheduler_sim import CLEAN, PGD, Setting, rung_keep_rates, run_group, scenario_curves, simulate  # noqa: E402

from rft_ray.sweep.pareto_asha import ParetoAshaScheduler  # noqa: E402

GRACE, RF, MAX_T = 50, 2, 800
SEEDS = (0, 1, 2)


def pareto_asha():
    return ParetoAshaScheduler([CLEAN, PGD], ["max", "max"], time_attr="step", max_t=MAX_T, grace_period=GRACE,
                               reduction_factor=RF)


def legacy():
    return LegacyParetoAsha([CLEAN, PGD], ["max", "max"], max_t=MAX_T, grace_period=GRACE, reduction_factor=RF)


def raw_trend():
    return RawTrendParetoAsha([CLEAN, PGD], ["max", "max"], max_t=MAX_T, grace_period=GRACE, reduction_factor=RF)


def outcomes(scenario, *others):
    """(new, *others) Outcome per seed: 3 strategies x 64 trials, 8 asynchronous workers each."""
    out = []
    for seed in SEEDS:
        setting = Setting(scenario=scenario, seed=seed, strategies=3, trials=64, max_t=MAX_T)
        new, reference = simulate(setting, pareto_asha, GRACE, RF)
        out.append((new, *(simulate(setting, other, GRACE, RF, reference)[0] for other in others)))
    return out


def mean(values):
    return statistics.mean(values)


def test_late_bloomers_keep_the_front_where_the_old_rule_lost_it():
    """Late-bloom trade-off: the rule keeps >= 0.9 of the reference fronts' trials and >= 0.98 of their
    hypervolume (measured 0.904 and 0.997) for at most 0.55 of the compute (measured 0.521; the issue's goal is
    0.5, see RESULTS.md), a rung keeping 0.5 to 0.85 of its trials (measured 0.77); the rule before issue 26 kept
    less of both (0.66 and 0.84), and the trend without its allowance for noise spent more (0.577)."""
    runs = outcomes("late_bloom", legacy, raw_trend)
    new = {f: mean([getattr(n, f) for n, _, _ in runs]) for f in ("recall", "hypervolume_kept", "compute",
                                                                   "keep_rate")}
    before = {f: mean([getattr(b, f) for _, b, _ in runs]) for f in ("recall", "hypervolume_kept")}
    raw_compute = mean([r.compute for _, _, r in runs])
    assert new["recall"] >= 0.9 and new["hypervolume_kept"] >= 0.98 and new["compute"] <= 0.55, new
    assert new["recall"] > before["recall"] + 0.1, (new, before)
    assert new["hypervolume_kept"] > before["hypervolume_kept"], (new, before)
    assert new["compute"] < raw_compute - 0.03, (new, raw_compute)
    assert 0.5 <= new["keep_rate"] <= 0.85, new  # at least the nominal 1/r, well under the old rule's 0.97


def test_a_trade_off_without_late_bloomers_keeps_its_front_for_half_the_compute():
    """Every trial learning fast: >= 0.9 of the fronts' trials (measured 0.939), >= 0.97 of their hypervolume
    (0.983), at most 0.52 of the compute (0.496)."""
    runs = outcomes("tradeoff")
    assert mean([n.recall for n, in runs]) >= 0.9
    assert mean([n.hypervolume_kept for n, in runs]) >= 0.97
    assert mean([n.compute for n, in runs]) <= 0.52


def test_aligned_objectives_lose_nothing_and_save_compute():
    runs = outcomes("aligned")
    assert mean([n.recall for n, in runs]) >= 0.95
    assert mean([n.hypervolume_kept for n, in runs]) >= 0.99
    assert mean([n.compute for n, in runs]) <= 0.53  # measured 0.502: ASHA's 0.27 is cheaper here (RESULTS.md)


def test_the_keep_rate_the_scheduler_reports_is_what_the_trials_did():
    """Its keep_rates (shown in debug_string) match the share of trials that went on from each rung to the next;
    the realised rate is about 1/r or more (decisions are taken as trials arrive, so, as in ASHA, a rung can end a
    little under 1/r), and the first rung keeps every trial still rising fast (the trend protects them)."""
    setting = Setting(scenario="tradeoff", seed=5, strategies=1, trials=64, max_t=MAX_T)
    [curves] = scenario_curves(setting)
    scheduler = pareto_asha()
    run = run_group(setting, curves, scheduler)
    rates = rung_keep_rates(list(run.last_step.values()), GRACE, RF, MAX_T)
    counted = scheduler.keep_rates()
    assert [m for m, _, _ in counted] == [50, 100, 200, 400]
    assert counted[0][1] == 64  # every trial was judged at the first rung
    assert [kept / judged for _, judged, kept in counted] == pytest.approx(rates)
    assert all(rate >= 0.8 / RF for rate in rates) and rates[0] == 1.0, rates
    assert "step 50 kept 64 of 64 (1.00)" in scheduler.debug_string()


def test_the_simulator_is_seeded_and_reproducible():
    setting = Setting(scenario="late_bloom", seed=3, strategies=2, trials=64)
    first, _ = simulate(setting, pareto_asha, GRACE, RF)
    second, _ = simulate(setting, pareto_asha, GRACE, RF)
    assert first == second
    with pytest.raises(ValueError, match="scenario must be one of late_bloom, tradeoff, aligned"):
        Setting(scenario="steep")
