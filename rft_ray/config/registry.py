"""One registry type for strategies, datasets and corruptions: lookups name the valid choices."""
from __future__ import annotations

import difflib
from typing import Generic, TypeVar

from rft_ray.config.fields import SpecError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, field_path: str):
        self.kind, self.field_path = kind, field_path
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        self._items[name] = item
        return item

    def names(self) -> list[str]:
        return list(self._items)  # registration order

    def get(self, name: str) -> T:
        if name not in self._items:
            close = difflib.get_close_matches(name, self._items, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise SpecError(f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(self._items)}", self.field_path)
        return self._items[name]
