"""One tiny registry: build things by the name a config gives.

Modelled on detectron2's ``Registry`` and timm's ``list_models``: registration is the only
import-time side effect.
"""
from __future__ import annotations

from typing import Callable


class Registry:
    def __init__(self, name: str):
        self.name = name
        self._items: dict[str, Callable] = {}

    def register(self, name: str | None = None, obj: Callable | None = None):
        """Use as ``@REG.register()``, ``@REG.register("alias")`` or ``REG.register("n", fn)``."""

        def _add(o: Callable) -> Callable:
            key = name or o.__name__
            if key in self._items and self._items[key] is not o:
                raise KeyError(f"{self.name}: {key!r} is already registered")
            self._items[key] = o
            return o

        return _add(obj) if obj is not None else _add

    def get(self, name: str) -> Callable:
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "none"
            raise KeyError(f"unknown {self.name} {name!r}; registered: {known}")
        return self._items[name]

    def build(self, name: str, *args, **kwargs):
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {self.names()})"


SOURCES = Registry("source")
BACKBONES = Registry("backbone")
HEADS = Registry("head")
SCHEDULES = Registry("schedule")
