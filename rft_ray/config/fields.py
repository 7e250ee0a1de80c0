"""The strict dataclass machinery every spec is built with; it imports nothing of the project.

YAML (or a dict) enters through `load_yaml` / `build`; unknown keys are rejected with the closest valid
name, wrong types and out-of-range values are reported with their dotted path (`training.lr`) and the
allowed values. `--set key=value` flags become dotted overrides (`parse_sets`, `apply_overrides`).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Callable, Literal, TypeVar, Union

import yaml

from rft_ray.config.bounds import Bounds

T = TypeVar("T")


class SpecError(ValueError):
    """Bad configuration: names the field, what was wrong, and what is allowed."""

    def __init__(self, message: str, field_path: str = ""):
        self.field_path = field_path
        self.reason = message
        super().__init__(f"{field_path}: {message}" if field_path else message)

    def within(self, prefix: str) -> "SpecError":
        path = f"{prefix}.{self.field_path}" if self.field_path else prefix
        return SpecError(self.reason, path)


def described(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING, *,
              bounds: str | None = None, note: str | None = None):
    """A spec field with its help text and, for a number (or each number of a list), its range `bounds`
    (`rft_ray.config.bounds`), which the builder enforces; `note` is added to the range's error message."""
    metadata: dict[str, Any] = {"help": text}
    if bounds is not None:
        metadata["bounds"] = Bounds.parse(bounds)
        if note:
            metadata["bounds_note"] = note
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def check(condition: bool, field_name: str, message: str) -> None:
    if not condition:
        raise SpecError(message, field_name)


def to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


# Limits on what a spec file may expand to: a spec is a few hundred values; an adversarial file (YAML aliases
# nested to a "billion laughs", or lists nested thousands deep) must fail here, not hang a later deep copy.
MAX_SPEC_VALUES = 100_000
MAX_SPEC_DEPTH = 64


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {str(path)!r} does not exist or is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(f"spec file {str(path)!r} is not UTF-8 text ({err})") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(f"spec file {str(path)!r} is not valid YAML: {err}") from err
    except (ValueError, RecursionError, OverflowError) as err:  # e.g. a 5000-digit number, nesting too deep
        raise SpecError(f"spec file {str(path)!r} cannot be read as a spec: {type(err).__name__}: {err}") from err
    try:
        return plain_data(data) if data is not None else {}
    except SpecError as err:
        raise SpecError(f"{err} (in {path})") from err


def plain_data(data: Any) -> Any:
    """YAML values as JSON-like plain data: dates become ISO strings; binary values, too many values (aliases
    expanded) or too deep a nesting are errors naming where they are."""
    import datetime

    count = 0

    def walk(value: Any, where: str, depth: int) -> Any:
        nonlocal count
        count += 1
        if count > MAX_SPEC_VALUES:
            raise SpecError(f"the spec holds more than {MAX_SPEC_VALUES} values (counting each use of a YAML alias); "
                            "a spec is a few hundred")
        if depth > MAX_SPEC_DEPTH:
            raise SpecError(f"is nested more than {MAX_SPEC_DEPTH} levels deep", where)
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if isinstance(key, (datetime.date, datetime.datetime)):
                    key = key.isoformat()
                elif not isinstance(key, (str, int, float, bool)) and key is not None:
                    raise SpecError(f"has a key of type {type(key).__name__}; keys must be names", where)
                out[key] = walk(item, _join(where, str(key)), depth + 1)
            return out
        if isinstance(value, (list, tuple, set, frozenset)):
            items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
            return [walk(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(items)]
        if isinstance(value, (datetime.date, datetime.datetime)):
            return value.isoformat()
        if value is None or isinstance(value, (str, int, float, bool)):
            return value
        raise SpecError(f"holds a {type(value).__name__} value; a spec holds numbers, strings, lists and mappings",
                        where)

    return walk(data, "", 0)


def load_spec(make: Callable[[Any], T], path: str | Path, overrides: dict[str, Any] | None = None) -> T:
    """A spec from a YAML file with dotted overrides, built by `make` (e.g. `RunSpec.from_dict`); errors
    name the file."""
    data = load_yaml(path)
    if overrides:
        data = apply_overrides(data, overrides)
    try:
        return make(data)
    except SpecError as err:
        raise SpecError(f"{err} (in {path})") from err


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """`--set key=value` items (values parsed as YAML) into dotted overrides."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise SpecError(f"--set takes key=value (e.g. training.lr=1e-4), got {item!r}", "--set")
        key, value = item.split("=", 1)
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise SpecError(f"the value of {key.strip()!r} is not valid YAML: {err}", "--set") from None
    return overrides


def apply_overrides(data: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (`training.lr`) on a plain spec dict; used by CLI flags and sweeps."""
    if not isinstance(data, dict):
        raise SpecError(f"a spec must be a mapping of sections, got {type(data).__name__}")
    try:
        data = json.loads(json.dumps(data))  # deep copy of plain data
    except (TypeError, ValueError, RecursionError) as err:
        raise SpecError(f"a spec must hold plain data (numbers, strings, lists, mappings): {err}") from err
    for dotted, value in overrides.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise SpecError(f"cannot set {dotted!r}: {key!r} is not a section")
        node[last] = value
    return data


# ---------------------------------------------------------------------------------------------------
# A small strict dataclass builder: types from annotations, errors with dotted paths.


def build(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise SpecError(f"must be a mapping of {cls.__name__} settings, got {_describe(data)}", path)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [key for key in data if key not in names]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise SpecError(f"unknown key {key!r}.{hint} Allowed: {', '.join(names)}", _join(path, str(key)))
    kwargs = {key: convert(hints[key], value, _join(path, key)) for key, value in data.items()}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in kwargs.items():
        if "bounds" in fields[key].metadata:
            _check_bounds(fields[key], hints[key], value, _join(path, key))
    try:
        return cls(**kwargs)
    except SpecError as err:
        raise err.within(path) if path else err


def convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return convert(arm, value, path)
            except SpecError as err:
                if err.field_path != path:
                    raise  # the value had this arm's shape and failed inside it: that error is the useful one
                errors.append(err.reason)
        raise SpecError(" or ".join(dict.fromkeys(errors)) if errors else f"got {_describe(value)}", path)
    if origin is Literal:
        if value in args:
            return value
        raise SpecError(f"must be one of {', '.join(map(repr, args))}, got {_describe(value)}", path)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise SpecError(f"must be a list, got {_describe(value)}", path)
        return [convert(args[0], item, f"{path}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(f"must be a mapping, got {_describe(value)}", path)
        return {str(k): convert(args[1], v, _join(path, str(k))) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise SpecError(f"must be true or false, got {_describe(value)}", path)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if value.bit_length() > 256:  # far beyond every range; too long even to print in a message
                raise SpecError(f"is out of range, got {_describe(value)}", path)
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return int(value)
        raise SpecError(f"must be a whole number, got {_describe(value)}", path)
    if tp is float:
        number = _number(value)
        if number is None or not math.isfinite(number):
            raise SpecError(f"must be a finite number (fractions like 1/255 are allowed), got {_describe(value)}", path)
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise SpecError(f"must be a string, got {_describe(value)}", path)
    raise TypeError(f"spec type {tp!r} at {path} is not supported")  # a bug in a spec dataclass, not input


def _check_bounds(spec_field: dataclasses.Field, tp: Any, value: Any, path: str) -> None:
    """A converted value against its field's declared range; each number of a list on its own."""
    if isinstance(value, list):
        arms = typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)
        item_type = next(typing.get_args(arm)[0] for arm in arms if typing.get_origin(arm) is list)
        for i, item in enumerate(value):
            _check_bounds(spec_field, item_type, item, f"{path}[{i}]")
        return
    bounds: Bounds = spec_field.metadata["bounds"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value in bounds:
        return
    others = "".join(f" or {alternative}" for alternative in _alternatives(tp))
    note = f" ({spec_field.metadata['bounds_note']})" if "bounds_note" in spec_field.metadata else ""
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    raise SpecError(f"must be {bounds.requirement()}{others}{note}, got {shown}", path)


def _alternatives(tp: Any) -> list[str]:
    """The values besides a number that a field's type allows: null, and Literal names such as auto."""
    found: list[str] = []
    for arm in typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else ():
        if arm is type(None):
            found.append("null")
        elif typing.get_origin(arm) is Literal:
            found.extend(map(str, typing.get_args(arm)))
    return found


_FRACTION = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*/\s*(\d+(?:\.\d*)?)\s*$")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)):
            return float(value)  # OverflowError for an int beyond float range: not a usable number
        if isinstance(value, str):
            match = _FRACTION.match(value)
            if match and float(match.group(2)) != 0:
                return float(match.group(1)) / float(match.group(2))
            return float(value)
    except (ValueError, OverflowError, ZeroDivisionError):
        return None
    return None


def _describe(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of {int(value.bit_length() * 0.30103) + 1} digits (int)"
    try:
        text = repr(value)
    except ValueError:  # e.g. a list holding an integer too long to print
        text = f"<a {type(value).__name__} too large to show>"
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def build_options(config_cls: type, options: dict[str, Any], path: str) -> Any:
    """Validate a registered component's options dict against its config dataclass."""
    return build(config_cls, options, path)
