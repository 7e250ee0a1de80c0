import pickle

import pytest
import torch
from safetensors.torch import save_file

from rft_ray.config import ModelSpec, SpecError
from rft_ray.models.backbones import BackboneError, create_classifier, embedded_weights_path, read_weight_file


def source_model():
    return create_classifier(ModelSpec(source="random"), num_classes=10, seed=3)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weight_file_loads_backbone_and_gets_a_new_head(tmp_path, suffix):
    upstream = source_model()
    state = {k: v.contiguous() for k, v in upstream.backbone.state_dict().items()}
    path = tmp_path / f"w{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    model = create_classifier(ModelSpec(source="file", weights=str(path)), num_classes=4, seed=0)
    assert torch.equal(model.backbone.blocks[0].attn.qkv.weight, upstream.backbone.blocks[0].attn.qkv.weight)
    assert model.backbone.head.weight.shape == (4, 128)


def test_weight_file_at_another_resolution_resamples_position_embeddings(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source_model().backbone.state_dict().items()}, str(path))
    model = create_classifier(ModelSpec(source="file", weights=str(path), image_size=64), num_classes=3)
    assert model.image_size == 64
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 3)


def test_normalisation_is_inside_the_model():
    model = create_classifier(ModelSpec(source="random", mean=[0.2, 0.3, 0.4], std=[0.5, 0.5, 0.5]), 5).eval()
    images = torch.rand(2, 3, 32, 32)
    expected = model.backbone((images - torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1)) / 0.5)
    torch.testing.assert_close(model(images), expected)


class Exploit:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickled_code_in_a_pth_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"weight": Exploit()}, handle)
    with pytest.raises(BackboneError, match=f"cannot read weight file '{path}'"):
        read_weight_file(path)
    assert "code ran" not in capsys.readouterr().out  # refused before the pickled call could run


@pytest.mark.parametrize("spec, error, message", [
    (ModelSpec(source="file", weights="/nonexistent/w.safetensors"), BackboneError, "does not exist"),
    (ModelSpec(name="vit_nonexistent_model", source="random"), SpecError, "unknown timm model"),
    (ModelSpec(name="vit_tiny_patch16_224", source="embedded"), SpecError, "embedded checkpoint is a"),
])
def test_backbone_errors(spec, error, message):
    with pytest.raises(error, match=message):
        create_classifier(spec, 10)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"something.weight": torch.zeros(3)}, str(path))
    with pytest.raises(BackboneError, match="does not fit model .rft_vit_cifar_patch8_32.: missing"):
        create_classifier(ModelSpec(source="file", weights=str(path)), 10)


def test_weights_of_another_architecture_are_one_line_naming_file_model_and_shapes(tmp_path):
    """A ViT of other widths (the timm ViT-Tiny's, 192 wide) into the embedded architecture (128 wide): one line
    with the file, the expected model and the first mismatched shapes, not PyTorch's size-mismatch traceback."""
    from timm.models.vision_transformer import VisionTransformer

    other = VisionTransformer(img_size=32, patch_size=8, embed_dim=192, depth=4, num_heads=3, num_classes=10)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(BackboneError) as err:
        create_classifier(ModelSpec(source="file", weights=str(path)), 10)
    message = str(err.value)
    assert message.startswith(f"weight file {path} does not fit model 'rft_vit_cifar_patch8_32': tensor shapes "
                              "differ, cls_token: file [1, 1, 192], model [1, 1, 128];")
    assert "(and " in message and "another architecture" in message and "\n" not in message


@pytest.mark.parametrize("prefix", ["module.", "model.", "module.model."])
def test_ddp_and_wrapper_prefixes_are_stripped(tmp_path, prefix):
    upstream = source_model()
    path = tmp_path / "w.pth"
    torch.save({prefix + k: v for k, v in upstream.backbone.state_dict().items()}, path)
    model = create_classifier(ModelSpec(source="file", weights=str(path)), num_classes=4)
    assert torch.equal(model.backbone.blocks[1].mlp.fc2.weight, upstream.backbone.blocks[1].mlp.fc2.weight)


def test_hub_weights_without_a_network_get_a_clear_error():
    import os
    import subprocess
    import sys

    code = ("from rft_ray.models.backbones import create_classifier\nfrom rft_ray.config import ModelSpec\n"
            "create_classifier(ModelSpec(name='vit_tiny_patch16_224.augreg_in21k', source='hub'), 10)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1")  # what a machine without a network sees, without waiting for it
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "could not download pretrained weights for 'vit_tiny_patch16_224.augreg_in21k'" in result.stderr
    assert "model.source: file" in result.stderr


def _timm_fresh_head(seed: int, classes: int, width: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """What timm's default ViT init (init_weights_vit_timm) draws for a new classifier from `seed`."""
    from timm.layers import trunc_normal_

    torch.manual_seed(seed)
    return trunc_normal_(torch.empty(classes, width), std=0.02), torch.zeros(classes)


def test_embedded_model_on_a_ten_class_task_starts_from_a_fresh_seeded_head_not_the_files():
    """The embedded file's CIFAR-10 classifier has the same shape as any 10-class task's head: it is not loaded."""
    stored = read_weight_file(embedded_weights_path())
    model = create_classifier(ModelSpec(source="embedded"), num_classes=10, seed=5)
    weight, bias = _timm_fresh_head(5, 10)
    assert model.head_init == "fresh"
    assert not torch.allclose(model.backbone.head.weight, stored["head.weight"])
    assert torch.equal(model.backbone.head.weight, weight) and torch.equal(model.backbone.head.bias, bias)
    assert torch.equal(model.backbone.blocks[0].attn.qkv.weight, stored["blocks.0.attn.qkv.weight"])  # backbone loaded
    other = create_classifier(ModelSpec(source="embedded"), num_classes=10, seed=6)
    assert not torch.equal(other.backbone.head.weight, weight)  # the run's seed draws it


def test_keep_head_loads_the_pretrained_classifier_on_the_same_label_set():
    stored = read_weight_file(embedded_weights_path())
    model = create_classifier(ModelSpec(source="embedded", keep_head=True), num_classes=10, seed=5)
    assert model.head_init == "pretrained"
    assert torch.equal(model.backbone.head.weight, stored["head.weight"])
    assert torch.equal(model.backbone.head.bias, stored["head.bias"])


def test_keep_head_with_another_class_count_is_refused_naming_both_counts():
    with pytest.raises(BackboneError, match="has 10 classes and this task 7: a head is kept only on the same label set"):
        create_classifier(ModelSpec(source="embedded", keep_head=True), num_classes=7)


def test_keep_head_needs_a_file_with_a_classifier(tmp_path):
    path = tmp_path / "w.safetensors"
    state = {k: v.contiguous() for k, v in source_model().backbone.state_dict().items() if not k.startswith("head.")}
    save_file(state, str(path))
    assert create_classifier(ModelSpec(source="file", weights=str(path)), 4).head_init == "fresh"
    with pytest.raises(BackboneError, match="has no classifier"):
        create_classifier(ModelSpec(source="file", weights=str(path), keep_head=True), 10)


def test_keep_head_with_random_weights_is_a_spec_error():
    with pytest.raises(SpecError, match="keep_head"):
        ModelSpec(source="random", keep_head=True)
