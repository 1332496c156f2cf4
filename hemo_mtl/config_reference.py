"""docs/configs.md, the config key reference, rendered from the schema: ``python -m hemo_mtl.config_reference``.

The page is generated, never edited by hand; a test compares docs/configs.md with :func:`render`.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Mapping

from .config import config_schema
from .config_schema import HeadTypes, Key, describe, range_text

INTRO = """# Config keys

Generated from the schema by `python -m hemo_mtl.config_reference > docs/configs.md`; do not edit.
Every key of a run config, with its type, default, allowed range and meaning. A key whose type ends
in "or null" accepts `null` (off / not set); any other value of another type is refused with the
key, the file (or override) and both types named, and an unknown key gets a "did you mean". How
files combine (`_base_`, `key=value` overrides) is in [training.md](training.md).
"""

STAGES = """## Stages (`schedule.stages`)

`schedule.stages` is the one way to write a stage. Without it a schedule makes its default stages:
`joint` one stage of all `train.epochs` with the keys of `schedule.joint`; `curriculum` slice labels
-> boxes -> masks (by label depth, `train.epochs` split evenly); `cascade` the classifier
(`schedule.cascade.cls_epochs`, `cls_neg_fraction`) then the localizers on the remaining epochs
(`schedule.cascade.neg_fraction`, `repeat_threshold`, `hard_negatives`). Each stage:
"""

HEADS = """## Heads (`model.heads.<name>`)

`model.heads` names the heads to build; a head's `type` picks its keys (a head named `cls`, `seg`
or `det` without a `type` is `classification`, `segmentation` or `rcnn`), and `null` drops a head
a `_base_` file gave. The defaults build `cls`, `seg` and `det`.
"""


def _value(value: Any) -> str:
    return f"`{json.dumps(value)}`"


def _rows(section: Mapping, prefix: str) -> list[str]:
    rows = []
    for name, spec in section.items():
        dotted = f"{prefix}{name}"
        if isinstance(spec, Mapping):
            rows += _rows(spec, dotted + ".")
        elif spec.type == "heads" or spec.type == "list" and isinstance(spec.items, Mapping):
            rows.append(f"| `{dotted}` | {describe(spec)} | see below | | {_cell(spec.doc)} |")
        else:
            rows.append(_row(dotted, spec))
    return rows


def _row(dotted: str, spec: Key) -> str:
    bounds = range_text(spec.range) if spec.range else ""
    return f"| `{dotted}` | {describe(spec)} | {_value(spec.default)} | {bounds} | {_cell(spec.doc)} |"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(rows: list[str]) -> list[str]:
    return ["| key | type | default | range | meaning |", "|---|---|---|---|---|", *rows, ""]


def render() -> str:
    schema = config_schema()
    heads: HeadTypes = schema["model"]["heads"].items
    stages = schema["schedule"]["stages"].items
    lines = [INTRO, "## Top level", ""]
    lines += _table([_row(name, spec) for name, spec in schema.items() if isinstance(spec, Key)])
    for name, spec in schema.items():
        if isinstance(spec, Mapping):
            lines += [f"## `{name}`", "", *_table(_rows(spec, f"{name}."))]
    lines += [STAGES, *_table(_rows(stages, "")), HEADS]
    for kind, section in sorted(heads.sections.items()):
        named = [n for n, k in heads.by_name.items() if k == kind]
        lines += [f"### `type: {kind}`" + (f" (default for `{named[0]}`)" if named else ""), ""]
        lines += _table(_rows(section, ""))
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
