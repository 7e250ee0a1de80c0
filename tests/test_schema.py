"""The JSON Schemas of spec files (`rft schema`) agree with the loader: every shipped spec validates and names its
schema, and on a set of specs the schema rejects exactly what the loader rejects; the rules only the loader
checks are listed (the docs' schema page says the same)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from rft_ray.config import SpecError
from rft_ray.specs import experiment_schema, experiment_spec, run_schema, run_spec

ROOT = Path(__file__).resolve().parents[1]
MODELINE = re.compile(r"^# yaml-language-server: \$schema=\.\./site/schema/(run|experiment)\.json$", re.M)


@pytest.fixture(scope="module")
def validators() -> dict:
    schemas = {"run": run_schema(), "experiment": experiment_schema()}
    for schema in schemas.values():
        jsonschema.Draft7Validator.check_schema(schema)
    return {kind: jsonschema.Draft7Validator(schema) for kind, schema in schemas.items()}


def loads(kind: str, data) -> bool:
    try:
        (run_spec if kind == "run" else experiment_spec)(data)
    except SpecError:
        return False
    return True


def schema_errors(validators, kind: str, data) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validators[kind].iter_errors(data)]


SHIPPED = sorted((ROOT / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_spec_names_its_schema_and_validates(validators, path):
    text = path.read_text()
    match = MODELINE.search(text)
    assert match, f"{path.name} lacks '# yaml-language-server: $schema=../site/schema/<run|experiment>.json'"
    kind = match.group(1)
    assert schema_errors(validators, kind, yaml.safe_load(text)) == []
    assert loads(kind, yaml.safe_load(text))


GOOD = [
    ("run", {}),
    ("run", None),
    ("run", {"training": {"lr": "1e-3", "steps": 20}, "evaluation": {"pgd": {"eps": "1/255", "alpha": 0.001}}}),
    ("run", {"dataset": {"corruptions": "cifar10-c"}, "training": {"num_workers": "auto", "grad_clip": None}}),
    ("run", {"strategy": {"name": "lora", "options": {"r": 16, "targets": ["q", "v"]}}, "evaluation": None}),
    ("run", {"strategy": {"options": {"r": 4}}}),  # no name: lora's options
    ("run", {"dataset": {"name": "parquet", "options": {"train": "a.parquet", "test_fraction": 0.3}}}),
    ("run", {"evaluation": {"schedule": [{"until": 100, "every": 10}, {"until": None, "every": 50}]}}),
    ("run", {"recipe": "paper_code", "model": {"name": "vit_base_patch16_224", "source": "random", "image_size": 32}}),
    ("run", {"model": {"keep_head": True}}),
    ("run", {"evaluation": {"validation": {"examples": None, "pgd_examples": 50, "ood": True, "ood_examples": 100}}}),
    ("run", {"evaluation": {"validation": {"enabled": False}}}),
    ("experiment", {}),
    ("experiment", {"strategies": ["full", {"name": "lora", "options": {"r": 4}}], "resources": {"gpus_per_trial": 0.5}}),
    ("experiment", {"base": {"output": {"keep_checkpoints": "all"}, "training": {"steps": 400}},
                    "search": {"scheduler": "asha", "objectives": [{"metric": "pgd_adv_acc", "reduce": "best"}]}}),
    ("experiment", {"datasets": [{"name": "digits"}, {"name": "cifar10", "label": "c10", "root": "data/c10",
                                                     "options": {"classes": ["cat"]}}]}),
    ("experiment", {"search": {"mode": "grid", "grid": {"lr": [1e-3, "1/100"], "weight_decay": [0]}}}),
]

BAD = [
    ("run", {"trainig": {}}),
    ("run", {"training": {"lrr": 0.1}}),
    ("run", {"training": {"lr": "fast"}}),
    ("run", {"training": {"lr": -1}}),
    ("run", {"training": {"lr": 10}}),
    ("run", {"training": {"lr": "-1e-3"}}),
    ("run", {"training": {"batch_size": 2.5}}),
    ("run", {"training": {"batch_size": 0}}),
    ("run", {"training": {"device": "tpu"}}),
    ("run", {"training": {"seed": 2 ** 40}}),
    ("run", {"training": {"num_workers": 65}}),
    ("run", {"training": {"no_weight_decay": ["bias", "head"]}}),
    ("run", {"training": []}),
    ("run", {"evaluation": {"pgd": {"eps": 0}}}),
    ("run", {"evaluation": {"pgd": {"eps": "1/0"}}}),
    ("run", {"evaluation": {"pgd": {"extra_eps": [0.5, 2]}}}),
    ("run", {"evaluation": {"schedule": "weekly"}}),
    ("run", {"evaluation": {"schedule": [{"until": 100, "every": 0}]}}),
    ("run", {"dataset": {"severity": 9}}),
    ("run", {"dataset": {"corruptions": "cifar100-c"}}),
    ("run", {"model": {"std": [0.5, -0.5, 0.5]}}),
    ("run", {"model": {"source": "disk"}}),
    ("run", {"model": {"keep_head": "yes"}}),
    ("run", {"evaluation": {"validation": {"examples": 0}}}),
    ("run", {"evaluation": {"validation": {"pgd": 10}}}),
    ("run", {"strategy": {"name": "loraa"}}),
    ("run", {"strategy": {"name": "lora", "options": {"rank": 8}}}),
    ("run", {"strategy": {"name": "lora", "options": {"r": 0}}}),
    ("run", {"strategy": {"name": "full", "options": {"r": 8}}}),
    ("run", {"strategy": {"options": {"reduction_factor": 8}}}),  # no name: lora, which has no reduction_factor
    ("run", {"strategy": {"name": "lp_ft", "options": {"probe_fraction": 1}}}),
    ("run", {"dataset": {"name": "imagenet"}}),
    ("run", {"dataset": {"name": "digits", "options": {"classes": ["1"]}}}),
    ("run", {"dataset": {"name": "parquet", "options": {"train": "a.parquet", "test_fraction": 1}}}),
    ("run", {"recipe": "paper"}),
    ("experiment", {"nmae": "x"}),
    ("experiment", {"base": {"strategy": {"name": "lora"}}}),
    ("experiment", {"base": {"output": {"results": "elsewhere"}}}),
    ("experiment", {"base": {"training": {"batch_size": "x"}}}),
    ("experiment", {"strategies": ["loraa"]}),
    ("experiment", {"strategies": [{"name": "lora", "options": {"r": 0}}]}),
    ("experiment", {"datasets": [{"name": "nope"}]}),
    ("experiment", {"datasets": [{"name": "digits", "severity": 0}]}),
    ("experiment", {"search": {"sampler": "cmaes"}}),
    ("experiment", {"search": {"objectives": [{"metric": "pgd_adv_acc", "mode": "up"}]}}),
    ("experiment", {"search": {"min_acc": 1.5}}),
    ("experiment", {"search": {"grid": {"lr": [0], "weight_decay": [0]}, "mode": "grid"}}),
    ("experiment", {"resources": {"gpus_per_trial": 2}}),
    ("experiment", {"failure": {"max_failures": -2}}),
]


@pytest.mark.parametrize("kind, data", GOOD + BAD, ids=[f"{k}-{i}" for i, (k, _) in enumerate(GOOD + BAD)])
def test_schema_and_loader_agree(validators, kind, data):
    errors = schema_errors(validators, kind, data)
    assert loads(kind, data) == (not errors), errors or "the schema accepts what the loader rejects"
    assert ((kind, data) in GOOD) == (not errors)


# Rules the schema cannot state, checked by the loader alone (also listed on the docs' schema page); if the
# schema learns one, move it to BAD.
LOADER_ONLY = [
    ("run", {"training": {"epochs": 1, "steps": 10}}),  # one length, not both
    ("run", {"model": {"source": "file"}}),  # source file needs weights
    ("run", {"model": {"mean": [0.5, 0.5]}}),  # three channels
    ("run", {"model": {"source": "random", "keep_head": True}}),  # random weights have no classifier to keep
    ("run", {"dataset": {"label": "my data"}}),  # names files: letters, digits, _ . = -
    ("run", {"evaluation": {"pgd": {"eps": "2"}}}),  # a number written as text: its range
    ("run", {"evaluation": {"pgd": {"eps": 0.01, "extra_eps": [0.01]}}}),  # radii differ
    ("experiment", {"name": "my sweep"}),
    ("experiment", {"search": {"mode": "grid"}}),  # grid mode needs a grid
    ("experiment", {"search": {"objectives": [{"metric": "accuracy"}]}}),  # metric names
    ("experiment", {"strategies": ["lora", "lora"]}),
    ("experiment", {"search": {"scheduler": "asha"}}),  # ASHA needs a step budget
    ("experiment", {"base": {"training": {"steps": 40}}, "search": {"scheduler": "asha"}}),  # grace_period below it
]


@pytest.mark.parametrize("kind, data", LOADER_ONLY, ids=[f"{k}-{i}" for i, (k, _) in enumerate(LOADER_ONLY)])
def test_rules_between_fields_are_the_loaders(validators, kind, data):
    assert not loads(kind, data)
    assert schema_errors(validators, kind, data) == []


def test_rft_schema_writes_the_schema_and_never_replaces_another_file(tmp_path, capsys):
    from rft_ray.cli import main

    out = tmp_path / "run.json"
    assert main(["schema", "run", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == run_schema()
    assert main(["schema", "experiment", "--out", str(out)]) == 0  # a schema it wrote is replaced
    assert json.loads(out.read_text())["title"] == experiment_schema()["title"]
    spec = tmp_path / "demo.yaml"
    spec.write_text("name: demo\n")
    capsys.readouterr()
    assert main(["schema", "run", "--out", str(spec)]) == 2
    assert "--out:" in capsys.readouterr().err and spec.read_text() == "name: demo\n"
    assert main(["schema", "run", "--out", str(tmp_path / "missing" / "run.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
