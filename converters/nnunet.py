"""nnU-Net v2 raw dataset from a converted manifest: the same cases and the same patient-wise split.

Layout (nnU-Net's documentation/dataset_format.md):

    OUT/nnUNet_raw/DatasetNNN_<name>/
        dataset.json                 channel_names, labels, numTraining, file_ending (+ name, description)
        imagesTr/<case>_0000.nii.gz  one file per channel: HU ("CT": nnU-Net's CT normalisation), or one
                                     per HU window (values 0..1, z-score normalised by nnU-Net)
        labelsTr/<case>.nii.gz       uint8 0 background, 1 EDH, 2 SDH, 3 SAH, 4 IPH, 5 IVH
        imagesTs/<case>_0000.nii.gz  the test split
        labelsTs/<case>.nii.gz       its masks, for scoring nnU-Net's predictions with tools/evaluate.py
    OUT/nnUNet_preprocessed/DatasetNNN_<name>/splits_final.json
                                     [{"train": [cases], "val": [cases]}, ...]: our folds (or our
                                     train/val split as fold 0), where nnU-Net's trainer looks first

A case is one study (one volume); its slices must be the consecutive manifest rows 0..n-1 of one
scan, with a mask on every slice for train/val (nnU-Net trains only on fully labelled cases). Cases
that do not qualify are skipped and reported. Geometry: the affine of the source NIfTI the rows point
into, else a diagonal one from the manifest spacing. Display-image sources (8-bit windowed pictures:
no HU, no geometry) are refused: a 2D nnU-Net dataset of screenshots would not compare with nnU-Net
on CT. The dataset is built in a temp folder beside its final name and renamed into place; an
existing dataset folder is never replaced.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from hemo_mtl.atomic import atomic_write_json
from hemo_mtl.categories import SUBTYPES
from hemo_mtl.data.io import DataError, VolumeCache, read_slice, split_ref
from hemo_mtl.data.manifest import parse_spacing
from hemo_mtl.data.windowing import stack_windows
from hemo_mtl.paths import safe_component

NNUNET_LABELS = {"background": 0, **{name: i + 1 for i, name in enumerate(SUBTYPES)}}
FILE_ENDING = ".nii.gz"


def dataset_folder_name(dataset_id: int, name: str) -> str:
    if not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"nnU-Net dataset ids are 1..999, got {dataset_id}")
    return f"Dataset{int(dataset_id):03d}_{safe_component(name)}"


def case_id(patient_id: str, study_id: str) -> str:
    return safe_component(patient_id if study_id in ("", patient_id) else f"{patient_id}_{study_id}")


def channel_names(channels: str, windows) -> dict[str, str]:
    if channels == "hu":
        return {"0": "CT"}
    return {str(i): f"{w} window" for i, w in enumerate(windows)}


def _affine(rows) -> np.ndarray:
    path, _, _ = split_ref(rows[0]["image"])
    if path.lower().endswith((".nii", ".nii.gz")):
        return np.asarray(nib.load(path).affine, dtype=np.float64)
    spacing = parse_spacing(rows[0]["spacing"]) or (1.0, 1.0, 1.0)
    return np.diag([*map(float, spacing), 1.0])


def _case_arrays(rows, windows, channels: str, cache: VolumeCache, need_mask: bool):
    """(list of channel volumes (X, Y, Z), label volume or None, affine) of one case's manifest rows."""
    first = rows[0]
    idx = [int(r["slice_idx"]) for r in rows]
    if idx != list(range(len(rows))):
        raise DataError(f"{first['image']}: slices {idx[:3]}..{idx[-1]} are not one consecutive scan from 0")
    hu = np.stack([read_slice(r["image"], "hu", cache) for r in rows], axis=-1).astype(np.float32)
    if channels == "hu":
        images = [hu]
    else:
        stacked = stack_windows(np.moveaxis(hu, 2, 0), windows, axis=1)  # (Z, C, X, Y)
        images = [np.ascontiguousarray(np.moveaxis(stacked[:, c], 0, 2)) for c in range(len(windows))]
    mask = None
    if all(bool(r["has_mask"]) for r in rows):
        mask = np.stack([read_slice(r["mask"], "mask", cache) for r in rows], axis=-1).astype(np.uint8)
        if mask.shape != hu.shape:
            raise DataError(f"{first['mask']}: mask {mask.shape} differs from image {hu.shape}")
        if mask.max() > len(SUBTYPES):
            raise DataError(f"{first['mask']}: labels above {len(SUBTYPES)}")
    elif need_mask:
        missing = sum(not bool(r["has_mask"]) for r in rows)
        raise DataError(f"{first['image']}: {missing} of {len(rows)} slices have no mask (nnU-Net trains on fully "
                        f"labelled cases)")
    return images, mask, _affine(rows)


def _save(arr: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(arr, affine)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def export_nnunet(frame, splits: dict, out_dir, dataset_id: int = 501, name: str = "hemo", windows=("brain",),
                  channels: str = "hu", source: str = "") -> dict:
    """Write the nnU-Net raw dataset + splits_final.json for ``frame`` (the manifest) and ``splits``
    (splits.json); returns a report: cases per split, skipped cases with reasons, folder paths."""
    if channels not in ("hu", "windows"):
        raise ValueError(f"nnU-Net channels must be 'hu' or 'windows', got {channels!r}")
    if (frame["kind"] != "hu").any():
        bad = frame.loc[frame["kind"] != "hu", "image"].iloc[0]
        raise DataError(f"{bad}: --formats nnunet needs CT volumes in HU with geometry; this source has display "
                        f"images (8-bit windowed pictures), which nnU-Net export refuses")
    folder = dataset_folder_name(dataset_id, name)
    out_dir = Path(out_dir)
    raw = out_dir / "nnUNet_raw" / folder
    splits_path = out_dir / "nnUNet_preprocessed" / folder / "splits_final.json"
    for path in (raw, splits_path):
        if path.exists():
            raise DataError(f"{path}: already exists; remove it or pick another dataset id")
    split_of = {pid: s for s in ("train", "val", "test") for pid in splits[s]}
    raw.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.", dir=raw.parent))
    cache = VolumeCache(2e9)
    cases = {"train": [], "val": [], "test": []}
    case_patient, skipped = {}, []
    try:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        for (pid, sid), group in frame.groupby(["patient_id", "study_id"], sort=True):
            rows = group.sort_values("slice_idx", kind="stable").to_dict("records")
            split = split_of.get(pid)
            case = case_id(pid, sid)
            if split is None:
                skipped.append({"item": case, "reason": f"patient {pid} is in no split"})
                continue
            try:
                images, mask, affine = _case_arrays(rows, windows, channels, cache, need_mask=split != "test")
            except (DataError, ValueError, OSError) as exc:
                skipped.append({"item": case, "reason": " ".join(str(exc).split())})
                continue
            images_dir, labels_dir = ("imagesTs", "labelsTs") if split == "test" else ("imagesTr", "labelsTr")
            for c, arr in enumerate(images):
                _save(arr, affine, tmp / images_dir / f"{case}_{c:04d}{FILE_ENDING}")
            if mask is not None:
                _save(mask, affine, tmp / labels_dir / f"{case}{FILE_ENDING}")
            cases[split].append(case)
            case_patient[case] = pid
        n_train = len(cases["train"]) + len(cases["val"])
        if not n_train:
            raise DataError(f"{out_dir}: no fully labelled train/val case for nnU-Net ({len(skipped)} skipped)")
        atomic_write_json(tmp / "dataset.json", {
            "channel_names": channel_names(channels, windows),
            "labels": NNUNET_LABELS,
            "numTraining": n_train,
            "file_ending": FILE_ENDING,
            "name": folder,
            "description": f"hemo-mtl export of {source or 'a converted dataset'}: the manifest's cases, "
                           f"split as its splits.json (splits_final.json in nnUNet_preprocessed)",
        })
        os.replace(tmp, raw)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    folds = splits_final(splits, cases, case_patient)
    atomic_write_json(splits_path, folds)
    return {"dataset": str(raw), "splits_final": str(splits_path), "folds": len(folds),
            "cases": {k: len(v) for k, v in cases.items()}, "skipped": skipped}


def splits_final(splits: dict, cases: dict, case_patient: dict) -> list[dict]:
    """nnU-Net's folds from ours: one per cross-validation fold of the non-test patients (val = that
    fold), or our train/val split as the only fold. Cases, not patients: a patient's studies stay together."""
    trainable = sorted(cases["train"] + cases["val"])
    folds = splits.get("folds") or []
    if folds:
        out = []
        for fold in folds:
            members = set(fold)
            out.append({"train": [c for c in trainable if case_patient[c] not in members],
                        "val": [c for c in trainable if case_patient[c] in members]})
        return out
    return [{"train": sorted(cases["train"]), "val": sorted(cases["val"])}]
