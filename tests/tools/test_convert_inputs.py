"""tools/convert.py against a used --out, unusable window options and failed exports."""
import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from hemo_mtl.data import convert as convert_mod
from hemo_mtl.data.convert import ConversionError, convert_dataset
from hemo_mtl.data.io import DataError

REPO = Path(__file__).resolve().parents[2]
AFFINE = np.diag([0.9, 0.9, 5.0, 1.0])


@pytest.fixture
def convert(capsys):
    """tools/convert.py's main in this process (a subprocess would pay ~10 s of imports per call)."""
    from hemo_mtl.cli import convert as tool

    def run(*args):
        code = tool.main(["--quiet", *map(str, args)])
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)

    return run


@pytest.fixture
def tiny(tmp_path):
    """A 4-patient nifti-layout dataset, 16x16x3, one SDH blob per patient."""
    root = tmp_path / "src"
    (root / "volumes").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        vol = rng.integers(-1000, 120, (16, 16, 3)).astype(np.float32)
        mask = np.zeros((16, 16, 3), np.uint8)
        mask[4:8, 4:8, 1] = 2
        nib.save(nib.Nifti1Image(vol, AFFINE), root / "volumes" / f"p{i}.nii.gz")
        nib.save(nib.Nifti1Image(mask, AFFINE), root / "masks" / f"p{i}.nii.gz")
    return root


def test_used_out_refused_then_replaced_whole(tiny, tmp_path, convert):
    out = tmp_path / "out"
    convert_dataset("nifti", tiny, out, formats=("manifest", "yolo"), progress=False, val=0.25, test=0.25)
    stale = [out / "images" / "train" / "gone_0000.png", out / "yolo" / "labels" / "train" / "gone_0000.txt"]
    for f in stale:
        f.write_text("from an earlier run")
    before = (out / "manifest.csv").read_bytes()
    res = convert("--source", "nifti", "--input", tiny, "--out", out, "--formats", "manifest,yolo")
    assert res.returncode == 1 and res.stderr.strip().splitlines() == [
        f"error: {out}: --out is not empty; pass --overwrite to replace an earlier conversion there"]
    assert all(f.exists() for f in stale) and (out / "manifest.csv").read_bytes() == before  # untouched
    res = convert("--source", "nifti", "--input", tiny, "--out", out, "--formats", "manifest,yolo", "--overwrite",
                  "--val", 0.25, "--test", 0.25)
    assert res.returncode == 0, res.stderr
    assert not any(f.exists() for f in stale)  # replaced whole: nothing of the earlier run remains
    assert len(list((out / "images").rglob("*.png"))) == 12
    data = (out / "yolo" / "data.yaml").read_text()
    assert f"path: {out.resolve()}" in data  # the tree's own path, not the staging folder's
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_overwrite_refuses_folders_that_are_not_conversions(tiny, tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    with pytest.raises(ConversionError, match="replaces only an earlier conversion"):
        convert_dataset("nifti", tiny, mine, progress=False, overwrite=True)
    (tiny.parent / "manifest.csv").write_text("an earlier conversion beside the input")
    with pytest.raises(ConversionError, match="holds the input"):
        convert_dataset("nifti", tiny, tiny.parent, progress=False, overwrite=True)
    assert (mine / "thesis.tex").read_text() == "keep me" and (tiny / "volumes").is_dir()
    out = tmp_path / "out"
    convert_dataset("nifti", tiny, out, progress=False)
    monkeypatch.chdir(out)
    with pytest.raises(ConversionError, match="is the current folder"):
        convert_dataset("nifti", tiny, ".", progress=False, overwrite=True)
    monkeypatch.chdir(tmp_path)
    convert_dataset("nifti", tiny, "out", progress=False, overwrite=True)  # relative --out works
    assert (out / "manifest.csv").is_file() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_crash_mid_conversion_leaves_earlier_output_whole(tiny, tmp_path, monkeypatch):
    out = tmp_path / "out"
    convert_dataset("nifti", tiny, out, formats=("manifest", "png"), progress=False)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))

    def boom(*a, **k):
        raise KeyboardInterrupt  # any interruption after some files were written

    monkeypatch.setattr(convert_mod, "_report", boom)
    with pytest.raises(KeyboardInterrupt):
        convert_dataset("nifti", tiny, out, formats=("manifest", "png"), progress=False, overwrite=True)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_window_options(tiny, tmp_path, convert):
    res = convert("--source", "nifti", "--input", tiny, "--out", tmp_path / "bb", "--formats", "png", "--window", "brain,bone")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        "error: --window brain,bone: an 8-bit PNG takes 1 window (grey) or 3 (RGB), got 2"]
    assert not (tmp_path / "bb").exists()
    out = tmp_path / "c"
    res = convert("--source", "nifti", "--input", tiny, "--out", out, "--formats", "png", "--window", "custom:40/80")
    assert res.returncode == 0, res.stderr
    # hand-computed: window 0..80 HU -> round(clip(hu / 80, 0, 1) * 255)
    vol = np.asarray(nib.load(tiny / "volumes" / "p0.nii.gz").dataobj)
    png = next(out.rglob("p0_0001.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(png)), np.round(np.clip(vol[:, :, 1] / 80, 0, 1) * 255))
    res = convert("--source", "nifti", "--input", tiny, "--out", tmp_path / "rgb", "--formats", "png",
                  "--window", "custom:40,80,subdural,bone")
    assert res.returncode == 0, res.stderr
    assert np.asarray(Image.open(next((tmp_path / "rgb").rglob("p0_0001.png")))).shape == (16, 16, 3)


def test_failed_exports_make_a_non_zero_exit(tiny, tmp_path, monkeypatch, convert):
    real = convert_mod.read_slice

    def flaky(ref, kind, cache=None):
        if "p1.nii.gz" in ref:
            raise DataError(f"{ref}: unreadable")
        return real(ref, kind, cache)

    monkeypatch.setattr(convert_mod, "read_slice", flaky)
    out = tmp_path / "o"
    res = convert("--source", "nifti", "--input", tiny, "--out", out, "--formats", "png")
    assert res.returncode == 1
    err = res.stderr
    assert err.count("skipped: ") == 3 and "p1.nii.gz#0: unreadable" in err
    assert "error: 3 of 12 slice(s) could not be exported" in err
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["n_failed_exports"] == 3 and len(list(out.rglob("*.png"))) == 9


def test_non_hu_and_nan_volumes_are_skipped_not_fatal(tiny, tmp_path, convert):
    nib.save(nib.Nifti1Image(np.full((16, 16, 3), 100.0, np.float32), AFFINE), tiny / "volumes" / "p2.nii.gz")
    nib.save(nib.Nifti1Image(np.full((16, 16, 3), np.nan, np.float32), AFFINE), tiny / "volumes" / "p3.nii.gz")
    res = convert("--source", "nifti", "--input", tiny, "--out", tmp_path / "o", "--formats", "manifest,png")
    assert res.returncode == 0, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and all(l.startswith("skipped: ") for l in lines)
    assert "p2.nii.gz: intensities 100..100 have no air" in lines[0] and "p3.nii.gz: 768 of 768 voxels are NaN" in lines[1]
    assert res.stdout.startswith(f"{tmp_path / 'o'}: 2 patients, 6 slices")
