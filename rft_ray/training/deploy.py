"""A kept checkpoint used outside the platform: class predictions for image files (`rft predict`) and a plain timm
model file with the fine-tuned weights merged in (`rft export`).

**Predict.** `load_finetuned` rebuilds the point's classifier; each image is read as the run read its data
(`rft_ray.data.base.decode_image`: RGB, resized to the model's square input, bilinear) and the top-k classes by
softmax probability are returned with the run's class names (`class <i>` for files kept before names were).

**Export.** The strategy folds its modules into timm's own layers (`Strategy.merge`): LoRA's B @ A (scaled) is
added to the weights it adapts, (IA)^3's vectors scale the rows (output) or columns (input) of theirs, peft's
own `merge` for the peft layers, and q, k, v are one fused `qkv` again; full, linear, bitfit and lp_ft change
only timm's own parameters. The backbone's state dict, its keys and shapes checked against a freshly built timm
model of the same architecture, is written as safetensors with metadata saying how to load it with timm alone:

    model = timm.create_model(meta["timm_model"], num_classes=int(meta["num_classes"]),
                              img_size=int(meta["img_size"]), checkpoint_path=OUT)          # a timm name
    model = VisionTransformer(**json.loads(meta["vit_kwargs"])); model.load_state_dict(load_file(OUT))  # rft_*

where `meta = safetensors.safe_open(OUT, "pt").metadata()`. The model takes images normalised with the
metadata's `mean` and `std` (the platform's classifier normalises inside; timm's models do not), and its outputs
are the classes of `class_names`, in order. Adapter and Compacter insert non-linear bottleneck modules that no
timm layer expresses: their export is refused (MergeError) rather than written as a file timm cannot load.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from rft_ray.config import RunSpec
from rft_ray.models.strategies import create_strategy
from rft_ray.training.weights import load_finetuned, read_weights

EXPORT_FORMAT = "rft-ray timm export 1"


class ExportError(ValueError):
    """An export that cannot be written as asked (the destination), or a merge that does not give timm's model."""


@dataclass(frozen=True)
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class name, softmax probability), most probable first


def predict(checkpoint: str, images: list[str], top_k: int = 5, device: str = "cpu") -> list[Prediction]:
    """The top-k classes of each image file under the fine-tuned model of `checkpoint` (module docstring)."""
    from rft_ray.data.base import decode_image

    model = load_finetuned(checkpoint, device=device)
    names = model.class_names or [f"class {i}" for i in range(model.head.out_features)]
    out = []
    with torch.inference_mode():
        for path in images:
            pixels = decode_image(path, model.image_size, path).unsqueeze(0).to(device).float().div_(255.0)
            probabilities = torch.softmax(model(pixels).float(), dim=-1)[0]
            values, indices = probabilities.topk(min(top_k, len(probabilities)))
            out.append(Prediction(path, [(names[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())]))
    return out


def check_destination(out: str | Path, overwrite: bool) -> Path:
    """The export's file, checked before any work: a .safetensors path in an existing folder, not already there
    unless `overwrite`."""
    path = Path(out).expanduser()
    if path.suffix != ".safetensors":
        raise ExportError(f"{out}: the export is a safetensors file; name it <something>.safetensors")
    if not path.parent.is_dir():
        raise ExportError(f"{out}: the folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise ExportError(f"{out} already exists; choose another name, or --overwrite to replace it")
    return path


def export_timm(checkpoint: str, out: str | Path, overwrite: bool = False) -> dict[str, str]:
    """Write the kept point `checkpoint` as a plain timm model file `out` (module docstring); its metadata."""
    from safetensors.torch import save_file

    from rft_ray.results.files import atomic_path

    path = check_destination(out, overwrite)
    _, source = read_weights(checkpoint)
    spec = RunSpec.from_dict(json.loads(source["spec"]))
    model = load_finetuned(checkpoint)
    create_strategy(spec.strategy.name, spec.strategy.options).merge(model)
    backbone = model.backbone.eval()
    state = {k: v.detach().contiguous() for k, v in backbone.state_dict().items()}
    plain = _plain_shapes(spec, backbone)
    if {k: tuple(v.shape) for k, v in state.items()} != plain:
        extra, missing = sorted(state.keys() - plain.keys()), sorted(plain.keys() - state.keys())
        raise ExportError(f"{checkpoint}: the merged {spec.strategy.name} model is not timm's {spec.model.name} "
                          f"(extra {extra[:3]}, missing {missing[:3]})")
    metadata = {"format": EXPORT_FORMAT, "timm_model": "" if spec.model.name.startswith("rft_") else spec.model.name,
                "model": spec.model.name, "num_classes": source["num_classes"], "img_size": str(model.image_size),
                "mean": json.dumps(model.mean.flatten().tolist()), "std": json.dumps(model.std.flatten().tolist()),
                "class_names": source.get("class_names", ""), "strategy": spec.strategy.name,
                "run_id": source.get("run_id", ""), "step": source.get("step", ""), "source": str(checkpoint)}
    if spec.model.name.startswith("rft_"):  # registered by this package, not by timm: its VisionTransformer arguments
        metadata["vit_kwargs"] = json.dumps(vit_kwargs(backbone))
    with atomic_path(path) as temporary:
        save_file(state, str(temporary), metadata=metadata)
    return metadata


def vit_kwargs(backbone: torch.nn.Module) -> dict[str, int | float]:
    """The arguments of timm's `VisionTransformer` that build `backbone`'s architecture (the project's rft_* ViTs
    use its defaults for everything else)."""
    block = backbone.blocks[0]
    return {"img_size": int(backbone.patch_embed.img_size[0]), "patch_size": int(backbone.patch_embed.patch_size[0]),
            "embed_dim": int(backbone.embed_dim), "depth": len(backbone.blocks), "num_heads": int(block.attn.num_heads),
            "mlp_ratio": block.mlp.fc1.out_features / backbone.embed_dim, "num_classes": int(backbone.num_classes)}


def _plain_shapes(spec: RunSpec, backbone: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """The state dict shapes of the plain timm model the export claims to be (built on the meta device)."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    with torch.device("meta"):
        if spec.model.name.startswith("rft_"):
            plain = VisionTransformer(**vit_kwargs(backbone))
        else:
            plain = timm.create_model(spec.model.name, num_classes=backbone.num_classes,
                                      img_size=backbone.patch_embed.img_size[0])
    return {k: tuple(v.shape) for k, v in plain.state_dict().items()}
