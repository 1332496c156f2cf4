"""RSNA 2019 Intracranial Hemorrhage Detection: single-slice DICOMs + ``stage_2_train.csv``.

The CSV has one row per (slice, label): ``ID_<sop>_<subtype>,Label`` with subtypes epidural,
intraparenchymal, intraventricular, subarachnoid, subdural and any. Slices are grouped into
patients (PatientID) and studies (StudyInstanceUID) from the DICOM headers and ordered within a
series by position along the slice normal; ``slice_idx`` is that rank. Classification only.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from ...categories import LABELS, subtype_id
from ...registry import SOURCES
from ..io import DataError
from ..manifest import make_row
from .base import SourceScan


def read_rsna_csv(path: Path) -> dict[str, list]:
    """``{sop_id: [any, EDH..IVH]}`` from the long-format RSNA label CSV."""
    if not path.is_file():
        raise DataError(f"{path}: label CSV not found")
    frame = pd.read_csv(path)
    if list(frame.columns[:2]) != ["ID", "Label"]:
        raise DataError(f"{path}: expected columns ID,Label; got {list(frame.columns)}")
    parts = frame["ID"].astype(str).str.rsplit("_", n=1, expand=True)
    frame["sop"], frame["label"] = parts[0], parts[1]
    out: dict[str, list] = defaultdict(lambda: [None] * len(LABELS))
    for sop, label, value in zip(frame["sop"], frame["label"], frame["Label"]):
        if label == "any":
            col = 0
        else:
            try:
                col = subtype_id(label)
            except ValueError as exc:
                raise DataError(f"{path}: row {sop}_{label}: {exc}") from exc
        out[sop][col] = int(value)
    return dict(out)


@SOURCES.register("rsna")
def scan_rsna(root, csv_name: str = "stage_2_train.csv", image_dir: str | None = None) -> SourceScan:
    import pydicom

    root = Path(root)
    labels = read_rsna_csv(root / csv_name)
    folder = root / (image_dir or "stage_2_train")
    if not folder.is_dir():
        folder = root
    scan = SourceScan(source="rsna", licenses=[{"name": "RSNA 2019 challenge data terms (non-commercial research)", "url": ""}])
    found: dict[str, tuple[Path, object]] = {}
    for f in sorted(folder.rglob("*.dcm")):
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception as exc:
            scan.skip(f, f"unreadable DICOM ({exc})")
            continue
        found[f.stem] = (f, ds)
    series = defaultdict(list)
    for sop, lab in labels.items():
        if sop not in found:
            scan.skip(f"{csv_name} {sop}", "no DICOM file for this ID")
            continue
        f, ds = found[sop]
        missing = [LABELS[i] for i, v in enumerate(lab) if v is None]
        if missing:
            scan.notes.append(f"{sop}: labels {missing} missing in the CSV (left unknown)")
        pid = str(ds.get("PatientID", "") or sop)
        study = str(ds.get("StudyInstanceUID", "") or pid)
        key = (pid, study, str(ds.get("SeriesInstanceUID", "")))
        try:
            iop = np.array(ds.ImageOrientationPatient, dtype=float)
            z = float(np.array(ds.ImagePositionPatient, dtype=float) @ np.cross(iop[:3], iop[3:]))
            spacing = [float(v) for v in ds.PixelSpacing][::-1] + [float(getattr(ds, "SliceThickness", 0) or 0)]
        except (AttributeError, ValueError) as exc:
            scan.skip(f, f"no usable ImagePositionPatient/Orientation ({exc})")
            continue
        series[key].append((z, f, lab, spacing))
    for f in found:
        if f not in labels:
            scan.skip(found[f][0], "DICOM has no rows in the label CSV")
    for (pid, study, _), items in sorted(series.items()):
        items.sort(key=lambda t: t[0])
        for k, (_, f, lab, spacing) in enumerate(items):
            scan.rows.append(make_row(pid, k, "rsna", str(f.resolve()), "hu", lab, study_id=study, spacing=spacing))
    return scan
