"""WiSE-FT (`rft interpolate`): per-strategy interpolation rules, the sub-store's rows, the analysis, the CLI."""
from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pytest
import torch
from conftest import cli_error, tiny_run

from rft_ray.config import ModelSpec
from rft_ray.models.backbones import create_classifier
from rft_ray.models.strategies import create_strategy, strategy_names
from rft_ray.models.strategies.modules import BottleneckAdapter, CompacterAdapter, FusedQKVLora
from rft_ray.results.store import ResultStore
from rft_ray.training.interpolate import (
    InterpolationError,
    Interpolator,
    interpolate_store,
    parse_alphas,
)
from rft_ray.training.weights import WeightsError

TINY = ModelSpec(name="rft_vit_cifar_patch8_32", source="random", image_size=16)


def step0_model(strategy: str, options: dict | None = None):
    model = create_classifier(TINY, 10, seed=0)
    create_strategy(strategy, options).apply(model)
    return model.eval()


def finetuned_tensors(model, seed: int = 1) -> dict[str, torch.Tensor]:
    """Stand-ins for fine-tuned values: every trained parameter moved by seeded noise (LoRA's B, the
    adapters' up-projections and (IA)^3's vectors leave their step-0 values, as training moves them)."""
    generator = torch.Generator().manual_seed(seed)
    return {name: param.detach() + 0.05 * torch.randn(param.shape, generator=generator)
            for name, param in model.named_parameters() if param.requires_grad}


IMAGES = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(3))


# AdapterHub's init starts the up-projections non-zero: alpha 0 must still be the step-0 model.
ADAPTERHUB = [("adapter", {"init": "adapterhub"}), ("compacter", {"init": "adapterhub"})]


@pytest.mark.parametrize(("strategy", "options"), [(name, None) for name in strategy_names()] + ADAPTERHUB)
def test_alpha_one_is_exactly_the_finetuned_model_and_alpha_zero_the_step0_model(strategy, options):
    model = step0_model(strategy, options)
    tuned = finetuned_tensors(model)
    with torch.no_grad():
        before = model(IMAGES)
        reference = step0_model(strategy, options)
        for name, param in reference.named_parameters():
            if name in tuned:
                param.copy_(tuned[name])
        after = reference(IMAGES)
    interpolator = Interpolator(model, create_strategy(strategy, options))
    interpolator.load(tuned)
    with torch.no_grad():
        interpolator.set_alpha(1.0)
        assert torch.equal(model(IMAGES), after)
        interpolator.set_alpha(0.0)
        assert torch.equal(model(IMAGES), before)
        interpolator.set_alpha(0.5)
        assert not torch.equal(model(IMAGES), before) and not torch.equal(model(IMAGES), after)
    if strategy == "linear":  # fixed features, a linear head: the logits move on the straight line
        with torch.no_grad():
            interpolator.set_alpha(0.25)
            assert torch.allclose(model(IMAGES), 0.75 * before + 0.25 * after, atol=1e-5)


def _lora_deltas(model) -> list[torch.Tensor]:
    """Every LoRA layer's weight update: scaling * B @ A (per part of a fused qkv)."""
    out = []
    for module in model.modules():
        if isinstance(module, FusedQKVLora):
            n, r = len(module.parts), module.r
            a = module.lora_A.view(n, r, -1)
            out.append(torch.einsum("ndr,nri->ndi", module.lora_B, a) * module.scaling)
        elif hasattr(module, "get_delta_weight") and hasattr(module, "lora_A"):
            out.append(module.get_delta_weight("default"))
    return out


def test_lora_weight_update_at_alpha_is_alpha_times_the_finetuned_update():
    model = step0_model("lora")
    interpolator = Interpolator(model, create_strategy("lora"))
    interpolator.load(finetuned_tensors(model))
    with torch.no_grad():
        interpolator.set_alpha(1.0)
        full = _lora_deltas(model)
        blocks = len(model.backbone.blocks)
        assert len(full) == 3 * blocks and all(d.abs().max() > 0 for d in full)  # per block: qkv, fc1, fc2
        for alpha in (0.0, 0.3, 0.75):
            interpolator.set_alpha(alpha)
            for got, want in zip(_lora_deltas(model), full, strict=True):
                assert torch.allclose(got, alpha * want, rtol=1e-5, atol=1e-8)
        # whereas moving A along with B would not scale the update: (A0 + a dA)(a B) != a B A
        interpolator.set_alpha(0.5)
        naive = step0_model("lora")
        for name, param in naive.named_parameters():
            if name in interpolator.finetuned:
                param.copy_(torch.lerp(interpolator.start[name], interpolator.finetuned[name], 0.5))
        assert not all(torch.allclose(a, b, rtol=1e-3) for a, b in zip(_lora_deltas(naive), _lora_deltas(model)))


ADDED = {"lora": (FusedQKVLora,), "adapter": (BottleneckAdapter,), "compacter": (CompacterAdapter,)}


@pytest.mark.parametrize("strategy", ["lora", "ia3", "adapter", "compacter"])
def test_every_peft_module_adds_alpha_times_its_finetuned_change(strategy):
    """Per module the strategy inserts: output(alpha) - output(0) == alpha * (output(1) - output(0)) on the same
    input; output(0) is the module as at step 0 (the learned change is zero there)."""
    from peft.tuners.ia3.layer import Linear as IA3Linear
    from peft.tuners.lora.layer import Linear as LoraLinear

    kinds = {"lora": (FusedQKVLora, LoraLinear), "ia3": (IA3Linear,)}.get(strategy, ADDED.get(strategy))
    model = step0_model(strategy)
    interpolator = Interpolator(model, create_strategy(strategy))
    interpolator.load(finetuned_tensors(model))
    modules = {name: m for name, m in model.named_modules() if isinstance(m, kinds)}
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda m, args, name=name: inputs.setdefault(name, args[0].detach()))
             for name, m in modules.items()]
    with torch.no_grad():
        interpolator.set_alpha(1.0)
        model(IMAGES)
        for hook in hooks:
            hook.remove()
        assert len(inputs) == len(modules) >= 2 * len(model.backbone.blocks)

        def outputs(alpha):
            interpolator.set_alpha(alpha)
            return {name: modules[name](x) for name, x in inputs.items()}

        zero, one = outputs(0.0), outputs(1.0)
        assert all((one[n] - zero[n]).abs().max() > 1e-4 for n in modules)  # a change to scale
        for alpha in (0.25, 0.6):
            got = outputs(alpha)
            for name in modules:
                assert torch.allclose(got[name] - zero[name], alpha * (one[name] - zero[name]), rtol=1e-4, atol=1e-5)


def test_lp_ft_checkpoints_of_either_phase_load_and_a_probe_one_leaves_the_backbone_at_step0():
    model = step0_model("lp_ft")  # phase 0: the head trains
    strategy = create_strategy("lp_ft")
    strategy.enter_phase(model, 1)
    finetune = finetuned_tensors(model)  # a fine-tuning phase point: every parameter
    strategy.enter_phase(model, 0)
    probe = {name: tensor for name, tensor in finetune.items() if ".head." in name}
    with torch.no_grad():
        before = model(IMAGES)
    interpolator = Interpolator(model, strategy)
    interpolator.load(finetune)
    interpolator.set_alpha(1.0)
    interpolator.load(probe)
    interpolator.set_alpha(0.0)
    with torch.no_grad():
        assert torch.equal(model(IMAGES), before)  # nothing of the fine-tuning point is left


@pytest.mark.parametrize("strategy", ["lora", "full"])
def test_head_fine_tuned_keeps_the_checkpoints_head_at_every_alpha(strategy):
    model = step0_model(strategy)
    tuned = finetuned_tensors(model)
    interpolator = Interpolator(model, create_strategy(strategy), head="fine_tuned")
    head = {n for n in tuned if ".head." in n}
    assert interpolator.head_names == head and len(head) == 2  # weight and bias
    step0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    interpolator.load(tuned)
    params = dict(model.named_parameters())
    for alpha in (0.0, 0.5):
        interpolator.set_alpha(alpha)
        assert all(torch.equal(params[n], tuned[n]) for n in head)
        moved = [n for n in tuned if n not in head and interpolator.strategy.interpolation_rule(n) == "interpolate"]
        if alpha == 0.0:  # the rest is the starting model
            assert moved and all(torch.equal(params[n], step0[n]) for n in moved)


def test_a_given_start_replaces_the_step0_value_of_those_parameters_only():
    """lp_ft's fine-tuning points start from the probed head of the phase boundary."""
    model = step0_model("lp_ft")
    strategy = create_strategy("lp_ft")
    strategy.enter_phase(model, 1)
    finetune = finetuned_tensors(model)
    strategy.enter_phase(model, 0)
    probed = {n: t + 1.0 for n, t in finetune.items() if ".head." in n}
    step0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    interpolator = Interpolator(model, strategy)
    interpolator.load(finetune, start=probed)
    interpolator.set_alpha(0.0)
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], probed[n]) for n in probed)
    assert all(torch.equal(params[n], step0[n]) for n in finetune if n not in probed)
    with pytest.raises(InterpolationError, match="--head must be one of fine_tuned, interpolate"):
        Interpolator(model, strategy, head="zero")


def test_checkpoints_that_do_not_fit_the_model_are_refused():
    model = step0_model("bitfit")
    tuned = finetuned_tensors(model)
    interpolator = Interpolator(model, create_strategy("bitfit"))
    dropped = sorted(tuned)[0]
    with pytest.raises(WeightsError, match=f"missing \\['{dropped}'\\]"):
        interpolator.load({k: v for k, v in tuned.items() if k != dropped}, "f.safetensors")
    with pytest.raises(WeightsError, match="unexpected \\['extra'\\]"):
        interpolator.load({**tuned, "extra": torch.zeros(1)}, "f.safetensors")
    with pytest.raises(WeightsError, match=f"{dropped} has shape \\(1,\\)"):
        interpolator.load({**tuned, dropped: torch.zeros(1)}, "f.safetensors")


def test_alphas_are_parsed_and_checked():
    assert parse_alphas("1, 0,0.5,0.5") == (0.0, 0.5, 1.0)
    with pytest.raises(InterpolationError, match="'x' is not a number"):
        parse_alphas("0,x")
    with pytest.raises(InterpolationError, match="1.5 is outside \\[0, 1\\]"):
        parse_alphas("0,1.5")
    with pytest.raises(InterpolationError, match="nan is outside"):
        parse_alphas("nan")


# ---------------------------------------------------------------------------------------------------
# A real tiny run with kept checkpoints: rows, replacement, analysis, CLI


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LoRA run of 20 steps on digits keeping every point's weights (steps 0, 10, 20); the store is copied
    per test."""
    from rft_ray.specs import run_spec
    from rft_ray.training.runner import run_in_process

    root = tmp_path_factory.mktemp("wise")
    spec = run_spec(tiny_run(root, **{"training.steps": 20, "evaluation.schedule": [{"until": None, "every": 10}],
                                      "output.keep_checkpoints": "all", "output.run_id": "lora-tiny"}))
    result = run_in_process(spec, progress=False)
    assert sorted(result.kept_checkpoints) == [0, 10, 20]
    return root / "store", {r.step: r for r in result.records}


@pytest.fixture
def store(trained, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(trained[0], root)
    return root


def _files(root):
    return {p.name: p.read_bytes() for p in root.glob("*.parquet")}


def test_rows_reproduce_the_runs_own_points_at_alpha_one_and_zero(store, trained):
    records = trained[1]
    own_files = _files(store)
    rows = interpolate_store(str(store), [0.0, 0.5, 1.0], on="all", head="interpolate", log=lambda m: None)
    assert _files(store) == own_files  # the runs' own files are untouched
    wise = ResultStore(store / "interpolated")
    assert wise.run_ids() == ["lora-tiny.wise-step0", "lora-tiny.wise-step10", "lora-tiny.wise-step20"]
    assert [r.run_id for r in rows] == [f"lora-tiny.wise-step{s}" for s in (0, 10, 20) for _ in range(3)]
    for step in (10, 20):
        by_alpha = {r.wise_alpha: r for r in wise.read_run(f"lora-tiny.wise-step{step}")}
        assert sorted(by_alpha) == [0.0, 0.5, 1.0]
        assert all(r.step == step and r.source_run_id == "lora-tiny" and r.strategy == "lora"
                   for r in by_alpha.values())
        assert all(np.isnan(r.train_loss) for r in by_alpha.values())
        source, start = records[step], records[0]
        for key in ("train_clean_acc", "test_clean_acc", "pgd_adv_acc", "test_ood_accuracy", "ood_acc", "pgd_images",
                    "val_clean_acc", "val_pgd_adv_acc", "val_images", "val_pgd_images"):
            # same images, same seeds, the same weights: the same measurement, exactly
            assert getattr(by_alpha[1.0], key) == getattr(source, key), key
            assert getattr(by_alpha[0.0], key) == getattr(start, key), key  # alpha 0 is the step-0 model
        assert by_alpha[1.0].wall_seconds == source.wall_seconds and by_alpha[1.0].lr == source.lr
    # per-image verdicts keyed (step, alpha), on the run's own images: alpha 1 is the checkpoint's, alpha 0 step 0's
    own = ResultStore(store).read_verdicts("lora-tiny")
    for step in (10, 20):
        verdicts = wise.read_verdicts(f"lora-tiny.wise-step{step}")
        assert sorted(verdicts.points) == [(step, 0.0), (step, 0.5), (step, 1.0)]
        assert verdicts.subset_of("test_clean_acc").fingerprint == own.subset_of("test_clean_acc").fingerprint
        for metric, ok in own.points[step].items():
            assert np.array_equal(verdicts.points[(step, 1.0)][metric], ok), metric
            assert np.array_equal(verdicts.points[(step, 0.0)][metric], own.points[0][metric]), metric
        middle = {r.wise_alpha: r for r in wise.read_run(f"lora-tiny.wise-step{step}")}[0.5]
        assert verdicts.points[(step, 0.5)]["pgd_adv_acc"].mean() == pytest.approx(middle.pgd_adv_acc, abs=1e-6)
    assert "interpolated/verdicts/lora-tiny.wise-step20.parquet" in ResultStore(store).derived_files(
        "lora-tiny")["interpolated"]
    # the run's own rows carry no WiSE-FT marks (old files, without the columns, read back alike)
    assert all(r.wise_alpha is None and r.source_run_id is None for r in ResultStore(store).read_run("lora-tiny"))


def test_by_default_the_fine_tuned_head_stays_and_a_rerun_in_another_mode_replaces_every_row(store, trained):
    records = trained[1]
    interpolate_store(str(store), [0.0, 1.0], on="final", head="interpolate", log=lambda m: None)
    said = []
    rows = interpolate_store(str(store), [0.0, 1.0], on="final", log=said.append)
    by_alpha = {r.wise_alpha: r for r in rows}
    assert by_alpha[1.0].test_clean_acc == records[20].test_clean_acc  # alpha 1 is the checkpoint either way
    assert by_alpha[0.0].val_clean_acc is not None
    assert "head kept fine-tuned at every alpha" in said[0]
    assert any("another head mode" in line and "all replaced" in line for line in said)
    wise = ResultStore(store / "interpolated")
    assert wise.file_metadata("lora-tiny.wise-step20")["rft.wise_head"] == "fine_tuned"
    assert [r.wise_alpha for r in wise.read_run("lora-tiny.wise-step20")] == [0.0, 1.0]


def test_a_narrower_rerun_replaces_the_alphas_it_measures_again_and_keeps_the_rest(store):
    interpolate_store(str(store), [0.0, 0.5, 1.0], on="all", log=lambda m: None)
    files = [store / "interpolated" / f"lora-tiny.wise-step{step}.parquet" for step in (0, 10)]
    before = [f.read_bytes() for f in files]
    said = []
    interpolate_store(str(store), [0.25, 0.5], on="final", log=said.append)
    wise = ResultStore(store / "interpolated")
    assert wise.run_ids() == ["lora-tiny.wise-step0", "lora-tiny.wise-step10", "lora-tiny.wise-step20"]
    assert [f.read_bytes() for f in files] == before  # checkpoints not chosen this time: untouched
    rows = wise.read_run("lora-tiny.wise-step20")
    assert [r.wise_alpha for r in rows] == [0.0, 0.25, 0.5, 1.0]
    assert sorted(wise.read_verdicts("lora-tiny.wise-step20").points) == [(20, 0.0), (20, 0.25), (20, 0.5), (20, 1.0)]
    assert "  lora-tiny.wise-step20: replaces its rows of alpha 0.5; keeps those of alpha 0, 1" in said


def test_analysis_marks_wise_points_and_keeps_the_plain_auc(store, tmp_path):
    from analysis.auc import auc_table
    from analysis.report import analyze

    plain = analyze(str(store), tmp_path / "plain", figures=False).data
    interpolate_store(str(store), [0.0, 0.5, 1.0], on="all", log=lambda m: None)
    with_wise = analyze(str(store), tmp_path / "wise").data
    assert with_wise["auc"][0]["auc"] == plain["auc"][0]["auc"] == auc_table(ResultStore(store).read())[0]["auc"]
    assert "auc_with_wise" not in plain["auc"][0] and plain.get("wise") is None
    row = with_wise["auc"][0]
    assert row["n_wise_points"] == 9 and row["auc_with_wise"] >= row["auc"]
    assert with_wise["summary"]["n_points"] == plain["summary"]["n_points"] == 3  # not mixed into the points
    assert with_wise["wise"]["n_checkpoints"] == 3 and with_wise["wise"]["alphas"] == [0.0, 0.5, 1.0]
    report = (tmp_path / "wise" / "report.md").read_text()
    assert "AUC with WiSE-FT points" in report
    assert (tmp_path / "wise" / with_wise["figures"]["frontiers_digits"]).is_file()


def test_wise_auc_adds_the_points_of_each_groups_runs_only():
    """Hand-checked hypervolumes: run a has (0.5, 0.5), its interpolation (0.9, 0.1) adds 0.4 * 0.1."""
    from analysis.cleaning import clean_table
    from analysis.wise import add_wise_auc, clean_wise

    def rows(run_ids, steps, points, **extra):
        return pa.table({"run_id": run_ids, "strategy": ["lora"] * len(steps), "dataset": ["d"] * len(steps),
                         "step": steps, "test_clean_acc": [p[0] for p in points],
                         "pgd_adv_acc": [p[1] for p in points], "pgd_eps": [0.01] * len(steps), **extra})

    plain, _ = clean_table(rows(["a", "b"], [10, 10], [(0.5, 0.5), (0.2, 0.2)]))
    wise = rows(["a.wise-step10", "a.wise-step10", "c.wise-step10"], [10, 10, 10], [(0.9, 0.1), (0.5, 0.5), (1.0, 1.0)],
                wise_alpha=[0.5, 1.0, 0.5], source_run_id=["a", "a", "c"])  # run c is not in the plain table
    cleaned = clean_wise(wise, plain, None, strict=False)
    for pooling, want in (("pooled", 0.29), ("per_trial", 0.29)):
        auc = [{"strategy": "lora", "dataset": "d", "auc": 0.25}]
        add_wise_auc(auc, plain, cleaned, "hypervolume", pooling, None)
        assert auc[0]["auc_with_wise"] == pytest.approx(want) and auc[0]["n_wise_points"] == 2
    auc = [{"strategy": "lora", "dataset": "d", "auc": 0.25}]
    add_wise_auc(auc, plain, cleaned, "hypervolume", "pooled", 9)  # the checkpoint (step 10) is over budget
    assert auc[0]["n_wise_points"] == 0


def test_cli_interpolate_end_to_end_and_its_errors(store, tmp_path, capsys):
    from rft_ray.cli import main

    assert main(["interpolate", str(store), "--alphas", "0,1", "--on", "final", "--runs", "lora-*"]) == 0
    out = capsys.readouterr().out
    assert "run lora-tiny step 20 (lora: alpha scales" in out
    assert out.count("  alpha ") == 2 and "clean " in out and "PGD " in out and " s)" in out
    assert "2 interpolated points of 1 checkpoint(s)" in out
    assert [r.wise_alpha for r in ResultStore(store / "interpolated").read_run("lora-tiny.wise-step20")] == [0.0, 1.0]

    for args, message in (
            (["--alphas", "0,2"], "2 is outside [0, 1]"),
            (["--alphas", "0,half"], "'half' is not a number"),
            (["--runs", "nothing-*"], "no run in result store"),
    ):
        assert main(["interpolate", str(store), *args]) == 2
        assert message in cli_error(capsys.readouterr().err)
    shutil.rmtree(store / "checkpoints")
    assert main(["interpolate", str(store)]) == 2
    assert "no kept checkpoint to interpolate" in cli_error(capsys.readouterr().err)
    assert main(["interpolate", str(tmp_path / "absent")]) == 2
    assert "does not exist" in cli_error(capsys.readouterr().err)
