"""tools/predict.py end to end on a real (tiny, untrained) checkpoint: files, geometry, volumes, errors."""
import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hemo_mtl.cli import predict as predict_tool
from hemo_mtl.data.io import write_dicom_series

REPO = Path(__file__).resolve().parents[2]


def _move_slice(path, previous, fraction):
    """Put the slice in ``path`` at ``fraction`` of the way from ``previous`` to where it was."""
    import pydicom

    ds, prev = pydicom.dcmread(str(path)), pydicom.dcmread(str(previous))
    a, b = np.array(prev.ImagePositionPatient, float), np.array(ds.ImagePositionPatient, float)
    ds.ImagePositionPatient = [float(v) for v in a + fraction * (b - a)]
    ds.save_as(str(path))


def _run(weights, inp, out, *extra):
    return predict_tool.main(["--weights", str(weights), "--input", str(inp), "--out", str(out), "--threads", "2",
                              "--score-threshold", "0.0", *extra])


@pytest.fixture(scope="module")
def integral_scan(phantom_scan, tmp_path_factory):
    """The phantom rounded to integer HU (what a uint16 DICOM series can hold), as NIfTI and as DICOM."""
    _, volume, affine = phantom_scan
    root = tmp_path_factory.mktemp("integral")
    volume = np.round(volume).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, affine), str(root / "scan.nii.gz"))
    write_dicom_series(volume, affine, root / "dicom", shuffle_names=True)
    return root, volume, affine


def test_nifti_outputs(weights, integral_scan, tmp_path):
    root, volume, affine = integral_scan
    assert _run(weights, root / "scan.nii.gz", tmp_path) == 0
    out = tmp_path / "scan"
    img = nib.load(str(out / "mask.nii.gz"))
    mask = np.asarray(img.dataobj)
    assert mask.shape == volume.shape and mask.dtype == np.uint8
    assert np.allclose(img.affine, affine)
    assert mask.any() and mask.max() <= 5

    summary = json.loads((out / "summary.json").read_text())
    voxel_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000.0
    for label, name in enumerate(("EDH", "SDH", "SAH", "IPH", "IVH"), start=1):
        assert np.isclose(summary["volume_ml"][name], (mask == label).sum() * voxel_ml, rtol=1e-6)
    assert np.isclose(summary["volume_ml"]["any"], (mask > 0).sum() * voxel_ml, rtol=1e-6)
    assert summary["model_sha256"] == hashlib.sha256(Path(weights).read_bytes()).hexdigest()
    assert len(summary["config_sha256"]) == 64

    table = pd.read_csv(out / "slices.csv")
    assert list(table["slice_idx"]) == list(range(volume.shape[2]))
    assert np.isclose(summary["probabilities"]["any"], table["p_any"].max())
    dets = json.loads((out / "detections.json").read_text())
    assert all(1 <= d["image_id"] <= volume.shape[2] and 1 <= d["category_id"] <= 5 for d in dets)
    for d in dets:
        assert d["segmentation"]["size"] == [volume.shape[0], volume.shape[1]]
    assert np.asarray(Image.open(out / "overlay.png")).ndim == 3
    assert pd.read_csv(tmp_path / "summary.csv")["status"].tolist() == ["ok"]


def test_dicom_series_gives_the_same_outputs_as_nifti(weights, integral_scan):
    from hemo_mtl.inference import PredictOptions, Predictor, load_scan

    root, _, _ = integral_scan
    predictor = Predictor.from_checkpoint(weights, PredictOptions(score_threshold=0.0))
    nii, dcm = load_scan(root / "scan.nii.gz"), load_scan(root / "dicom")
    assert np.allclose(nii.affine, dcm.affine, atol=1e-4)
    a, b = predictor.predict(nii), predictor.predict(dcm)
    assert np.allclose(a.cls_prob, b.cls_prob, atol=1e-5)
    assert np.array_equal(a.mask, b.mask) and a.mask.any()
    assert [len(i["boxes"]) for i in a.instances] == [len(i["boxes"]) for i in b.instances]


def test_png_folder_kaggle_sample(weights, kaggle_head_ct_dir, tmp_path):
    src = sorted((kaggle_head_ct_dir / "head_ct").glob("*.png"))[:3]
    folder = tmp_path / "pngs"
    folder.mkdir()
    for p in src:
        shutil.copy(p, folder / p.name)
    assert _run(weights, folder, tmp_path / "out") == 0
    out = tmp_path / "out" / "pngs"
    table = pd.read_csv(out / "slices.csv")
    assert table["file"].tolist() == [p.name for p in src]
    for p in src:
        with Image.open(p) as im:
            size = im.size[::-1]  # (rows, cols)
        assert np.asarray(Image.open(out / "masks" / p.name)).shape == size
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "display" and summary["volume_ml"] is None and summary["num_slices"] == 3


def test_bad_scans_are_reported_and_the_rest_go_on(weights, integral_scan, tmp_path, capsys):
    root, volume, affine = integral_scan
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(root / "scan.nii.gz", scans / "good.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 2), np.float32), affine), str(scans / "fourd.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), str(scans / "twod.nii.gz"))
    nib.save(nib.Nifti1Image((volume - volume.min()) / 4, affine), str(scans / "mr.nii.gz"))
    write_dicom_series(volume, affine, scans / "mixed" / "a")
    write_dicom_series(volume, affine, scans / "mixed" / "b")
    files = write_dicom_series(volume, affine, scans / "missing")
    files[len(files) // 2].unlink()
    files = write_dicom_series(volume, affine, scans / "duplicate")
    shutil.copy(files[1], scans / "duplicate" / "copy_of_1.dcm")
    files = write_dicom_series(volume, affine, scans / "spacing")
    _move_slice(files[-1], files[-2], 0.6)  # last step 0.6x the others
    (scans / "notes.txt").write_text("not a scan")

    out = tmp_path / "out"
    assert _run(weights, scans, out) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "error: " in line]
    expected = {"fourd": "3D", "twod": "3D", "mr": "not a CT", "mixed": "mixes", "missing": "missing slices",
                "duplicate": "duplicate", "spacing": "inconsistent slice spacing", "notes.txt": "not a NIfTI"}
    assert len(err) == len(expected), err
    for name, problem in expected.items():
        assert sum(name in line and problem in line for line in err) == 1, (name, err)
    table = pd.read_csv(out / "summary.csv").set_index("scan")
    assert table.loc["good", "status"] == "ok"
    assert (table.drop(index="good")["status"] == "error").all()
    assert sorted(p.name for p in out.iterdir()) == ["good", "summary.csv"]  # nothing half-written
    assert (out / "good" / "mask.nii.gz").is_file()


def test_options_sliding_window_tta_morphology(weights, integral_scan, tmp_path):
    from scipy import ndimage

    root, volume, affine = integral_scan
    assert _run(weights, root / "scan.nii.gz", tmp_path, "--sliding-window", "--patch", "48", "--stride", "32",
                "--flip-tta", "--closing", "1", "--min-voxels", "4") == 0
    img = nib.load(str(tmp_path / "scan" / "mask.nii.gz"))
    mask = np.asarray(img.dataobj)
    assert mask.shape == volume.shape and np.allclose(img.affine, affine)
    for label in range(1, 6):
        labels, n = ndimage.label(mask == label, np.ones((3, 3, 3), bool))
        assert n == 0 or np.bincount(labels.ravel())[1:].min() >= 4
    summary = json.loads((tmp_path / "scan" / "summary.json").read_text())
    assert summary["options"]["sliding_window"] and summary["options"]["min_voxels"] == 4
    dets = json.loads((tmp_path / "scan" / "detections.json").read_text())
    for d in dets:
        x, y, w, h = d["bbox"]
        assert 0 <= x and 0 <= y and x + w <= volume.shape[1] + 1e-3 and y + h <= volume.shape[0] + 1e-3


def _zero_column_nifti(path, volume, affine):
    """A NIfTI whose sform has a zero column (nibabel cannot even write a qform for it)."""
    bad = np.array(affine, float)
    bad[:3, 1] = 0.0
    img = nib.Nifti1Image(volume, None)
    img.set_qform(None, code=0)
    img.set_sform(bad, code=1)
    nib.save(img, str(path))


def test_scan_names_are_unique_and_a_bad_affine_is_one_scan_error(weights, integral_scan, tmp_path, capsys):
    root, volume, affine = integral_scan
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(root / "scan.nii.gz", scans / "scan.nii.gz")
    nib.save(nib.Nifti1Image(volume[:, :, :4], affine), str(scans / "scan.nii"))
    write_dicom_series(volume[:, :, :5], affine, scans / "scan")
    _zero_column_nifti(scans / "flat.nii.gz", volume, affine)
    out = tmp_path / "out"
    assert _run(weights, scans, out) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and "flat.nii.gz" in err[0] and "affine" in err[0]
    table = pd.read_csv(out / "summary.csv").set_index("scan")
    assert table["status"].to_dict() == {"flat": "error", "scan": "ok", "scan.nii": "ok", "scan.nii.gz": "ok"}
    # each result is its own scan's: slice counts 5 (DICOM folder), 4, 6
    assert table.loc[["scan", "scan.nii", "scan.nii.gz"], "num_slices"].tolist() == [5, 4, volume.shape[2]]
    for name, n in (("scan", 5), ("scan.nii", 4), ("scan.nii.gz", volume.shape[2])):
        assert nib.load(str(out / name / "mask.nii.gz")).shape[2] == n
    assert sorted(p.name for p in out.iterdir()) == ["scan", "scan.nii", "scan.nii.gz", "summary.csv"]


def test_slice_images_sharing_a_stem_are_one_line_and_no_output(weights, tmp_path, capsys):
    """``1.jpg`` beside ``1.png``: two pictures of slice 1 cannot be ordered or share one mask name."""
    folder = tmp_path / "slices"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8)).save(folder / "1.png")
    Image.fromarray(rng.integers(0, 255, (32, 36), dtype=np.uint8)).save(folder / "1.jpg")
    Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8)).save(folder / "2.png")
    assert _run(weights, folder, tmp_path / "out") == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "1.jpg" in err[0] and "1.png" in err[0] and "both slice '1'" in err[0]
    assert not (tmp_path / "out" / "slices").exists()


@pytest.mark.parametrize("option, value", [("--batch-size", "0"), ("--batch-size", "-4"), ("--stride", "0"),
                                           ("--patch", "0"), ("--score-threshold", "1.5"), ("--min-voxels", "-1"),
                                           ("--slice-context", "-1")])
def test_numbers_out_of_range_stop_at_the_command_line(option, value, capsys):
    with pytest.raises(SystemExit) as info:
        predict_tool.parse_args(["--weights", "w.pth", "--input", "x", option, value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"argument {option}: {value} is out of range" in err


def test_unusable_checkpoint_or_output_folder_is_one_line(weights, integral_scan, tmp_path, capsys):
    import os
    import subprocess
    import sys

    from hemo_mtl.cli_errors import run_main

    root, _, _ = integral_scan
    bad = tmp_path / "bad.pth"
    bad.write_bytes(os.urandom(2048))
    assert run_main(predict_tool.main, ["--weights", str(bad), "--input", str(root / "scan.nii.gz"),
                                        "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot load checkpoint {bad}") and err.count("\n") == 1
    assert "weights_only" not in err
    blocker = tmp_path / "file.txt"  # an output folder that cannot be made: one line, before any scan runs
    blocker.write_text("x")
    assert run_main(predict_tool.main, ["--weights", str(weights), "--input", str(root / "scan.nii.gz"),
                                        "--out", str(blocker / "preds")]) == 2
    assert capsys.readouterr().err == f"error: {blocker / 'preds'}: Not a directory\n"
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        done = subprocess.run([sys.executable, str(REPO / "tools" / "predict.py"), "--weights", str(weights),
                               "--input", str(root / "scan.nii.gz"), "--out", str(ro / "preds")],
                              capture_output=True, text=True, timeout=300)
    finally:
        ro.chmod(0o755)
    assert done.returncode == 2 and done.stderr.strip() == f"error: {ro / 'preds'}: Permission denied"
