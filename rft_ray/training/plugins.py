"""Loop plugins: your code inside every run, in-process (`rft run`) or on a Ray Train worker (`rft sweep`).

A plugin is any object with one or more of these hooks; the loop calls those it has, in the order the
plugins were given:

    on_run_start(run: RunContext)              once, after the model, optimizer and data are built and a
                                               checkpoint (if any) is restored
    on_step_start(step: int, run: RunContext)  before optimizer step `step` (1-based) computes its loss
    records_changed(records, checkpoint_dir)   at every evaluation point (and once after a restore), after
                                               the run's records are in the result store and before Ray
                                               Tune hears of them

Plugins come from `train_loop(..., observers=[...])` and from the environment variable `RFT_PLUGINS`:
comma-separated `module:attribute` (an importable module) or `/path/to/file.py:attribute` entries, each
attribute a class or factory called without arguments, as pytest reads `PYTEST_PLUGINS`. On Ray, give it to
every worker through the runtime environment: `ray.init(runtime_env={"env_vars": {"RFT_PLUGINS": ...}})`.
Uses: custom metrics written beside the store, logging to another tracker, gradient statistics, fault
injection (the test suite's `tests/fault_plugins.py` kills workers and makes losses diverge this way).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PLUGINS_ENV = "RFT_PLUGINS"


@dataclass
class RunContext:
    """What a plugin may read (and, at its own risk, change) of a running run."""

    spec: Any  # the RunSpec
    model: Any  # the ImageClassifier, on its device
    optimizer: Any  # the current phase's: a strategy with phases (lp_ft) gets a new one, and scheduler, per phase
    scheduler: Any
    device: Any
    total_steps: int
    bundle: Any = None  # the DataBundle: the splits, OOD domains and class names

    @property
    def class_names(self) -> list[str]:
        """What the model's outputs mean, in order (the dataset's classes)."""
        return list(self.bundle.class_names) if self.bundle is not None else []

    @property
    def run_id(self) -> str:
        return self.spec.run_id


class PluginError(ValueError):
    """A plugin named in RFT_PLUGINS cannot be loaded (the message names the entry)."""


def load_plugin(entry: str) -> Any:
    """One `module:attribute` or `/path/file.py:attribute` entry, instantiated."""
    target, _, attribute = entry.strip().rpartition(":")
    if not target or not attribute:
        raise PluginError(f"{PLUGINS_ENV} entry {entry!r} is not 'module:attribute' or '/path/file.py:attribute'")
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser().resolve()
            spec = importlib.util.spec_from_file_location(f"rft_plugin_{path.stem}", path)
            if spec is None or spec.loader is None or not path.is_file():
                raise PluginError(f"{PLUGINS_ENV} entry {entry!r}: the file {path} does not exist")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ImportError as err:
        raise PluginError(f"{PLUGINS_ENV} entry {entry!r} cannot be imported: {err}") from err
    factory = getattr(module, attribute, None)
    if factory is None or not callable(factory):
        raise PluginError(f"{PLUGINS_ENV} entry {entry!r}: {target} has no class or factory {attribute!r}")
    return factory()


def plugins_from_env() -> list[Any]:
    """The plugins $RFT_PLUGINS names (none when it is unset or empty)."""
    entries = [e for e in os.environ.get(PLUGINS_ENV, "").split(",") if e.strip()]
    return [load_plugin(entry) for entry in entries]


def hooks(observers: list[Any], name: str) -> list[Any]:
    """The bound `name` hook of each observer that has one, in order."""
    return [hook for hook in (getattr(o, name, None) for o in observers) if callable(hook)]
