"""`rft doctor`: the preflight table of this machine or of every node of a Ray cluster (registered on the main
parser by `add_doctor_command`; the checks are rft_ray.sweep.doctor's)."""
from __future__ import annotations

import argparse
import re
import textwrap

WIDTH = 118  # long details wrap under their column, so the table stays readable in an 80-120 column terminal
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def format_table(title: str, rows) -> str:
    """A fixed-width plain-text table; error texts lose their newlines and escapes (one row, one line or a few
    wrapped ones)."""
    check_width = max([len("check")] + [len(_CONTROL.sub(" ", r.check)) for r in rows])
    indent = " " * (check_width + 2 + 6 + 2)
    lines = [_CONTROL.sub(" ", title), f"{'check':<{check_width}}  status  detail",
             f"{'-' * check_width}  ------  {'-' * max(6, WIDTH - len(indent))}"]
    for row in rows:
        detail = _CONTROL.sub(" ", row.detail).strip()
        wrapped = textwrap.wrap(detail, max(40, WIDTH - len(indent)), break_long_words=False,
                                break_on_hyphens=False) or [""]
        lines.append(f"{_CONTROL.sub(' ', row.check):<{check_width}}  {row.status:<6}  {wrapped[0]}")
        lines += [indent + more for more in wrapped[1:]]
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace) -> int:
    from rft_ray.config import parse_sets
    from rft_ray.specs import load_experiment
    from rft_ray.sweep.doctor import FAIL, WARN, check_local, failed

    experiment = load_experiment(args.spec, parse_sets(args.set)) if args.spec else None
    if args.set and not args.spec:
        print("rft doctor: note: --set applies to a SPEC; none given, so it is ignored")
    cluster = args.cluster or bool(args.address)
    if cluster:
        from rft_ray.sweep.doctor_cluster import check_cluster

        reports = check_cluster(args.address, experiment, probe_timeout=args.probe_timeout)
    else:
        reports = [check_local(experiment)]
    print("\n\n".join(format_table(r.title, r.rows) for r in reports))
    if experiment is None:
        print("\nno SPEC given: data inputs, storage, MLflow" + (" and trial resources" if cluster else "")
              + " not checked (rft doctor experiments/paper.yaml checks them)")
    rows = [row for report in reports for row in report.rows]
    fails, warns = sum(r.status == FAIL for r in rows), sum(r.status == WARN for r in rows)
    print(f"\nrft doctor: {fails} fail, {warns} warn, {len(rows) - fails - warns} pass")
    return 1 if failed(reports) else 0


def add_doctor_command(sub) -> None:
    doctor = sub.add_parser("doctor", help="preflight: Python, torch, NVIDIA driver, GPU, data, storage, MLflow",
                            description=(
        "Check this machine (or, with --cluster, every alive node of the Ray cluster, and a node trials run on: "
        "one the autoscaler starts for a probe task when none is alive) before a sweep: Python, torch and its CUDA "
        "build against the NVIDIA driver, GPU memory for PGD evaluation, bf16, and with a SPEC the experiment's "
        "data inputs, a write to its storage, MLflow, whether a trial fits a node (or this machine) and each "
        "strategy's training-step memory on the GPU (computed). Prints a "
        "pass/warn/fail table; exits 1 when any check fails, 0 when all pass or only warn."))
    doctor.add_argument("spec", nargs="?", help="experiment spec YAML (e.g. experiments/paper.yaml)")
    doctor.add_argument("--set", action="append", metavar="KEY=VALUE", help="any spec field, as for rft sweep")
    doctor.add_argument("--cluster", action="store_true", help="check every alive node of the running Ray cluster "
                                                               "(RAY_ADDRESS, --address, else the one on this machine)")
    doctor.add_argument("--address", help="Ray cluster address (implies --cluster; default: RAY_ADDRESS, else auto)")
    doctor.add_argument("--probe-timeout", type=float, default=900, metavar="SECONDS",
                        help="with --cluster and a SPEC, when no alive node can hold a trial: how long a probe task "
                             "asking for one trial's CPUs and GPUs waits for the autoscaler to start such a node "
                             "(900; 0: do not ask, fail saying no trial node was checked)")
    doctor.set_defaults(handler=cmd_doctor)
