"""`rft attack`: which kept points to attack, attacking them (in this process, or one Ray task per point when a
cluster is there), merging each point's results into the store as it arrives, and the cost of it all.

Points (`on`, `runs`): those `rft_ray.results.checkpoints.select_kept_points` chooses, as for `rft
interpolate`: `final`, each run's last kept step; `frontier`, the kept points on the run's own (test_clean_acc,
pgd_adv_acc) Pareto front of its stored rows; `all`, every kept file. A point asked for that has no kept file is
reported, never skipped in silence. On Ray each task reads its weights file from the store itself, so the store must be reachable from
every node (a URI or a shared folder), as for sweeps; the driver alone writes the results.

Before any attack the store must exist and its attacks/ folder be writable, and the command holds the lease of
every run it attacks (`ResultStore.lease`: one writer per run id, shared with `rft run` and `rft interpolate`).
Values measured again replace the earlier ones, which the command says first; every other value is kept.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

from rft_ray.attack.point import PointResult, attack_point, resolve_attack_device
from rft_ray.attack.suite import REFERENCE, AttackBudget
from rft_ray.config import eps_label
from rft_ray.results.attacks import (
    ATTACK_SLUGS,
    ATTACKS_DIR,
    AttackError,
    accuracy_column,
    read_sidecar,
    record_attack_results,
    sidecar_path,
)
from rft_ray.results.checkpoints import KeptPoint, select_kept_points
from rft_ray.results.lease import holding
from rft_ray.results.store import ResultStore, StoreError
from rft_ray.results.verdicts import ATTACK_VERDICTS_DIR, PGD_SUBSET, RunVerdicts, verdicts_path


Point = KeptPoint  # a point to attack: its weights file and its run's row (`select_kept_points`)


@dataclass
class AttackSummary:
    points: list[Point]
    notes: list[str]  # points asked for without a kept file, and the like
    results: list[PointResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # the attack results files written
    seconds: float = 0.0  # wall time of the whole command


def plan_points(store: ResultStore, on: str, runs: str | None = None) -> tuple[list[Point], list[str]]:
    """The kept points to attack, and a note for every point asked for that cannot be (`select_kept_points`)."""
    try:
        return select_kept_points(store, on, runs)
    except StoreError as err:
        raise AttackError(str(err)) from err


def wants_ray(address: str | None) -> bool:
    """On Ray when an address is given or RAY_ADDRESS names a cluster; in this process otherwise."""
    return bool(address or os.environ.get("RAY_ADDRESS"))


def run_attacks(store_root: str, attacks: list[str], on: str = "frontier", radii: list[float] | None = None,
                runs: str | None = None, device: str = "auto", on_ray: bool = False, address: str | None = None,
                budget: AttackBudget = REFERENCE, log: Callable[[str], None] = print) -> AttackSummary:
    """Attack the kept points of `store_root` (module docstring) and merge the results into its attack results
    files; `radii` None: each run's own PGD radius. `on_ray`: one Ray task per point (connecting to `address`,
    else RAY_ADDRESS or the Ray on this machine, unless this process is connected already). In this process an
    error stops the command (points done so far are stored); on Ray a failed task is logged and listed in
    `failures`, and the other points go on."""
    started = time.perf_counter()
    if not attacks:
        raise AttackError(f"--attack is required: one or more of {', '.join(ATTACK_SLUGS)}")
    for name in attacks:
        if name not in ATTACK_SLUGS:
            raise AttackError(f"unknown attack {name!r}: use one of {', '.join(ATTACK_SLUGS)}")
    if not on_ray:
        resolve_attack_device(device)  # a bad device fails before any work
    store = ResultStore(store_root).must_exist()
    store.ensure_writable(ATTACKS_DIR)  # where the results go: checked before any attack
    points, notes = plan_points(store, on, runs)
    summary = AttackSummary(points, notes)
    for note in notes:
        log(f"note: {note}")
    if not points:
        raise AttackError(f"nothing to attack in {store.root} (--on {on}{f', --runs {runs}' if runs else ''}): no "
                          "kept checkpoints there; runs keep them with output.keep_checkpoints: frontier or all")
    run_ids = sorted({p.run_id for p in points})
    with holding([store.lease(run_id, "rft attack") for run_id in run_ids]) as leases:
        for note in replaced_notes(store, points, attacks, radii):
            log(f"note: {note}")
        where = "on Ray, one task per point" if on_ray else "in this process"
        radius_text = ", ".join(eps_label(r) for r in radii) if radii else "each run's own PGD radius"
        log(f"rft attack: {len(points)} point(s) of {len(run_ids)} run(s) (--on {on}); {', '.join(attacks)} at "
            f"{radius_text}; {where}")
        arrived = _on_ray(points, store_root, attacks, radii, device, budget, address) if on_ray else \
            _in_process(points, store_root, attacks, radii, device, budget)
        for point, outcome in arrived:
            if isinstance(outcome, BaseException):
                summary.failures.append(f"run {point.run_id} step {point.step}: {type(outcome).__name__}: {outcome}")
                log(f"failed: {summary.failures[-1]}")
                continue
            leases[run_ids.index(point.run_id)].check()
            row = {"run_id": outcome.run_id, "step": outcome.step, **outcome.columns}
            path = record_attack_results(store.fs, store.path, point.run_id, [row])
            for written in (path, _record_verdicts(store, outcome)):
                if written is not None and written not in summary.files:
                    summary.files.append(written)
            summary.results.append(outcome)
            log(describe_point(point, outcome))
    summary.seconds = time.perf_counter() - started
    for line in cost_lines(summary):
        log(line)
    if summary.failures:
        log(f"{len(summary.failures)} of {len(points)} point(s) failed; the others are stored")
    return summary


def _record_verdicts(store: ResultStore, outcome: PointResult) -> str | None:
    """Merge the point's per-image verdicts into the run's attack verdicts (ATTACK_VERDICTS_DIR; under the run's
    lease, which the command holds): its path, None when the attack kept none."""
    if not outcome.verdicts or outcome.subset is None:
        return None
    kept = store.read_verdicts(outcome.run_id, ATTACK_VERDICTS_DIR) or RunVerdicts({}, {}, {})
    kept.merge_point(int(outcome.step), outcome.verdicts, PGD_SUBSET, outcome.subset)
    store.write_verdicts(outcome.run_id, kept, ATTACK_VERDICTS_DIR)
    return verdicts_path(store.path, outcome.run_id, ATTACK_VERDICTS_DIR)


def replaced_notes(store: ResultStore, points: list[Point], attacks: list[str], radii: list[float] | None
                   ) -> list[str]:
    """One note per run whose attack results already hold values this command measures again (it replaces them)."""
    notes = []
    for run_id in sorted({p.run_id for p in points}):
        earlier = read_sidecar(store.fs, sidecar_path(store.path, run_id))
        if earlier is None:
            continue
        measured = {int(r["step"]): {k for k, v in r.items() if v is not None} for r in earlier.to_pylist()}
        again = set()
        for point in (p for p in points if p.run_id == run_id):
            point_radii = radii or ([point.pgd_eps] if point.record else [])  # None: the run's own radius
            columns = {accuracy_column(a, r) for a in attacks for r in point_radii}
            again |= columns & measured.get(point.step, set())
        again = sorted(again)
        if again:
            notes.append(f"run {run_id}: replaces earlier values of {', '.join(again)} at the points it attacks "
                         "again; all other attack results are kept")
    return notes


def _in_process(points, store_root, attacks, radii, device, budget):
    for point in points:  # an error stops here: points done so far are stored already
        yield point, attack_point(store_root, point.run_id, point.step, point.path, attacks, radii, device, budget)


def _on_ray(points, store_root, attacks, radii, device, budget, address):
    import ray

    connected_here = not ray.is_initialized()
    if connected_here:
        where = address or os.environ.get("RAY_ADDRESS") or "auto"
        try:  # never starts a Ray: "auto" is RAY_ADDRESS, else a Ray already running on this machine
            _answers(where)
            ray.init(address=address or "auto", log_to_driver=True)
        except (OSError, ValueError, RuntimeError) as err:
            raise AttackError(f"cannot connect to the Ray cluster at {where} ({type(err).__name__}: {err}); start "
                              "one, or leave out --address and unset RAY_ADDRESS to attack in this process") from err
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(attack_point)
        pending = {task.remote(store_root, p.run_id, p.step, p.path, attacks, radii, device, budget): p
                   for p in points}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            point = pending.pop(done[0])
            try:
                yield point, ray.get(done[0])
            except Exception as err:  # noqa: BLE001 - a task's failure is reported with its point
                yield point, err
    finally:
        if connected_here:
            ray.shutdown()  # only this driver's connection: a cluster runs on


def _answers(address: str, timeout: float = 10.0) -> None:
    """OSError unless host:port accepts a TCP connection: ray.init retries an address nobody answers at for many
    minutes, where a command should say so at once."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return  # Ray looks on this machine and says at once when there is none; a client address is Ray's to try
    host, _, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not host:port: {address!r}")
    socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()


def describe_point(point: Point, result: PointResult) -> str:
    slugs = {slug: name for name, slug in ATTACK_SLUGS.items()}
    measured = []
    for column, value in result.columns.items():
        if "_adv_acc/" in column:
            slug, label = column.split("_adv_acc/")
            measured.append(f"{slugs.get(slug, slug)} {label} {value:.3f}")
    training = (f"clean {point.clean_acc:.3f}, PGD {point.pgd_acc:.3f} at {eps_label(point.pgd_eps)}"
                if point.clean_acc == point.clean_acc else "no stored row")
    return (f"  {point.run_id} step {point.step} (training: {training}; {result.clean_correct}/{result.images} "
            f"attacked images clean-correct; {result.threads} torch threads): " + ", ".join(measured))


def cost_lines(summary: AttackSummary) -> list[str]:
    """Per run and in total: images attacked, the model's image passes, wall time."""
    lines, by_run = [], {}
    for result in summary.results:
        by_run.setdefault(result.run_id, []).append(result)
    for run_id, results in by_run.items():
        lines.append(f"cost, run {run_id}: " + _cost(results, sum(r.seconds for r in results), "s of attack work"))
    lines.append("cost, total: " + _cost(summary.results, summary.seconds, "s wall time"))
    for path in summary.files:
        lines.append(f"results: {path}")
    return lines


def _cost(results: list[PointResult], seconds: float, what: str) -> str:
    attacked = sum(r.images * sum(1 for c in r.columns if "_adv_acc/" in c) for r in results)
    return (f"{len(results)} point(s), {attacked:,} image attacks (images x attacks x radii), "
            f"{sum(r.forward_backward for r in results):,} forward-backward and "
            f"{sum(r.forward_only for r in results):,} forward-only image passes, {seconds:.1f} {what}")
