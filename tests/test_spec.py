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
    assert spec.run_id == "lora-digits-lr0.001-wd0.01-s0"


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
