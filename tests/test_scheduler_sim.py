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


def test_the_replay_runs_a_stored_grid_in_its_real_order_and_stops_what_the_scheduler_stops(tmp_path):
    """benchmarks/asha_replay.py on a store of 4 trials per strategy (steps 0-160, 2 workers): trials start in
    the order the sweep started them (measured_at), running everything reproduces the store, and Pareto ASHA
    stops the last trial, flat and dominated by its 3 peers at the step-20 rung (reduction factor 2: 2 slots),
    which saves compute without losing a front trial."""
    from asha_replay import load, measure, replay

    from rft_ray.results.record import EvalRecord
    from rft_ray.results.store import ResultStore

    store = ResultStore(tmp_path / "store")
    finals = {"a": (0.80, 0.20), "b": (0.60, 0.40), "c": (0.70, 0.30), "poor": (0.30, 0.05)}
    for strategy, scale in (("lora", 1.0), ("full", 0.9)):  # full's front lower: a ranking to keep
        for started, (name, (clean, pgd)) in enumerate(finals.items()):
            clean, pgd = clean * scale, pgd * scale
            run_id = f"{strategy}-{name}"
            records = [EvalRecord(
                run_id=run_id, strategy=strategy, dataset="d", model="m", lr=1e-3, weight_decay=0.0, seed=0,
                step=step, total_steps=160, epoch=0.0, examples_seen=0, train_loss=0.0, train_clean_acc=0.0,
                test_clean_acc=clean * min(1, step / 40), pgd_adv_acc=pgd * min(1, step / 40), pgd_eps=1 / 255,
                test_ood_accuracy=0.0, trainable_params=1, total_params=1, wall_seconds=float(step), eval_seconds=0.0,
                val_clean_acc=clean * min(1, step / 40) if name != "poor" else clean,
                val_pgd_adv_acc=pgd * min(1, step / 40) if name != "poor" else pgd,
                measured_at=1000.0 + 10 * started) for step in (0, 20, 40, 60, 80, 120, 160)]
            store.write_run(run_id, records)
    data = load(str(tmp_path / "store"))
    assert list(data["lora"]) == ["lora-a", "lora-b", "lora-c", "lora-poor"]
    everything = {s: replay(records, None, 2) for s, records in data.items()}
    assert all(step == 160 for run in everything.values() for step in run.last_step.values())
    keys = ("val_clean_acc", "val_pgd_adv_acc")

    def pareto():
        return ParetoAshaScheduler(list(keys), ["max", "max"], time_attr="step", max_t=160, grace_period=20,
                                   reduction_factor=2)
    stopped = {s: replay(records, pareto, 2) for s, records in data.items()}
    assert {ids[j]: step for s, run in stopped.items() for ids in [list(data[s])] for j, step in run.last_step.items()
            if step < 160} == {"lora-poor": 20, "full-poor": 20}
    kept = measure(data, stopped, everything, 160, keys, (20, 2))
    assert kept["recall"] == 1.0 and kept["hypervolume_kept"] == 1.0 and kept["kendall_tau"] == 1.0
    assert kept["compute"] == pytest.approx((3 * 160 + 20) / 640) and kept["time"] == pytest.approx(kept["compute"])
