"""Two or more writers started truly at once: each in its own process, its imports done, all released together by
one barrier (`multiprocessing`, spawn), so the race is decided by the code under test, not by start-up times."""
from __future__ import annotations

import importlib
import multiprocessing
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass
class Outcome:
    pid: int
    code: int | None  # the function's return value (an exit code), None when it raised or hung
    out: str
    err: str


def _racer(barrier, folder: str, index: int, preload: list[str], target: Callable[..., Any], args: tuple) -> None:
    out, err = Path(folder) / f"{index}.out", Path(folder) / f"{index}.err"
    # Everything the process prints, Python's and the libraries' own, goes to the two files.
    os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
    os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    for module in preload:  # the heavy imports happen before the start line, not in the race
        importlib.import_module(module)
    barrier.wait(timeout=300)
    code = target(*args)
    sys.stdout.flush()
    sys.stderr.flush()
    (Path(folder) / f"{index}.code").write_text(str(code))


def rft(*argv: str) -> int:
    from rft_ray.cli import main

    return main(list(argv))


def race(folder: Path, calls: list[tuple[Callable[..., Any], tuple]], preload: list[str] = (),
         timeout: float = 300) -> list[Outcome]:
    """Run each `target(*args)` of `calls` in its own process, all released together; their outcomes in order.
    `target` must be importable (a module-level function); `preload` names modules each imports beforehand."""
    folder.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(calls))
    processes = [context.Process(target=_racer, args=(barrier, str(folder), i, list(preload), target, args))
                 for i, (target, args) in enumerate(calls)]
    for process in processes:
        process.start()
    outcomes = []
    for i, process in enumerate(processes):
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
        code_file = folder / f"{i}.code"
        code = int(code_file.read_text()) if code_file.is_file() else None
        outcomes.append(Outcome(process.pid, code, (folder / f"{i}.out").read_text(),
                                (folder / f"{i}.err").read_text()))
    return outcomes


def filesystem(kind: str, folder: str):
    """(filesystem, path) of `folder` as a local folder, or through an object store's protocol: pyarrow's
    SubTreeFileSystem over the same disk is not a LocalFileSystem, so leases on it write, settle and read back."""
    import pyarrow.fs as pafs

    if kind == "local":
        return pafs.LocalFileSystem(), folder
    return pafs.SubTreeFileSystem(folder, pafs.LocalFileSystem()), "store"


def take_lease(kind: str, folder: str, hold_s: float, settle: float = 0.3) -> int:
    """Take the lease `run-x` and hold it `hold_s` seconds: 0; 2 (message on stderr) when another holds it."""
    from rft_ray.results.lease import Lease, LeaseHeld

    fs, path = filesystem(kind, folder)
    lease = Lease(fs, path, "run-x", "test writer", "run x", beat=0.2, settle=settle)
    try:
        lease.acquire()
    except LeaseHeld as err:
        print(err, file=sys.stderr)
        return 2
    import time

    time.sleep(hold_s)
    lease.release()
    return 0


def merge_attack_rows(store: str, run_id: str, steps: list[int], column: str) -> int:
    """`rft attack`'s merge of one row at a time into the run's attack results file, as its driver does."""
    from rft_ray.results.attacks import record_attack_results
    from rft_ray.results.store import ResultStore

    target = ResultStore(store)
    for step in steps:
        record_attack_results(target.fs, target.path, run_id, [{"run_id": run_id, "step": step, column: 0.5}])
    return 0
