#!/usr/bin/env python
"""Dataset statistics for a converted dataset (the Hemorica paper's analysis, for any manifest).

    python tools/dataset_stats.py --manifest runs/phantom_conv/manifest.csv --out runs/phantom_stats

Writes stats.json, stats.md and PNG figures (co-occurrence, HU histograms, location heatmaps,
lesion area and volume distributions). Installed as the console command ``hemo-mtl-stats``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hemo_mtl.cli_errors import run_main


def _md_table(frame, fmt="{:.2f}") -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for idx, row in frame.iterrows():
        lines.append(f"| {idx} | " + " | ".join("–" if v != v else fmt.format(v) for v in row) + " |")
    return "\n".join(lines)


def _figures(stats: dict, image: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from hemo_mtl.categories import SUBTYPES

    written = []
    for level in ("slice", "patient"):
        table = stats[f"conditional_{level}"]
        fig, ax = plt.subplots(figsize=(4.5, 4))
        arr = np.array([[table[m][n] for n in SUBTYPES] for m in SUBTYPES], dtype=float)
        im = ax.imshow(arr, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(5), SUBTYPES)
        ax.set_yticks(range(5), SUBTYPES)
        ax.set_xlabel("given subtype n")
        ax.set_ylabel("subtype m")
        ax.set_title(f"P(m | n), {level} level")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        fig.savefig(out / f"conditional_{level}.png", dpi=100)
        plt.close(fig)
        written.append(f"conditional_{level}.png")
    bins = np.asarray(image["hu_bins"])
    centers = (bins[:-1] + bins[1:]) / 2
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, counts in image["hu_hist"].items():
        counts = np.asarray(counts, float)
        if counts.sum():
            ax.plot(centers, counts / counts.sum(), label=name)
    ax.set_xlabel("HU")
    ax.set_ylabel("fraction of pixels")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "hu_histograms.png", dpi=100)
    plt.close(fig)
    written.append("hu_histograms.png")
    fig, axes = plt.subplots(1, 5, figsize=(14, 3))
    for ax, name in zip(axes, SUBTYPES):
        ax.imshow(image["heatmaps"][name], cmap="hot")
        ax.set_title(name)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "location_heatmaps.png", dpi=100)
    plt.close(fig)
    written.append("location_heatmaps.png")
    for key, unit in (("areas_mm2", "lesion area (mm²)"), ("volumes_ml", "bleed volume per patient (mL)")):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        data = [image[key][s] for s in SUBTYPES]
        if any(data):
            ax.boxplot([d if d else [np.nan] for d in data])
            ax.set_xticks(range(1, 6), SUBTYPES)
        ax.set_ylabel(unit)
        fig.tight_layout()
        fig.savefig(out / f"{key}.png", dpi=100)
        plt.close(fig)
        written.append(f"{key}.png")
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--max-slices", type=int, default=None, help="limit the image pass (HU, heatmaps, sizes)")
    args = p.parse_args(argv)

    from hemo_mtl.atomic import atomic_write_json, atomic_write_text
    from hemo_mtl.categories import SUBTYPES
    from hemo_mtl.data.manifest import read_manifest
    from hemo_mtl.data.statistics import conditional_table, image_statistics, label_counts, summarise

    try:
        frame = read_manifest(args.manifest)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    patients = frame.groupby("patient_id")[list(SUBTYPES)].max()
    slice_table = conditional_table(frame)
    patient_table = conditional_table(patients)
    image = image_statistics(frame, max_slices=args.max_slices)
    stats = {
        "counts": label_counts(frame),
        "conditional_slice": slice_table.to_dict(orient="index"),
        "conditional_patient": patient_table.to_dict(orient="index"),
        "hu": {"bins": image["hu_bins"], "hist": image["hu_hist"]},
        "lesion_area_mm2": {s: summarise(image["areas_mm2"][s]) for s in SUBTYPES},
        "bleed_volume_ml": {s: summarise(image["volumes_ml"][s]) for s in SUBTYPES},
        "slices_with_mask": image["slices_with_mask"],
    }
    figures = _figures(stats, image, args.out)
    stats["figures"] = figures
    atomic_write_json(args.out / "stats.json", stats)
    c = stats["counts"]
    md = [f"# Dataset statistics: {args.manifest}", "",
          f"{c['patients']} patients, {c['slices']} slices; {image['slices_with_mask']} slices with masks.", "",
          "| label | slices | patients |", "|---|---|---|"]
    md += [f"| {n} | {c['slices/' + n]} | {c['patients/' + n]} |" for n in ("any",) + SUBTYPES]
    md += ["", "## P(row subtype | column subtype), slice level", "", _md_table(slice_table), "",
           "## P(row subtype | column subtype), patient level", "", _md_table(patient_table), "",
           "## Lesion sizes", "", "| subtype | components | median area mm² | patients | median volume mL |", "|---|---|---|---|---|"]
    for s in SUBTYPES:
        a, v = stats["lesion_area_mm2"][s], stats["bleed_volume_ml"][s]
        md.append(f"| {s} | {a['n']} | {a.get('median', float('nan')):.1f} | {v['n']} | {v.get('median', float('nan')):.2f} |")
    md += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures]
    atomic_write_text(args.out / "stats.md", "\n".join(md) + "\n")
    print(f"{args.out}: stats.json, stats.md and {len(figures)} figures")
    return 0


def cli(argv=None) -> int:
    """The console command: ``main`` with user errors as one line (exit status 2)."""
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
