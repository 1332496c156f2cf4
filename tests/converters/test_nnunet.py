"""tools/convert.py --formats nnunet: an nnU-Net v2 raw dataset on our cases and our patient-wise folds.

The layout is checked against nnU-Net's documented schema (documentation/dataset_format.md: dataset.json
keys channel_names/labels/numTraining/file_ending, consecutive integer labels from background 0,
imagesTr/<case>_0000 + labelsTr/<case> with equal geometry, imagesTs) and, where nnunetv2 is installed,
by its own verify_dataset_integrity. nnunetv2 is not a test dependency: it pins its own timm and pulls
SimpleITK, batchgenerators and more into the environment of the core package.
"""
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hemo_mtl.data.phantom import write_phantom_dataset

REPO = Path(__file__).resolve().parents[2]


def convert(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "convert.py"), "--quiet", *map(str, args)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantom")
    write_phantom_dataset(root, patients=8, seed=3, size=48, slices=5)
    return root


@pytest.fixture(scope="module")
def exported(phantom, tmp_path_factory):
    out = tmp_path_factory.mktemp("conv")
    res = convert("--source", "nifti", "--input", phantom, "--out", out, "--formats", "manifest,nnunet",
                  "--folds", "3", "--val", "0.15", "--test", "0.25")
    assert res.returncode == 0, res.stderr
    return out, out / "nnUNet_raw" / "Dataset501_nifti", json.loads((out / "splits.json").read_text())


def test_dataset_json_and_layout_follow_the_nnunet_schema(exported):
    _, raw, splits = exported
    info = json.loads((raw / "dataset.json").read_text())
    assert {"channel_names", "labels", "numTraining", "file_ending"} <= set(info)
    assert info["channel_names"] == {"0": "CT"} and info["file_ending"] == ".nii.gz"
    assert info["labels"] == {"background": 0, "EDH": 1, "SDH": 2, "SAH": 3, "IPH": 4, "IVH": 5}
    train_cases = sorted(p.name[: -len(".nii.gz")] for p in (raw / "labelsTr").iterdir())
    assert info["numTraining"] == len(train_cases) == len(splits["train"]) + len(splits["val"])
    assert sorted(p.name for p in (raw / "imagesTr").iterdir()) == [f"{c}_0000.nii.gz" for c in train_cases]
    assert sorted(p.name for p in (raw / "imagesTs").iterdir()) == [f"{p}_0000.nii.gz" for p in sorted(splits["test"])]


def test_images_and_labels_are_the_source_volumes(exported, phantom):
    _, raw, splits = exported
    for pid in splits["train"][:2] + splits["test"][:1]:
        images, labels = ("imagesTs", "labelsTs") if pid in splits["test"] else ("imagesTr", "labelsTr")
        src = nib.load(str(phantom / "volumes" / f"{pid}.nii.gz"))
        img = nib.load(str(raw / images / f"{pid}_0000.nii.gz"))
        lab = nib.load(str(raw / labels / f"{pid}.nii.gz"))
        assert np.array_equal(np.asarray(img.dataobj), np.asarray(src.dataobj))
        assert np.allclose(img.affine, src.affine) and np.allclose(lab.affine, src.affine)
        mask = np.asarray(lab.dataobj)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= set(range(6))
        assert np.array_equal(mask, np.asarray(nib.load(str(phantom / "masks" / f"{pid}.nii.gz")).dataobj))


def test_splits_final_holds_our_patient_wise_folds(exported):
    out, raw, splits = exported
    folds = json.loads((out / "nnUNet_preprocessed" / raw.name / "splits_final.json").read_text())
    assert len(folds) == 3
    trainable = sorted(splits["train"] + splits["val"])
    for ours, theirs in zip(splits["folds"], folds):
        assert sorted(theirs["val"]) == sorted(ours)
        assert sorted(theirs["train"] + theirs["val"]) == trainable and not set(theirs["train"]) & set(theirs["val"])
        assert not set(theirs["train"] + theirs["val"]) & set(splits["test"])


def test_a_rerun_does_not_replace_the_dataset(exported, phantom):
    out, raw, _ = exported
    before = (raw / "dataset.json").read_bytes()
    res = convert("--source", "nifti", "--input", phantom, "--out", out, "--formats", "manifest,nnunet", "--folds", "3",
                  "--val", "0.15", "--test", "0.25")
    assert res.returncode == 1 and "--out is not empty; pass --overwrite" in res.stderr
    assert (raw / "dataset.json").read_bytes() == before
    assert not [p for p in raw.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_display_image_sources_are_refused(kaggle_head_ct_dir, tmp_path):
    res = convert("--source", "kaggle", "--input", kaggle_head_ct_dir, "--out", tmp_path, "--formats", "manifest,nnunet")
    assert res.returncode == 1
    err = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and ".png" in err[0] and "display images" in err[0]
    assert not (tmp_path / "nnUNet_raw").exists()


def test_nnunetv2_verify_dataset_integrity_accepts_it(exported):
    verify = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity",
                                 reason="nnunetv2 is not installed (not a test dependency, see the module docstring)")
    _, raw, _ = exported
    verify.verify_dataset_integrity(str(raw), num_processes=1)
