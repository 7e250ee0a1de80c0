"""`rft best STORE`: per strategy x dataset, the knee of the pooled frontier and, with --min-acc, the most robust
point at that clean-accuracy floor (`analysis.knee`), each with its run, step, hyperparameters and kept
checkpoint file (`ResultStore.checkpoints`). The points are chosen on validation by default (`--select-on`,
`analysis.selection`) and print their test values beside the values they were chosen on; results without
validation metrics are an error saying so (or choose on test with --select-on test, warned as optimistic).

STORE is a result store (the folder or URI holding <run_id>.parquet files) or a sweep's folder (holding
sweep.json and store/). PGD accuracy at different radii is not one axis: like `rft analyze`, one radius is
analysed (`analysis.radius.select_eps`): the runs' own when there is one, else the one --eps names. Bad input
(no such store, no rows, a floor outside [0, 1], a strategy or dataset the store lacks, several radii without
--eps, a radius the store lacks) prints one line to stderr and returns 2; no point reaching the floor is an
answer, not an error.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from rft_ray.config.metrics import SELECT_ON, check_select_on, optimistic_warning, parse_radius, selection_label

EXIT_BAD_INPUT = 2
NO_CHECKPOINT = "no checkpoint kept for this step"


def add_best_command(sub) -> None:
    best = sub.add_parser(
        "best", help="the knee of each group's frontier and the most robust point at an accuracy floor",
        description="Per strategy and dataset: the evaluation point at the knee of the pooled (clean accuracy, PGD "
        "accuracy) frontier and, with --min-acc, the most robust point whose clean accuracy reaches the floor; "
        "each with its run id, step, learning rate, weight decay and kept checkpoint file. Definitions: "
        "analysis/knee.py.")
    best.add_argument("store", metavar="STORE", help="result store (folder or URI) or a sweep folder holding store/")
    best.add_argument("--min-acc", metavar="F", type=float, default=None,
                      help="clean-accuracy floor, a fraction in [0, 1] (0.9 = 90%%)")
    best.add_argument("--eps", default=None, help="PGD radius, e.g. 2/255 (needed when the store holds several)")
    best.add_argument("--strategy", help="only this strategy")
    best.add_argument("--dataset", help="only this dataset, as the results name it: its label when the spec sets "
                      "dataset.label, else the dataset's name (e.g. cifar10)")
    best.add_argument("--model", help="only this model (a store holding several groups by model: the groups' "
                      "dataset reads <dataset>/<model>)")
    best.add_argument("--robustness", metavar="AXIS", default="pgd", help="the frontier's robustness axis: pgd "
                      "(default), ood (the pooled OOD accuracy) or ood:<domain>")
    best.add_argument("--select-on", choices=SELECT_ON, default="validation",
                      help="the split the knee and the floor point are chosen on: validation (default; their test "
                      "values are reported beside) or test (optimistic: the test images choose)")
    best.add_argument("--json", action="store_true", help="print the result as JSON")
    best.set_defaults(handler=cmd_best)


def cmd_best(args: argparse.Namespace) -> int:
    try:
        result = best_points(args.store, args.min_acc, strategy=args.strategy, dataset=args.dataset, model=args.model,
                             eps=None if args.eps is None else parse_radius(args.eps), robustness=args.robustness,
                             select_on=args.select_on,
                             warn=lambda message: print(f"rft best: warning: {message}", file=sys.stderr))
    except (ValueError, OSError, pa.ArrowException) as err:  # StoreError is a ValueError
        print(f"rft best: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(result, indent=1, allow_nan=False) if args.json else best_text(result))
    if args.select_on == "test":
        print(f"rft best: warning: {optimistic_warning('--select-on')}", file=sys.stderr)
    return 0


def store_root(location: str) -> str:
    """The result store at `location`: itself, or `<location>/store` for a sweep folder (one with sweep.json,
    or without result files of its own but with a store/ folder). StoreError when there is nothing there."""
    from rft_ray.results.files import filesystem_for
    from rft_ray.results.store import StoreError

    root = str(location).rstrip("/") or str(location)
    try:
        fs, path = filesystem_for(root)
        kind = fs.get_file_info(path).type
        if kind == pafs.FileType.NotFound:
            raise StoreError(f"result store {location!r} does not exist")
        if kind != pafs.FileType.Directory:
            raise StoreError(f"{location!r} is a file; give the result store folder (holding <run_id>.parquet "
                             "files) or the sweep folder (holding sweep.json and store/)")
        names = {info.base_name: info.type for info in fs.get_file_info(pafs.FileSelector(path))}
    except OSError as err:
        raise StoreError(f"cannot read {location!r}: {err}") from err
    own_results = any(n.endswith(".parquet") and not n.startswith((".", "_")) for n in names)
    if names.get("store") == pafs.FileType.Directory and ("sweep.json" in names or not own_results):
        return f"{root}/store"
    return root


def best_points(location: str, min_acc: float | None = None, *, strategy: str | None = None,
                dataset: str | None = None, model: str | None = None, eps: float | None = None,
                robustness: str = "pgd", select_on: str = "validation", warn=lambda message: None) -> dict[str, Any]:
    """What `rft best` prints, as data: the store, the floor, the robustness axis (`analysis.axis`; its values in
    the points' ``pgd_adv_acc``), the PGD radius (``pgd_eps``), the split the points were chosen on
    (``select_on``, ``selection``: what the tables say), and per group its knee and at_floor points (test values
    in ``test_clean_acc``/``pgd_adv_acc``; chosen on validation also ``val_clean_acc``/``val_pgd_adv_acc``) with
    their ``checkpoint`` (a path, or None when none was kept for that step)."""
    from analysis.axis import axis_label, check_axis, select_axis
    from analysis.knee import check_min_acc, group_knees
    from analysis.radius import eps_values
    from analysis.selection import check_validation_axis
    from rft_ray.specs import strategy_names
    from rft_ray.results.store import ResultStore, StoreError

    min_acc = check_min_acc(min_acc)
    check_axis(robustness)
    check_select_on(select_on, "--select-on")
    root = store_root(location)
    store = ResultStore(root)
    table = store.read()
    if table.num_rows == 0:
        raise StoreError(f"result store {root!r} holds no evaluation records (no <run_id>.parquet file with rows)")
    table = _only(table, "strategy", strategy)
    table = _only(table, "dataset", dataset)
    table = _only(table, "model", model)
    if table.num_rows == 0:
        raise StoreError(f"result store {root!r} has no rows of strategy {strategy!r} on dataset {dataset!r}")
    if select_on == "validation":
        check_validation_axis(table, robustness, eps)  # SelectionError: an axis or radius validation lacks
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = select_axis(table, robustness, eps)  # TableError (a ValueError) naming the radii or the domains
    for w in caught:
        warn(str(w.message))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        groups = group_knees(table, min_acc, strategy_order=strategy_names(), select_on=select_on,
                             axis="ood" if robustness == "ood" else "pgd")
    for w in caught:
        warn(str(w.message))
    if not groups:
        raise StoreError(f"result store {root!r} has no usable evaluation points (every row was dropped; see the "
                         "warnings above)")
    for group in groups:
        for key in ("knee", "at_floor"):
            if group[key] is not None:
                group[key]["checkpoint"] = _checkpoint(store, group[key]["run_id"], group[key]["step"])
    return {"store": root, "min_acc": min_acc, "robustness": robustness, "robustness_label": axis_label(robustness),
            "pgd_eps": eps_values(table), "select_on": select_on, "selection": selection_label(select_on),
            "groups": groups}


def _only(table: pa.Table, column: str, value: str | None) -> pa.Table:
    if value is None:
        return table
    import pyarrow.compute as pc

    present = sorted(set(table.column(column).to_pylist()) - {None})
    if value not in present:
        from rft_ray.results.store import StoreError

        raise StoreError(f"--{column} {value!r}: the store has no rows of that {column}; it has {', '.join(present)}")
    return table.filter(pc.equal(table.column(column), value))


def _checkpoint(store, run_id: str, step: int) -> str | None:
    path = store.checkpoints(run_id).get(int(step))
    if path is None or store.local:
        return path
    return f"{store.root.split('://', 1)[0]}://{path}"  # object stores list bucket/key


def best_text(result: dict[str, Any]) -> str:
    """The result of `best_points` as the lines `rft best` prints."""
    from rft_ray.results.record import eps_label

    floor = result["min_acc"]
    label = result.get("robustness_label", "PGD accuracy")
    lines = [f"store {result['store']}" + (f"; clean-accuracy floor {floor:g}" if floor is not None else "")
             + "".join(f"; PGD eps {eps_label(v)}" for v in result.get("pgd_eps", []))
             + (f"; robustness: {label}" if result.get("robustness", "pgd") != "pgd" else "")
             + (f"; {result['selection']}" if "selection" in result else "")]
    short = "PGD acc" if result.get("robustness", "pgd") == "pgd" else result["robustness"].replace(":", " ") + " acc"
    on = "val " if result.get("select_on") == "validation" else ""  # the floor is on the split that chooses
    for g in result["groups"]:
        lines.append(f"{g['strategy']} on {g['dataset']} ({g['n_runs']} runs, {g['n_points']} evaluation points, "
                     f"{g['front_points']} on the Pareto front):")
        lines += _point_lines("knee", g["knee"], short)
        if floor is not None:
            if g["at_floor"] is None:
                lines.append(f"  most robust at {on}clean acc >= {floor:g}: no point reaches {on}clean accuracy "
                             f"{floor:g}")
            else:
                lines += _point_lines(f"most robust at {on}clean acc >= {floor:g}", g["at_floor"], short)
    return "\n".join(lines)


def _point_lines(label: str, point: dict[str, Any] | None, robust: str = "PGD acc") -> list[str]:
    from analysis.report_format import hyper
    from analysis.uncertainty import with_interval

    if point is None:
        return [f"  {label}: none (no evaluation points)"]
    chosen_on = (f"val clean acc {point['val_clean_acc']:.4f}, val {robust} {point['val_pgd_adv_acc']:.4f}; test "
                 if "val_clean_acc" in point else "")
    clean = with_interval(f"{point['test_clean_acc']:.4f}", point.get("test_clean_acc_ci"))  # 95% Wilson
    robust_acc = with_interval(f"{point['pgd_adv_acc']:.4f}", point.get("pgd_adv_acc_ci"))
    where = (f"  {label}: run {point['run_id']} step {point['step']}: {chosen_on}clean acc {clean}, "
             f"{robust} {robust_acc}; lr {hyper(point['lr'])}, weight decay {hyper(point['weight_decay'])}")
    return [where, f"    checkpoint: {point['checkpoint'] or NO_CHECKPOINT}"]
