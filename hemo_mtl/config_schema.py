"""The typed config schema and its one validator: every key has a default, a type, a range, a line of doc.

A section is a dict of ``Key`` (or of sub-sections); the component that gives a key its meaning
declares it (``hemo_mtl.config`` the run's keys, the models package its backbone, heads and loss,
``hemo_mtl.data.transforms`` the augmentation) and derives its plain default dict with
:func:`defaults_of`. A key whose default is ``None`` ("off / not set") must name its type, so
``data.root: 7`` is refused like ``train.epochs: ten``.

:func:`check` is the only validator: unknown keys (with a :mod:`difflib` "did you mean"), types,
ranges, list items, stages and head sections of the model's ``heads`` mapping (each checked against
the keys of its own ``type``). :func:`fill` puts the defaults under a config. This module imports
nothing of the package, so both ``hemo_mtl.config`` and the models package build on it.
"""
from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from typing import Any, Mapping

TYPES = ("bool", "int", "float", "str", "list", "mapping", "heads")

# (low, high, low_open); None = unbounded
POSITIVE, NONNEGATIVE, FRACTION = (0, None, True), (0, None, False), (0, 1, False)
OPEN_FRACTION = (0, 1, True)


class ConfigError(ValueError):
    """A config file, key or value is wrong; the message names which and why."""


@dataclass(frozen=True)
class Key:
    """One config key. ``items``: a list's element type name, or a section for a list of sections
    (``schedule.stages``); a mapping's value type name (its keys are free); for ``heads`` a
    ``HeadTypes``. ``nullable``: ``None`` is accepted although the default is not ``None``."""

    default: Any
    type: str
    doc: str = ""
    range: tuple | None = None
    items: Any = None
    nullable: bool = False

    @property
    def accepts_none(self) -> bool:
        return self.default is None or self.nullable


@dataclass(frozen=True)
class HeadTypes:
    """What a ``heads`` mapping may hold: each head type's section, and the type a head of a known
    name has when its section names none (``cls`` -> ``classification``)."""

    sections: Mapping[str, Mapping]
    by_name: Mapping[str, str]


def K(default: Any, doc: str = "", type: str | None = None, range: tuple | None = None, items: Any = None,
      nullable: bool = False) -> Key:
    """A ``Key`` whose type is read from its default unless given; a ``None`` default must give it."""
    if type is None:
        if default is None:
            raise TypeError(f"a key with default None must name its type ({doc!r})")
        type = _type_of(default)
    if type not in TYPES:
        raise TypeError(f"unknown key type {type!r}; one of {TYPES}")
    if isinstance(default, tuple):
        default = list(default)
    return Key(default, type, doc, range, items, nullable)


def _type_of(value: Any) -> str:
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("str", str), ("list", (list, tuple)),
                        ("mapping", Mapping)):
        if isinstance(value, types):
            return kind
    raise TypeError(f"no config type for {value!r}")


def defaults_of(section: Mapping) -> dict:
    """The plain nested default dict of a section."""
    return {name: defaults_of(spec) if isinstance(spec, Mapping) else copy.deepcopy(spec.default)
            for name, spec in section.items()}


def type_name(value: Any) -> str:
    return {dict: "mapping", list: "list", tuple: "list", str: "string", bool: "bool", int: "int",
            float: "float", type(None): "null"}.get(type(value), type(value).__name__)


_WORDS = {"str": "string"}


def describe(key: Key) -> str:
    """The type as the docs and the errors write it: ``float``, ``list of str``, ``int or null``."""
    text = _WORDS.get(key.type, key.type)
    if key.type == "list" and isinstance(key.items, str):
        text += f" of {_WORDS.get(key.items, key.items)}"
    elif key.type == "list" and key.items is not None:
        text += " of mappings"
    elif key.type == "mapping" and isinstance(key.items, str):
        text += f" of name -> {_WORDS.get(key.items, key.items)}"
    elif key.type == "heads":
        text = "mapping of head name -> head section"
    return text + (" or null" if key.accepts_none else "")


def is_float_text(value: Any) -> bool:
    """YAML 1.1 reads ``1e-3`` as a string; a float key accepts it."""
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def type_ok(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) or is_float_text(value)
    if kind == "str":
        return isinstance(value, str)
    if kind == "list":
        return isinstance(value, (list, tuple))
    return isinstance(value, Mapping)  # mapping, heads


def coerce(value: Any, kind: str) -> Any:
    """A float key's int or float text as a float; anything else unchanged."""
    if kind == "float" and (is_float_text(value) or isinstance(value, int) and not isinstance(value, bool)):
        return float(value)
    return value


# -- the validator ------------------------------------------------------------------------------------


def check(cfg: Mapping, section: Mapping, origin: str, path: tuple[str, ...] = (), partial: bool = False) -> None:
    """Raise ConfigError for the first unknown key, wrong type or out-of-range value of ``cfg``.

    ``partial``: ``cfg`` is one file or override before the merge, so a head section that names no
    ``type`` is left for the resolved config (its type may come from a ``_base_`` file)."""
    for name, value in cfg.items():
        key_path = path + (str(name),)
        dotted = ".".join(key_path)
        if name not in section:
            close = difflib.get_close_matches(str(name), [str(k) for k in section], n=3, cutoff=0.6)
            if close:
                hint = f"; did you mean {' or '.join(repr('.'.join(path + (c,))) for c in close)}?"
            else:
                hint = f"; known keys here: {', '.join(map(str, section))}" if section else "; it takes no keys"
            raise ConfigError(f"{origin}: unknown config key {dotted!r}{hint}")
        spec = section[name]
        if isinstance(spec, Mapping):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{origin}: {dotted} must be a mapping, got {type_name(value)} ({value!r})")
            check(value, spec, origin, key_path, partial)
        else:
            _check_value(value, spec, key_path, origin, partial)


def _check_value(value: Any, key: Key, key_path: tuple[str, ...], origin: str, partial: bool) -> None:
    dotted = ".".join(key_path)
    if value is None:
        if key.accepts_none:
            return
        raise ConfigError(f"{origin}: {dotted} must be {describe(key)}, got null")
    if not type_ok(value, key.type):
        raise ConfigError(f"{origin}: {dotted} must be {describe(key)}, got {type_name(value)} ({value!r})")
    _check_range(key, value, dotted, origin)
    if key.type == "heads":
        _check_heads(value, key.items, key_path, origin, partial)
    elif key.type == "list" and isinstance(key.items, Mapping):
        for i, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise ConfigError(f"{origin}: {dotted}.{i} must be a mapping, got {type_name(item)} ({item!r})")
            check(item, key.items, origin, key_path + (str(i),), partial)
    elif key.items is not None:
        items = value.items() if key.type == "mapping" else enumerate(value)
        for i, item in items:
            if not type_ok(item, key.items):
                raise ConfigError(f"{origin}: {dotted}.{i} must be {_WORDS.get(key.items, key.items)}, "
                                  f"got {type_name(item)} ({item!r})")


def _check_heads(value: Mapping, types: HeadTypes, key_path: tuple[str, ...], origin: str, partial: bool) -> None:
    dotted = ".".join(key_path)
    for name, spec in value.items():
        if spec is None:
            continue  # drops a head inherited from a base file
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{origin}: {dotted}.{name} must be a mapping of head options (or null to drop it)")
        kind = spec.get("type")
        if kind is None and partial:
            continue  # the type may come from a base file: checked once resolved
        kind = types.by_name.get(str(name)) if kind is None else kind
        if kind is None:
            raise ConfigError(f"{origin}: {dotted}.{name} names no 'type'; one of {sorted(types.sections)}")
        if kind not in types.sections:
            raise ConfigError(f"{origin}: {dotted}.{name}.type: unknown head type {kind!r}; "
                              f"one of {sorted(types.sections)}")
        check(spec, types.sections[kind], origin, key_path + (str(name),), partial)
    if not partial and not any(spec is not None for spec in value.values()):
        raise ConfigError(f"{origin}: {dotted}: at least one head is needed")


def _check_range(key: Key, value: Any, dotted: str, origin: str) -> None:
    if key.range is None or isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return
    number = float(value) if isinstance(value, str) else value
    low, high, low_open = key.range
    bad_low = low is not None and (number <= low if low_open else number < low)
    bad_high = high is not None and number > high
    if bad_low or bad_high or number != number:
        raise ConfigError(f"{origin}: {dotted}={value!r} is out of range: must be {range_text(key.range)}")


def range_text(bounds: tuple) -> str:
    low, high, low_open = bounds
    named = {POSITIVE: "> 0", NONNEGATIVE: ">= 0", FRACTION: "in [0, 1]", OPEN_FRACTION: "in (0, 1]"}
    if bounds in named:
        return named[bounds]
    if high is None:
        return f"{'>' if low_open else '>='} {low}"
    return f"in {'(' if low_open else '['}{low}, {high}]"


# -- defaults -----------------------------------------------------------------------------------------


def fill(cfg: Mapping, section: Mapping) -> dict:
    """``cfg`` over the defaults of ``section``: sub-sections merge, a list of sections fills each item,
    a ``heads`` mapping keeps the heads ``cfg`` names, each over the defaults of its own type. Keys
    the section does not know are kept (the validator names them) and float keys become floats."""
    out: dict = {}
    for name, spec in section.items():
        given = cfg.get(name, _MISSING)
        if isinstance(spec, Mapping):
            out[name] = fill(given if isinstance(given, Mapping) else {}, spec) if given is not None else None
        elif given is _MISSING:
            out[name] = copy.deepcopy(spec.default)
        elif spec.type == "heads" and isinstance(given, Mapping):
            out[name] = {head: _fill_head(head, hspec, spec.items) for head, hspec in given.items() if hspec is not None}
        elif spec.type == "list" and isinstance(spec.items, Mapping) and isinstance(given, (list, tuple)):
            out[name] = [fill(item, spec.items) if isinstance(item, Mapping) else item for item in given]
        else:
            out[name] = coerce(copy.deepcopy(given), spec.type)
    for name, value in cfg.items():
        if name not in section:
            out[name] = copy.deepcopy(value)
    return out


def _fill_head(name: str, spec: Mapping, types: HeadTypes) -> Any:
    if not isinstance(spec, Mapping):
        return spec
    kind = spec.get("type") or types.by_name.get(str(name))
    if kind not in types.sections:
        return dict(spec)
    return fill({**spec, "type": kind}, types.sections[kind])


def key_at(section: Mapping, parts: list[str]) -> Key | Mapping | None:
    """The ``Key`` (or section) of a dotted path, through lists of sections; None when unknown."""
    node: Any = section
    for part in parts:
        if isinstance(node, Key) and node.type == "list" and isinstance(node.items, Mapping):
            node = node.items
            continue  # the list index
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


_MISSING = object()
