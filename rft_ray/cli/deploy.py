"""`rft predict CHECKPOINT IMAGES...` and `rft export CHECKPOINT OUT`: a kept checkpoint used outside the platform
(`rft_ray.training.deploy`)."""
from __future__ import annotations

import argparse
import json


def add_deploy_commands(sub) -> None:
    predict = sub.add_parser("predict", help="top-k classes of image files under a kept checkpoint's model",
                             description="Classify image files with the fine-tuned model of a kept checkpoint "
                             "(<store>/checkpoints/<run>/step-<step>.safetensors, local or a URI): each image is "
                             "read as the run read its data (RGB, resized to the model's input) and its top-k classes "
                             "are printed with their softmax probabilities.")
    predict.add_argument("checkpoint", metavar="CHECKPOINT", help="a kept weights file (rft checkpoints lists them)")
    predict.add_argument("images", metavar="IMAGES", nargs="+", help="image files (any format PIL reads)")
    predict.add_argument("--top-k", type=int, default=3, help="classes shown per image (default 3)")
    predict.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    predict.add_argument("--json", action="store_true", help="print a JSON list of {path, top: [{class, probability}]}")
    predict.set_defaults(handler=cmd_predict)

    export = sub.add_parser("export", help="a kept checkpoint as a plain timm model file, PEFT weights merged",
                            description="Write a kept checkpoint as a safetensors file of timm's own model with the "
                            "fine-tuned weights merged in (LoRA, (IA)^3, BitFit, full, linear, lp_ft), loadable with "
                            "timm alone; its metadata holds the timm model name, classes, input size and "
                            "normalisation. Adapter and Compacter add modules timm's ViT has no layer for: refused.")
    export.add_argument("checkpoint", metavar="CHECKPOINT", help="a kept weights file (rft checkpoints lists them)")
    export.add_argument("out", metavar="OUT", help="the file to write, <name>.safetensors")
    export.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    export.set_defaults(handler=cmd_export)


def cmd_predict(args: argparse.Namespace) -> int:
    from rft_ray.training.deploy import predict
    from rft_ray.training.weights import WeightsError

    if args.top_k < 1:
        raise WeightsError(f"--top-k must be at least 1, got {args.top_k}")
    predictions = predict(args.checkpoint, args.images, args.top_k, args.device)
    if args.json:
        print(json.dumps([{"path": p.path, "top": [{"class": c, "probability": v} for c, v in p.top]}
                          for p in predictions], indent=1))
        return 0
    for p in predictions:
        print(f"{p.path}: " + ", ".join(f"{c} {v:.3f}" for c, v in p.top))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from rft_ray.training.deploy import export_timm

    meta = export_timm(args.checkpoint, args.out, args.overwrite)
    classes = json.loads(meta["class_names"]) if meta["class_names"] else []
    load = (f"timm.create_model({meta['timm_model']!r}, num_classes={meta['num_classes']}, img_size={meta['img_size']}, "
            f"checkpoint_path={args.out!r})" if meta["timm_model"] else
            f"timm.models.vision_transformer.VisionTransformer(**json.loads(meta['vit_kwargs'])), then "
            f"load_state_dict(safetensors.torch.load_file({args.out!r}))")
    print(f"exported {meta['strategy']} {meta['model']} (run {meta['run_id']}, step {meta['step']}) to {args.out}: "
          f"{meta['num_classes']} classes" + (f" ({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''})"
                                              if classes else "")
          + f", input {meta['img_size']}x{meta['img_size']} normalised with mean {meta['mean']}, std {meta['std']}")
    print(f"load with timm alone: {load}")
    return 0
