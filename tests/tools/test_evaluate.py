"""tools/evaluate.py end to end on tiny files (subprocess), and its error paths."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from hemo_mtl.categories import LABELS, coco_categories
from hemo_mtl.cli import evaluate as evaluate_tool
from hemo_mtl.evaluation import coco_metrics

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "evaluate.py"


def run_tool(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


TOOL_MODULE = evaluate_tool


def run_in_process(capsys, *args) -> subprocess.CompletedProcess:
    """Same contract as run_tool, without a new interpreter (error paths; kept fast)."""
    rc = TOOL_MODULE.main([str(a) for a in args])
    cap = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, cap.out, cap.err)


def _read_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture
def cls_files(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(f"P{p}", s) for p in range(6) for s in range(5)]
    y = (rng.random((len(rows), 6)) < 0.4).astype(int)
    prob = np.clip(0.4 * y + 0.6 * rng.random(y.shape), 0, 1).round(4)
    gt = pd.DataFrame(rows, columns=["patient_id", "slice_idx"])
    pred = gt.copy()
    for j, label in enumerate(LABELS):
        gt[label] = y[:, j].astype(object)
        pred[label] = prob[:, j]
    gt.loc[:4, list(LABELS[1:])] = ""  # patient P0: subtypes unknown
    gt.to_csv(tmp_path / "gt.csv", index=False)
    pred.to_csv(tmp_path / "pred.csv", index=False)
    return tmp_path, gt, pred, y, prob


def test_cls_end_to_end_matches_sklearn(cls_files):
    tmp, gt, pred, y, prob = cls_files
    out = tmp / "out"
    res = run_tool("--task", "cls", "--gt", tmp / "gt.csv", "--pred", tmp / "pred.csv", "--out", out,
                   "--bootstrap", "50", "--val-gt", tmp / "gt.csv", "--val-pred", tmp / "pred.csv")
    assert res.returncode == 0, res.stderr
    m = _read_metrics(out)
    assert m["cls/any/auc"] == pytest.approx(roc_auc_score(y[:, 0], prob[:, 0]))
    assert m["cls/SDH/f1"] == pytest.approx(f1_score(y[5:, 2], prob[5:, 2] >= 0.5))  # P0 unknown
    assert m["cls/SDH/n"] == 25 and "cls/any/auc_ci95_low" in m and "cls/any/f1@tuned" in m
    report = (out / "report.md").read_text()
    assert "## cls" in report and "## Conventions" in report and (out / "roc_pr.png").stat().st_size > 0


def test_cls_missing_predictions_are_reported_and_counted_as_misses(cls_files, capsys):
    tmp, gt, pred, y, prob = cls_files
    pred.iloc[1:].to_csv(tmp / "partial.csv", index=False)
    res = run_in_process(capsys, "--task", "cls", "--gt", tmp / "gt.csv", "--pred", tmp / "partial.csv", "--out", tmp / "o",
                   "--bootstrap", "0")
    assert res.returncode == 0, res.stderr
    assert "1 of 30 slices" in res.stderr and "counted as misses" in res.stderr
    m = _read_metrics(tmp / "o")
    p = prob.copy()
    p[0] = 0.0
    assert m["cls/any/recall"] == pytest.approx(np.mean(p[y[:, 0] == 1, 0] >= 0.5))
    assert m["cls/all/n_missing_predictions"] == 1


@pytest.mark.parametrize("case, message", [
    ("extra_id", "have no ground truth"),
    ("nan", "row 4 column SAH"),
    ("missing_column", "missing column(s) IVH"),
    ("bad_truth", "expected 0, 1 or empty"),
])
def test_cls_error_paths(cls_files, capsys, case, message):
    tmp, gt, pred, _, _ = cls_files
    if case == "extra_id":
        pred.loc[len(pred)] = ["P99", 0] + [0.5] * 6
    elif case == "nan":
        pred.loc[2, "SAH"] = np.nan
    elif case == "missing_column":
        pred = pred.drop(columns=["IVH"])
    elif case == "bad_truth":
        gt.loc[3, "any"] = 2
        gt.to_csv(tmp / "gt.csv", index=False)
    pred.to_csv(tmp / "pred.csv", index=False)
    res = run_in_process(capsys, "--task", "cls", "--gt", tmp / "gt.csv", "--pred", tmp / "pred.csv",
                         "--out", tmp / "o")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def _coco_files(tmp):
    images = [{"id": i, "file_name": f"s{i}.png", "height": 64, "width": 64} for i in (1, 2, 3)]
    anns = [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 5, "bbox": [30, 30, 8, 8], "area": 64, "iscrowd": 0}]
    gt = {"images": images, "annotations": anns, "categories": coco_categories()}
    results = [{"image_id": 1, "category_id": 2, "bbox": [11, 10, 20, 20], "score": 0.9},
               {"image_id": 1, "category_id": 2, "bbox": [11, 11, 20, 20], "score": 0.8},
               {"image_id": 3, "category_id": 4, "bbox": [0, 0, 5, 5], "score": 0.4}]
    (tmp / "gt.json").write_text(json.dumps(gt))
    (tmp / "res.json").write_text(json.dumps(results))
    return gt, results


def test_det_end_to_end_matches_library(tmp_path):
    gt, results = _coco_files(tmp_path)
    res = run_tool("--task", "det", "--gt", tmp_path / "gt.json", "--pred", tmp_path / "res.json",
                   "--out", tmp_path / "o")
    assert res.returncode == 0, res.stderr
    m = _read_metrics(tmp_path / "o")
    ref = coco_metrics(gt, results, "bbox", engine="pycocotools")
    for k in ("det/bbox/AP", "det/bbox/AP50", "det/bbox/AR100", "det/bbox/AP50/SDH", "det/bbox/AP/IVH"):
        assert m[k] == pytest.approx(ref[k], abs=1e-6)
    assert m["det/bbox/APl"] is None  # undefined -> JSON null
    assert m["det/froc/sens@1fp"] == pytest.approx(0.5) and m["det/all/n_images_without_predictions"] == 1
    assert (tmp_path / "o" / "froc_2d.png").exists()


def test_det_error_paths(tmp_path, capsys):
    gt, results = _coco_files(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps(results + [{"image_id": 9, "category_id": 1,
                                                              "bbox": [0, 0, 1, 1], "score": 0.1}]))
    res = run_in_process(capsys, "--task", "det", "--gt", tmp_path / "gt.json", "--pred", tmp_path / "bad.json",
                         "--out", tmp_path / "o")
    assert res.returncode == 2 and "image_id 9 is not in the ground truth" in res.stderr
    res = run_in_process(capsys, "--task", "det", "--gt", tmp_path / "nope.json", "--pred", tmp_path / "res.json",
                         "--out", tmp_path / "o")
    assert res.returncode == 2 and res.stderr.startswith("error: ground truth file not found")


def _nifti(path, data, spacing):
    img = nib.Nifti1Image(data.astype(np.uint8), np.diag([*spacing, 1.0]))
    nib.save(img, str(path))


def test_seg_end_to_end_nifti_and_png(tmp_path, capsys):
    gdir, pdir = tmp_path / "gt", tmp_path / "pred"
    gdir.mkdir(), pdir.mkdir()
    g = np.zeros((16, 16, 4), np.uint8)
    p = np.zeros_like(g)
    g[2:6, 2:6, 1:3] = 4     # 32 voxels
    p[2:6, 2:7, 1:3] = 4     # 40 voxels, 32 overlap
    _nifti(gdir / "case1.nii.gz", g, (0.5, 0.5, 5.0))
    _nifti(pdir / "case1.nii.gz", p, (0.5, 0.5, 5.0))
    _nifti(gdir / "case2.nii", g, (1.0, 1.0, 2.0))  # no prediction: a miss
    res = run_tool("--task", "seg", "--gt-masks", gdir, "--pred-masks", pdir, "--out", tmp_path / "o", "--hd95")
    assert res.returncode == 0, res.stderr
    assert "1 of 2 ground-truth masks have no prediction" in res.stderr
    m = _read_metrics(tmp_path / "o")
    assert m["seg/IPH/dice"] == pytest.approx(2 * 32 / (2 * 32 + 8 + 32))
    assert m["seg3d/IPH/dice"] == pytest.approx((64 / 72 + 0.0) / 2)
    v1, v2 = 32 * 1.25 / 1000, 32 * 2.0 / 1000  # mL
    assert m["volume/IPH/gt_mean_ml"] == pytest.approx((v1 + v2) / 2)
    assert m["volume/IPH/mae_ml"] == pytest.approx((8 * 1.25 / 1000 + v2) / 2)
    assert m["seg3d/IPH/hd95"] == pytest.approx(0.5) and m["seg3d/IPH/n_hd95"] == 1
    assert (tmp_path / "o" / "bland_altman_any.png").exists()

    pngs, pngp = tmp_path / "gpng", tmp_path / "ppng"
    pngs.mkdir(), pngp.mkdir()
    cv2.imwrite(str(pngs / "s1.png"), g[:, :, 1])
    cv2.imwrite(str(pngp / "s1.png"), p[:, :, 1])
    res = run_in_process(capsys, "--task", "seg", "--gt-masks", pngs, "--pred-masks", pngp, "--out", tmp_path / "o2")
    assert res.returncode == 0, res.stderr
    m = _read_metrics(tmp_path / "o2")
    assert m["seg/IPH/dice"] == pytest.approx(2 * 16 / (2 * 16 + 4)) and "volume/IPH/mae_ml" not in m

    cv2.imwrite(str(pngp / "s1.png"), np.zeros((8, 8), np.uint8))
    res = run_in_process(capsys, "--task", "seg", "--gt-masks", pngs, "--pred-masks", pngp, "--out", tmp_path / "o3")
    assert res.returncode == 2 and "differs from the ground truth" in res.stderr
    cv2.imwrite(str(pngp / "other.png"), np.zeros((16, 16), np.uint8))
    res = run_in_process(capsys, "--task", "seg", "--gt-masks", pngs, "--pred-masks", pngp, "--out", tmp_path / "o3")
    assert res.returncode == 2 and "have no ground truth" in res.stderr and "Traceback" not in res.stderr


def test_error_in_a_real_process_is_one_line_exit_2(cls_files):
    tmp, gt, pred, _, _ = cls_files
    pred.loc[len(pred)] = ["P99", 0] + [0.5] * 6
    pred.to_csv(tmp / "pred.csv", index=False)
    res = run_tool("--task", "cls", "--gt", tmp / "gt.csv", "--pred", tmp / "pred.csv", "--out", tmp / "o")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        f"error: {tmp / 'pred.csv'}: 1 prediction row(s) have no ground truth in {tmp / 'gt.csv'}, "
        "e.g. patient_id=P99 slice_idx=0"]
    assert not (tmp / "o" / "metrics.json").exists()


def test_seg_affine_mismatch_is_warned(tmp_path, capsys):
    gdir, pdir = tmp_path / "gt", tmp_path / "pred"
    gdir.mkdir(), pdir.mkdir()
    g = np.zeros((8, 8, 2), np.uint8)
    g[1:4, 1:4, 0] = 1
    _nifti(gdir / "a.nii.gz", g, (1.0, 1.0, 3.0))
    _nifti(pdir / "a.nii.gz", g, (1.0, 1.0, 5.0))
    res = run_in_process(capsys, "--task", "seg", "--gt-masks", gdir, "--pred-masks", pdir, "--out", tmp_path / "o")
    assert res.returncode == 0 and "affine differs" in res.stderr
    m = _read_metrics(tmp_path / "o")
    assert m["seg/EDH/dice"] == 1.0 and m["volume/EDH/gt_mean_ml"] == pytest.approx(9 * 3.0 / 1000)


def test_det_ground_truth_is_validated_like_convert_validate(tmp_path, capsys):
    gt, _ = _coco_files(tmp_path)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt["annotations"]]
    (tmp_path / "perfect.json").write_text(json.dumps(perfect))
    res = run_in_process(capsys, "--task", "det", "--gt", tmp_path / "gt.json", "--pred", tmp_path / "perfect.json",
                         "--out", tmp_path / "o")
    assert res.returncode == 0 and _read_metrics(tmp_path / "o")["det/bbox/AP"] == pytest.approx(1.0)
    # the same lesion annotated twice: scored, the perfect predictions would lose AP; refused instead
    gt["annotations"].append({**gt["annotations"][0], "id": 3})
    (tmp_path / "dup.json").write_text(json.dumps(gt))
    res = run_in_process(capsys, "--task", "det", "--gt", tmp_path / "dup.json", "--pred", tmp_path / "perfect.json",
                         "--out", tmp_path / "o2")
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "annotation 3 (image 1)" in res.stderr and "[duplicate_annotation]" in res.stderr
    assert not (tmp_path / "o2" / "metrics.json").exists()
    gt["annotations"].pop()
    gt["images"][1]["file_name"] = "s1.png"
    (tmp_path / "dupname.json").write_text(json.dumps(gt))
    res = run_in_process(capsys, "--task", "det", "--gt", tmp_path / "dupname.json", "--pred",
                         tmp_path / "perfect.json", "--out", tmp_path / "o3")
    assert res.returncode == 2 and "[duplicate_file_name]" in res.stderr


def test_deeply_nested_json_is_one_line(tmp_path, capsys):
    gt, _ = _coco_files(tmp_path)
    (tmp_path / "deep.json").write_text("[" * 5_000_000 + "]" * 5_000_000)  # 10 MB
    res = run_in_process(capsys, "--task", "det", "--gt", tmp_path / "gt.json", "--pred", tmp_path / "deep.json",
                         "--out", tmp_path / "o")
    assert res.returncode == 2 and res.stderr == f"error: {tmp_path / 'deep.json'}: JSON nested too deeply to read\n"


def test_seg_spacing_comes_from_the_affine_not_pixdim(tmp_path, capsys):
    """Volumes as predict measures them: 0.5 x 0.5 x 5 mm voxels by the affine, whatever pixdim says."""
    gdir, pdir = tmp_path / "gt", tmp_path / "pred"
    gdir.mkdir(), pdir.mkdir()
    g = np.zeros((8, 8, 3), np.uint8)
    g[1:4, 1:4, 0:2] = 4  # 18 voxels
    for folder in (gdir, pdir):
        img = nib.Nifti1Image(g, np.diag([0.5, 0.5, 5.0, 1.0]))
        img.header.set_zooms((2.0, 2.0, 2.5))  # a header whose pixdim disagrees (8x the voxel volume)
        nib.save(img, str(folder / "a.nii.gz"))
    assert nib.load(str(gdir / "a.nii.gz")).header.get_zooms()[:3] == (2.0, 2.0, 2.5)
    res = run_in_process(capsys, "--task", "seg", "--gt-masks", gdir, "--pred-masks", pdir, "--out", tmp_path / "o")
    assert res.returncode == 0, res.stderr
    from hemo_mtl.inference.postprocess import volumes_ml
    from hemo_mtl.inference.predictor import Scan

    expected = volumes_ml(g, Scan("a", "hu", g, np.diag([0.5, 0.5, 5.0, 1.0])).spacing)["IPH"]  # predict's rule
    assert expected == pytest.approx(18 * 1.25 / 1000)
    assert _read_metrics(tmp_path / "o")["volume/IPH/gt_mean_ml"] == pytest.approx(expected)
