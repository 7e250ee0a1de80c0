"""What a person sees while a sweep runs: a few plain lines per group and one per trial on the console, and
Ray's, Tune's and the workers' own output in the sweep's log file."""
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from test_sweep import tiny_experiment

from rft_ray.sweep import console as console_module
from rft_ray.sweep.console import GroupProgress, SweepConsole, say, warn


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_captured_output_goes_to_the_log_and_the_user_lines_to_the_terminal(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    log = tmp_path / "sweep" / "sweep.log"
    with SweepConsole(log, out=out, err=err).capturing():
        print("(pid=123) TrainingReport(metrics={...})")  # what Ray relays from a worker
        print("a warning from a library", file=sys.stderr)
        say("rft sweep: [1/1] lora-digits")
        warn("rft sweep: a trial failed")
    assert out.getvalue().splitlines() == [f"rft sweep: Ray's, Tune's and the trials' own output: {log}",
                                           "rft sweep: [1/1] lora-digits"]
    assert err.getvalue() == "rft sweep: a trial failed\n"
    text = log.read_text()
    for line in ("TrainingReport", "a warning from a library", "[1/1] lora-digits", "a trial failed"):
        assert line in text
    assert sys.stdout is not None and console_module._current is None  # restored
    say("after the sweep")  # no console: a plain print, no error


def test_verbose_shows_captured_output_too_and_only_a_terminal_gets_a_live_line(tmp_path):
    out = io.StringIO()
    with SweepConsole(tmp_path / "a.log", verbose=True, out=out, err=out).capturing() as console:
        print("worker output")
        console.status("[1/7] lora: 0/2 done")
    assert "worker output" in out.getvalue() and "\x1b" not in out.getvalue() and "\r" not in out.getvalue()
    terminal = _Terminal()
    with SweepConsole(tmp_path / "b.log", out=terminal, err=terminal).capturing() as console:
        console.status("[1/7] lora: 0/2 done")
        say("  trial done")
    assert "\r\x1b[2K[1/7] lora: 0/2 done" in terminal.getvalue() and "trial done\n" in terminal.getvalue()


def test_group_progress_counts_and_estimates_time_left():
    progress = GroupProgress("lora-digits", 2, 7, trials=4, select_on="test")
    progress.started = 100.0
    trial = SimpleNamespace(trial_id="t1", status="TERMINATED", config={"lr": 1e-3, "weight_decay": 0.01},
                            last_result={"test_clean_acc": 0.9, "pgd_adv_acc": 0.35, "step": 300, "total_steps": 300,
                                         "val_clean_acc": 0.8, "val_pgd_adv_acc": 0.3})
    progress.on_trial_result(0, [], trial, trial.last_result)
    progress.on_trial_complete(0, [], trial)
    running = [SimpleNamespace(status="RUNNING"), SimpleNamespace(status="PENDING")]
    line = progress.describe(running, now=160.0)
    assert line == ("[2/7] lora-digits: 1/4 done (0 failed), 1 running, 2 queued; best acc 0.900, best PGD 0.350; "
                    "1m00s, ~3m00s left")
    # Selecting on validation (the default), the running best is validation's: the test best would be a peek.
    on_validation = GroupProgress("lora-digits", 2, 7, trials=4)
    on_validation.started = 100.0
    on_validation.on_trial_result(0, [], trial, trial.last_result)
    assert "best val acc 0.800, best val PGD 0.300;" in on_validation.describe(running, now=160.0)


def test_a_sweep_prints_a_short_plain_console_and_names_its_log(tmp_path):
    """A real `rft sweep` (two trials, Ray started here) through a pipe: a few plain lines, the log file named,
    no Tune status tables, no worker reports and no control characters; those are in the log."""
    data = tiny_experiment(tmp_path / "sweep")
    data["base"]["training"]["steps"] = 20
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(data))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-m", "rft_ray.cli", "sweep", str(spec)], env=env, capture_output=True,
                          text=True, timeout=600)
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-3000:]
    lines = console.splitlines()
    log = Path(tmp_path / "sweep" / "sweep.log")
    assert f"output: {log}" in lines[0] and log.is_file()
    assert len(lines) < 40, console
    assert sum(bool(re.match(r"  lora-digits trial \w+: done, lr ", line)) for line in lines) == 2, console
    for noise in ("Trial status", "TrainingReport", "╭", "\x1b", "\r"):
        assert noise not in console, noise
    assert "rft sweep tiny: done in" in lines[-1]
    logged = log.read_text()
    assert "rft sweep: [1/1] lora-digits" in logged and len(logged.splitlines()) > len(lines)


def test_our_own_warnings_written_to_stderr_below_the_sweep_still_reach_the_terminal(tmp_path):
    """E.g. the tracking client's "MLflow ... is off for the rest of this sweep", printed to sys.stderr."""
    out, err = io.StringIO(), io.StringIO()
    with SweepConsole(tmp_path / "s.log", out=out, err=err).capturing():
        sys.stderr.write("rft sweep: warning: MLflow tracking at http://x ")
        sys.stderr.write("is off\n(pid=7) a worker's line\n")
    assert err.getvalue() == "rft sweep: warning: MLflow tracking at http://x is off\n"
    assert "a worker's line" in (tmp_path / "s.log").read_text()


@pytest.mark.slow
def test_the_demo_console_is_short_and_names_its_log(tmp_path):
    """`rft demo` as a new user runs it (through a pipe here): all 7 groups, well under 200 lines, the log named."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-m", "rft_ray.cli", "demo", "--out", str(tmp_path / "demo")], env=env,
                          capture_output=True, text=True, timeout=1800)
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-3000:]
    lines = console.splitlines()
    assert len(lines) < 120, console
    assert any(f"output: {tmp_path / 'demo' / 'sweep.log'}" in line for line in lines)
    assert sum(bool(re.match(r"rft sweep: \[\d/7\] ", line)) for line in lines) == 7
    assert sum(bool(re.match(r"  \w+-digits trial \w+: done", line)) for line in lines) == 14, console
    for noise in ("Trial status", "TrainingReport", "╭", "\x1b", "\r", "Traceback"):
        assert noise not in console, noise
