"""Training seeds (search.seeds): the spec, the sweep's trials and their runs, `rft estimate`'s count, and the
analysis that separates seed-to-seed from image-sampling variation (analysis/seeds.py)."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from analysis.frontier import hypervolume_auc
from analysis.seeds import seeds_to_resolve
from rft_ray.config import SpecError
from rft_ray.specs import experiment_spec
from tests.test_sweep import tiny_experiment

GRID = {"mode": "grid", "objectives": [{"metric": "test_clean_acc"}],
        "grid": {"lr": [1e-3, 3e-3], "weight_decay": [0.0]}}


def test_seeds_repeat_every_grid_configuration_and_reach_each_trials_run(tmp_path):
    from ray import tune

    from rft_ray.sweep.search import param_space
    from rft_ray.sweep.trial import trial_run_spec

    experiment = experiment_spec(tiny_experiment(tmp_path, search={**GRID, "seeds": [0, 1, 2]}))
    group = experiment.groups[0]
    assert experiment.trials(group) == 2 * 3
    space = param_space(experiment, group, {"cpus_per_trial": 1, "gpus_per_trial": 0})
    assert space["seed"] == tune.grid_search([0, 1, 2])  # one more axis of Tune's grid
    spec = trial_run_spec({**space, "lr": 1e-3, "weight_decay": 0.0, "seed": 2}, "lora-digits-x")
    assert (spec.training.seed, spec.run_id) == (2, "lora-digits-x")
    assert "seed" not in param_space(experiment_spec(tiny_experiment(tmp_path, search=GRID)), group,
                                     {"cpus_per_trial": 1, "gpus_per_trial": 0})  # no seeds: base.training.seed


@pytest.mark.parametrize("search, field, message", [
    ({**GRID, "seeds": [0, 0]}, "search.seeds", "duplicate"),
    ({**GRID, "seeds": [-1]}, "search.seeds[0]", "[0, 2^32)"),
    ({"mode": "optuna", "num_samples": 2, "seeds": [0, 1]}, "search.seeds", "Use mode: grid"),
])
def test_bad_seeds_are_refused_naming_the_field(tmp_path, search, field, message):
    with pytest.raises(SpecError) as err:
        experiment_spec(tiny_experiment(tmp_path, search=search))
    assert field in str(err.value) and message in str(err.value)


def test_one_seed_is_allowed_in_an_optuna_search(tmp_path):
    experiment = experiment_spec(tiny_experiment(tmp_path, search={"mode": "optuna", "num_samples": 2, "seeds": [5]}))
    assert experiment.trials(experiment.groups[0]) == 2


def test_rft_estimate_prices_every_seed(tmp_path):
    from rft_ray.cost.counts import plan_from_dict

    once = plan_from_dict(tiny_experiment(tmp_path, search=GRID), "x")
    thrice = plan_from_dict(tiny_experiment(tmp_path, search={**GRID, "seeds": [0, 1, 2]}), "x")
    assert [g.trials for g in thrice.groups] == [3 * g.trials for g in once.groups] == [6]
    assert thrice.steps == 3 * once.steps


def test_seeds_to_resolve_by_hand():
    # room = (0.02 / 1.96)^2 - 0.005^2 = 7.91e-5; (0.01^2 + 0.01^2) / 7.91e-5 = 2.53 -> 3 seeds
    assert seeds_to_resolve(0.02, 0.01, 0.01, 0.005) == 3
    assert seeds_to_resolve(-0.02, 0.01, 0.01, 0.005) == 3  # the sign does not matter
    assert seeds_to_resolve(0.02, 0.0, 0.0, 0.005) == 1  # no training variation: one seed
    assert seeds_to_resolve(0.01, 0.01, 0.01, 0.0052) is None  # image noise alone hides it: seeds cannot help


def _seeded_store(root):
    """Two strategies x three seeds, one run each, three points a run, on the same 400 test / 100 PGD images;
    each seed shifts a run's accuracies by its own amount (training variation), lora above full by 0.06."""
    from rft_ray.results.store import ResultStore
    from rft_ray.results.verdicts import RunVerdicts, Subset
    from tests.test_bootstrap import _record

    store, rng = ResultStore(root), np.random.default_rng(11)
    u, v = rng.random(400), rng.random(400)
    attacked = np.arange(0, 400, 4)
    subsets = {"test": Subset.of(np.arange(400), np.zeros(400)), "test/pgd": Subset.of(attacked, np.zeros(100))}
    points_of = {}
    for strategy, bonus in (("full", 0.0), ("lora", 0.06)):
        for seed, shift in zip((0, 1, 2), (-0.02, 0.0, 0.03)):
            run_id, records, points = f"{strategy}-s{seed}", [], {}
            for step, (acc, rob) in zip((0, 10, 20), ((0.5, 0.4), (0.7, 0.3), (0.9, 0.1))):
                clean, robust = u < acc + bonus + shift, v[attacked] < rob + bonus + shift
                records.append(dataclasses.replace(_record(run_id, strategy, step, clean, robust), seed=seed))
                points[step] = {"test_clean_acc": clean, "pgd_adv_acc": robust}
            store.write_run(run_id, records)
            store.write_verdicts(run_id, RunVerdicts(points, {"test_clean_acc": "test", "pgd_adv_acc": "test/pgd"},
                                                     subsets))
            points_of[(strategy, seed)] = np.array([[r.test_clean_acc, r.pgd_adv_acc] for r in records])
    return points_of


def test_the_analysis_separates_seed_to_seed_from_image_sampling_variation(tmp_path):
    from analysis.report import analyze

    points = _seeded_store(tmp_path / "s")
    data = analyze(str(tmp_path / "s"), tmp_path / "out", figures=False, replicates=300).data
    groups = {g["strategy"]: g for g in data["seeds"]["groups"]}
    assert list(groups) == ["full", "lora"] and data["seeds"]["unavailable"] == {}
    for strategy, g in groups.items():
        aucs = [hypervolume_auc(points[(strategy, k)]) for k in (0, 1, 2)]
        assert [s["seed"] for s in g["seeds"]] == [0, 1, 2] and g["n_seeds"] == 3
        assert [s["auc"] for s in g["seeds"]] == pytest.approx(aucs, abs=1e-6)  # each seed's own pooled frontier
        assert g["auc_mean"] == pytest.approx(np.mean(aucs)) and g["auc_sd_seeds"] == pytest.approx(np.std(aucs, ddof=1))
        for s in g["seeds"]:  # the bootstrap within each seed
            assert s["auc_ci"][0] < s["auc"] < s["auc_ci"][1] and s["auc_sd"] > 0
        assert g["auc_sd_images"] == pytest.approx(math.sqrt(np.mean([s["auc_sd"] ** 2 for s in g["seeds"]])))
    (plan,) = data["seeds"]["resolve"]
    assert (plan["best"], plan["second"]) == ("lora", "full") and plan["sd_image_difference"] > 0
    assert plan["seeds_to_resolve"] == seeds_to_resolve(plan["difference"], plan["sd_seed_best"],
                                                        plan["sd_seed_second"], plan["sd_image_difference"])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Training seeds: seed-to-seed and image-sampling variation" in report
    lora0 = groups["lora"]["seeds"][0]
    assert f"0: {lora0['auc']:.4f} [{lora0['auc_ci'][0]:.3f}, {lora0['auc_ci'][1]:.3f}]" in report
    assert json.loads((tmp_path / "out" / "analysis.json").read_text())["seeds"]["groups"][0]["n_seeds"] == 3


def test_no_seed_section_with_one_seed_per_group(tmp_path):
    from analysis.report import analyze
    from tests.test_bootstrap import _store_with_verdicts

    _store_with_verdicts(tmp_path / "s", shift=0.05)
    data = analyze(str(tmp_path / "s"), tmp_path / "out", figures=False, replicates=50).data
    assert data["seeds"] == {"groups": [], "unavailable": {}, "resolve": []}
    assert "Training seeds" not in (tmp_path / "out" / "report.md").read_text()
