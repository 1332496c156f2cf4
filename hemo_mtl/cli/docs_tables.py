"""Regenerate the results tables in README.md and docs/*.md from run outputs, so no number is typed.

    python tools/docs_tables.py            # rewrite every generated block
    python tools/docs_tables.py --check    # exit 1 when a block differs from its source

A generated block sits between two HTML comments naming its kind and source files (relative to the
repository), e.g.::

    <!-- generated: cv docs/results/cv_ctich_jpg.json -->
    ...table...
    <!-- end generated -->

Kinds: ``cv FILE`` (one cross-validation's table, ``hemo_mtl.evaluation.cross_validation.report_markdown``),
``cv_compare LABEL=FILE ...`` (the headline figures of several cross-validations side by side, one row
per run) and ``predict_costs FILE`` (``tools/benchmark.py predict --costs --out FILE``). Source files
are run outputs copied unchanged (``cv_results.json`` of tools/cross_validate.py, benchmark json).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from hemo_mtl.atomic import atomic_write_text
from hemo_mtl.cli_errors import run_main

ROOT = Path(__file__).resolve().parents[2]  # the checkout whose README and docs/ are rendered

BLOCK = re.compile(r"(<!-- generated: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)
COMPARE = (("slice AUC", "slice/auc"), ("slice F1 @tuned", "slice/f1@tuned"),
           ("slice sens. @tuned", "slice/recall@tuned"), ("slice spec. @tuned", "slice/specificity@tuned"))


def _load(name: str) -> dict:
    path = ROOT / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: source of a generated docs table is missing")
    return json.loads(path.read_text())


def cv_table(results: dict) -> str:
    from hemo_mtl.evaluation.cross_validation import report_markdown

    text = report_markdown(results)
    return text.split("\n", 2)[2].lstrip("\n")  # drop the report's title line


def cv_compare(pairs: list[str]) -> str:
    from hemo_mtl.evaluation.cross_validation import mean_sd_cell

    head = ["run", *(n for n, _ in COMPARE), "patient score", "patient AUC (pooled)",
            "normal below every ICH patient (pooled)", "ICH patients found @tuned", "normal flagged @tuned",
            "Dice (held-out masked patients)", "false-positive px per empty slice", "train min per fold"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for pair in pairs:
        label, name = pair.split("=", 1)
        r = _load(name)
        s = r["summary"]
        cells = [label.replace("_", " "), *(mean_sd_cell(s.get(key, {})) for _, key in COMPARE)]
        window = int(r.get("patient_window") or 1)
        cells.append("highest slice" if window == 1 else f"highest {window} adjacent")
        for key in ("pooled/patient/auc", "pooled/patient/specificity@all_found"):
            value = (r.get("pooled") or {}).get(key)
            cells.append(f"{value:.3f}" if value is not None else "-")
        for found, total in (("patient/ich_found@tuned", "patient/ich_patients"),
                             ("patient/normal_flagged@tuned", "patient/normal_patients")):
            cells.append(f"{s[found]['total']:.0f} of {s[total]['total']:.0f}" if found in s else "-")
        dice = [f"{pid}: {f['seg/dice']:.3f}" for pid, f in (r.get("seg_by_patient") or {}).items() if "seg/dice" in f]
        cells.append(", ".join(dice) or "-")
        fp = [f["seg/empty_fp_pixels_per_slice"] for f in (r.get("seg_by_patient") or {}).values()
              if "seg/empty_fp_pixels_per_slice" in f]
        cells.append(f"{sum(fp) / len(fp):.0f}" if fp else "-")  # mean over the held-out patients with masks
        minutes = r.get("train_minutes_per_fold")
        cells.append(f"{minutes:.1f}" if minutes else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def predict_costs(data: dict) -> str:
    """The ``predict --costs`` run as a Markdown table and one line on how it was measured."""
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
    return "\n".join(lines) + "\n"


def render(spec: str) -> str:
    kind, *args = spec.split()
    if kind == "cv" and len(args) == 1:
        return cv_table(_load(args[0]))
    if kind == "cv_compare" and args:
        return cv_compare(args)
    if kind == "predict_costs" and len(args) == 1:
        return predict_costs(_load(args[0]))
    raise ValueError(f"unknown generated block {spec!r} (kinds: 'cv FILE', 'cv_compare LABEL=FILE ...', "
                     "'predict_costs FILE')")


def regenerate(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("spec")) + m.group(4), text)


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="report blocks that differ; change nothing")
    args = p.parse_args(argv)
    stale = []
    for doc in documents():
        text = doc.read_text(encoding="utf-8")
        new = regenerate(text)
        if new != text:
            stale.append(doc.relative_to(ROOT))
            if not args.check:
                atomic_write_text(doc, new)
    for doc in stale:
        print(f"{doc}: generated tables {'differ from their sources' if args.check else 'rewritten'}")
    return 1 if args.check and stale else 0


def cli(argv=None) -> int:
    """The console command (``hemo-mtl-docs-tables``): run, and report user errors in one line."""
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
