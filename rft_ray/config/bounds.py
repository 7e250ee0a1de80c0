"""The range of a numeric spec field, declared once: `described(..., bounds="(0, 10)")`.

The strict builder enforces it (`fields.build`), and the JSON Schema and the generated reference publish it
(`rft_ray.config.schema`), so a range is written in one place. Notation: an interval with `[`/`]` for an
included end and `(`/`)` for an excluded one; ends are numbers, `2^k`, or `inf`/`-inf` for none.
Rules between fields (give epochs or steps, not both) stay in `__post_init__` with `check(...)`. Ranges are
checked where specs enter, from files, dicts and flags; a spec class constructed in code trusts its caller.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

_END = r"\s*(-?inf|-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\d+\^\d+)\s*"
_INTERVAL = re.compile(r"^\s*([\[(])" + _END + "," + _END + r"([\])])\s*$")


def _end(text: str) -> float:
    if text.endswith("inf"):
        return -math.inf if text.startswith("-") else math.inf
    if "^" in text:
        base, power = text.split("^")
        return float(int(base) ** int(power))
    return float(text)


@dataclass(frozen=True)
class Bounds:
    text: str  # as declared, e.g. "[0, 2^32)"
    low: float
    high: float
    low_open: bool
    high_open: bool

    @classmethod
    def parse(cls, text: str) -> "Bounds":
        match = _INTERVAL.match(text)
        if not match:  # a bug in a spec dataclass, found at import
            raise ValueError(f"bounds {text!r} is not an interval such as '(0, 10)', '[1, 65536]' or '[0, inf)'")
        opening, low, high, closing = match.groups()
        bounds = cls(text.strip(), _end(low), _end(high), opening == "(", closing == ")")
        if bounds.low >= bounds.high or (math.isinf(bounds.low) and not bounds.low_open) or (
                math.isinf(bounds.high) and not bounds.high_open):
            raise ValueError(f"bounds {text!r} is empty or includes an infinite end")
        return bounds

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    @property
    def unbounded_above(self) -> bool:
        return math.isinf(self.high)

    def requirement(self) -> str:
        """What the error message says a value must be: 'in (0, 10)', 'at least 1', 'positive'."""
        if self.unbounded_above and not math.isinf(self.low):
            if self.low_open:
                return "positive" if self.low == 0 else f"above {_number(self.low)}"
            return f"at least {_number(self.low)}"
        return f"in {self.text}"

    def json_schema(self) -> dict[str, float]:
        """JSON Schema keywords of a number in these bounds."""
        keywords: dict[str, float] = {}
        if not math.isinf(self.low):
            keywords["exclusiveMinimum" if self.low_open else "minimum"] = _json_number(self.low)
        if not math.isinf(self.high):
            keywords["exclusiveMaximum" if self.high_open else "maximum"] = _json_number(self.high)
        return keywords


def _number(value: float) -> str:
    return f"{value:g}"


def _json_number(value: float) -> float | int:
    return int(value) if value.is_integer() else value
