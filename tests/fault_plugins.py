"""Fault injection through the loop's public plugin mechanism (`RFT_PLUGINS`).

The Ray tests start Ray with `fault_env(folder)` as the runtime environment's variables, so every Train worker
loads `KillWorker` and `DivergeLoss`; in-process tests (`rft run`) name `Interrupt` in `RFT_PLUGINS` themselves. Each does nothing until a test arms it by writing a plan file into the folder
({"step": N, "run_id_contains": "..."}); the first run that matches claims the plan by renaming the file
(atomic: it fires once) and writes the fired file with the run id and process id.
"""
from __future__ import annotations

import json
import math
import os
import resource
import signal
from pathlib import Path

FAULT_DIR_ENV = "RFT_FAULT_DIR"
KILL_FILE, KILL_FIRED_FILE = "kill-worker.json", "kill-worker.fired.json"
NAN_FILE, NAN_FIRED_FILE = "nan-loss.json", "nan-loss.fired.json"
INTERRUPT_FILE, INTERRUPT_FIRED_FILE = "interrupt.json", "interrupt.fired.json"
DISK_FULL_FILE, DISK_FULL_FIRED_FILE = "disk-full.json", "disk-full.fired.json"


def fault_env(folder: Path) -> dict[str, str]:
    """The environment variables that load both plugins in every worker, armed through `folder`."""
    here = Path(__file__).resolve()
    return {FAULT_DIR_ENV: str(folder), "RFT_PLUGINS": f"{here}:KillWorker,{here}:DivergeLoss"}


def claim(armed_name: str, fired_name: str, run_id: str, step: int | None = None) -> dict | None:
    """The armed plan if it targets this run (and step): claimed once, atomically."""
    folder = os.environ.get(FAULT_DIR_ENV)
    if not folder:
        return None
    armed = Path(folder) / armed_name
    try:
        plan = json.loads(armed.read_text())
    except (OSError, ValueError):
        return None
    if str(plan.get("run_id_contains", "")) not in run_id:
        return None
    if step is not None and int(plan.get("step", -1)) != step:
        return None
    fired = Path(folder) / fired_name
    try:
        os.rename(armed, fired)  # atomic: one process wins
    except OSError:
        return None
    fired.write_text(json.dumps({**plan, "run_id": run_id, "pid": os.getpid()}))
    return plan


def _rank() -> int:
    """This process's rank among a trial's data-parallel workers (0 without a process group)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class KillWorker:
    """SIGKILLs the worker at the planned evaluation step, after the store has the point and before Ray
    Tune hears of it (plugins run between the two); with "rank" in the plan, only that data-parallel worker."""

    def records_changed(self, records, checkpoint_dir) -> None:
        if not records or int(_plan(KILL_FILE).get("rank", _rank())) != _rank():
            return
        if claim(KILL_FILE, KILL_FIRED_FILE, records[-1].run_id, records[-1].step) is not None:
            os.kill(os.getpid(), signal.SIGKILL)


class DivergeLoss:
    """From the planned optimizer step on, the run's trainable weights are NaN, so its loss is NaN: as a
    diverging learning rate would make it."""

    def __init__(self):
        self.from_step: int | None = None

    def on_run_start(self, run) -> None:
        plan = claim(NAN_FILE, NAN_FIRED_FILE, run.run_id)
        self.from_step = None if plan is None else int(plan["step"])

    def on_step_start(self, step: int, run) -> None:
        if self.from_step is not None and step >= self.from_step:
            for parameter in run.model.parameters():
                if parameter.requires_grad:
                    parameter.data.fill_(math.nan)


def _plan(armed_name: str) -> dict:
    try:
        return json.loads((Path(os.environ.get(FAULT_DIR_ENV, "")) / armed_name).read_text())
    except (OSError, ValueError):
        return {}


class Interrupt:
    """Ctrl-C in a run: before its first evaluation point (plan {"at": "start"}), or right after the point of a
    planned step (plan {"step": N}: the store, the kept weights and every observer before the plugins have it)."""

    def on_run_start(self, run) -> None:
        if _plan(INTERRUPT_FILE).get("at") == "start" and claim(INTERRUPT_FILE, INTERRUPT_FIRED_FILE, run.run_id):
            raise KeyboardInterrupt

    def records_changed(self, records, checkpoint_dir) -> None:
        if records and "step" in _plan(INTERRUPT_FILE) and \
                claim(INTERRUPT_FILE, INTERRUPT_FIRED_FILE, records[-1].run_id, records[-1].step) is not None:
            raise KeyboardInterrupt


class FillDisk:
    """From the planned point on ({"step": N}), no file this process writes may grow past half the size of the
    run's checkpoint (RLIMIT_FSIZE, SIGXFSZ ignored): the kernel fails the next checkpoint's write half-way
    (EFBIG), as a full disk would. The limit stays until the test puts it back (`disk_limits`)."""

    def records_changed(self, records, checkpoint_dir) -> None:
        if records and checkpoint_dir is not None and \
                claim(DISK_FULL_FILE, DISK_FULL_FIRED_FILE, records[-1].run_id, records[-1].step) is not None:
            size = (Path(checkpoint_dir) / "checkpoint.pt").stat().st_size
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def disk_limits():
    """What `FillDisk` changes, to put back: call the returned function."""
    limits, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.getsignal(signal.SIGXFSZ)

    def restore() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)

    return restore
