"""The report's building blocks and number format, shared by the modules that write its sections
(`analysis.report_sections`, `analysis.report_robustness`).

A block is a tuple: ("h1" | "h2" | "p", text), ("list", items), ("table", header, rows) with a cell either
text or ("bold", text), or ("img", path relative to the report, caption).
"""
from __future__ import annotations

import math
from typing import Any

Block = tuple


def num(value: Any, digits: int = 4, signed: bool = False, suffix: str = "") -> str:
    """A number as the report shows it: NaN for undefined, yes/no, thousands separators for integers."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "NaN"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:{'+' if signed else ''}.{digits}f}{suffix}"


def hyper(value: float | None) -> str:
    """A learning rate or weight decay: three significant digits (they span decades); n/a when unknown."""
    return "n/a" if value is None else f"{value:.3g}"
