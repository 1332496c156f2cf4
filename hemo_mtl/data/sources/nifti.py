"""Volume + subtype-mask + CSV datasets (the phantom's layout; Hemorica-style releases).

Layout::

    ROOT/volumes/<pid>.nii[.gz]      CT in HU
    ROOT/masks/<pid>.nii[.gz]        optional, uint8 0 background, 1 EDH .. 5 IVH, same shape+affine
    ROOT/slice_labels.csv            optional, patient_id,slice_idx,any,EDH,SDH,SAH,IPH,IVH (0-based idx)
    ROOT/lesions.csv                 optional, patient_id,lesion,subtype,location,first_slice,last_slice

A slice's labels come from its mask when there is one (the mask is the finer truth); CSV rows that
disagree with the mask are reported. Without a mask, the CSV gives slice labels only.
With lesions.csv and a mask, each slice gets the manifest ``location`` of its largest bleed
(``slice_locations``); the location head trains on it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...categories import LABELS, SUBTYPES, subtype_id
from ...registry import SOURCES
from ..cells import RowError, id_cell, int_cell, label_cell, read_csv_rows
from ..io import DataError, load_nifti, load_nifti_mask
from ..manifest import labels_from_mask, make_row
from ..windowing import check_hu_range
from .base import SourceScan

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _find(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {_stem(p): p for p in sorted(folder.iterdir()) if p.name.endswith(NIFTI_SUFFIXES)}


def read_slice_label_csv(path: Path, scan: SourceScan) -> dict[tuple[str, int], list[int | None]]:
    """``{(patient_id, slice_idx): [any, EDH..IVH]}`` from the slice-label CSV, every cell checked.

    Long subtype names are accepted as column names; a missing label column or an empty cell means
    unknown (the manifest's convention). Bad cells and conflicting duplicate rows are reported in
    ``scan`` and left out; an unknown column name refuses the file (its labels could not be placed).
    """
    header, rows, bad = read_csv_rows(path, required=("patient_id", "slice_idx"))
    columns = {}
    for col in header:
        if col in ("patient_id", "slice_idx", "study_id"):
            continue
        if col == "any":
            columns[col] = 0
            continue
        try:
            columns[col] = subtype_id(col)
        except ValueError as exc:
            raise DataError(f"{path}: column {col!r}: {exc}") from exc
    for exc in bad:
        scan.skip_error(exc)
    items = []
    for row in rows:
        try:
            pid = id_cell(row, "patient_id")
            k = int_cell(row, "slice_idx", minimum=0)
            lab: list[int | None] = [None] * len(LABELS)
            for col, i in columns.items():
                lab[i] = label_cell(row, col, allow_empty=True)
        except RowError as exc:
            scan.skip_error(exc)
            continue
        items.append(((pid, k), lab, row))
    labels = scan.keep_unique(items, "patient/slice")
    return labels


def read_lesion_csv(path: Path, scan: SourceScan) -> pd.DataFrame:
    """lesions.csv rows with checked cells (subtype name, slice range); bad rows reported and left out."""
    _, rows, bad = read_csv_rows(path, required=("patient_id", "subtype", "location", "first_slice", "last_slice"))
    for exc in bad:
        scan.skip_error(exc)
    records = []
    for row in rows:
        try:
            pid = id_cell(row, "patient_id")
            try:
                subtype = SUBTYPES[subtype_id(row.text("subtype")) - 1]
            except ValueError as exc:
                raise row.error(f"column 'subtype': {exc}") from None
            first, last = int_cell(row, "first_slice", minimum=0), int_cell(row, "last_slice", minimum=0)
            if last < first:
                raise row.error(f"last_slice {last} before first_slice {first}")
        except RowError as exc:
            scan.skip_error(exc)
            continue
        records.append({"patient_id": pid, "subtype": subtype, "location": row.text("location"),
                        "first_slice": first, "last_slice": last})
    return pd.DataFrame(records, columns=["patient_id", "subtype", "location", "first_slice", "last_slice"])


def slice_locations(mask: np.ndarray, lesions: pd.DataFrame) -> list[str]:
    """Per axial slice of an (X, Y, Z) subtype mask, the location of its largest bleed ("" if none).

    A lesion row (subtype, location, first_slice, last_slice) covers the slices of its range; its area on
    slice k is the voxel count of its subtype there (the phantom paints distinct subtypes per patient,
    so subtype + slice range identifies the bleed). Ties go to the earlier row."""
    z = mask.shape[2]
    areas = np.stack([(mask == k).sum(axis=(0, 1)) for k in range(len(SUBTYPES) + 1)])  # (6, Z)
    best = np.zeros(z, np.int64)
    out = [""] * z
    for _, les in lesions.iterrows():
        label = subtype_id(str(les["subtype"]))
        lo, hi = max(int(les["first_slice"]), 0), min(int(les["last_slice"]), z - 1)
        for k in range(lo, hi + 1):
            if areas[label, k] > best[k]:
                best[k], out[k] = areas[label, k], str(les["location"])
    return out


@SOURCES.register("nifti")
def scan_nifti(root, check_hu: bool = True) -> SourceScan:
    root = Path(root)
    scan = SourceScan(source="nifti")
    volumes = _find(root / "volumes")
    if not volumes:
        raise DataError(f"{root}: no volumes/*.nii[.gz] found (expected the nifti layout: volumes/, masks/, slice_labels.csv)")
    masks = _find(root / "masks")
    csv_path = root / "slice_labels.csv"
    labels = read_slice_label_csv(csv_path, scan) if csv_path.is_file() else None
    lesions_path = root / "lesions.csv"
    lesions = read_lesion_csv(lesions_path, scan) if lesions_path.is_file() else None
    for pid in sorted(set(masks) - set(volumes)):
        scan.skip(masks[pid], "mask without a volume")
    by_patient: dict[str, dict[int, list]] = {}
    for (pid, k), lab in (labels or {}).items():
        by_patient.setdefault(pid, {})[k] = lab
    for pid in sorted(set(by_patient) - set(volumes)):
        scan.skip(f"{csv_path} patient {pid}", f"{len(by_patient.pop(pid))} row(s) for a patient without a volume")

    for pid, vol_path in volumes.items():
        try:
            vol = load_nifti(vol_path)
            if check_hu:
                check_hu_range(vol.data, str(vol_path))
            mask = load_nifti_mask(masks[pid], like=vol, max_label=len(SUBTYPES)) if pid in masks else None
        except DataError as exc:
            scan.skip(vol_path, str(exc))
            continue
        n = vol.data.shape[2]
        from_mask = labels_from_mask(mask.data) if mask is not None else None
        from_csv = {}
        for k, lab in by_patient.pop(pid, {}).items():
            if not 0 <= k < n:
                scan.skip(f"{csv_path} patient {pid} slice {k}", f"slice does not exist ({vol_path} has {n} slices)")
                continue
            from_csv[k] = lab
        if mask is not None:
            scan.mask_volumes[pid] = str(masks[pid].resolve())
        locations = (slice_locations(mask.data, lesions[lesions["patient_id"] == pid])
                     if lesions is not None and mask is not None else None)
        for k in range(n):
            lab = from_mask[k].tolist() if from_mask is not None else from_csv.get(k)
            if from_mask is not None and k in from_csv:
                csv_lab = from_csv[k]
                if any(c is not None and c != m for c, m in zip(csv_lab, lab)):
                    scan.notes.append(f"{csv_path}: patient {pid} slice {k}: CSV labels {csv_lab} disagree with mask {lab}; mask used")
            if lab is not None and lab[0] is None and any(v is not None for v in lab[1:]):
                lab = list(lab)
                lab[0] = int(any(v == 1 for v in lab[1:])) if any(v == 1 for v in lab[1:]) else None
            scan.rows.append(
                make_row(
                    pid, k, "nifti", f"{vol_path.resolve()}#{k}", "hu", lab,
                    mask=f"{masks[pid].resolve()}#{k}" if mask is not None else None,
                    spacing=vol.spacing, location=locations[k] if locations is not None else None,
                )
            )
    return scan
