"""Backbones: a timm ViT from the hub, a local weight file, the embedded checkpoint, or random init.

The returned `ImageClassifier` takes float images in [0, 1] pixel space and normalises inside, so
attacks (eps in pixel units) and corruptions never see normalised tensors.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import timm
import torch
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn, init_weights_vit_timm
from torch import nn

from rft_ray.config import ModelSpec, SpecError

EMBEDDED_MODEL = "rft_vit_cifar_patch8_32"
EMBEDDED_WEIGHTS = "vit_cifar10_patch8_32.safetensors"
# The paper normalised with mean = std = 0.5; the embedded model was pretrained the same way.
HALF = (0.5, 0.5, 0.5)


class BackboneError(ValueError):
    """A backbone that cannot be built or loaded: names the model or file."""


@register_model
def rft_vit_cifar_patch8_32(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """Small ViT for 32x32 images (patch 8: 16 tokens + class token, cheap enough for CPU PGD); the embedded default's architecture."""
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    if pretrained:
        raise BackboneError(f"{EMBEDDED_MODEL} has no hub weights; use model.source: embedded")
    args = dict(img_size=32, patch_size=8, embed_dim=128, depth=4, num_heads=4, mlp_ratio=4.0, num_classes=10)
    args.update(kwargs)
    model = VisionTransformer(**args)
    model.pretrained_cfg = {"mean": HALF, "std": HALF, "input_size": (3, args["img_size"], args["img_size"]),
                            "num_classes": args["num_classes"], "architecture": EMBEDDED_MODEL}
    return model


class ImageClassifier(nn.Module):
    """A timm model behind an input normalisation: forward takes images in [0, 1]."""

    class_names: list[str] | None = None  # what each output means, in order (set by a run and by load_finetuned)
    head_init: str = "fresh"  # "fresh" (seeded new classifier) or "pretrained" (model.keep_head); create_classifier

    def __init__(self, backbone: nn.Module, mean, std, image_size: int, name: str):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.image_size = image_size
        self.name = name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone((images - self.mean) / self.std)

    @property
    def head(self) -> nn.Module:
        return self.backbone.get_classifier()


def embedded_weights_path() -> Path:
    return Path(str(resources.files("rft_ray") / "assets" / EMBEDDED_WEIGHTS))


def _create(name: str, pretrained: bool, **kwargs) -> nn.Module:
    if name not in timm.list_models(pretrained=False) and name.split(".")[0] not in timm.list_models():
        close = timm.list_models(f"*{name.split('.')[0][:8]}*")[:5]
        raise SpecError(f"unknown timm model {name!r}" + (f"; similar: {', '.join(close)}" if close else ""),
                        "model.name")
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError) as err:
        if pretrained:
            raise BackboneError(
                f"could not download pretrained weights for {name!r} ({err.__class__.__name__}: {err}). "
                "Without a network use model.source: file with a local .safetensors/.pth, "
                "or model.source: embedded / random") from err
        raise


def read_weight_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict without executing code: safetensors, or torch.load with weights_only=True."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BackboneError(f"weight file {str(path)!r} does not exist (model.weights)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif path.suffix in (".pth", ".pt", ".bin"):
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise BackboneError(f"weight file {str(path)!r}: expected .safetensors or .pth/.pt/.bin")
    except BackboneError:
        raise
    except Exception as err:  # corrupt file, pickled code refused by weights_only, ...
        raise BackboneError(f"cannot read weight file {str(path)!r}: {err.__class__.__name__}: {err}") from err
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"weight file {str(path)!r} does not hold a state dict of tensors")
    return {k: v.float() if v.is_floating_point() else v for k, v in _without_wrapper_prefix(state).items()}


def _without_wrapper_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys as the bare model names them: a `module.` (DistributedDataParallel, DataParallel) or `model.` prefix
    that every key carries is removed (repeatedly: `module.model.` too)."""
    for _ in range(3):
        prefix = next((p for p in ("module.", "model.") if state and all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _wrong_shapes(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> list[tuple[str, tuple, tuple]]:
    """(name, shape in the file, shape in the model) of each tensor that differs, in the model's order."""
    return [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items() if k in state and state[k].shape != v.shape]


def _mismatch(origin: str, model_name: str, pairs: list[tuple[str, tuple, tuple]]) -> BackboneError:
    shown = "; ".join(f"{key}: file {list(file)}, model {list(own)}" for key, file, own in pairs[:3])
    more = f" (and {len(pairs) - 3} more)" if len(pairs) > 3 else ""
    return BackboneError(f"weight file {origin} does not fit model {model_name!r}: tensor shapes differ, {shown}"
                         f"{more}; was it saved from another architecture? (set model.name to it)")


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], origin: str, keep_head: bool = False) -> None:
    """Load pretrained weights into `model`, except its classifier unless `keep_head` (then the file's classifier
    must have the model's class count)."""
    head = model.get_classifier()
    state = {k: v for k, v in state.items()}
    own = model.state_dict()
    name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or model.__class__.__name__
    if hasattr(model, "pos_embed"):
        try:  # resamples position (and patch) embeddings to the model's size
            state = checkpoint_filter_fn(state, model)
        except (RuntimeError, ValueError, KeyError, IndexError) as err:
            wrong = _wrong_shapes(state, own)
            raise (_mismatch(origin, name, wrong) if wrong else
                   BackboneError(f"weight file {origin} does not fit model {name!r}: {err}")) from err
    head_keys = {f"head.{n}" for n, _ in head.named_parameters()}
    if keep_head:
        _check_kept_head(state, own, head_keys, origin)
    else:  # another task's classifier: never loaded, the run's head stays its own fresh one
        state = {k: v for k, v in state.items() if k not in head_keys}
    wrong = _wrong_shapes(state, own)
    if wrong:
        raise _mismatch(origin, name, wrong)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in head_keys or keep_head]
    if missing or unexpected:
        raise BackboneError(
            f"weight file {origin} does not fit model {name!r}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]} (is model.name the architecture they were saved from?)")


def _check_kept_head(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], head_keys: set[str],
                     origin: str) -> None:
    absent = sorted(head_keys - set(state))
    if absent:
        raise BackboneError(f"model.keep_head is true, but weight file {origin} has no classifier ({absent[0]} is "
                            "missing); set keep_head: false to start from a fresh head")
    weight = next((k for k in sorted(head_keys) if k.endswith("weight")), sorted(head_keys)[0])
    if state[weight].shape != own[weight].shape:
        raise BackboneError(f"model.keep_head is true, but the classifier in {origin} has {state[weight].shape[0]} "
                            f"classes and this task {own[weight].shape[0]}: a head is kept only on the same label set "
                            "(set keep_head: false for a fresh head)")


def fresh_head_(model: nn.Module, seed: int) -> None:
    """Initialise the model's classifier in place as timm initialises a new VisionTransformer's (its default
    weight_init '': `init_weights_vit_timm`, weights truncated normal with std 0.02, biases zero), drawn from
    `seed` alone: the same seed gives the same head whatever the backbone's weights or how they were loaded.
    The global random state is left as it was."""
    heads = model.get_classifier()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for module in (heads if isinstance(heads, tuple) else (heads,)):
            for part in module.modules():
                init_weights_vit_timm(part)


def create_classifier(spec: ModelSpec, num_classes: int, seed: int = 0) -> ImageClassifier:
    """Build the backbone with a freshly initialised `num_classes` head seeded by `seed` (`fresh_head_`): a
    pretrained classifier is never loaded, even one of the same class count, unless `spec.keep_head` (then it
    must have `num_classes` classes). The result's `head_init` says which: "fresh" or "pretrained"."""
    name = spec.name
    if spec.source == "embedded" and name != EMBEDDED_MODEL:
        raise SpecError(f"the embedded checkpoint is a {EMBEDDED_MODEL}, but model.name is {name!r}; "
                        "use source: hub, file or random for other models", "model.source")
    kwargs = {}
    if spec.image_size is not None:
        kwargs["img_size"] = spec.image_size
    torch.manual_seed(seed)  # head (and random-init) weights are part of the run's seeded state
    if spec.source == "hub":
        backbone = _create(name, pretrained=True, num_classes=num_classes, **kwargs)
        pretrained_classes = (getattr(backbone, "pretrained_cfg", None) or {}).get("num_classes")
        if spec.keep_head and pretrained_classes != num_classes:  # timm dropped the hub classifier
            raise BackboneError(f"model.keep_head is true, but {name!r}'s pretrained classifier has "
                                f"{pretrained_classes} classes and this task {num_classes}: a head is kept only on "
                                "the same label set (set keep_head: false for a fresh head)")
    else:
        backbone = _create(name, pretrained=False, num_classes=num_classes, **kwargs)
        if spec.source in ("embedded", "file"):
            path = embedded_weights_path() if spec.source == "embedded" else Path(spec.weights)
            _load_state(backbone, read_weight_file(path), str(path), keep_head=spec.keep_head)
    if not spec.keep_head:
        fresh_head_(backbone, seed)  # also for hub weights whose classifier happened to have num_classes outputs
    cfg = getattr(backbone, "pretrained_cfg", {}) or {}
    mean = tuple(spec.mean or cfg.get("mean") or HALF)
    std = tuple(spec.std or cfg.get("std") or HALF)
    image_size = spec.image_size or int(cfg.get("input_size", (3, 224, 224))[-1])
    model = ImageClassifier(backbone, mean, std, image_size, name)
    model.head_init = "pretrained" if spec.keep_head else "fresh"
    return model
