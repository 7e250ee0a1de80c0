import json

import pytest
import yaml
from conftest import cli_error, tiny_run

from rft_ray.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_strategies_json_lists_every_strategy_with_counts(capsys):
    code, out, _ = run_cli(capsys, "strategies", "--model", "vit_base_patch16_224", "--num-classes", "10", "--json")
    assert code == 0
    rows = json.loads(out)["strategies"]
    assert [r["strategy"] for r in rows] == ["full", "linear", "bitfit", "lora", "ia3", "adapter", "compacter",
                                             "lp_ft"]
    full = rows[0]
    assert full["trainable"] == full["total"] == 85_806_346
    assert all(0 < r["trainable"] <= r["total"] for r in rows)


def test_run_from_spec_file_with_flag_overrides(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_run(tmp_path)))
    code, out, err = run_cli(capsys, "run", "--spec", str(spec), "--steps", "20", "--strategy", "bitfit",
                             "--lr", "5e-3", "--quiet", "--json", str(tmp_path / "paper.json"))
    assert code == 0, err
    assert "run bitfit-digits-rft_vit_cifar_patch8_32-lr0.005-wd0.01-s0: 2 evaluation points" in out
    assert "bitfit-digits-rft_vit_cifar_patch8_32-lr0.005-wd0.01-s0.parquet" in out
    assert [p["step"] for p in json.loads((tmp_path / "paper.json").read_text())] == [0, 20]


@pytest.mark.parametrize("argv, message", [
    (["run", "--strategy", "lorra", "--quiet"], "strategy.name: unknown strategy 'lorra'. Did you mean 'lora'?"),
    (["run", "--dataset", "cub200", "--quiet"], "dataset.root: must be set: dataset 'cub200' reads its images"),
    (["run", "--dataset", "caltech256", "--data-root", "/nonexistent/caltech", "--quiet"], "/nonexistent/caltech"),
    (["run", "--eps", "300/255", "--quiet"], "evaluation.pgd.eps: must be in (0, 1]"),
    (["run", "--spec", "/nonexistent.yaml"], "does not exist"),
    (["run", "--weights", "/nonexistent/w.safetensors", "--quiet"], "model.weights: the file /nonexistent/w.safetensors does not exist"),
    (["run", "--set", "training.warmup=0.1", "--quiet"], "training.warmup: unknown key 'warmup'"),
])
def test_bad_input_is_one_clear_paragraph_not_a_traceback(tmp_path, capsys, argv, message):
    code, out, err = run_cli(capsys, *argv, *(["--results", str(tmp_path / "r")] if argv[0] == "run" and
                                              "--spec" not in argv else []))
    assert code == 2
    assert message in cli_error(err)


def test_malformed_yaml(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: [\n")
    code, _, err = run_cli(capsys, "run", "--spec", str(bad))
    message = cli_error(err)
    assert code == 2 and "not valid YAML" in message and str(bad) in message
