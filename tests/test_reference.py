"""The generated reference (rft_ray/cli/reference.py) covers the code: every spec field, found here by walking
the spec classes themselves rather than the schema the pages are made from, every strategy and dataset with
each of its options, every corruption, every command with each of its flags."""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Union

import pytest

from rft_ray.config import RunSpec
from rft_ray.config.experiment import ExperimentSpec


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    from rft_ray.cli.reference import reference_pages

    return reference_pages()


def dataclass_fields(cls: type, prefix: str = "", skip: tuple[str, ...] = ()) -> list[str]:
    """Dotted paths of every field of a spec class, nested sections and lists of sections (`[]`) included."""
    paths = []
    hints = typing.get_type_hints(cls)
    for spec_field in dataclasses.fields(cls):
        path = prefix + spec_field.name
        if path in skip:
            paths.append(path)
            continue
        if dataclasses.is_dataclass(hints[spec_field.name]):
            paths += dataclass_fields(hints[spec_field.name], path + ".", skip)
            continue
        paths.append(path)
        for suffix, section in _sections(hints[spec_field.name]):
            paths += dataclass_fields(section, f"{path}{suffix}.", skip)
    return paths


def _sections(tp: Any, suffix: str = "") -> list[tuple[str, type]]:
    """Sections inside a field that is not one itself: `Grid | None` (suffix ''), `list[Objective]` ('[]')."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return [found for arm in args for found in _sections(arm, suffix)]
    if origin is list:
        return _sections(args[0], suffix + "[]")
    return [(suffix, tp)] if dataclasses.is_dataclass(tp) else []


def test_every_run_spec_field_has_a_row(pages):
    fields = dataclass_fields(RunSpec)
    assert len(fields) > 50
    missing = [f for f in fields if f"| `{f}` |" not in pages["reference/run-spec.md"]]
    assert missing == []


def test_every_experiment_spec_field_has_a_row(pages):
    fields = dataclass_fields(ExperimentSpec, skip=("base", "datasets"))  # both are run-spec sections
    missing = [f for f in fields if f"| `{f}` |" not in pages["reference/experiment-spec.md"]]
    assert missing == [] and "search.asha.grace_period" in fields


def test_every_strategy_dataset_and_corruption_with_its_options(pages):
    from rft_ray.data import corruption_names, dataset_entry, dataset_names
    from rft_ray.models.strategies import strategy_names
    from rft_ray.models.strategies.base import STRATEGIES

    def section(page: str, name: str) -> str:
        return page.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]

    strategies, datasets = pages["reference/strategies.md"], pages["reference/datasets.md"]
    for name in strategy_names():
        assert f"| `{name}` |" in strategies
        for option in dataclass_fields(STRATEGIES.get(name).Config):
            assert f"| `{option}` |" in section(strategies, name), (name, option)
    for name in dataset_names():
        assert f"| `{name}` |" in datasets
        for option in dataclass_fields(dataset_entry(name).config):
            assert f"| `{option}` |" in section(datasets, name), (name, option)
    assert all(f"`{name}`" in section(datasets, "Corruptions") for name in corruption_names())


def test_every_command_with_every_flag(pages):
    from rft_ray.cli import command_parsers

    cli = pages["reference/cli.md"]
    for name, parser in command_parsers().items():
        assert f"\n## rft {name}\n" in cli
        help_text = cli.split(f"\n## rft {name}\n", 1)[1].split("\n## ", 1)[0]
        flags = [option for action in parser._actions for option in action.option_strings]
        assert flags and all(flag in help_text for flag in flags), name


def test_a_range_declared_once_reaches_the_page(pages):
    row = next(line for line in pages["reference/run-spec.md"].splitlines() if line.startswith("| `training.lr` |"))
    assert "| (0, 10) |" in row and "`0.001`" in row and "AdamW learning rate" in row
