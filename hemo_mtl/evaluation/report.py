"""Write an evaluation to disk: metrics.json, report.md (tables + stated conventions) and PNG plots.

Everything is written atomically (temp file in the target folder, then ``os.replace``). NaN
(undefined) metrics are written as JSON ``null`` and as "n/a" in the tables.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..atomic import atomic_path, atomic_write_json, atomic_write_text
from ..categories import LABELS

# preferred column order per table; any other metric follows alphabetically
COLUMN_ORDER = (
    "dice", "iou", "dice_per_slice", "iou_per_slice", "precision_per_slice", "recall_per_slice", "hd95",
    "precision", "recall", "specificity", "f1", "accuracy", "auc", "ap", "threshold",
    "ece", "ece@calibrated", "nll", "nll@calibrated", "temperature",
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
    "sens@0.5fp", "sens@1fp", "sens@2fp", "sens@4fp", "mean_sens",
    "mae_ml", "bias_ml", "sd_diff_ml", "loa_low_ml", "loa_high_ml", "mean_rel_err", "gt_mean_ml", "pred_mean_ml",
)
COUNT_COLUMNS = ("tp", "fp", "tn", "fn", "n", "n_pos")
CI_TAGS = ("_ci95_low", "_ci95_high")
ROW_ORDER = ("all",) + LABELS


def write_metrics_json(metrics: Mapping[str, float], path: str | Path) -> Path:
    return atomic_write_json(path, dict(metrics), sort_keys=True)


def _split_key(key: str) -> tuple[str, str, str] | None:
    """(table, row, column) of a flat key: ``task/subset/metric`` or ``det/<kind>/<stat>[/<subtype>]``."""
    parts = key.split("/")
    if parts[0] == "det" and len(parts) in (3, 4):
        return f"det/{parts[1]}", parts[3] if len(parts) == 4 else "all", parts[2]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return None


def metric_tables(metrics: Mapping[str, float]) -> dict[str, dict[str, dict[str, str]]]:
    """table -> row -> column -> formatted cell ("0.912 [0.871, 0.944]" when a CI is present)."""
    tables: dict[str, dict[str, dict[str, str]]] = {}
    for key, value in metrics.items():
        if key.endswith(CI_TAGS):
            continue
        split = _split_key(key)
        if split is None:
            continue
        table, row, col = split
        count = col in COUNT_COLUMNS or col.startswith("n_")
        cell = _fmt(value, count)
        lo, hi = metrics.get(key + CI_TAGS[0]), metrics.get(key + CI_TAGS[1])
        if lo is not None and hi is not None:
            cell += f" [{_fmt(lo)}, {_fmt(hi)}]"
        tables.setdefault(table, {}).setdefault(row, {})[col] = cell
    return tables


def _fmt(v: Any, count: bool = False) -> str:
    if v is None or not math.isfinite(float(v)):
        return "n/a"
    return f"{int(round(float(v)))}" if count else f"{float(v):.4f}"


def _ordered(names: Iterable[str], order: Sequence[str]) -> list[str]:
    names = list(dict.fromkeys(names))
    first = [n for n in order if n in names]
    return first + sorted(n for n in names if n not in first)


def _lone_rows(rows: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Rows sharing no column with any other row (a summary count such as cls/all/n_auc_undefined):
    as table rows they would be all blanks but one cell, so they are written as a line instead.
    A table made only of such rows (one row, or rows of disjoint columns) stays a table."""
    uses = Counter(c for cells in rows.values() for c in cells)
    lone = [row for row, cells in rows.items() if all(uses[c] == 1 for c in cells)]
    return [] if len(lone) == len(rows) else lone


def render_markdown(metrics: Mapping[str, float], *, title: str = "Evaluation report",
                    conventions: Sequence[str] = (), notes: Sequence[str] = (),
                    plots: Sequence[str] = ()) -> str:
    """Readable report: one table per task (rows = labels / subtypes, columns = metrics)."""
    lines = [f"# {title}", ""]
    if notes:
        lines += [f"- {n}" for n in notes] + [""]
    for table, rows in sorted(metric_tables(metrics).items()):
        lines += [f"## {table}", ""]
        lone = _lone_rows(rows)
        table_rows = {r: cells for r, cells in rows.items() if r not in lone}
        cols = _ordered((c for r in table_rows.values() for c in r), COLUMN_ORDER)
        lines.append("| label | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for row in _ordered(table_rows, ROW_ORDER):
            lines.append(f"| {row} | " + " | ".join(table_rows[row].get(c, "") for c in cols) + " |")
        lines.append("")
        if lone:
            lines += [f"- {row}: " + ", ".join(f"{c} {v}" for c, v in rows[row].items()) for row in lone] + [""]
    if conventions:
        lines += ["## Conventions", ""] + [f"- {c}" for c in conventions] + [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ plots


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _figure()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def plot_roc_pr(y_true, y_prob, valid, path: str | Path, title: str = "slice level") -> Path:
    """ROC and precision-recall curves, one line per label with both classes present."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = _figure()
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(11, 5))
    y_true, y_prob, valid = np.asarray(y_true), np.asarray(y_prob), np.asarray(valid, bool)
    for j, label in enumerate(LABELS):
        y, p = y_true[valid[:, j], j], y_prob[valid[:, j], j]
        if not 0 < y.sum() < len(y):
            continue
        fpr, tpr, _ = roc_curve(y, p)
        prec, rec, _ = precision_recall_curve(y, p)
        ax_roc.plot(fpr, tpr, label=label)
        ax_pr.step(rec, prec, where="post", label=label)
    ax_roc.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax_roc.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC ({title})")
    ax_pr.set(xlabel="recall", ylabel="precision", title=f"Precision-recall ({title})", ylim=(0, 1.02))
    for ax in (ax_roc, ax_pr):
        ax.legend(loc="lower right" if ax is ax_roc else "lower left", fontsize=8)
    return _save(fig, Path(path))


def plot_reliability(y_true, y_prob, valid, path: str | Path, title: str = "slice level",
                     calibrated=None, n_bins: int | None = None) -> Path:
    """Reliability diagram per label (one panel each): fraction positive against mean probability in
    equal-width bins, the diagonal, bin counts as bars; ``calibrated`` (the temperature-scaled
    probabilities) drawn as a second line. Panel titles give ECE (and ECE after scaling)."""
    from .calibration import N_BINS, expected_calibration_error, reliability_bins

    n_bins = n_bins or N_BINS
    plt = _figure()
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.6), squeeze=False)
    y_true, y_prob, valid = np.asarray(y_true), np.asarray(y_prob), np.asarray(valid, bool)
    for ax, (j, label) in zip(axes.ravel(), enumerate(LABELS)):
        m = valid[:, j]
        y, p = y_true[m, j], y_prob[m, j]
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        counts = ax.twinx()
        name = f"{label} (n={int(m.sum())})"
        if m.any():
            b = reliability_bins(y, p, n_bins)
            width = 1.0 / n_bins
            counts.bar(b["edges"][:-1] + width / 2, b["count"], width=width * 0.9, color="C0", alpha=0.15)
            full = b["count"] > 0
            ax.plot(b["mean_prob"][full], b["frac_pos"][full], "o-", color="C0", ms=3, label="model")
            name += f" ECE {expected_calibration_error(y, p, n_bins):.3f}"
            if calibrated is not None:
                pc = np.asarray(calibrated)[m, j]
                bc = reliability_bins(y, pc, n_bins)
                full = bc["count"] > 0
                ax.plot(bc["mean_prob"][full], bc["frac_pos"][full], "s-", color="C3", ms=3,
                        label="temperature-scaled")
                name += f" -> {expected_calibration_error(y, pc, n_bins):.3f}"
        counts.set_yscale("log")
        counts.set_ylabel("slices per bin" if "slice" in title else "count per bin", fontsize=7, color="C0")
        counts.tick_params(labelsize=7)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="mean predicted probability", ylabel="fraction positive")
        ax.set_title(name, fontsize=9)
        ax.set_zorder(counts.get_zorder() + 1)
        ax.patch.set_visible(False)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize=7)
    fig.suptitle(f"Reliability ({title}, {n_bins} equal-width bins)")
    fig.tight_layout()
    return _save(fig, Path(path))


def reliability_plots(cls: Mapping[str, Any], out: Path) -> list[Path]:
    """Slice- and (with patient ids) patient-level reliability diagrams of ``details["cls"]``
    ({y_true, y_prob, valid, patient_ids, optional temperature, aggregation, top_k, window, order})."""
    from .calibration import apply_temperature
    from .classification import aggregate_by_patient

    t = cls.get("temperature")
    cal = apply_temperature(cls["y_prob"], t) if t is not None else None
    paths = [plot_reliability(cls["y_true"], cls["y_prob"], cls["valid"], out / "reliability_cls.png",
                              "slice level", cal)]
    if cls.get("patient_ids") is not None:
        how, k = cls.get("aggregation", "max"), int(cls.get("top_k", 3))
        score = {"window": int(cls.get("window", 1)), "order": cls.get("order")}
        args = (cls["y_true"], cls["y_prob"], cls["valid"], cls["patient_ids"])
        _, pt, pp, pv = aggregate_by_patient(*args, how, k, **score)
        pc = (aggregate_by_patient(cls["y_true"], cal, cls["valid"], cls["patient_ids"], how, k, **score)[2]
              if t is not None else None)
        paths.append(plot_reliability(pt, pp, pv, out / "reliability_cls_patient.png", "patient level", pc))
    return paths


def plot_confusion(metrics: Mapping[str, float], path: str | Path, prefix: str = "cls") -> Path | None:
    """2x2 confusion matrices (threshold 0.5) for every label that has counts under ``prefix``."""
    labels = [l for l in LABELS if f"{prefix}/{l}/tp" in metrics]
    if not labels:
        return None
    plt = _figure()
    fig, axes = plt.subplots(1, len(labels), figsize=(2.6 * len(labels), 2.8), squeeze=False)
    for ax, label in zip(axes[0], labels):
        g = lambda k: int(metrics[f"{prefix}/{label}/{k}"])  # noqa: E731
        cm = np.array([[g("tn"), g("fp")], [g("fn"), g("tp")]])
        ax.imshow(cm, cmap="Blues")
        for (r, c), v in np.ndenumerate(cm):
            ax.text(c, r, str(v), ha="center", va="center", color="black")
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["pred 0", "pred 1"],
               yticklabels=["true 0", "true 1"], title=label)
    fig.suptitle(f"{prefix}: confusion at threshold 0.5")
    return _save(fig, Path(path))


def plot_froc(curves: Mapping[str, Mapping[str, np.ndarray]], path: str | Path,
              unit: str = "slice") -> Path:
    """FROC curves (sensitivity vs. false positives per unit, log x)."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, c in curves.items():
        fps = np.maximum(np.asarray(c["fps"]), 1e-3)
        ax.step(fps, c["sensitivity"], where="post", label=name)
    ax.set_xscale("log")
    ax.set(xlabel=f"false positives per {unit}", ylabel="lesion sensitivity", ylim=(0, 1.02), title="FROC")
    for f in (0.5, 1, 2, 4):
        ax.axvline(f, color="grey", lw=0.6, ls=":")
    ax.legend(fontsize=8)
    return _save(fig, Path(path))


def plot_bland_altman(table: Mapping[str, Any], path: str | Path, label: str = "any") -> Path | None:
    """Bland-Altman plot of per-volume lesion volume (prediction - truth vs. mean) for one label."""
    j = list(table["labels"]).index(label)
    gt, pred = np.asarray(table["gt_ml"])[:, j], np.asarray(table["pred_ml"])[:, j]
    if gt.size < 2:
        return None
    diff, mean = pred - gt, (pred + gt) / 2
    bias, sd = diff.mean(), diff.std(ddof=1)
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(mean, diff, s=14)
    for y, style in ((bias, "-"), (bias - 1.96 * sd, "--"), (bias + 1.96 * sd, "--")):
        ax.axhline(y, color="C1", ls=style, lw=1)
    ax.set(xlabel="mean of truth and prediction (mL)", ylabel="prediction - truth (mL)",
           title=f"Bland-Altman, {label} volume (bias {bias:.2f}, LoA +/-{1.96 * sd:.2f} mL)")
    return _save(fig, Path(path))


def write_report(out_dir: str | Path, metrics: Mapping[str, float], *, details: Mapping[str, Any] | None = None,
                 conventions: Sequence[str] = (), notes: Sequence[str] = (),
                 title: str = "hemo-mtl evaluation") -> dict[str, Path]:
    """metrics.json, report.md and the plots ``details`` allows, all in ``out_dir``; returns paths.

    ``details`` (as ``MultiTaskEvaluator.details``): {"cls": {y_true, y_prob, valid, patient_ids, optional
    temperature} (ROC/PR and reliability diagrams), "froc": {"2d": curve, "3d": curve},
    "volumes": volume_table(...)}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    details = details or {}
    paths: dict[str, Path] = {"metrics": write_metrics_json(metrics, out / "metrics.json")}
    plots: list[Path] = []
    if "cls" in details:
        d = details["cls"]
        plots.append(plot_roc_pr(d["y_true"], d["y_prob"], d["valid"], out / "roc_pr.png"))
        plots += reliability_plots(d, out)
    for prefix in ("cls", "cls_patient"):
        p = plot_confusion(metrics, out / f"confusion_{prefix}.png", prefix)
        if p:
            plots.append(p)
    froc = details.get("froc", {})
    if froc:
        units = {"2d": "slice", "3d": "volume"}
        for kind, curve in froc.items():
            plots.append(plot_froc({kind: curve}, out / f"froc_{kind}.png", units.get(kind, "unit")))
    if "volumes" in details:
        for label in ("any",):
            p = plot_bland_altman(details["volumes"], out / f"bland_altman_{label}.png", label)
            if p:
                plots.append(p)
    text = render_markdown(metrics, title=title, conventions=conventions, notes=notes, plots=plots)
    atomic_write_text(out / "report.md", text)
    paths["report"] = out / "report.md"
    for p in plots:
        paths[p.stem] = p
    return paths
