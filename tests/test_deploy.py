"""Class names travel (store metadata, kept checkpoints, load_finetuned), `rft run` says what it loaded, and a
kept checkpoint is used outside the platform: `rft predict` and `rft export` (rft_ray.training.deploy)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_run
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rft_ray.cli import main
from rft_ray.config import ModelSpec
from rft_ray.models.backbones import create_classifier
from rft_ray.models.strategies import create_strategy
from rft_ray.models.strategies.base import MergeError
from rft_ray.results.record import EvalRecord
from rft_ray.results.store import ResultStore
from rft_ray.specs import run_spec
from rft_ray.training.deploy import ExportError, export_timm
from rft_ray.training.weights import load_finetuned, weights_content

FRUIT = ["apple", "banana", "cherry", "date"]


def fruit_folder(root, per_class: int = 8) -> None:
    rng = np.random.default_rng(0)
    for c, name in enumerate(FRUIT):
        (root / name).mkdir(parents=True)
        for i in range(per_class):  # each class its own colour, so a few steps learn something
            pixels = np.clip(rng.normal(60 * c + 40, 20, size=(24, 20 + 4 * (i % 2), 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_rft_run_says_what_it_loaded_and_class_names_reach_the_store_checkpoints_and_predict(tmp_path, capsys):
    fruit_folder(tmp_path / "fruit")
    fruit_folder(tmp_path / "scans", per_class=2)
    spec = tiny_run(tmp_path, **{"dataset": {"name": "imagefolder", "root": str(tmp_path / "fruit"),
                                             "corruptions": ["contrast"], "ood": {"scans": str(tmp_path / "scans")}},
                                 "training.steps": None, "training.batch_size": 8,
                                 "output.keep_checkpoints": "all"})
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert main(["run", "--spec", str(tmp_path / "spec.json"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    run_id = "lora-fruit-rft_vit_cifar_patch8_32-lr0.003-wd0.01-s0"
    lines = out.splitlines()
    assert lines[0] == f"run {run_id}"
    assert lines[1] == f"  data: imagefolder 'fruit' from {tmp_path / 'fruit'}: 4 classes (apple, banana, cherry, date)"
    assert lines[2] == ("  images: train 20, validation 4 (val_fraction 0.1 of the training images, seeded by split_seed "
                        "0), test 8; RGB, resized to 16x16 bilinear, aspect ratio not kept (non-square images are "
                        "stretched)")
    assert lines[3] == ("  OOD domains: contrast 8, scans (own) 8; corruptions at severity 3; evaluated on 20 per "
                        "domain, pooled equal")
    assert lines[4].startswith("  evaluation: clean accuracy on 20 train and 8 test images; PGD L-inf eps 4/255, 3 "
                               "steps of 1/255, any_iterate, on 8 of those test images")
    assert lines[5] == ("  validation: clean accuracy on 4 validation images; PGD at eps 4/255 (as on test) on 4 of "
                        "them; OOD validation off (evaluation.validation.ood)")
    assert lines[6] == ("  head: new, 4 outputs, initialised as timm initialises a ViT's (truncated normal, std 0.02; "
                        "bias 0) from training.seed 0; no pretrained classifier is loaded")
    assert lines[7].startswith("  strategy: lora on rft_vit_cifar_patch8_32: ") and "parameters trainable" in lines[7]
    assert lines[8] == "  training: 2 steps of batch 8 (1 epochs of 2 steps)"
    assert ("rft: warning: the spec gives neither training.steps nor training.epochs, so the run trains 1 epoch = 2 "
            "steps") in err

    store = ResultStore(tmp_path / "store")
    assert store.class_names(run_id) == FRUIT and store.head_init(run_id) == "fresh"
    assert "ood_acc/scans" in store.read().column_names
    kept = store.checkpoints(run_id)
    with safe_open(kept[2], framework="pt") as handle:
        assert json.loads(handle.metadata()["class_names"]) == FRUIT
    model = load_finetuned(kept[2])
    assert model.class_names == FRUIT

    image = tmp_path / "fruit" / "cherry" / "0.png"
    assert main(["predict", kept[2], str(image), "--top-k", "2", "--json"]) == 0
    [answer] = json.loads(capsys.readouterr().out)
    assert answer["path"] == str(image) and len(answer["top"]) == 2
    assert {t["class"] for t in answer["top"]} <= set(FRUIT)
    assert answer["top"][0]["probability"] >= answer["top"][1]["probability"]
    assert main(["predict", kept[2], str(image)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{image}: {answer['top'][0]['class']} ")


def _kept_file(tmp_path, strategy: str, options: dict | None = None, model: str = "rft_vit_cifar_patch8_32",
               source: str = "embedded", image_size: int | None = None) -> str:
    """A kept-point file of a model whose every trainable parameter was moved off its initial value (so LoRA's
    B and (IA)^3's vectors are not the identity), written as CheckpointKeeper writes one."""
    spec = run_spec({"model": {"name": model, "source": source, "image_size": image_size},
                     "strategy": {"name": strategy, "options": options or {}}, "training": {"seed": 1}})
    classifier = create_classifier(spec.model, 3, seed=spec.training.seed)
    create_strategy(spec.strategy.name, spec.strategy.options).apply(classifier)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for param in classifier.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    record = EvalRecord(run_id="r", strategy=strategy, dataset="d", model=model, lr=1e-3, weight_decay=0.0, seed=1,
                        step=5, total_steps=5, epoch=1.0, examples_seen=5, train_loss=0.1, train_clean_acc=0.5,
                        test_clean_acc=0.5, pgd_adv_acc=0.1, pgd_eps=1 / 255, test_ood_accuracy=0.2,
                        trainable_params=1, total_params=2, wall_seconds=1.0, eval_seconds=1.0)
    tensors, metadata = weights_content(classifier, spec, record, ["x", "y", "z"])
    path = tmp_path / f"{strategy}.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    return str(path)


@pytest.mark.parametrize("strategy, options", [
    ("lora", {}), ("lora", {"targets": ["q", "v", "proj", "fc1"], "r": 2}), ("ia3", {}),
    ("ia3", {"targets": ["q", "k", "fc1", "fc2"], "feedforward": ["fc2"]}), ("bitfit", {}), ("full", {}),
    ("linear", {}), ("lp_ft", {}),
])
def test_export_is_a_plain_timm_model_with_the_same_logits(tmp_path, strategy, options):
    """Loaded with timm alone (its VisionTransformer and load_state_dict, strict), the export gives the fine-tuned
    model's logits on normalised images."""
    from timm.models.vision_transformer import VisionTransformer

    kept = _kept_file(tmp_path, strategy, options)
    out = tmp_path / "plain.safetensors"
    meta = export_timm(kept, out)
    with safe_open(str(out), framework="pt") as handle:
        assert handle.metadata() == meta
    plain = VisionTransformer(**json.loads(meta["vit_kwargs"])).eval()
    plain.load_state_dict(load_file(str(out)))  # strict: exactly timm's keys and shapes
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    mean, std = (torch.tensor(json.loads(meta[k])).view(1, 3, 1, 1) for k in ("mean", "std"))
    finetuned = load_finetuned(kept)
    with torch.no_grad():
        torch.testing.assert_close(plain((images - mean) / std), finetuned(images), atol=2e-5, rtol=1e-4)
    assert json.loads(meta["class_names"]) == ["x", "y", "z"] and meta["timm_model"] == ""


def test_export_of_a_timm_named_model_loads_with_timm_create_model(tmp_path):
    import timm

    kept = _kept_file(tmp_path, "lora", model="vit_tiny_patch16_224", source="random", image_size=32)
    meta = export_timm(kept, tmp_path / "tiny.safetensors")
    assert meta["timm_model"] == "vit_tiny_patch16_224" and meta["img_size"] == "32"
    plain = timm.create_model(meta["timm_model"], num_classes=int(meta["num_classes"]), img_size=int(meta["img_size"]),
                              checkpoint_path=str(tmp_path / "tiny.safetensors")).eval()
    images = torch.rand(2, 3, 32, 32)
    mean, std = (torch.tensor(json.loads(meta[k])).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        torch.testing.assert_close(plain((images - mean) / std), load_finetuned(kept)(images), atol=2e-5, rtol=1e-4)


def test_export_refuses_adapters_and_checks_its_destination_first(tmp_path, capsys):
    for strategy in ("adapter", "compacter"):
        with pytest.raises(MergeError, match=f"{strategy} adds .* cannot be merged into a plain timm model"):
            export_timm(_kept_file(tmp_path, strategy), tmp_path / f"{strategy}.out.safetensors")
        assert not (tmp_path / f"{strategy}.out.safetensors").exists()
    kept = _kept_file(tmp_path, "bitfit")
    (tmp_path / "taken.safetensors").write_bytes(b"keep me")
    for out, message in ((tmp_path / "taken.safetensors", "already exists"), (tmp_path / "x.pt", "safetensors file"),
                         (tmp_path / "no" / "x.safetensors", "does not exist")):
        with pytest.raises(ExportError, match=message):
            export_timm(kept, out)
    assert (tmp_path / "taken.safetensors").read_bytes() == b"keep me"
    assert main(["export", _kept_file(tmp_path, "adapter"), str(tmp_path / "a.safetensors")]) == 2
    assert capsys.readouterr().err.startswith("rft: error: adapter adds a bottleneck adapter")
    assert main(["export", kept, str(tmp_path / "b.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "exported bitfit rft_vit_cifar_patch8_32 (run r, step 5)" in out and "3 classes (x, y, z)" in out
    assert "VisionTransformer(**json.loads(meta['vit_kwargs']))" in out


def test_old_files_without_class_names_still_load(tmp_path):
    kept = _kept_file(tmp_path, "linear")
    tensors = load_file(kept)
    with safe_open(kept, framework="pt") as handle:
        metadata = {k: v for k, v in handle.metadata().items() if k != "class_names"}
    save_file(tensors, kept, metadata=metadata)
    assert load_finetuned(kept).class_names is None
    assert ModelSpec().name == "rft_vit_cifar_patch8_32"
