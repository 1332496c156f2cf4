"""RSNA 2019 Intracranial Hemorrhage Detection: single-slice DICOMs + ``stage_2_train.csv``.

The CSV has one row per (slice, label): ``ID_<sop>_<subtype>,Label`` with subtypes epidural,
intraparenchymal, intraventricular, subarachnoid, subdural and any. Slices are grouped into
patients (PatientID) and studies (StudyInstanceUID) from the DICOM headers and ordered within a
series by position along the slice normal; ``slice_idx`` is that rank. A study with several series
gets one ``study_id`` per series (``<study>_<series>``). Classification only.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ...categories import LABELS, subtype_id
from ...registry import SOURCES
from ..cells import RowError, id_cell, label_cell, read_csv_rows
from ..io import DataError, dicom_numbers
from ..manifest import make_row
from .base import SourceScan


def read_rsna_csv(path: Path, scan: SourceScan) -> dict[str, list]:
    """``{sop_id: [any, EDH..IVH]}`` from the long-format RSNA label CSV, every cell checked.

    Bad rows (an ID without a known subtype suffix, a Label other than 0/1) are reported with file and
    line and left out; conflicting repeats of one (slice, subtype) are left out, identical ones used once.
    """
    header, rows, bad = read_csv_rows(path)
    if header[:2] != ["ID", "Label"]:
        raise DataError(f"{path}: expected columns ID,Label; got {header}")
    for exc in bad:
        scan.skip_error(exc)
    items = []
    for row in rows:
        try:
            sop, sep, name = id_cell(row, "ID").rpartition("_")
            if not sep or not sop:
                raise row.error(f"ID {row.text('ID')!r} is not <slice id>_<subtype>")
            try:
                col = 0 if name == "any" else subtype_id(name)
            except ValueError as exc:
                raise row.error(f"ID {row.text('ID')!r}: {exc}") from None
            items.append(((sop, col), label_cell(row, "Label"), row))
        except RowError as exc:
            scan.skip_error(exc)
    kept = scan.keep_unique(items, "slice/label")
    out: dict[str, list] = defaultdict(lambda: [None] * len(LABELS))
    for (sop, col), value in kept.items():
        out[sop][col] = value
    return dict(out)


@SOURCES.register("rsna")
def scan_rsna(root, csv_name: str = "stage_2_train.csv", image_dir: str | None = None) -> SourceScan:
    import pydicom

    root = Path(root)
    scan = SourceScan(source="rsna", licenses=[{"name": "RSNA 2019 challenge data terms (non-commercial research)", "url": ""}])
    labels = read_rsna_csv(root / csv_name, scan)
    folder = root / (image_dir or "stage_2_train")
    if not folder.is_dir():
        folder = root
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
        pid = str(ds.get("PatientID", "") or "").strip() or sop
        study = str(ds.get("StudyInstanceUID", "") or "").strip() or pid
        key = (pid, study, str(ds.get("SeriesInstanceUID", "") or "").strip())
        try:
            iop = dicom_numbers(ds, "ImageOrientationPatient", f, 6)
            z = float(dicom_numbers(ds, "ImagePositionPatient", f, 3) @ np.cross(iop[:3], iop[3:]))
            spacing = [*dicom_numbers(ds, "PixelSpacing", f, 2)[::-1],
                       float(dicom_numbers(ds, "SliceThickness", f, 1, default=0.0)[0])]
        except DataError as exc:
            scan.skip(f, str(exc))
            continue
        series[key].append((z, f, lab, spacing))
    for f in found:
        if f not in labels:
            scan.skip(found[f][0], "DICOM has no rows in the label CSV")
    per_study = defaultdict(int)
    for pid, study, _ in series:
        per_study[(pid, study)] += 1
    for (pid, study, uid), items in sorted(series.items()):
        # study_id names one stack of slices: a study holding several series gets one id per series,
        # so their slice_idx ranks (and output names) never collide
        study_id = study if per_study[(pid, study)] == 1 else f"{study}_{uid}"
        items.sort(key=lambda t: t[0])
        for k, (_, f, lab, spacing) in enumerate(items):
            scan.rows.append(make_row(pid, k, "rsna", str(f.resolve()), "hu", lab, study_id=study_id, spacing=spacing))
    return scan
