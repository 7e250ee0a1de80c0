"""The docs site's reference pages, rendered from the code when the site is built (docs/hooks/site.py): every
run- and experiment-spec field from the JSON Schemas of `rft schema` (so the reference and the schema cannot
disagree), every command's --help, every strategy and dataset from their registries. No text here is a copy of
another: change a field's `described(...)` text, a parser's help or a loader's docstring, and the page follows.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
from typing import Any, Iterator

HELP_WIDTH = 100
GENERATED = ("*Generated from the code when the site is built (`rft_ray/cli/reference.py`); {what}. Do not edit "
             "it: change the source it names.*\n")


def reference_pages() -> dict[str, str]:
    """Site path -> Markdown."""
    from rft_ray.specs import experiment_schema, run_schema

    return {
        "reference/run-spec.md": spec_page(
            "Run spec", run_schema(), "`rft run --spec FILE`",
            {"strategy.options": "per strategy: see [Strategies](strategies.md)",
             "dataset.options": "per dataset: see [Datasets](datasets.md)"}),
        "reference/experiment-spec.md": spec_page(
            "Experiment spec", experiment_schema(), "`rft sweep FILE`",
            {"base": "a run spec: see [Run spec](run-spec.md), without `strategy`",
             "datasets": "each a `dataset` section: see [Run spec](run-spec.md#dataset)",
             "strategies[].options": "per strategy: see [Strategies](strategies.md)"}),
        "reference/cli.md": cli_page(),
        "reference/strategies.md": strategies_page(),
        "reference/datasets.md": datasets_page(),
    }


# ---------------------------------------------------------------------------------------------------
# Spec fields: one table row per field, dotted paths, read from a JSON Schema.


def spec_page(title: str, schema: dict[str, Any], used_by: str, elsewhere: dict[str, str]) -> str:
    defs = schema["definitions"]
    lines = [f"# {title}", "", GENERATED.format(what="from the spec classes' `described(...)` fields in "
                                                     "`rft_ray/config/`, through the JSON Schema of `rft schema`"),
             f"Read by {used_by}. Every field is optional; `null` (or leaving a section out) means its default. "
             "Numbers may be written as fractions (`1/255`). [JSON Schema](schema.md) for editors.", ""]
    top = [(name, node) for name, node in schema["properties"].items() if _section(node, defs) is None]
    if top:
        lines += ["## Top level", "", *_table(_rows(dict(top), defs, "", elsewhere)), ""]
    for name, node in schema["properties"].items():
        section = _section(node, defs)
        if section is not None:
            lines += [f"## {name}", "", _cell(node.get("description", "")), "",
                      *_table(_rows(section["properties"], defs, f"{name}.", elsewhere)), ""]
    return "\n".join(lines)


def field_paths(schema: dict[str, Any], elsewhere: tuple[str, ...] = ()) -> list[str]:
    """Every dotted field path the page lists (lists of sections as `name[].field`)."""
    return [row[0] for row in _rows(schema["properties"], schema["definitions"], "", dict.fromkeys(elsewhere, ""))]


def _section(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any] | None:
    ref = node.get("$ref") or (node.get("allOf") or [{}])[0].get("$ref")
    return defs[ref.rsplit("/", 1)[1]] if ref else None


def _nested(node: dict[str, Any], defs: dict[str, Any], suffix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Sections reachable inside a field that is not itself a section: `Grid | None`, `list[Objective]`."""
    for arm in node.get("anyOf", []):
        yield from _nested(arm, defs, suffix)
    if "$ref" in node:
        yield suffix, _section(node, defs)
    if node.get("type") == "array":
        yield from _nested(node["items"], defs, suffix + "[]")


def _rows(properties: dict[str, Any], defs: dict[str, Any], prefix: str, elsewhere: dict[str, str],
          defaults: Any = None) -> Iterator[tuple[str, str, str, str, str]]:
    """Rows of a section's fields; `defaults` is the section's own default, whose values win over the field
    classes' (search.space.weight_decay.high is 0.1 there, Range's 0.01 elsewhere)."""
    for name, node in properties.items():
        path = prefix + name
        if isinstance(defaults, dict) and name in defaults:
            node = {**node, "default": defaults[name]}
        section = _section(node, defs)
        if section is not None:
            yield from _rows(section["properties"], defs, path + ".", elsewhere, node.get("default"))
            continue
        description = node.get("description", "")
        if path in elsewhere:
            yield path, "section" if "properties" in node else _type(node), "", "", f"{description}; {elsewhere[path]}"
            continue
        yield path, _type(node), _default(node), _allowed(node), description
        for suffix, nested in _nested(node, defs):
            yield from _rows(nested["properties"], defs, f"{path}{suffix}.", elsewhere)


def _type(node: dict[str, Any]) -> str:
    if "anyOf" in node:
        return " or ".join(dict.fromkeys(_type(arm) for arm in node["anyOf"]))
    if "$ref" in node or "allOf" in node:
        return "section"
    if "enum" in node:
        return "choice"
    kind = node.get("type")
    if kind == ["number", "string"]:
        return "number"
    if kind == "array":
        return f"list of {_type(node['items'])}"
    if kind == "object":
        return "mapping"
    if isinstance(kind, list):
        return " or ".join(kind)
    return kind or "any"


def _allowed(node: dict[str, Any]) -> str:
    if "anyOf" in node:
        return "; ".join(text for text in (_allowed(arm) for arm in node["anyOf"]) if text)
    if "enum" in node:
        return ", ".join(f"`{value}`" for value in node["enum"])
    if node.get("type") == "array":
        inner = _allowed(node["items"])
        return f"each {inner}" if inner else ""
    low = node.get("minimum", node.get("exclusiveMinimum", -math.inf))
    high = node.get("maximum", node.get("exclusiveMaximum", math.inf))
    if low == -math.inf and high == math.inf:
        return ""
    if high == math.inf:
        return f"{'>=' if 'minimum' in node else '>'} {_number(low)}"
    opening, closing = "[" if "minimum" in node else "(", "]" if "maximum" in node else ")"
    return f"{opening}{_number(low)}, {_number(high)}{closing}" if low != -math.inf else \
        f"{'<=' if 'maximum' in node else '<'} {_number(high)}"


def _number(value: float) -> str:
    if isinstance(value, int) and value >= 2 ** 20 and value & (value - 1) == 0:
        return f"2^{value.bit_length() - 1}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _default(node: dict[str, Any]) -> str:
    if "default" not in node:
        return ""
    value = node["default"]
    text = f"{value:.6g}" if isinstance(value, float) else json.dumps(value)
    return f"`{text}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(rows) -> list[str]:
    lines = ["| field | type | default | allowed | description |", "| --- | --- | --- | --- | --- |"]
    return lines + [f"| `{path}` | {_cell(kind)} | {_cell(default)} | {_cell(allowed)} | {_cell(text)} |"
                    for path, kind, default, allowed, text in rows]


def options_table(config: type) -> list[str]:
    """The options of a strategy or dataset, from the same schema generator as the specs."""
    from rft_ray.config.schema import SchemaBuilder

    builder = SchemaBuilder()
    properties = builder.object_schema(config)["properties"]
    if not properties:
        return ["No options of its own.", ""]
    return [*_table(_rows(properties, builder.definitions, "", {})), ""]


# ---------------------------------------------------------------------------------------------------
# Commands, strategies, datasets.


def cli_page() -> str:
    from rft_ray.cli import build_parser, command_parsers

    lines = ["# Command line", "", GENERATED.format(what="each command's `--help`, from its parser in "
                                                         "`rft_ray/cli/`"), "", "## rft", "",
             "```text", _help(build_parser()), "```", ""]
    for name, parser in sorted(command_parsers().items()):
        lines += [f"## rft {name}", "", "```text", _help(parser), "```", ""]
    return "\n".join(lines)


def _help(parser: argparse.ArgumentParser) -> str:
    parser.formatter_class = functools.partial(parser.formatter_class, width=HELP_WIDTH)
    return parser.format_help().rstrip()


def strategies_page() -> str:
    from rft_ray.models.strategies import strategy_names
    from rft_ray.models.strategies.base import STRATEGIES

    lines = ["# Strategies", "", GENERATED.format(what="the strategy registry, `rft_ray/models/strategies/`"),
             "Set with `strategy.name` (run spec) or `strategies` (experiment spec); options with "
             "`strategy.options`. `rft strategies --model NAME` counts each one's trainable parameters.", "",
             "| strategy | what trains | phases | what WiSE-FT's alpha scales (`rft interpolate`) |",
             "| --- | --- | --- | --- |"]
    for name in strategy_names():
        cls = STRATEGIES.get(name)
        lines.append(f"| `{name}` | {_cell(cls.summary)} | {', '.join(cls.phase_names)} | {_cell(cls.interpolation)} |")
    lines.append("")
    for name in strategy_names():
        lines += [f"## {name}", "", *options_table(STRATEGIES.get(name).Config)]
    return "\n".join(lines)


def datasets_page() -> str:
    from rft_ray.data import corruption_names, dataset_entry, dataset_names

    lines = ["# Datasets", "", GENERATED.format(what="the dataset and corruption registries, `rft_ray/data/`"),
             "Set with `dataset.name`; options with `dataset.options`. Datasets without domains of their own are "
             "tested out of distribution on corruptions of their test split (`dataset.corruptions`).", "",
             "| dataset | what it reads | OOD test sets |", "| --- | --- | --- |"]
    for name in dataset_names():
        entry = dataset_entry(name)
        ood = "its own domains" if entry.natural_ood else "corruptions"
        lines.append(f"| `{name}` | {_cell(entry.summary)} | {ood} |")
    lines.append("")
    for name in dataset_names():
        lines += [f"## {name}", "", *options_table(dataset_entry(name).config)]
    lines += ["## Corruptions", "", "Names for `dataset.corruptions` (`cifar10-c` stands for the 15 of CIFAR-10-C), "
              "each at `dataset.severity` 1-5:", "", ", ".join(f"`{n}`" for n in corruption_names()), ""]
    return "\n".join(lines)
