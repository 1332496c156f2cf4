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


def read_slice_label_csv(path: Path) -> pd.DataFrame:
    """The slice-label CSV with label columns named by ``LABELS`` (long subtype names accepted)."""
    frame = pd.read_csv(path, dtype={"patient_id": str})
    frame.columns = [c.strip() for c in frame.columns]
    for required in ("patient_id", "slice_idx"):
        if required not in frame.columns:
            raise DataError(f"{path}: missing column {required!r} (have {list(frame.columns)})")
    renamed = {}
    for col in frame.columns:
        if col in ("patient_id", "slice_idx", "any", "study_id"):
            continue
        try:
            renamed[col] = SUBTYPES[subtype_id(col) - 1]
        except ValueError as exc:
            raise DataError(f"{path}: column {col!r}: {exc}") from exc
    return frame.rename(columns=renamed)


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
    labels = read_slice_label_csv(csv_path) if csv_path.is_file() else None
    lesions_path = root / "lesions.csv"
    lesions = pd.read_csv(lesions_path, dtype={"patient_id": str}) if lesions_path.is_file() else None
    if lesions is not None:
        need = {"patient_id", "subtype", "location", "first_slice", "last_slice"} - set(lesions.columns)
        if need:
            raise DataError(f"{lesions_path}: missing column(s) {sorted(need)} (have {list(lesions.columns)})")
    for pid in sorted(set(masks) - set(volumes)):
        scan.skip(masks[pid], "mask without a volume")

    for pid, vol_path in volumes.items():
        try:
            vol = load_nifti(vol_path)
            if check_hu:
                check_hu_range(vol.data, str(vol_path))
            mask = load_nifti_mask(masks[pid], like=vol) if pid in masks else None
            if mask is not None:
                bad = np.setdiff1d(np.unique(mask.data), np.arange(len(SUBTYPES) + 1))
                if len(bad):
                    raise DataError(f"{masks[pid]}: unknown subtype label(s) {bad.tolist()} (expected 0..5)")
        except DataError as exc:
            scan.skip(vol_path, str(exc))
            continue
        n = vol.data.shape[2]
        from_mask = labels_from_mask(mask.data) if mask is not None else None
        from_csv = {}
        if labels is not None:
            sub = labels[labels["patient_id"] == pid]
            for _, r in sub.iterrows():
                k = int(r["slice_idx"])
                if not 0 <= k < n:
                    scan.skip(f"{csv_path} patient {pid} slice {k}", f"slice does not exist ({vol_path} has {n} slices)")
                    continue
                from_csv[k] = [None if pd.isna(r.get(c)) else int(r[c]) for c in LABELS]
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
