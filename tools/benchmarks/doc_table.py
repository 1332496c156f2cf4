#!/usr/bin/env python
"""Put a benchmark's json output into a Markdown page, so the figures there are the run's, not retyped.

    python tools/benchmarks/doc_table.py docs/benchmarks/predict_costs.json docs/predictions.md

The page holds ``<!-- <json stem> -->`` and ``<!-- /<json stem> -->`` lines; what lies between them is
replaced by the table rendered from the json (``tools/benchmark.py predict --costs --out FILE``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

try:
    import hemo_mtl  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hemo_mtl.atomic import atomic_write_text  # noqa: E402


def render_costs(data: dict) -> str:
    """The ``--costs`` run as a Markdown table and one line on how it was measured."""
    s = data["setup"]
    lines = [f"Volume {'x'.join(map(str, s['volume']))}, model input {s['image_size']} px, {s['threads']} threads, "
             f"{s['repeats']} interleaved runs per mode (fastest shown), load average {s['load_before']:.1f} before "
             f"and {s['load_after']:.1f} after.", "",
             "| mode | slices/s end to end | time vs one model (fastest) | (median) | model | saliency |",
             "|---|---|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['mode']} | {r['slices_per_s']:.1f} | {r['times_one_model_min']:.2f}x | "
                     f"{r['times_one_model_median']:.2f}x | {100 * r['model'] / r['total']:.0f}% | "
                     f"{100 * r.get('saliency', 0.0) / r['total']:.0f}% |")
    return "\n".join(lines)


def replace_block(text: str, name: str, block: str, where: str = "page") -> str:
    """``text`` with the lines between ``<!-- name -->`` and ``<!-- /name -->`` replaced by ``block``."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    if start not in text or end not in text:
        raise ValueError(f"{where}: no {start} ... {end} block to fill")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{block}\n{end}{tail}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("json", type=Path, help="a benchmark's --out file")
    p.add_argument("page", type=Path, help="the Markdown page holding the block")
    a = p.parse_args(argv)
    data = json.loads(a.json.read_text(encoding="utf-8"))
    text = a.page.read_text(encoding="utf-8")
    atomic_write_text(a.page, replace_block(text, a.json.stem, render_costs(data), str(a.page)))
    print(f"{a.page}: {a.json.stem} table from {a.json}")
    return 0


if __name__ == "__main__":
    from hemo_mtl.cli_errors import run_main

    sys.exit(run_main(main, extra=(ValueError,)))
