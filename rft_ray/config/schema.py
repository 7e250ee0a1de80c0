"""JSON Schema (draft-07, what editors' YAML support reads) of a spec dataclass, generated from its fields.

Each field's type comes from its annotation (Literal types become enums), its description and default from
`described(...)`, its range from the declared bounds: the schema accepts what the strict builder
(`rft_ray.config.fields`) accepts, field by field. Numbers may be written as strings the builder reads
("1e-3", "1/255"). Rules between fields (`__post_init__` checks such as "epochs or steps") are the loader's
alone. Names checked against registries (strategies, datasets) are added one floor up, in `rft_ray.specs`.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

from rft_ray.config.bounds import Bounds
from rft_ray.config.fields import to_plain

DRAFT = "http://json-schema.org/draft-07/schema#"

# What the builder reads as a number when it is written as text: a decimal or a fraction with a non-zero
# denominator (`fields._FRACTION`); the sign is left out where the range has no negative numbers.
_DECIMAL = r"(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?"
_DENOMINATOR = r"(0*[1-9]\d*(\.\d*)?|0+\.\d*[1-9]\d*)"


def number_text_pattern(signed: bool) -> str:
    sign = "[-+]?" if signed else r"\+?"
    return rf"^\s*{sign}({_DECIMAL}|\d+(\.\d*)?([eE][-+]?\d+)?\s*/\s*{_DENOMINATOR})\s*$"


class SchemaBuilder:
    """Schemas of spec dataclasses; each nested dataclass once, in `definitions`, referred to by name."""

    def __init__(self) -> None:
        self.definitions: dict[str, dict[str, Any]] = {}
        self._names: dict[type, str] = {}

    def object_schema(self, cls: type) -> dict[str, Any]:
        """The schema of one dataclass section: its fields and nothing else (null means every default)."""
        hints = typing.get_type_hints(cls)
        properties = {f.name: self._field(f, hints[f.name]) for f in dataclasses.fields(cls) if f.init}
        schema: dict[str, Any] = {"type": ["object", "null"], "properties": properties, "additionalProperties": False}
        doc = (cls.__doc__ or "").strip()
        if doc and not doc.startswith(f"{cls.__name__}("):  # dataclasses invent a docstring from the signature
            schema["description"] = doc
        return schema

    def ref(self, cls: type) -> dict[str, Any]:
        name = self._names.get(cls)
        if name is None:
            name = cls.__name__ if cls.__name__ not in self.definitions else f"{cls.__module__}.{cls.__qualname__}"
            self._names[cls] = name
            self.definitions[name] = {}  # taken before recursing, so a section that nests itself terminates
            self.definitions[name] = self.object_schema(cls)
        return {"$ref": f"#/definitions/{name}"}

    def definition(self, cls: type) -> dict[str, Any]:
        """The (patchable) definition of a dataclass, made when it is first needed."""
        self.ref(cls)
        return self.definitions[self._names[cls]]

    def type_schema(self, tp: Any, bounds: Bounds | None = None) -> dict[str, Any]:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp is Any:
            return {}
        if origin in (Union, types.UnionType):
            return {"anyOf": [self.type_schema(arm, bounds) for arm in args]}
        if tp is type(None):
            return {"type": "null"}
        if origin is Literal:
            return {"enum": list(args)}
        if dataclasses.is_dataclass(tp):
            return self.ref(tp)
        if origin is list:
            return {"type": "array", "items": self.type_schema(args[0], bounds)}
        if origin is dict:
            return {"type": "object", "additionalProperties": self.type_schema(args[1])}
        if tp is bool:
            return {"type": "boolean"}
        if tp is str:
            return {"type": "string"}
        if tp is int:
            return {"type": "integer", **(bounds.json_schema() if bounds else {})}
        if tp is float:
            signed = bounds is None or bounds.low < 0
            return {"type": ["number", "string"], "pattern": number_text_pattern(signed),
                    **(bounds.json_schema() if bounds else {})}
        raise TypeError(f"spec type {tp!r} has no JSON Schema")  # a bug in a spec dataclass, not input

    def _field(self, spec_field: dataclasses.Field, tp: Any) -> dict[str, Any]:
        schema = self.type_schema(tp, spec_field.metadata.get("bounds"))
        if "$ref" in schema:  # draft-07 ignores keywords beside $ref: the description goes around it
            schema = {"allOf": [schema]}
        if spec_field.metadata.get("help"):
            schema["description"] = spec_field.metadata["help"]
        default = field_default(spec_field)
        if default is not dataclasses.MISSING:
            schema["default"] = to_plain(default)
        return schema


def field_default(spec_field: dataclasses.Field) -> Any:
    if spec_field.default_factory is not dataclasses.MISSING:
        return spec_field.default_factory()
    return spec_field.default


def document(title: str, root: dict[str, Any], builder: SchemaBuilder) -> dict[str, Any]:
    """A complete schema file: `root` (an object schema) with the definitions it refers to."""
    return {"$schema": DRAFT, "title": title, **root, "definitions": builder.definitions}
