"""What a person sees while a sweep runs: a few lines per group, one per finished trial, and the messages that
need them; everything Ray, Tune and the workers print goes to `<sweep folder>/sweep.log` instead.

`SweepConsole.capturing()` points `sys.stdout`, `sys.stderr` and Ray's loggers at the log file for the sweep's
duration (Ray relays the workers' output through the driver's `sys.stdout`/`sys.stderr`, so it lands there too);
`say` and `warn` write to the terminal the sweep started with, and to the log. On a terminal the group's status
is one line rewritten in place (at most once a second); anywhere else (CI, `ray submit`, a pipe) it is printed as
plain lines when trials finish, without control characters. `verbose` sends the captured output to the terminal
as well. Outside `capturing()` (a sweep started from Python without a console) `say` and `warn` just print.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Any, Iterator, TextIO

from ray.tune import Callback

LOG_FILE = "sweep.log"
_current: "SweepConsole | None" = None


def say(message: str) -> None:
    """A line for the person running the sweep (and the log)."""
    if _current is None:
        print(message, flush=True)
    else:
        _current.line(message, error=False)


def warn(message: str) -> None:
    """A warning or error that needs the person running the sweep: stderr (and the log)."""
    if _current is None:
        print(message, file=sys.stderr, flush=True)
    else:
        _current.line(message, error=True)


class _Tee:
    """A text stream writing to the log, and to the terminal too when verbose. Lines of our own (starting with
    `rft`, e.g. the tracking client's "rft sweep: warning: MLflow ... is off") reach `ours` (the terminal's
    stderr) too: written below the sweep's floor, they need the user as much as `warn`'s."""

    def __init__(self, log: TextIO, terminal: TextIO | None, ours: TextIO | None = None):
        self.log, self.terminal, self.ours = log, terminal, ours
        self._line = ""

    def write(self, text: str) -> int:
        self.log.write(text)
        if self.terminal is not None:
            self.terminal.write(text)
        elif self.ours is not None:
            self._line += text
            *complete, self._line = self._line.split("\n")
            for line in complete:
                if line.startswith("rft"):
                    if _current is not None:
                        _current._clear_status()
                    self.ours.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        for stream in (self.terminal, self.ours):
            if stream is not None:
                stream.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:  # for libraries that ask (faulthandler, subprocess): the log file's descriptor
        return self.log.fileno()


class SweepConsole:
    def __init__(self, log_path: str | Path, verbose: bool = False, out: TextIO | None = None,
                 err: TextIO | None = None):
        self.log_path, self.verbose = Path(log_path), verbose
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.live = self.out.isatty()
        self._log: TextIO | None = None
        self._status_shown = False

    def line(self, message: str, error: bool = False) -> None:
        self._clear_status()
        stream = self.err if error else self.out
        stream.write(message + "\n")
        stream.flush()
        if self._log is not None:
            self._log.write(message + "\n")
            self._log.flush()

    def status(self, text: str) -> None:
        """The group's status: rewritten in place on a terminal, else left to the trial lines."""
        if self.live:
            self.out.write("\r\x1b[2K" + text[: 160])
            self.out.flush()
            self._status_shown = True

    def _clear_status(self) -> None:
        if self._status_shown:
            self.out.write("\r\x1b[2K")
            self._status_shown = False

    @contextlib.contextmanager
    def capturing(self) -> Iterator["SweepConsole"]:
        global _current
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "a", encoding="utf-8", buffering=1)
        saved_streams = sys.stdout, sys.stderr
        tee_out = _Tee(self._log, self.out if self.verbose else None)
        tee_err = _Tee(self._log, self.err if self.verbose else None, ours=self.err)
        sys.stdout, sys.stderr = tee_out, tee_err
        handlers = _redirect_ray_loggers(tee_err)
        _current = self
        try:
            self.line(f"rft sweep: Ray's, Tune's and the trials' own output: {self.log_path}")
            yield self
        finally:
            _current = None
            self._clear_status()
            for handler, stream in handlers:
                handler.setStream(stream)
            for handler in _stream_handlers((tee_out, tee_err)):  # added meanwhile (by ray.init): back to stderr
                handler.setStream(saved_streams[1])
            sys.stdout, sys.stderr = saved_streams
            self._log.close()
            self._log = None


def _stream_handlers(streams: tuple) -> list[logging.StreamHandler]:
    """Handlers of Ray's, Optuna's and the root loggers writing to one of `streams` (others, e.g. a test runner's
    capture or a file, are left alone)."""
    return [handler for name in ("ray", "ray.tune", "ray.train", "ray.data", "optuna", "")
            for handler in logging.getLogger(name).handlers
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
            and any(handler.stream is s for s in streams)]


def _redirect_ray_loggers(target: TextIO) -> list[tuple[logging.StreamHandler, Any]]:
    """Ray's loggers hold handlers bound to the stderr of when Ray was imported or started: point them at the
    log for the sweep's duration (handlers Ray adds meanwhile pick up the redirected sys.stderr themselves)."""
    terminals = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    saved = []
    for handler in _stream_handlers(terminals):
        saved.append((handler, handler.stream))
        handler.setStream(target)
    return saved


def _short(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


class GroupProgress(Callback):
    """Tune callback: the group's status line and one line per finished or failed trial. Holds no streams
    (Tune pickles its callbacks with the experiment and brings them back on restore)."""

    def __init__(self, group: str, index: int, groups: int, trials: int, select_on: str = "validation"):
        self.group, self.index, self.groups, self.trials = group, index, groups, trials
        # The running best shows the split the search selects on (the test best would be a peek).
        self.select_on = select_on
        self.started = time.time()
        self.done = self.failed = 0
        self.best: dict[str, float] = {}
        self._shown = 0.0

    def setup(self, **info):
        self.started = time.time()  # also on restore: the time left is this invocation's

    def on_trial_result(self, iteration, trials, trial, result, **info):
        for key in _progress_keys(getattr(self, "select_on", "test")):
            value = result.get(key)
            if isinstance(value, (int, float)):
                self.best[key] = max(self.best.get(key, float("-inf")), float(value))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        result = trial.last_result or {}
        stopped = result.get("step") is not None and result.get("total_steps") not in (None, result.get("step"))
        say(f"  {self.group} trial {trial.trial_id}: {'stopped early' if stopped else 'done'}, "
            f"lr {trial.config.get('lr', float('nan')):.3g}, wd {trial.config.get('weight_decay', float('nan')):.3g}: "
            + (f"val acc {_short(result.get('val_clean_acc'))}, val PGD {_short(result.get('val_pgd_adv_acc'))}; "
               if getattr(self, "select_on", "test") == "validation" else "")
            + f"test acc {_short(result.get('test_clean_acc'))}, PGD {_short(result.get('pgd_adv_acc'))}, "
            f"OOD {_short(result.get('test_ood_accuracy'))} at step {result.get('step', '?')}")

    def on_trial_error(self, iteration, trials, trial, **info):
        from rft_ray.sweep.results import trial_error

        self.failed += 1
        warn(f"  {self.group} trial {trial.trial_id} failed (lr {trial.config.get('lr', float('nan')):.3g}, "
             f"wd {trial.config.get('weight_decay', float('nan')):.3g}): {trial_error(trial)}; its evaluation points "
             "so far are in the store")

    def on_step_end(self, iteration, trials, **info):
        now = time.time()
        if _current is None or not _current.live or now - self._shown < 1.0:
            return
        self._shown = now
        _current.status(self.describe(trials, now))

    def describe(self, trials, now: float) -> str:
        running = sum(1 for t in trials if t.status == "RUNNING")
        finished = self.done + self.failed
        queued = max(0, self.trials - finished - running)
        elapsed = now - self.started
        left = f", ~{_minutes(elapsed / finished * (self.trials - finished))} left" if finished else ""
        labels = {"test_clean_acc": "acc", "pgd_adv_acc": "PGD", "val_clean_acc": "val acc",
                  "val_pgd_adv_acc": "val PGD"}
        best = ", ".join(f"best {labels[k]} {v:.3f}" for k, v in self.best.items())
        return (f"[{self.index}/{self.groups}] {self.group}: {finished}/{self.trials} done ({self.failed} failed), "
                f"{running} running, {queued} queued{'; ' + best if best else ''}; {_minutes(elapsed)}{left}")


def _progress_keys(select_on: str) -> tuple[str, str]:
    return ("val_clean_acc", "val_pgd_adv_acc") if select_on == "validation" else ("test_clean_acc", "pgd_adv_acc")


def _minutes(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"
