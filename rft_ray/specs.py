"""Specs whose component names are checked: the floor above config, data and models.

`rft_ray.config` builds specs with their types and ranges; whether a strategy, dataset or corruption exists,
and whether its options are its own, is checked here, so a typo fails before any data is read or Ray starts.
Every entry point (CLI, sweep, trial) builds specs here. The JSON Schemas of both specs (`rft schema`) are made
here too, with those names and each one's options.

Checking a spec imports no torch, Ray or MLflow (`tests/test_spec.py` holds it): the built-in names and their
option classes are tables on the config floor (`rft_ray.config.strategy_options`, `.dataset_options`), which the
registries register their implementations with. A component registered from Python (`register_strategy`,
`register_dataset`, `register_corruption`) can only exist once its registry's module is loaded; a name the
tables lack is then looked up in that registry.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from rft_ray.config import DatasetSpec, OutputSpec, RunSpec, SpecError, StrategySpec, build_options, load_spec
from rft_ray.config.dataset_options import CORRUPTION_NAMES, DATASET_OPTIONS, READS_ROOT
from rft_ray.config.experiment import ExperimentSpec, StrategyEntry
from rft_ray.config.schema import SchemaBuilder, document
from rft_ray.config.strategy_options import STRATEGY_OPTIONS

# Where each registry lives (a module that is not loaded holds no registrations beyond the tables).
_STRATEGIES = ("rft_ray.models.strategies.base", "STRATEGIES")
_DATASETS = ("rft_ray.data.base", "DATASETS")
_CORRUPTIONS = ("rft_ray.data.corruptions.base", "CORRUPTIONS")


def _registered(where: tuple[str, str]):
    """The registry `where` names when its module is loaded, else None."""
    module = sys.modules.get(where[0])
    return getattr(module, where[1], None) if module is not None else None


def _unknown(kind: str, name: str, names: list[str], field: str) -> SpecError:
    import difflib

    close = difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return SpecError(f"unknown {kind} {name!r}.{hint} Available: {', '.join(names)}", field)


def strategy_options_class(name: str) -> type:
    if name in STRATEGY_OPTIONS:
        return STRATEGY_OPTIONS[name]
    registry = _registered(_STRATEGIES)
    if registry is not None:
        return registry.get(name).Config  # a SpecError listing the registered names when unknown
    raise _unknown("strategy", name, list(STRATEGY_OPTIONS), "strategy.name")


def dataset_options_class(name: str) -> type:
    if name in DATASET_OPTIONS:
        return DATASET_OPTIONS[name]
    registry = _registered(_DATASETS)
    if registry is not None:
        return registry.get(name).config
    raise _unknown("dataset", name, list(DATASET_OPTIONS), "dataset.name")


def strategy_names() -> list[str]:
    """Every strategy's name in the registry's order (the built-ins, then any registered from Python)."""
    registry = _registered(_STRATEGIES)
    return list(registry.names()) if registry is not None else list(STRATEGY_OPTIONS)


def dataset_names() -> list[str]:
    """Every dataset's name in the registry's order (the built-ins, then any registered from Python)."""
    registry = _registered(_DATASETS)
    return list(registry.names()) if registry is not None else list(DATASET_OPTIONS)


def corruption_names() -> list[str]:
    registry = _registered(_CORRUPTIONS)
    return sorted({*CORRUPTION_NAMES, *(registry.names() if registry is not None else ())})


def check_components(spec: RunSpec) -> RunSpec:
    """The run's strategy, dataset and corruptions exist and their options are valid (errors name the field)."""
    strategy_options = build_options(strategy_options_class(spec.strategy.name), spec.strategy.options,
                                     "strategy.options")
    check_steps = getattr(strategy_options, "check_steps", None)
    if check_steps is not None and spec.training.steps is not None:  # lp_ft: its phases must fit the run
        check_steps(spec.training.steps)
    build_options(dataset_options_class(spec.dataset.name), spec.dataset.options, "dataset.options")
    corruptions = _registered(_CORRUPTIONS)
    for i, name in enumerate(spec.dataset.corruptions):
        if name not in CORRUPTION_NAMES and (corruptions is None or name not in corruptions.names()):
            raise _unknown("corruption", name, list(CORRUPTION_NAMES), f"dataset.corruptions[{i}]")
    if spec.dataset.name in READS_ROOT and spec.dataset.root is None:
        raise SpecError(f"must be set: dataset {spec.dataset.name!r} reads its images from a local folder "
                        "(--data-root on the command line)", "dataset.root")
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
    _named_options(builder.definition(StrategyEntry), builder, strategy_names(), strategy_options_class,
                   StrategySpec().name)
    _name_components(builder)
    return document(EXPERIMENT_TITLE, root, builder)


def _name_components(builder: SchemaBuilder) -> None:
    _named_options(builder.definition(StrategySpec), builder, strategy_names(), strategy_options_class,
                   StrategySpec().name)
    dataset = builder.definition(DatasetSpec)
    _named_options(dataset, builder, dataset_names(), dataset_options_class, DatasetSpec().name)
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

    from rft_ray.results.record import EvalRecord  # pyarrow: only for the fingerprint, not for checking a spec

    record = [(f.name, str(f.type)) for f in dataclasses.fields(EvalRecord)]
    content = {"run": structure(run_schema()), "experiment": structure(experiment_schema()), "record": record}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
