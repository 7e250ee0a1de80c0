import pytest

from rft_ray.config import SpecError
from rft_ray.specs import load_run_spec, run_spec


def error(data) -> str:
    with pytest.raises(SpecError) as info:
        run_spec(data)
    return str(info.value)


def test_defaults_are_the_embedded_default():
    spec = run_spec({})
    assert spec.model.source == "embedded" and spec.dataset.name == "digits"
    assert spec.evaluation.pgd.eps == pytest.approx(1 / 255)
    assert spec.evaluation.pgd.alpha == pytest.approx(0.25 / 255)
    assert spec.evaluation.pgd.steps == 15
    assert spec.run_id == "lora-digits-rft_vit_cifar_patch8_32-lr0.001-wd0.01-s0"


def test_fractions_are_read_as_numbers():
    spec = run_spec({"evaluation": {"pgd": {"eps": "2/255", "alpha": "0.5 / 255"}}})
    assert spec.evaluation.pgd.eps == pytest.approx(2 / 255)
    assert spec.evaluation.pgd.alpha == pytest.approx(0.5 / 255)


@pytest.mark.parametrize("data, expected", [
    ({"trainig": {}}, "trainig: unknown key 'trainig'. Did you mean 'training'?"),
    ({"training": {"lr": "fast"}}, "training.lr: must be a finite number"),
    ({"training": {"lr": -1}}, "training.lr: must be in (0, 10), got -1"),
    ({"training": {"epochs": 1, "steps": 5}}, "training.epochs: give epochs or steps, not both"),
    ({"training": {"batch_size": 2.5}}, "training.batch_size: must be a whole number, got 2.5"),
    ({"training": {"device": "tpu"}}, "training.device: must be one of 'auto', 'cpu', 'cuda', got 'tpu'"),
    ({"evaluation": {"pgd": {"eps": -0.1}}}, "evaluation.pgd.eps: must be in (0, 1]"),
    ({"evaluation": {"pgd": {"eps": float("nan")}}}, "evaluation.pgd.eps: must be a finite number"),
    ({"evaluation": {"schedule": "weekly"}}, "evaluation.schedule: must be one of 'default', 'paper_code'"),
    ({"evaluation": {"schedule": [{"until": 100, "every": 10}, {"until": 50, "every": 5}]}},
     "evaluation.schedule: segment ends must increase strictly"),
    ({"evaluation": {"schedule": [{"until": 100, "every": 0}]}}, "evaluation.schedule[0].every: must be at least 1"),
    ({"model": {"source": "file"}}, "model.weights: source is 'file', so a weight file path is required"),
    ({"strategy": {"name": "lorra"}}, "strategy.name: unknown strategy 'lorra'. Did you mean 'lora'?"),
    ({"strategy": {"name": "lora", "options": {"rank": 4}}}, "strategy.options.rank: unknown key 'rank'"),
    ({"strategy": {"name": "lora", "options": {"r": 0}}}, "strategy.options.r: must be in [1, 4096], got 0"),
    ({"strategy": {"name": "ia3", "options": {"targets": ["k", "w"]}}}, "strategy.options.targets[1]: must be one of"),
    ({"dataset": {"name": "imagenet"}}, "dataset.name: unknown dataset 'imagenet'"),
    ({"dataset": {"severity": 9}}, "dataset.severity: must be in [1, 5], got 9"),
    ({"training": []}, "training: must be a mapping of TrainingSpec settings, got []"),
    ({"training": {"seed": 10**30}}, "training.seed: must be in [0, 2^32)"),
])
def test_bad_input_names_the_field_and_what_is_allowed(data, expected):
    assert expected in error(data)


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: [unclosed\n")
    with pytest.raises(SpecError, match="bad.yaml.*not valid YAML"):
        load_run_spec(bad)
    with pytest.raises(SpecError, match="does not exist"):
        load_run_spec(tmp_path / "missing.yaml")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("training:\n  lr: -3\n")
    with pytest.raises(SpecError, match=r"training.lr: must be in \(0, 10\), got -3.*wrong.yaml"):
        load_run_spec(wrong)


HEAVY = ("torch", "ray", "mlflow", "optuna", "timm", "peft")
_CHECK_WITHOUT_IMPORTS = r"""
import json, sys
from rft_ray.cli import main
from rft_ray.config import SpecError
from rft_ray.specs import run_spec, strategy_names

run_spec({"strategy": {"name": "lp_ft", "options": {"probe_steps": 5}}, "training": {"steps": 10},
          "dataset": {"name": "imagefolder", "root": ".", "options": {"test_fraction": 0.3},
                      "corruptions": "cifar10-c"}})
errors = []
for bad in ({"strategy": {"name": "lorra"}}, {"dataset": {"name": "imagefoldr"}},
            {"strategy": {"name": "lora", "options": {"rank": 4}}}, {"dataset": {"corruptions": ["fogg"]}},
            {"strategy": {"name": "lp_ft", "options": {"probe_steps": 10}}, "training": {"steps": 10}}):
    try:
        run_spec(bad)
    except SpecError as err:
        errors.append(str(err))
codes = [main(argv) for argv in (["run", "--dataset", "imagefolder"], ["run", "--data-root", "/nonexistent/x"],
                                 ["analyze", "/nonexistent/store"], ["best", "/nonexistent/store"])]
print(json.dumps({"errors": errors, "codes": codes, "names": strategy_names(),
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in %r)}))
""" % (HEAVY,)


def test_checking_a_spec_and_reporting_its_errors_imports_no_torch_ray_or_mlflow():
    """Spec, name and path errors come before the heavy imports: in a fresh interpreter, building and refusing
    specs (names, options, corruptions, lp_ft's steps) and four bad commands leave torch, Ray, MLflow, Optuna, timm
    and peft unimported; the strategy order comes from the config floor's table."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _CHECK_WITHOUT_IMPORTS], capture_output=True, text=True, cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert result["codes"] == [2, 2, 2, 2]
    assert [e.split(":")[0] for e in result["errors"]] == [
        "strategy.name", "dataset.name", "strategy.options.rank", "dataset.corruptions[0]",
        "strategy.options.probe_steps"]
    assert "Did you mean 'imagefolder'?" in result["errors"][1]
    assert result["names"] == ["full", "linear", "bitfit", "lora", "ia3", "adapter", "compacter", "lp_ft"]
    for line in ("dataset.root: must be set", "dataset.root: the folder /nonexistent/x does not exist",
                 "result store '/nonexistent/store' does not exist"):
        assert line in done.stderr


def test_the_config_floor_name_tables_are_the_registries():
    """The tables `rft_ray.specs` checks names against without torch hold exactly the registries' names and the
    very option classes the registered components use."""
    from rft_ray.config.dataset_options import CORRUPTION_NAMES, DATASET_OPTIONS
    from rft_ray.config.strategy_options import STRATEGY_OPTIONS
    from rft_ray.data.base import DATASETS
    from rft_ray.data.corruptions import corruption_names
    from rft_ray.models.strategies.base import STRATEGIES

    assert list(STRATEGY_OPTIONS) == STRATEGIES.names()
    assert all(STRATEGY_OPTIONS[name] is STRATEGIES.get(name).Config for name in STRATEGY_OPTIONS)
    assert list(DATASET_OPTIONS) == DATASETS.names()
    assert all(DATASET_OPTIONS[name] is DATASETS.get(name).config for name in DATASET_OPTIONS)
    assert list(CORRUPTION_NAMES) == corruption_names()
