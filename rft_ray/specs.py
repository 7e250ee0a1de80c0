"""Specs whose component names are checked: the floor above config, data and models.

`rft_ray.config` builds specs with their types and ranges and imports nothing of the project; whether a
strategy or dataset exists, and whether its options are its own, is asked of their registries here, so a
typo fails before any data is read or Ray starts. Every entry point (CLI, sweep, trial) builds specs here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rft_ray.config import RunSpec, SpecError, load_spec
from rft_ray.config.experiment import ExperimentSpec
from rft_ray.data import dataset_config
from rft_ray.models.strategies import create_strategy, strategy_config


def check_components(spec: RunSpec) -> RunSpec:
    """The run's strategy and dataset exist and their options are valid (errors name the field)."""
    strategy_config(spec.strategy.name, spec.strategy.options)
    if spec.training.steps is not None:  # a strategy's phases must fit the run (lp_ft: probe_steps < steps)
        create_strategy(spec.strategy.name, spec.strategy.options).phases(spec.training.steps, spec.training.lr)
    dataset_config(spec.dataset.name, spec.dataset.options)
    return spec


def run_spec(data: Any) -> RunSpec:
    return check_components(RunSpec.from_dict(data))


def experiment_spec(data: Any) -> ExperimentSpec:
    experiment = ExperimentSpec.from_dict(data)
    for group in experiment.groups:
        try:
            check_components(RunSpec.from_dict(group.run))
        except SpecError as err:
            raise group.relocate(err) from None
    return experiment


def load_run_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> RunSpec:
    return load_spec(run_spec, path, overrides)


def load_experiment(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentSpec:
    return load_spec(experiment_spec, path, overrides)
