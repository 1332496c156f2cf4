"""The manifest: one row per slice, the single table every dataset is turned into.

Columns (``MANIFEST_COLUMNS``): patient_id, study_id, slice_idx, source, image (``path`` or
``path#k`` for slice k of a volume), kind (``hu`` | ``display``), any, EDH, SDH, SAH, IPH, IVH
(1/0, empty when that label is unknown), mask (``path#k`` or empty), has_cls, has_mask, has_boxes,
spacing (``"sx sy sz"`` in mm, empty when unknown). A dataset with no masks has none, not empty ones.
A binary mask reference ends in ``@n``: its foreground pixels get label n (a subtype 1..5, or
``UNKNOWN_SUBTYPE`` when the slice's subtype split is unknown); ``@0`` is an all-background mask,
which may point at the slice's own image when a release defines the mask as empty without a file.
Optional columns (``OPTIONAL_COLUMNS``) are written only when a source fills them: ``location``
(a dataset's own location name for the slice's bleed, e.g. deep/lobar/subtentorial; empty = unknown).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_path
from ..categories import LABELS, SUBTYPES

MANIFEST_COLUMNS = (
    ["patient_id", "study_id", "slice_idx", "source", "image", "kind"]
    + list(LABELS)
    + ["mask", "has_cls", "has_mask", "has_boxes", "spacing"]
)
OPTIONAL_COLUMNS = ["location"]
KINDS = ("hu", "display")


def labels_from_mask(mask: np.ndarray) -> np.ndarray:
    """(Z, 6) slice labels [any, EDH..IVH] from an (X, Y, Z) label mask: the truth the CSVs must match."""
    z = mask.shape[-1]
    flat = mask.reshape(-1, z)
    out = np.zeros((z, len(LABELS)), dtype=np.uint8)
    for i in range(1, len(SUBTYPES) + 1):
        out[:, i] = (flat == i).any(axis=0)
    out[:, 0] = out[:, 1:].any(axis=1)
    return out


def make_row(
    patient_id: str,
    slice_idx: int,
    source: str,
    image: str,
    kind: str,
    labels=None,
    mask: str | None = None,
    study_id: str | None = None,
    spacing=None,
    has_boxes: bool | None = None,
    location: str | None = None,
) -> dict:
    """One manifest row; ``labels`` is a length-6 sequence with None/NaN for unknown labels, or None."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    row = {
        "patient_id": str(patient_id),
        "study_id": str(study_id if study_id is not None else patient_id),
        "slice_idx": int(slice_idx),
        "source": source,
        "image": str(image),
        "kind": kind,
    }
    known = False
    for name, value in zip(LABELS, labels if labels is not None else [None] * len(LABELS)):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            row[name] = pd.NA
        else:
            row[name] = int(value)
            known = True
    row["mask"] = str(mask) if mask else ""
    row["has_cls"] = known
    row["has_mask"] = bool(mask)
    row["has_boxes"] = bool(mask) if has_boxes is None else bool(has_boxes)
    row["spacing"] = " ".join(f"{float(s):.4g}" for s in spacing) if spacing is not None else ""
    if location is not None:
        row["location"] = str(location)
    return row


def rows_to_frame(rows: list[dict]) -> pd.DataFrame:
    optional = [c for c in OPTIONAL_COLUMNS if any(c in r for r in rows)]
    frame = pd.DataFrame(rows, columns=MANIFEST_COLUMNS + optional)
    return _typed(frame)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    for name in LABELS:
        frame[name] = frame[name].astype("Int8")
    for name in ("has_cls", "has_mask", "has_boxes"):
        frame[name] = frame[name].astype(str).str.lower().isin(["true", "1"]) if frame[name].dtype != bool else frame[name]
    for name in ("patient_id", "study_id", "source", "image", "kind", "mask", "spacing"):
        frame[name] = frame[name].fillna("").astype(str)
    for name in OPTIONAL_COLUMNS:
        if name in frame.columns:
            frame[name] = frame[name].fillna("").astype(str)
    frame["slice_idx"] = frame["slice_idx"].astype(int)
    return frame


def write_manifest(frame: pd.DataFrame, path) -> None:
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"manifest is missing columns {missing}")
    with atomic_path(path) as tmp:
        frame[MANIFEST_COLUMNS + [c for c in OPTIONAL_COLUMNS if c in frame.columns]].to_csv(tmp, index=False)


def read_manifest(path) -> pd.DataFrame:
    """Load and check a manifest.csv; ids stay strings ("050" is not 50)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found (run tools/convert.py first)")
    frame = pd.read_csv(path, dtype={"patient_id": str, "study_id": str, "mask": str, "spacing": str, "location": str}, keep_default_na=True)
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not a hemo-mtl manifest, missing columns {missing}")
    _check_cells(frame, path)
    frame = _typed(frame)
    bad = frame.loc[~frame["kind"].isin(KINDS), "kind"]
    if len(bad):
        raise ValueError(f"{path}: row {bad.index[0] + 2}: unknown kind {bad.iloc[0]!r} (expected {KINDS})")
    return frame


def _check_cells(frame: pd.DataFrame, path: Path) -> None:
    """Labels 0/1/empty, slice_idx a non-negative integer, ids stripped and non-empty, each
    (patient, study, slice) once: a hand-edited manifest fails here with its row, not deep in training.
    Row numbers are CSV lines (header = line 1)."""
    from .io import DataError

    def fail(mask, what: str) -> None:
        if mask.any():
            i = int(np.flatnonzero(mask.to_numpy())[0])
            raise DataError(f"{path}: line {i + 2}: {what}")

    for name in ("patient_id", "study_id"):
        frame[name] = frame[name].fillna("").astype(str).str.strip()
    fail(frame["patient_id"] == "", "empty patient_id")
    for name in LABELS:
        values = pd.to_numeric(frame[name], errors="coerce")
        fail(frame[name].notna() & ~values.isin([0, 1]), f"column {name!r}: label must be 0, 1 or empty")
    idx = pd.to_numeric(frame["slice_idx"], errors="coerce")
    fail(~(idx >= 0) | (idx != idx.round()), "slice_idx must be a non-negative integer")
    study = frame["study_id"].where(frame["study_id"] != "", frame["patient_id"])
    dup = pd.DataFrame({"p": frame["patient_id"], "s": study, "k": idx}).duplicated(keep="first")
    fail(dup, "repeats the patient/study/slice of an earlier row")


def parse_spacing(text: str) -> tuple[float, float, float] | None:
    if not text:
        return None
    parts = [float(v) for v in str(text).split()]
    return tuple(parts) if len(parts) == 3 else None


def patient_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per patient: max of each known label over its slices (patient-level truth), slice count."""
    labels = frame[list(LABELS)].astype("float")
    table = labels.groupby(frame["patient_id"]).max()
    table["n_slices"] = frame.groupby("patient_id").size()
    return table
