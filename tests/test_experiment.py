"""The experiment (sweep) spec: validation with dotted paths, groups, and the specs shipped in experiments/."""
import math
import warnings
from pathlib import Path

import pytest

from rft_ray.config import SpecError, parse_sets
from rft_ray.config.experiment import Objective, startup_trials
from rft_ray.specs import experiment_spec, load_experiment, run_spec
from rft_ray.sweep.trial import trial_run_spec
from rft_ray.tracking.metrics import objective_values, trial_metrics

ROOT = Path(__file__).resolve().parents[1]
BASE = {
    "model": {"name": "rft_vit_cifar_patch8_32", "source": "random", "image_size": 16},
    "dataset": {"name": "digits"},
    "training": {"steps": 40, "batch_size": 16},
    "evaluation": {"schedule": [{"until": None, "every": 20}], "train_examples": 20, "test_examples": 20},
}


def spec(**top):
    data = {"name": "t", "base": BASE, "strategies": ["lora", "bitfit"]}
    data.update(top)
    return experiment_spec(data)


def error_of(data) -> SpecError:
    with pytest.raises(SpecError) as info:
        experiment_spec(data)
    return info.value


def test_defaults_and_groups(tmp_path):
    e = spec(storage={"path": str(tmp_path / "sweep")})
    assert [g.name for g in e.groups] == ["lora-digits", "bitfit-digits"]
    assert e.search.mode == "optuna" and e.search.num_samples == 8 and e.search.sampler_name() == "tpe"
    assert e.storage_root == str(tmp_path / "sweep") and e.store_root.endswith("/sweep/store")
    assert e.tracking_uri() == f"sqlite:///{tmp_path / 'sweep' / 'mlflow.db'}"
    assert e.groups[0].run["strategy"] == {"name": "lora", "options": {}}


@pytest.mark.parametrize("data, path, words", [
    ({"strategies": ["lora", "lora"]}, "strategies", "twice"),
    ({"strategies": [{"name": "lora", "options": {"rank": 4}}]}, "strategies[0].options.rank", "unknown key"),
    ({"strategies": ["lorra"]}, "strategies[0].name", "lora"),
    ({"search": {"objectives": [{"metric": "accuracy"}]}}, "search.objectives[0].metric", "must be one of"),
    ({"search": {"objectives": [{"metric": "test_clean_acc", "mode": "up"}]}}, "search.objectives[0].mode", "max"),
    ({"search": {"space": {"lr": {"low": 0, "high": 1e-3}}}}, "search.space.lr.low", "positive"),
    ({"search": {"space": {"lr": {"low": 1e-2, "high": 1e-3}}}}, "search.space.lr.high", "above low"),
    ({"search": {"mode": "grid"}}, "search.grid", "required"),
    ({"search": {"mode": "grid", "grid": {"lr": [1e-3], "weight_decay": [0.0]}, "num_samples": 3}},
     "search.num_samples", "exactly once"),
    ({"search": {"num_samples": 1, "points_to_evaluate": [{"lr": 1e-3}, {"lr": 1e-4}]}},
     "search.points_to_evaluate", "budget"),
    ({"search": {"points_to_evaluate": [{"lr": 1.0}]}}, "search.points_to_evaluate[0].lr", "outside"),
    ({"search": {"asha": {"enabled": True}}, "base": {**BASE, "training": {"epochs": 1}}}, "search.asha.max_t",
     "step budget"),
    ({"search": {"scheduler": "asha", "asha": {"max_t": 100}}, "base": {**BASE, "training": {"steps": 40}}},
     "search.asha.max_t", "is 100 but base.training.steps is 40"),
    ({"search": {"scheduler": "asha", "asha": {"max_t": 20, "grace_period": 10}},
      "base": {**BASE, "training": {"steps": 40}}}, "search.asha.max_t", "set it to 40 or remove it"),
    ({"search": {"scheduler": "asha", "asha": {"grace_period": 40}}, "base": {**BASE, "training": {"steps": 40}}},
     "search.asha.grace_period", "is 40, but the trials run base.training.steps (40) steps"),
    ({"search": {"scheduler": "asha", "asha": {"grace_period": 500, "max_t": 200}},
      "base": {**BASE, "training": {"epochs": 1}}}, "search.asha.max_t", "must be at least grace_period (500)"),
    ({"search": {"samples": 3}}, "search.samples", "num_samples"),
    ({"base": {**BASE, "output": {"results": "x"}}}, "base.output", "storage.path"),
    ({"base": {**BASE, "training": {"steps": -1}}}, "base.training.steps", "must be in"),
    ({"datasets": [{"name": "digits", "options": {"nope": 1}}]}, "datasets[0].options.nope", "unknown key"),
    ({"resources": {"gpus_per_trial": "many"}}, "resources.gpus_per_trial", "auto"),
    ({"name": "a b"}, "name", "letters"),
])
def test_errors_name_the_field(data, path, words):
    full = {"name": "t", "base": BASE, "strategies": ["lora"]}
    full.update(data)
    err = error_of(full)
    assert err.field_path == path, str(err)
    assert words in str(err)


def test_lr_in_base_warns_that_the_search_sets_it():
    with pytest.warns(UserWarning, match="base.training.lr is ignored"):
        spec(base={**BASE, "training": {"steps": 40, "lr": 0.1}})


def test_strategy_entries_override_the_search():
    e = spec(strategies=["lora", {"name": "full", "space": {"lr": {"low": 1e-6, "high": 1e-4}},
                                  "points_to_evaluate": [{"lr": 1e-5, "weight_decay": 0.01}]}],
             search={"points_to_evaluate": [{"lr": 1e-3, "weight_decay": 0.01}], "num_samples": 2})
    lora, full = e.groups
    assert lora.space.lr.high == 1e-2 and lora.points_to_evaluate[0].lr == 1e-3
    assert full.space.lr.high == 1e-4 and full.points_to_evaluate[0].lr == 1e-5


def test_duplicate_dataset_names_get_domain_labels():
    e = spec(strategies=["lora"], datasets=[
        {"name": "domainnet", "root": "/data/dn", "options": {"domain": "clipart"}},
        {"name": "domainnet", "root": "/data/dn", "options": {"domain": "sketch"}}])
    assert [g.name for g in e.groups] == ["lora-domainnet-clipart", "lora-domainnet-sketch"]
    assert e.groups[1].run["dataset"]["options"]["domain"] == "sketch"
    # Each group's runs carry its label, so their records (and run ids) name the training domain.
    assert [run_spec({**g.run, "strategy": {"name": "lora"}}).dataset.title for g in e.groups] == [
        "domainnet-clipart", "domainnet-sketch"]


def test_dataset_label_names_the_group_whichever_loader_reads_it():
    e = spec(strategies=["lora"], datasets=[{"name": "parquet", "label": "cifar100-10cls",
                                             "options": {"train": "all.parquet"}}])
    assert [g.name for g in e.groups] == ["lora-cifar100-10cls"]
    with pytest.raises(SpecError, match=r"datasets\[0\]\.label: use 1-100 letters"):
        spec(strategies=["lora"], datasets=[{"name": "digits", "label": "../escape"}])
    # a label that is not a string is refused by name before it names a group (it raised TypeError: found by
    # test_prop_generated_experiment_specs_get_a_spec_error_or_a_valid_spec)
    for where, section in (("base", {"base": {"dataset": {"label": [None]}}}),
                           ("datasets", {"datasets": [{"name": "digits", "label": 3}]})):
        with pytest.raises(SpecError) as err:
            spec(strategies=["lora"], **section)
        assert err.value.field_path == ("base.dataset.label" if where == "base" else "datasets[0].label")
        assert "must be a string" in str(err.value)


def test_multi_objective_defaults_to_gp_and_keys():
    e = spec(search={"objectives": [{"metric": "test_clean_acc"}, {"metric": "pgd_adv_acc", "reduce": "best"},
                                    {"metric": "pareto_auc"}], "num_samples": 12})
    assert e.search.multi_objective and e.search.sampler_name() == "gp"
    # Selection reads validation by default; the test values of the chosen points are reported under these keys.
    assert e.search.keys() == ["val_clean_acc", "best/val_pgd_adv_acc", "val_pareto_auc"]
    assert e.search.reported_keys() == ["test_clean_acc", "test_at/best/val_pgd_adv_acc", "pareto_auc"]
    assert startup_trials(e.search) == 4


def test_asha_max_t_defaults_to_steps_and_fingerprint_ignores_resources():
    a = spec(search={"asha": {"enabled": True, "grace_period": 10}})
    assert a.search.asha.max_t == 40
    import hashlib
    import json

    # The fingerprint (what `rft sweep --resume` compares) hashes the sections that decide the trials ...
    plain = a.to_dict()
    decisive = {k: plain[k] for k in ("name", "base", "strategies", "datasets", "search")}
    assert a.fingerprint() == hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:16]

    def fingerprint(**changes):
        return spec(**{"search": {"asha": {"enabled": True, "grace_period": 10}}, **changes}).fingerprint()

    # ... so a resume may change resources, tracking, retries and storage, and changing anything else shows.
    for same in ({"resources": {"cpus_per_trial": 2}}, {"tracking": {"experiment_name": "other"}},
                 {"failure": {"max_failures": 5}}, {"storage": {"path": "/elsewhere"}}):
        assert fingerprint(**same) == a.fingerprint(), same
    for changed in ({"name": "u"}, {"strategies": ["lora", "full"]}, {"base": {**BASE, "training": {"steps": 60}}},
                    {"datasets": [{"name": "digits", "label": "d2"}]}, {"search": {"num_samples": 4}},
                    {"search": {"asha": {"enabled": True, "grace_period": 20}}}):
        assert fingerprint(**changed) != a.fingerprint(), changed


def test_set_overrides_and_yaml_values():
    assert parse_sets(["search.num_samples=4", "base.evaluation.pgd.eps=2/255"]) == {
        "search.num_samples": 4, "base.evaluation.pgd.eps": "2/255"}
    with pytest.raises(SpecError, match=r"^--set: --set takes key=value \(e\.g\. training\.lr=1e-4\), got 'nonsense'$"):
        parse_sets(["nonsense"])
    with pytest.raises(SpecError, match=r"^--set: the value of 'training\.lr' is not valid YAML"):
        parse_sets(["training.lr=[1"])


@pytest.mark.parametrize("name", ["demo.yaml", "paper.yaml", "domainnet_ood.yaml", "cifar_transfer.yaml"])
def test_shipped_experiment_specs_validate(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e = load_experiment(ROOT / "experiments" / name)
    assert len(e.strategies) == 7
    assert {s.name for s in e.strategies} == {"full", "linear", "bitfit", "lora", "ia3", "adapter", "compacter"}
    for group in e.groups:
        run_spec(group.run)


def test_paper_and_domainnet_shapes():
    paper = load_experiment(ROOT / "experiments" / "paper.yaml")
    assert sorted({g.dataset for g in paper.groups}) == ["caltech256", "cifar10", "cifar100", "cub200", "stanford_dogs"]
    assert paper.search.mode == "grid" and paper.resources.gpus_per_trial == 1
    assert paper.base["model"]["name"] == "vit_base_patch16_224.orig_in21k"  # the paper's google/vit-base-patch16-224-in21k
    ood = load_experiment(ROOT / "experiments" / "domainnet_ood.yaml")
    domains = sorted({g.run["dataset"]["options"]["domain"] for g in ood.groups})
    assert domains == ["clipart", "infograph", "painting", "quickdraw", "real", "sketch"]
    assert len(ood.groups) == 7 * 6


# -- the trial's pure pieces ------------------------------------------------------------------------


def _records(tmp_path):
    from rft_ray.results.record import EvalRecord

    common = dict(run_id="r", strategy="lora", dataset="digits", model="m", lr=1e-3, weight_decay=0.0, seed=0,
                  total_steps=40, epoch=0.0, examples_seen=0, pgd_eps=0.01, test_ood_accuracy=0.5,
                  trainable_params=10, total_params=100, wall_seconds=1.0, eval_seconds=0.1, train_clean_acc=0.5)
    # (step, train loss, test acc, test PGD, val acc, val PGD): validation ranks the points differently from test.
    points = [(0, float("nan"), 0.2, 0.15, 0.25, 0.1), (20, 1.0, 0.8, 0.3, 0.6, 0.35), (40, 0.5, 0.7, 0.4, 0.75, 0.3)]
    return [EvalRecord(step=s, train_loss=loss, test_clean_acc=acc, pgd_adv_acc=pgd, ood_acc={"contrast": acc / 2},
                       val_clean_acc=vacc, val_pgd_adv_acc=vpgd, **common) for s, loss, acc, pgd, vacc, vpgd in points]


def objective_value(records, objective, select_on="test"):
    values = objective_values(records, objective, select_on)
    return values[Objective(**objective).key_on(select_on)]


def test_objectives_from_records(tmp_path):
    records = _records(tmp_path)
    assert objective_value(records, {"metric": "test_clean_acc", "reduce": "final"}) == 0.7
    assert objective_value(records, {"metric": "test_clean_acc", "reduce": "best", "mode": "max"}) == 0.8
    assert objective_value(records, {"metric": "train_loss", "reduce": "best", "mode": "min"}) == 0.5
    assert objective_value(records, {"metric": "ood_acc/contrast"}) == 0.35
    # Staircase under the frontier {(0.7, 0.4), (0.8, 0.3)}: 0.7 * 0.4 + 0.1 * 0.3.
    assert math.isclose(objective_value(records, {"metric": "pareto_auc"}), 0.31)
    with pytest.raises(ValueError, match="OOD domains: contrast"):
        objective_value(records, {"metric": "ood_acc/fog"})
    metrics = trial_metrics(records, [{"metric": "pgd_adv_acc", "reduce": "best", "mode": "max"}], "test")
    assert metrics["step"] == 40 and metrics["total_steps"] == 40 and metrics["best/pgd_adv_acc"] == 0.4
    assert metrics["ood_acc/contrast"] == 0.35 and metrics["trainable_params"] == 10


def test_objectives_on_validation_choose_on_validation_and_report_test_at_the_chosen_point(tmp_path):
    records = _records(tmp_path)
    best_acc = objective_values(records, {"metric": "test_clean_acc", "reduce": "best", "mode": "max"}, "validation")
    # Validation's best clean accuracy is step 40's 0.75; test's best (0.8, step 20) is not what gets reported.
    assert best_acc == {"best/val_clean_acc": 0.75, "test_at/best/val_clean_acc": 0.7}
    assert objective_values(records, {"metric": "pgd_adv_acc"}, "validation") == {"val_pgd_adv_acc": 0.3,
                                                                                  "pgd_adv_acc": 0.4}
    # Training metrics are the same under either split, with no test value beside them.
    assert objective_values(records, {"metric": "train_loss", "reduce": "best", "mode": "min"}, "validation") == {
        "best/train_loss": 0.5}
    auc = objective_values(records, {"metric": "pareto_auc"}, "validation")
    # Validation staircase under {(0.6, 0.35), (0.75, 0.3)}: 0.6 * 0.35 + 0.15 * 0.3; test's stays 0.31.
    assert math.isclose(auc["val_pareto_auc"], 0.255) and math.isclose(auc["pareto_auc"], 0.31)
    metrics = trial_metrics(records, [{"metric": "test_clean_acc"}], "validation")
    assert metrics["val_clean_acc"] == 0.75 and metrics["test_clean_acc"] == 0.7
    # The trial's knee is chosen on its validation points (a two-point front: the earlier, step 20) and its
    # test values reported: (0.8, 0.3), not test's own knee.
    assert (metrics["knee_step"], metrics["knee_val_clean_acc"], metrics["knee_clean_acc"]) == (20, 0.6, 0.8)


def test_objectives_on_validation_without_validation_metrics_fail_naming_what_is_missing(tmp_path):
    from dataclasses import replace

    records = [replace(r, val_clean_acc=None, val_pgd_adv_acc=None) for r in _records(tmp_path)]
    with pytest.raises(ValueError, match=r"run r \(step 0\): no validation metrics \(val_clean_acc.*"
                                         r"search.select_on: test"):
        trial_metrics(records, [{"metric": "test_clean_acc"}], "validation")


def test_trial_run_spec_sets_lr_wd_and_run_id(tmp_path):
    e = spec(storage={"path": str(tmp_path)})
    config = {"run": {**e.groups[0].run, "output": {"results": str(tmp_path / "store")}}, "lr": 3e-3,
              "weight_decay": 0.02}
    run = trial_run_spec(config, "lora-digits-abc")
    assert (run.training.lr, run.training.weight_decay, run.run_id) == (3e-3, 0.02, "lora-digits-abc")
    assert run.output.results == str(tmp_path / "store") and run.strategy.name == "lora"


def test_a_sweep_without_steps_or_epochs_warns_with_each_datasets_step_count(capsys):
    """digits: 1,797 images, 25% held out as test and 10% of the rest as validation leave 1,213 to train on, so
    one epoch at batch 16 is 75 steps."""
    from rft_ray.sweep.driver import _warn_default_length

    _warn_default_length(spec())
    assert capsys.readouterr().err == ""
    _warn_default_length(spec(base={**BASE, "training": {"batch_size": 16}}))
    assert capsys.readouterr().err == ("rft sweep: warning: the spec gives neither training.steps nor training.epochs, "
                                       "so each trial trains 1 epoch = 75 steps on digits (set base.training.steps or "
                                       "epochs)\n")


def test_select_on_test_warns_and_objectives_without_a_validation_counterpart_are_refused():
    from rft_ray.config.search import OptimisticSelectionWarning

    with pytest.warns(OptimisticSelectionWarning, match="search.select_on is test: .* optimistic"):
        on_test = spec(search={"select_on": "test", "objectives": [{"metric": "pgd_adv_acc"}]})
    assert on_test.search.keys() == ["pgd_adv_acc"] and on_test.search.reported_keys() == ["pgd_adv_acc"]
    with pytest.raises(SpecError, match=r"search.objectives\[0\].metric: ood_acc/fog is measured on test images only"):
        spec(search={"objectives": [{"metric": "ood_acc/fog"}]})
    assert spec(search={"select_on": "test", "objectives": [{"metric": "ood_acc/fog"}]}).search.keys() == [
        "ood_acc/fog"]
    with pytest.raises(SpecError, match=r"name the quantity by its test column \(test_clean_acc\)"):
        spec(search={"objectives": [{"metric": "val_clean_acc"}]})
    with pytest.raises(SpecError, match=r"search.select_on: must be one of 'validation', 'test'"):
        spec(search={"select_on": "val"})


def test_selecting_on_validation_needs_runs_that_measure_it():
    with pytest.raises(SpecError, match=r"base.evaluation.validation.enabled: is false, but search.select_on is "
                                        r"validation.*search.select_on: test"):
        spec(base={"training": {"steps": 40}, "evaluation": {"validation": {"enabled": False}}})
    with pytest.raises(SpecError, match=r"dataset.val_fraction: is 0, so there is no validation split"):
        spec(base={"training": {"steps": 40}, "dataset": {"val_fraction": 0}})
    with pytest.raises(SpecError, match=r"base.evaluation.validation.ood: is false, but an objective reads "
                                        r"test_ood_accuracy"):
        spec(search={"objectives": [{"metric": "test_ood_accuracy"}]})
    with pytest.warns(UserWarning, match="optimistic"):
        spec(base={"training": {"steps": 40}, "evaluation": {"validation": {"enabled": False}}},
             search={"select_on": "test"})
