"""Specs whose component names are checked: the floor above config, data and models.

`rft_ray.config` builds specs with their types and ranges and imports nothing of the project; whether a
strategy or dataset exists, and whether its options are its own, is asked of their registries here, so a
typo fails before any data is read or Ray starts. Every entry point (CLI, sweep, trial) builds specs here.
The JSON Schemas of both specs (`rft schema`) are made here too, with those names and each one's options.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from rft_ray.config import DatasetSpec, OutputSpec, RunSpec, SpecError, StrategySpec, load_spec
from rft_ray.config.experiment import ExperimentSpec, StrategyEntry
from rft_ray.config.schema import SchemaBuilder, document
from rft_ray.data import corruption_names, dataset_config, dataset_entry, dataset_names
from rft_ray.models.strategies import create_strategy, strategy_config, strategy_names
from rft_ray.models.strategies.base import STRATEGIES
from rft_ray.results.record import EvalRecord


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


# ---------------------------------------------------------------------------------------------------
# JSON Schemas: the config floor's, with the registries' names and each strategy's and dataset's options.

RUN_TITLE = "rft-ray run spec (rft run --spec)"
EXPERIMENT_TITLE = "rft-ray experiment spec (rft sweep)"


def run_schema() -> dict[str, Any]:
    builder = SchemaBuilder()
    root = builder.object_schema(RunSpec)
    _name_components(builder)
    return document(RUN_TITLE, root, builder)


def experiment_schema() -> dict[str, Any]:
    builder = SchemaBuilder()
    root = builder.object_schema(ExperimentSpec)
    run = builder.object_schema(RunSpec)
    del run["properties"]["strategy"]  # each group's strategy comes from `strategies`
    output = run["properties"]["output"]  # the sweep places results; base.output keeps checkpoints only
    keep = builder.object_schema(OutputSpec)["properties"]["keep_checkpoints"]
    output.pop("allOf")
    output.update(type=["object", "null"], properties={"keep_checkpoints": keep}, additionalProperties=False)
    root["properties"]["base"].update(run)
    root["properties"]["datasets"]["anyOf"][0]["items"] = builder.ref(DatasetSpec)
    for arm in root["properties"]["strategies"]["items"]["anyOf"]:
        if arm.get("type") == "string":
            arm["enum"] = strategy_names()
    _named_options(builder.definition(StrategyEntry), builder, strategy_names(), _strategy_options,
                   StrategySpec().name)
    _name_components(builder)
    return document(EXPERIMENT_TITLE, root, builder)


def _strategy_options(name: str) -> type:
    return STRATEGIES.get(name).Config


def _name_components(builder: SchemaBuilder) -> None:
    _named_options(builder.definition(StrategySpec), builder, strategy_names(), _strategy_options,
                   StrategySpec().name)
    dataset = builder.definition(DatasetSpec)
    _named_options(dataset, builder, dataset_names(), lambda name: dataset_entry(name).config, DatasetSpec().name)
    for arm in dataset["properties"]["corruptions"]["anyOf"]:
        if arm.get("type") == "array":
            arm["items"]["enum"] = corruption_names()


def _named_options(section: dict[str, Any], builder: SchemaBuilder, names: list[str], options_of, default: str):
    """`name` one of `names`; `options` the named component's options (the default's when name is absent)."""
    section["properties"]["name"]["enum"] = names
    rules = [{"if": {"properties": {"name": {"const": name}}, "required": ["name"]},
              "then": {"properties": {"options": builder.ref(options_of(name))}}} for name in names]
    rules.append({"if": {"not": {"required": ["name"]}},
                  "then": {"properties": {"options": builder.ref(options_of(default))}}})
    section["allOf"] = rules


def schema_fingerprint() -> str:
    """A hash of what spec files and result files may hold: both spec schemas without their prose, and the
    record's fields. It changes exactly when the package version must (CHANGELOG.md, "Versions")."""
    def structure(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: structure(v) for k, v in node.items() if k not in ("description", "title")}
        return [structure(v) for v in node] if isinstance(node, list) else node

    record = [(f.name, str(f.type)) for f in dataclasses.fields(EvalRecord)]
    content = {"run": structure(run_schema()), "experiment": structure(experiment_schema()), "record": record}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
