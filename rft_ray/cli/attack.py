"""`rft attack STORE --attack ... --on ...`: stronger attacks on the kept weights of evaluation points
(registered on the main parser by `add_attack_command`; the work is rft_ray.attack.runner's)."""
from __future__ import annotations

import argparse


def cmd_attack(args: argparse.Namespace) -> int:
    from rft_ray.attack.runner import run_attacks, wants_ray
    from rft_ray.results.attacks import parse_attacks, parse_radii

    attacks = parse_attacks(args.attack)
    radii = parse_radii(args.eps or []) or None
    summary = run_attacks(args.store, attacks, on=args.on, radii=radii, runs=args.runs, device=args.device,
                          on_ray=wants_ray(args.address), address=args.address,
                          log=lambda line: print(line, flush=True))
    return 1 if summary.failures else 0


def add_attack_command(sub) -> None:
    from rft_ray.results.checkpoints import POINT_CHOICES
    from rft_ray.results.attacks import ATTACK_SLUGS

    attack = sub.add_parser("attack", help="AutoAttack, APGD, FAB, Square or PGD again on kept checkpoints",
                            description=(
        "Re-evaluate the kept weights of evaluation points (output.keep_checkpoints) with stronger attacks, on "
        "the same seeded, stratified images the run's PGD attacked: autoattack (the standard L-inf version: "
        "APGD-CE, APGD-T, FAB-T, Square; 100 iterations, 9 target classes, 5000 queries), its parts alone, or the "
        "run's own PGD at other radii. Results go to STORE/attacks/<run_id>.parquet as columns "
        "<slug>_adv_acc/<eps> (slugs: " + ", ".join(f"{k} -> {v}" for k, v in ATTACK_SLUGS.items()) + "), "
        "merged with earlier ones, never touching the runs' own files; `rft analyze` reads them. Runs on Ray, one "
        "task per checkpoint (a GPU each when the cluster has GPUs), when --address or RAY_ADDRESS names a "
        "cluster; in this process otherwise. Prints the cost: images, forward-backward passes, time."))
    attack.add_argument("store", metavar="STORE", help="result store: a local folder or a URI (s3://..., gs://...)")
    attack.add_argument("--attack", action="append", required=True, metavar="NAME",
                        help=f"{', '.join(ATTACK_SLUGS)}; comma-separated or repeated")
    attack.add_argument("--on", choices=POINT_CHOICES, default="frontier",
                        help="frontier: the kept points on each run's own clean-vs-PGD front (default; on the split "
                             "the run kept its front on, validation when it selects on it: rft checkpoints says); all: "
                             "every kept point; final: each run's last kept point")
    attack.add_argument("--eps", action="append", metavar="EPS",
                        help="L-inf radii, e.g. 1/255,2/255 (default: each run's own PGD radius)")
    attack.add_argument("--runs", metavar="GLOB", help="only runs whose id matches this glob, e.g. 'lora-*'")
    attack.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where each checkpoint is attacked (auto: a GPU when there is one)")
    attack.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS; neither: in this process)")
    attack.set_defaults(handler=cmd_attack)
