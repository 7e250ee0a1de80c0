"""`rft sweep` and `rft ui`, registered on the main parser by `add_sweep_commands`."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path


def cmd_sweep(args: argparse.Namespace) -> int:
    from rft_ray.config import parse_sets
    from rft_ray.specs import load_experiment
    from rft_ray.sweep.driver import run_sweep
    from rft_ray.sweep.state import SweepError, SweepInterrupted

    experiment = load_experiment(args.spec, parse_sets(args.set))
    try:
        run_sweep(experiment, resume=args.resume, overwrite=args.overwrite, address=args.address,
                  spec_path=args.spec, analyze=not args.no_analysis, cluster_config=args.cluster_config,
                  verbose=args.verbose)
    except SweepInterrupted as err:
        print(f"rft sweep: interrupted: {err}", file=sys.stderr)
        return 3
    except SweepError as err:
        print(f"rft: error: {err}", file=sys.stderr)
        return 2
    return 0


def _ui_command(db: Path, host: str, port: int) -> list[str]:
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    return [mlflow, "ui", "--backend-store-uri", f"sqlite:///{db.resolve()}", "--host", host, "--port", str(port)]


def cmd_ui(args: argparse.Namespace) -> int:
    from rft_ray.config import SpecError

    folder = Path(args.results)
    db = folder / "mlflow.db" if folder.is_dir() else folder
    if not db.is_file():
        found = sorted(str(p.parent) for p in Path("results").glob("*/mlflow.db")) if Path("results").is_dir() else []
        hint = f" Sweeps with an MLflow store: {', '.join(found)}" if found else ""
        raise SpecError(f"no MLflow store at {db} (a sweep writes <storage.path>/mlflow.db unless "
                        f"tracking.mlflow_uri names a server).{hint}", "--results")
    command = _ui_command(db, args.host, args.port)
    print(f"rft ui: MLflow UI for {db} at http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"rft ui: warning: listening on {args.host} lets anyone who reaches this machine read and change the "
              "MLflow store (the UI has no login); prefer the default 127.0.0.1 with an SSH tunnel "
              f"(ssh -L {args.port}:127.0.0.1:{args.port} <this machine>)", file=sys.stderr, flush=True)
    if args.print_command:
        print(" ".join(command))
        return 0
    sys.stdout.flush()
    os.chdir(db.parent)
    os.execv(command[0], command)  # the server replaces this process: Ctrl-C and kill reach it directly


def cmd_sync_mlflow(args: argparse.Namespace) -> int:
    from rft_ray.sweep.state import SweepError, read_sweep
    from rft_ray.tracking.backfill import sync_mlflow
    from rft_ray.tracking.client import TrackingError

    try:
        root, _, state = read_sweep(args.folder)
        sync_mlflow(root, state, args.mlflow_uri)
    except (SweepError, TrackingError) as err:
        print(f"rft: error: {err}", file=sys.stderr)
        return 2
    return 0


def add_sweep_commands(sub) -> None:
    sweep = sub.add_parser("sweep", help="a hyperparameter sweep on Ray (Tune + Train, Optuna, MLflow)", description=(
        "Run every strategy x dataset group of an experiment spec as a Ray Tune search whose trials are Ray Train "
        "runs; results go to a Parquet store, MLflow and a summary. Connects to a running Ray cluster when "
        "RAY_ADDRESS (or --address) names one, else starts Ray on this machine."))
    sweep.add_argument("spec", help="experiment spec YAML (e.g. experiments/demo.yaml)")
    sweep.add_argument("--resume", action="store_true", help="continue an interrupted sweep where it stopped")
    sweep.add_argument("--overwrite", action="store_true", help="start again, replacing a previous sweep's results")
    sweep.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="any spec field, e.g. search.num_samples=4 or base.training.steps=200")
    sweep.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    sweep.add_argument("--no-analysis", action="store_true", help="skip the analysis report at the end")
    sweep.add_argument("--verbose", action="store_true", help="show Ray's, Tune's and the trials' own output live "
                                                              "(otherwise in <storage.path>/sweep.log)")
    sweep.add_argument("--cluster-config", metavar="YAML", help=(
        "the autoscaling cluster's launcher config (e.g. cluster.yaml), whose node types `auto` resources count "
        "before their nodes exist (default: RFT_CLUSTER_CONFIG, else ~/ray_bootstrap_config.yaml on a `ray up` head)"))
    sweep.set_defaults(handler=cmd_sweep)

    sync = sub.add_parser("sync-mlflow", help="back-fill a sweep's runs into MLflow from its Parquet store",
                          description=(
        "Put into MLflow whatever a sweep's Parquet result store holds and MLflow lacks (the parent run, a child "
        "run per trial, every metric at every evaluation point, end statuses), e.g. after the tracking server was "
        "unreachable during the sweep. Adds only what is missing: running it again changes nothing."))
    sync.add_argument("folder", help="the sweep's folder (its storage.path, holding sweep.json and store/)")
    sync.add_argument("--mlflow-uri", help="tracking URI (default: the spec's tracking.mlflow_uri, else "
                                           "<folder>/mlflow.db)")
    sync.set_defaults(handler=cmd_sync_mlflow)

    ui = sub.add_parser("ui", help="the MLflow UI on 127.0.0.1 for a sweep's SQLite store")
    ui.add_argument("--results", default="results/demo", help="the sweep's folder (storage.path) or its mlflow.db")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; "
                                                       "reach it from elsewhere through an SSH tunnel)")
    ui.add_argument("--print-command", action="store_true", help="print the mlflow command instead of running it")
    ui.set_defaults(handler=cmd_ui)
