"""`rft analyze`: the command line of `analysis.report.analyze`.

Strategies are ordered as the strategy registry lists them. Bad input prints one paragraph to stderr and
returns 2; --help returns 0.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Sequence

import pyarrow as pa

from analysis.attacks import DEFAULT_MASKING_THRESHOLD
from analysis.axis import check_axis
from analysis.frontier import AUC_KINDS
from analysis.report import DEFAULT_OUT, AnalysisResult, analyze
from rft_ray.config.metrics import RadiusError, parse_radius


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # never exit from inside argparse: main returns 2
        raise _UsageError(message)


def parse_eps(text: str) -> float:
    """'2/255', '0.0078' -> a float in (0, 1]; a usage error (exit 2) otherwise."""
    try:
        return parse_radius(text)
    except RadiusError as err:
        raise _UsageError(str(err)) from None


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="rft analyze",
        description="Analyse a result store: strategy x dataset AUC table, RQ1 (robustness peak vs accuracy "
        "convergence), RQ3 (OOD/PGD vs clean accuracy correlations), figures, report.md/report.html/analysis.json.",
    )
    p.add_argument("results", metavar="RESULTS", help="result store: a local directory or a URI (s3://..., gs://...)")
    p.add_argument("--out", metavar="DIR", default=DEFAULT_OUT, help=f"output directory (default: ./{DEFAULT_OUT})")
    p.add_argument("--json", action="store_true", help="print the machine-readable result (analysis.json) to stdout")
    p.add_argument("--auc", choices=AUC_KINDS, default="hypervolume", help="AUC kind (default: hypervolume)")
    p.add_argument("--per-trial", action="store_true",
                   help="one frontier per run; report the best run's AUC per strategy and dataset")
    p.add_argument("--step-budget", metavar="N", type=int, default=None, help="only use points with step <= N")
    p.add_argument("--eps", default=None,
                   help="PGD radius to analyse, e.g. 2/255 (needed when the results hold several)")
    p.add_argument("--robustness", metavar="AXIS", default="pgd",
                   help="the frontier's robustness axis: pgd (default), ood (the pooled OOD accuracy) or "
                   "ood:<domain> (one OOD domain, e.g. ood:contrast)")
    p.add_argument("--tol", type=float, default=0.01,
                   help="RQ1 convergence tolerance in accuracy (fraction, default 0.01 = 1 point)")
    p.add_argument("--min-acc", metavar="F", type=float, default=None,
                   help="clean-accuracy floor (fraction, e.g. 0.9): the knee section also gives the most robust "
                   "point with clean accuracy >= F per group and run (default: no floor)")
    p.add_argument("--select-on", choices=("validation", "test"), default="validation",
                   help="the split the knee section chooses its points on: validation (default; the chosen points' "
                   "test values are reported beside) or test (optimistic); the frontiers, AUC and RQ tables are the "
                   "paper's, on test points")
    p.add_argument("--masking-threshold", metavar="GAP", type=float, default=DEFAULT_MASKING_THRESHOLD,
                   help="flag a point for gradient masking when PGD accuracy exceeds a stronger attack's (rft attack) "
                   f"at the same eps by more than GAP (accuracy fraction, default {DEFAULT_MASKING_THRESHOLD:g})")
    p.add_argument("--curve-step", metavar="N", type=int, default=None,
                   help="robustness curves at each run's last step <= N (default: each run's final step)")
    p.add_argument("--replicates", metavar="N", type=int, default=1000,
                   help="replicates of the paired bootstrap behind the AUC intervals, from the runs' per-image "
                        "verdicts (default: 1000; 0: no intervals)")
    p.add_argument("--bootstrap-seed", metavar="S", type=int, default=0, help="seed of the bootstrap (default: 0)")
    p.add_argument("--strict", action="store_true", help="fail on bad rows instead of dropping them")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    p.add_argument("--provenance", metavar="KEY=VALUE", action="append", default=[],
                   help="provenance line for the report (repeatable)")
    return p


def _options(args: argparse.Namespace) -> dict:
    """The keyword arguments of `analyze` the flags give; _UsageError for values argparse cannot check."""
    provenance = {}
    for item in args.provenance:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _UsageError(f"--provenance takes KEY=VALUE, got {item!r}")
        provenance[key] = value
    if args.step_budget is not None and args.step_budget < 0:
        raise _UsageError(f"--step-budget must be >= 0, got {args.step_budget}")
    if not 0 <= args.masking_threshold <= 1:  # NaN fails too
        raise _UsageError(f"--masking-threshold is an accuracy fraction in [0, 1] (0.05 = 5 points), "
                          f"got {args.masking_threshold}")
    if args.curve_step is not None and args.curve_step < 0:
        raise _UsageError(f"--curve-step must be >= 0, got {args.curve_step}")
    if args.replicates != 0 and not 2 <= args.replicates <= 100_000:
        raise _UsageError(f"--replicates is 0 (no intervals) or a count in [2, 100000], got {args.replicates}")
    if args.bootstrap_seed < 0:
        raise _UsageError(f"--bootstrap-seed must be >= 0, got {args.bootstrap_seed}")
    if args.min_acc is not None and not 0 <= args.min_acc <= 1:  # NaN fails too
        raise _UsageError(f"--min-acc is a clean-accuracy fraction in [0, 1] (0.9 = 90%), got {args.min_acc}")
    return dict(kind=args.auc, pooling="per_trial" if args.per_trial else "pooled", step_budget=args.step_budget,
                provenance=provenance or None, tol=args.tol, strict=args.strict, figures=not args.no_figures,
                eps=parse_eps(args.eps) if args.eps is not None else None, min_acc=args.min_acc,
                masking_threshold=args.masking_threshold, curve_step=args.curve_step,
                axis=_axis(args.robustness), select_on=args.select_on,
                replicates=args.replicates, bootstrap_seed=args.bootstrap_seed)


def _axis(text: str) -> str:
    try:
        return check_axis(text)
    except ValueError as err:
        raise _UsageError(str(err)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        options = _options(args)
    except _UsageError as err:
        print(f"{parser.format_usage().rstrip()}\nrft analyze: error: {err}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)

    from rft_ray.specs import strategy_names  # the registry's order, without importing torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = analyze(args.results, args.out, strategy_order=strategy_names(), **options)
        except (ValueError, OSError, pa.ArrowException) as err:
            for w in caught:
                print(f"rft analyze: warning: {w.message}", file=sys.stderr)
            print(f"rft analyze: error: {err}", file=sys.stderr)
            return 2
    for w in caught:
        print(f"rft analyze: warning: {w.message}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.data, indent=2, allow_nan=False))
    else:
        _print_summary(result)
    return 0


def _print_summary(result: AnalysisResult) -> None:
    data = result.data
    print(f"analysed {data['summary']['n_runs']} runs, {data['summary']['n_points']} points "
          f"({data['conventions']['auc_kind']} AUC, {data['conventions']['pooling']})")
    for dataset, strategies in data["summary"]["best_strategy"].items():
        print(f"  best on {dataset}: {', '.join(strategies)}")
    if data.get("attacks"):
        masking = data["attacks"]["masking"]
        print(f"  gradient masking (PGD above a stronger attack by > {data['attacks']['masking_threshold']:g}): "
              f"{sum(r['n_flagged'] for r in masking)} of {sum(r['n_points'] for r in masking)} compared points flagged")
    print("wrote:")
    for path in result.files:
        print(f"  {path}")
