"""`rft interpolate STORE`: WiSE-FT points of the kept checkpoints (`rft_ray.training.interpolate`)."""
from __future__ import annotations

import argparse

DEFAULT_ALPHAS_TEXT = "0,0.25,0.5,0.75,1"


def cmd_interpolate(args: argparse.Namespace) -> int:
    from analysis.wise import wise_root
    from rft_ray.training.interpolate import interpolate_store, parse_alphas

    alphas = parse_alphas(args.alphas)  # before any model is built: bad input fails at once
    rows = interpolate_store(args.store, alphas, on=args.on, runs=args.runs, device=args.device, head=args.head,
                             log=lambda line: print(line, flush=True))  # notes on points left out included
    checkpoints = {(r.source_run_id, r.step) for r in rows}
    print(f"{len(rows)} interpolated points of {len(checkpoints)} checkpoint(s) in {wise_root(args.store)} "
          f"(rft analyze {args.store} marks them as WiSE-FT points)")
    return 0


def add_interpolate_command(sub) -> None:
    from rft_ray.results.checkpoints import POINT_CHOICES

    p = sub.add_parser(
        "interpolate", help="WiSE-FT: evaluate weight interpolations between the starting model and each kept "
                            "checkpoint",
        description=(
            "For every kept checkpoint (output.keep_checkpoints) of the chosen runs, evaluate the model whose "
            "trained parameters are start value + alpha x (fine-tuned - start value), for each alpha, with the "
            "run's own evaluation (clean, PGD, OOD, validation, same seeded images); the start is the step-0 "
            "model, for lp_ft's fine-tuning points the probed model at the phase boundary. The head stays "
            "fine-tuned at every alpha unless --head interpolate. PEFT strategies scale the learned change "
            "exactly (LoRA: alpha x B with A fine-tuned; adapters: their up-projections). Rows go to "
            "STORE/interpolated (the runs' own files are untouched); interpolating a run again replaces its rows. "
            "`rft analyze STORE` marks the points and adds an AUC column with them."))
    p.add_argument("store", metavar="STORE", help="result store (folder or URI) holding the runs and checkpoints/")
    p.add_argument("--alphas", default=DEFAULT_ALPHAS_TEXT,
                   help=f"comma-separated alphas in [0, 1] (default {DEFAULT_ALPHAS_TEXT}; 0: the starting "
                        "model, with --head fine_tuned its head the checkpoint's; 1: the checkpoint)")
    p.add_argument("--on", choices=POINT_CHOICES, default="frontier",
                   help="which kept checkpoints (as rft attack chooses): those on the run's own clean-vs-PGD front "
                        "(default), all, or the run's last kept one")
    p.add_argument("--runs", default="*", metavar="GLOB", help="only runs whose id matches this glob (default all)")
    p.add_argument("--head", choices=["fine_tuned", "interpolate"], default="fine_tuned",
                   help="fine_tuned (default): keep the checkpoint's head at every alpha (the starting head is a "
                        "new, random one: moving towards it mixes random logits in); interpolate: move the head "
                        "too, so alpha 0 is exactly the starting model")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"],
                   help="evaluate here instead of on the run's own training.device")
    p.set_defaults(handler=cmd_interpolate)
