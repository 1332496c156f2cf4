"""tools/convert.py end to end: the phantom round trip, the real samples, workers, bad input."""
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from hemo_mtl.categories import LABELS, SUBTYPES
from hemo_mtl.data.manifest import labels_from_mask, read_manifest
from hemo_mtl.data.splits import check_leakage

REPO = Path(__file__).resolve().parents[2]


def convert(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "convert.py"), "--quiet", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def test_phantom_roundtrip(phantom_dir, tmp_path):
    out = tmp_path / "conv"
    res = convert("--source", "nifti", "--input", phantom_dir, "--out", out, "--formats", "manifest,png")
    assert res.returncode == 0, res.stderr
    frame = read_manifest(out / "manifest.csv")
    for pid, rows in frame.groupby("patient_id"):
        mask = np.asarray(nib.load(phantom_dir / "masks" / f"{pid}.nii.gz").dataobj)
        got = rows.sort_values("slice_idx")[list(LABELS)].to_numpy(dtype=int)
        np.testing.assert_array_equal(got, labels_from_mask(mask))
    assert (frame[list(SUBTYPES)].sum() > 0).all(), "all five subtypes occur"
    splits = json.loads((out / "splits.json").read_text())
    check_leakage(splits)
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == sorted(frame.patient_id.unique())
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["counts"]["all"]["slices"] == len(frame) and report["n_skipped"] == 0
    assert len(list((out / "images").rglob("*.png"))) == len(frame)


def test_workers_give_identical_files(phantom_dir, tmp_path):
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        res = convert("--source", "nifti", "--input", phantom_dir, "--out", out, "--formats", "coco", "--workers", workers)
        assert res.returncode == 0, res.stderr
        outs.append(out)
    for split in ("train", "val", "test"):
        a = (outs[0] / "annotations" / f"instances_{split}.json").read_bytes()
        assert a == (outs[1] / "annotations" / f"instances_{split}.json").read_bytes()
    pngs = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*.png"))
    assert pngs and all((outs[0] / p).read_bytes() == (outs[1] / p).read_bytes() for p in pngs)


def test_real_samples_counts_match_their_csv(ctich_jpg_dir, kaggle_head_ct_dir, tmp_path):
    res = convert("--source", "physionet", "--input", ctich_jpg_dir, "--out", tmp_path / "ct")
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("skipped:") == 4  # the four CSV rows whose JPG is missing
    frame = read_manifest(tmp_path / "ct" / "manifest.csv")
    csv = pd.read_csv(ctich_jpg_dir / "hemorrhage_diagnosis.csv")
    assert len(frame) == len(csv) - 4
    res = convert("--source", "kaggle", "--input", kaggle_head_ct_dir, "--out", tmp_path / "kg")
    assert res.returncode == 0, res.stderr
    frame = read_manifest(tmp_path / "kg" / "manifest.csv")
    labels = pd.read_csv(kaggle_head_ct_dir / "labels.csv", skipinitialspace=True)
    assert len(frame) == len(labels) and frame["any"].sum() == labels["hemorrhage"].sum()


def test_bad_input_reported_and_exit_codes(phantom_dir, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(phantom_dir, src)
    broken = sorted((src / "volumes").iterdir())[0]
    broken.write_bytes(broken.read_bytes()[:200])
    res = convert("--source", "nifti", "--input", src, "--out", tmp_path / "o")
    assert res.returncode == 0 and f"skipped: {broken}" in res.stderr
    report = json.loads((tmp_path / "o" / "conversion_report.json").read_text())
    assert report["n_skipped"] == 1 and "cannot read NIfTI" in report["skipped"][0]["reason"]
    assert convert("--source", "nifti", "--input", src, "--out", tmp_path / "s", "--strict").returncode != 0
    empty = tmp_path / "empty"
    (empty / "volumes").mkdir(parents=True)
    res = convert("--source", "nifti", "--input", empty, "--out", tmp_path / "e")
    assert res.returncode == 1 and res.stderr.startswith("error:") and "Traceback" not in res.stderr
