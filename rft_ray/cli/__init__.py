"""`rft`: run, strategies, pretrain, demo, analyze. Bad input gets one clear paragraph, never a traceback."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

EXIT_BAD_INPUT = 2


# The exceptions that are the user's input, not a bug (one line, no traceback), by module: an exception can only
# be raised once its module is loaded, so checking the loaded ones imports nothing (an error about a spec must
# not wait for torch).
_USER_ERRORS = {
    "rft_ray.config.fields": "SpecError", "rft_ray.data.base": "DataError", "rft_ray.models.backbones": "BackboneError",
    "rft_ray.results.store": "StoreError", "rft_ray.training.plugins": "PluginError",
    "rft_ray.training.interpolate": "InterpolationError", "rft_ray.training.weights": "WeightsError",
    "rft_ray.results.attacks": "AttackError", "rft_ray.training.deploy": "ExportError",
    "rft_ray.models.strategies.base": "MergeError", "rft_ray.cost.calibrate": "CalibrationError",
    "rft_ray.results.files": "DestinationError", "rft_ray.results.lease": "LeaseError",
    "rft_ray.training.checkpoint": "CheckpointError",
}


def is_user_error(err: BaseException) -> bool:
    for module, name in _USER_ERRORS.items():
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(err, getattr(loaded, name)):
            return True
    return False


# What `rft` says on Ctrl-C: what is kept, and what running the same command again does.
INTERRUPTED = {
    "run": "completed evaluation points are in the result store; run the same command again to resume from the last "
           "checkpoint",
    "attack": "points attacked so far are in the store's attacks/ folder; running the command again attacks every "
              "chosen point again (each value measured again is replaced, the others are kept)",
    "interpolate": "checkpoints interpolated so far are in the store's interpolated/ folder; running the command "
                   "again evaluates every chosen checkpoint again (rows of other alphas and checkpoints are kept)",
    "sweep": "continue the sweep with `rft sweep {spec} --resume`",
}


def _run_spec_from_args(args: argparse.Namespace):
    from rft_ray.config import SpecError, apply_overrides, load_yaml, parse_sets
    from rft_ray.specs import run_spec

    data: Any = load_yaml(args.spec) if args.spec else {}
    flags = {
        "strategy.name": args.strategy, "dataset.name": args.dataset, "dataset.root": args.data_root,
        "training.epochs": args.epochs, "training.steps": args.steps, "training.lr": args.lr,
        "training.weight_decay": args.weight_decay, "training.batch_size": args.batch_size,
        "training.seed": args.seed, "training.device": args.device, "model.name": args.model,
        "model.source": args.model_source, "model.weights": args.weights, "evaluation.pgd.eps": args.eps,
        "output.results": args.results, "output.checkpoints": args.checkpoints, "output.run_id": args.run_id,
        "output.keep_checkpoints": args.keep_checkpoints, "recipe": args.recipe,
    }
    overrides = {k: v for k, v in flags.items() if v is not None}
    if args.epochs is not None and args.steps is None:
        overrides["training.steps"] = None  # a flag wins over the spec file's other length setting
    if args.steps is not None and args.epochs is None:
        overrides["training.epochs"] = None
    if args.weights is not None and args.model_source is None:
        overrides["model.source"] = "file"
    overrides.update(parse_sets(args.set))
    try:
        spec = run_spec(apply_overrides(data, overrides))
    except SpecError as err:
        raise SpecError(f"{err}" + (f" (in {args.spec})" if args.spec else "")) from err
    return spec


def cmd_run(args: argparse.Namespace) -> int:
    from rft_ray.sweep.inputs import check_local_inputs

    spec = _run_spec_from_args(args)  # spec, name and path errors before torch is imported
    check_local_inputs(spec.to_dict())
    from rft_ray.training.runner import run_in_process

    result = run_in_process(spec, progress=not args.quiet, json_path=args.json, restart=args.restart, summary=True)
    _print_summary(result.records, spec.output.results, result.store.run_path(spec.run_id), args.json)
    from rft_ray.results.checkpoints import kept_front

    kept, mode = result.kept_checkpoints, spec.output.keep_checkpoints
    front = f", on the {kept_front(result.store, kept)} front" if mode == "frontier" and kept else ""
    print(f"checkpoints ({mode}{front}): {len(kept)} kept"
          + (f", steps {', '.join(map(str, kept))}, in {result.store.checkpoint_folder(spec.run_id)}" if kept else ""))
    return 0


def _print_summary(records, store_root: str, file: str, json_path: str | None) -> None:
    last = records[-1]
    peak = max(records, key=lambda r: r.pgd_adv_acc)
    print(f"run {last.run_id}: {len(records)} evaluation points, final step {last.step}: "
          f"test acc {last.test_clean_acc:.3f}, PGD acc {last.pgd_adv_acc:.3f} (peak {peak.pgd_adv_acc:.3f} "
          f"at step {peak.step}), OOD acc {last.test_ood_accuracy:.3f}")
    print(f"results: {file} (store {store_root})" + (f"; paper-style JSON: {json_path}" if json_path else ""))


def cmd_strategies(args: argparse.Namespace) -> int:
    import torch

    from rft_ray.config import ModelSpec
    from rft_ray.models.backbones import create_classifier
    from rft_ray.models.strategies import create_strategy, strategy_names

    args.model = args.model or ModelSpec().name
    rows = []
    for name in strategy_names():
        with torch.device("meta"):  # counts need shapes only: nothing allocated, nothing downloaded
            model = create_classifier(ModelSpec(name=args.model, source="random"), args.num_classes)
        strategy = create_strategy(name)
        counts = strategy.phase_counts(strategy.apply(model))
        most = max(counts, key=lambda c: c.trainable)  # of a strategy with phases (lp_ft), the phase training most
        rows.append({"strategy": name, "trainable": most.trainable, "total": most.total,
                     "share_percent": round(100 * most.share, 4),
                     "phases": [{"phase": phase, "trainable": c.trainable, "share_percent": round(100 * c.share, 4)}
                                for phase, c in zip(strategy.phase_names, counts)]})
    if args.json:
        print(json.dumps({"model": args.model, "num_classes": args.num_classes, "strategies": rows}, indent=1))
    else:
        print(f"{args.model}, {args.num_classes} classes")
        print(f"{'strategy':<10} {'trainable':>12} {'total':>12} {'share':>9}")
        for r in rows:
            phases = " / ".join(f"{p['phase']} {p['trainable']:,}" for p in r["phases"]) if len(r["phases"]) > 1 else ""
            print(f"{r['strategy']:<10} {r['trainable']:>12,} {r['total']:>12,} {r['share_percent']:>8.3f}%"
                  + (f"  (phases: {phases})" if phases else ""))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from rft_ray.training.pretrain import pretrain

    pretrain(args.data, args.epochs, args.seed, args.work_dir, args.out)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from rft_ray.cli.demo import run_demo

    run_demo(Path(args.out), quiet=args.quiet, verbose=args.verbose)
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    from rft_ray.config import parse_sets
    from rft_ray.cost.estimate import run_estimate

    flags = {"train_s_per_image": args.train_s_per_image, "eval_s_per_image": args.eval_s_per_image,
             "pgd_s_per_iteration_image": args.pgd_s_per_iteration_image, "trial_overhead_s": args.trial_overhead_s,
             "tflops": args.tflops}
    print(run_estimate(args.spec, parse_sets(args.set), args.costs, flags, args.clean_acc, args.robust_acc,
                       args.recalibrate, args.json, log=lambda m: print(m, file=sys.stderr, flush=True), gpu=args.gpu))
    return 0


def cmd_analyze(argv: list[str]) -> int:
    from rft_ray.cli.analyze import main as analyze_main

    return analyze_main(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rft", description="Robustness of fine-tuning strategies, measured "
                                     "continuously: clean, PGD and OOD accuracy on an adaptive schedule.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_command(sub)
    _add_model_commands(sub)
    _add_estimate_command(sub)
    from rft_ray.cli.sweep import add_sweep_commands

    add_sweep_commands(sub)
    from rft_ray.cli.doctor import add_doctor_command

    add_doctor_command(sub)
    from rft_ray.cli.interpolate import add_interpolate_command

    add_interpolate_command(sub)
    from rft_ray.cli.best import add_best_command

    add_best_command(sub)
    from rft_ray.cli.attack import add_attack_command

    add_attack_command(sub)
    from rft_ray.cli.checkpoints import add_checkpoints_command

    add_checkpoints_command(sub)
    from rft_ray.cli.schema import add_schema_command

    add_schema_command(sub)
    from rft_ray.cli.deploy import add_deploy_commands

    add_deploy_commands(sub)
    sub.add_parser("analyze", help="Pareto frontiers, AUC tables, RQ1/RQ3, figures and a report (see rft analyze -h)",
                   add_help=False)
    return parser


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's own parser by name, for the generated reference and the docs' command checks (`rft
    analyze` parses its arguments itself: the main parser only names it)."""
    from rft_ray.cli.analyze import _parser as analyze_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {**commands.choices, "analyze": analyze_parser()}


def _add_run_command(sub) -> None:
    run = sub.add_parser("run", help="fine-tune once, in this process", description=(
        "Fine-tune one model. Settings come from --spec (YAML) and/or flags; flags win over the file."))
    run.add_argument("--spec", help="run spec YAML (sections model, strategy, dataset, training, evaluation, output)")
    run.add_argument("--recipe", choices=["default", "paper_code"],
                     help="preset for every setting not given: paper_code is the paper's code's, per strategy")
    run.add_argument("--strategy", help="full, linear, bitfit, lora, ia3, adapter, compacter or lp_ft")
    run.add_argument("--dataset", help="digits, cifar10, cifar100, caltech256, cub200, stanford_dogs, domainnet, parquet")
    run.add_argument("--data-root", help="dataset folder (dataset.root)")
    length = run.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=float)
    length.add_argument("--steps", type=int)
    run.add_argument("--lr", type=float)
    run.add_argument("--weight-decay", type=float)
    run.add_argument("--batch-size", type=int)
    run.add_argument("--seed", type=int)
    run.add_argument("--device", choices=["auto", "cpu", "cuda"])
    run.add_argument("--model", help="timm model name")
    run.add_argument("--model-source", choices=["embedded", "hub", "file", "random"])
    run.add_argument("--weights", help="local .safetensors/.pth weight file (implies --model-source file)")
    run.add_argument("--eps", help="PGD eps in pixel units, e.g. 1/255")
    run.add_argument("--results", help="result store folder or URI")
    run.add_argument("--checkpoints", help="checkpoint folder")
    run.add_argument("--keep-checkpoints", choices=["none", "frontier", "all"],
                     help="weights kept in the store at evaluation points (default frontier: the run's own front)")
    run.add_argument("--run-id", help="run name (default: from strategy, dataset, lr, weight decay, seed)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="any spec field, e.g. evaluation.pgd.steps=20")
    run.add_argument("--json", help="also write the paper code's per-step JSON keys to this file")
    run.add_argument("--restart", action="store_true", help=(
        "train this run id again from step 0, discarding its earlier results (listed first; deleted once the new "
        "run's first point is written); without it, a run id with results but no checkpoint is refused"))
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(handler=cmd_run)


def _add_model_commands(sub) -> None:
    strategies = sub.add_parser("strategies", help="trainable and total parameters of each strategy (and of each phase of lp_ft)")
    strategies.add_argument("--model", help="any timm ViT name, no download (default: the model runs use by default, "
                            "model.name's default)")
    strategies.add_argument("--num-classes", type=int, default=10)
    strategies.add_argument("--json", action="store_true")
    strategies.set_defaults(handler=cmd_strategies)

    pre = sub.add_parser("pretrain", help="train the embedded default's small ViT on CIFAR-10")
    pre.add_argument("--data", help="folder with CIFAR-10 train.parquet/test.parquet (default: torchvision download)")
    pre.add_argument("--epochs", type=float, default=30)
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--work-dir", default="results/pretrain", help="store and checkpoints of the pretraining run")
    pre.add_argument("--out", help="weights file (default: the package's embedded checkpoint)")
    pre.set_defaults(handler=cmd_pretrain)

    demo = sub.add_parser("demo", help="all 7 strategies on the embedded default (offline), then the analysis")
    demo.add_argument("--out", default="results/demo")
    demo.add_argument("--quiet", action="store_true")
    demo.add_argument("--verbose", action="store_true", help="show Ray's, Tune's and the trials' own output live "
                                                             "(otherwise in <out>/sweep.log)")
    demo.set_defaults(handler=cmd_demo)


def _add_estimate_command(sub) -> None:
    est = sub.add_parser("estimate", help="trials, steps, evaluation points and accelerator-hours of a spec",
                         description=(
        "Count what a run spec or an experiment spec does (trials, training steps, evaluation points, PGD passes) "
        "and estimate accelerator-hours with full PGD and with our early-exit PGD. Per-image costs: flags, else the "
        "spec's `costs:` section or --costs FILE (seconds per image, or `tflops` of a target accelerator), else a "
        "short calibration run on this machine (remembered in the rft-ray cache)."))
    est.add_argument("spec", help="experiment spec (e.g. experiments/paper.yaml) or run spec YAML")
    est.add_argument("--set", action="append", metavar="KEY=VALUE", help="any spec field, e.g. search.num_samples=4")
    est.add_argument("--costs", help="YAML file with a costs section (train_s_per_image, eval_s_per_image, "
                     "pgd_s_per_iteration_image, trial_overhead_s, tflops, device, strategies)")
    est.add_argument("--train-s-per-image", type=float, help="seconds per training image (forward, backward, update)")
    est.add_argument("--eval-s-per-image", type=float, help="seconds per clean evaluation image (forward)")
    est.add_argument("--pgd-s-per-iteration-image", type=float, help="seconds per PGD iteration per image")
    est.add_argument("--trial-overhead-s", type=float, help="fixed seconds per trial (Ray start-up; default 27 for "
                     "sweeps, 0 for run specs)")
    est.add_argument("--tflops", type=float, help="sustained TFLOP/s of a target accelerator (costs from counted FLOPs)")
    est.add_argument("--clean-acc", type=float, default=0.9, help="assumed clean accuracy of attacked images (0.9)")
    est.add_argument("--robust-acc", type=float, default=0.3, help="assumed robust accuracy (0.3) for early exit")
    est.add_argument("--recalibrate", action="store_true", help="measure this machine again")
    est.add_argument("--gpu", help="say whether each strategy's training step fits this GPU's memory: t4, a10g "
                     "(cluster.yaml's workers), l4, a100-40gb, a100-80gb, h100, h200, or its memory in GiB "
                     "(computed: weights, gradients, AdamW, saved activations counted on this CPU)")
    est.add_argument("--json", action="store_true")
    est.set_defaults(handler=cmd_estimate)


def _one_line_warnings() -> None:
    """The platform's own warnings as `rft: warning: <message>` (others keep Python's format)."""
    if getattr(warnings.formatwarning, "rft", False):
        return
    python_format, package = warnings.formatwarning, str(Path(__file__).resolve().parents[1])

    def formatwarning(message, category, filename, lineno, line=None):
        if str(filename).startswith(package):
            return f"rft: warning: {message}\n"
        return python_format(message, category, filename, lineno, line)

    formatwarning.rft = True
    warnings.formatwarning = formatwarning


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _one_line_warnings()
    if argv and argv[0] == "analyze":
        return _guarded(lambda: cmd_analyze(argv[1:]))
    args = build_parser().parse_args(argv)
    said = INTERRUPTED.get(args.command, "").format(spec=getattr(args, "spec", None))
    return _guarded(lambda: args.handler(args), said)


def _guarded(action: Callable[[], int], interrupted: str = "") -> int:
    try:
        return action()
    except Exception as err:
        if not is_user_error(err):
            raise
        print(f"rft: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("rft: interrupted" + (f"; {interrupted}" if interrupted else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
