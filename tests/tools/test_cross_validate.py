"""tools/cross_validate.py on a tiny CT-ICH-layout release; the real-data recipe on the shared sample."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from hemo_mtl.data.phantom_display import write_ctich_phantom

REPO = Path(__file__).resolve().parents[2]
RECIPE = "configs/real/ctich_jpg.yaml"
TINY = ["data.image_size=32", "data.batch_size=4", "data.num_workers=0", "train.epochs=1", "train.progress=false",
        "train.num_threads=1", "train.lr_schedule.warmup_iters=2",
        "data.synthetic={patients: 1, seed: 0, size: 32, slices: 4, canvas: 40}"]


def test_cross_validation_tests_every_patient_once(tmp_path):
    release = tmp_path / "release"
    patients = write_ctich_phantom(release, patients=6, seed=3, size=32, slices=4, canvas=40, first_number=100)
    out = tmp_path / "cv"
    from hemo_mtl.cli import cross_validate as cv

    args = ["--config", str(REPO / RECIPE), "--out", str(out), "--folds", "3", f"data.root={release}", *TINY]
    assert cv.main(args) == 0
    folds = json.loads((out / "cv_folds.json").read_text())["folds"]
    assert sorted(p for f in folds for p in f) == sorted(patients)  # no patient in two folds, none left out
    tested = []
    for k in range(3):
        run = out / f"fold{k}"
        used = json.loads((run / "splits.json").read_text())
        assert sorted(used["test"]) == sorted(folds[k]) and sorted(used["val"]) == sorted(folds[(k + 1) % 3])
        table = pd.read_csv(run / "cv_predictions.csv", dtype={"patient_id": str})
        assert set(table.loc[table["role"] == "test", "patient_id"]) == set(folds[k])
        assert not set(table["patient_id"]) & {"900"}  # synthetic patients train only
        tested += sorted(set(table.loc[table["role"] == "test", "patient_id"]))
    assert sorted(tested) == sorted(patients)
    results = json.loads((out / "cv_results.json").read_text())
    assert {"slice/auc", "patient/ich_found", "patient/normal_flagged"} <= set(results["summary"])
    assert (out / "members.txt").read_text().count("model_final.pth") == 3
    # a rerun keeps the finished folds; another plan in the same folder is refused
    stamp = (out / "fold0" / "model_final.pth").stat().st_mtime_ns
    assert cv.main(args) == 0 and (out / "fold0" / "model_final.pth").stat().st_mtime_ns == stamp
    from hemo_mtl.config import ConfigError

    with pytest.raises(ConfigError, match="another config"):
        cv.main([*args, "train.lr=0.01"])


def test_recipe_trains_on_the_real_sample_and_predicts_a_patient_folder(ctich_jpg_dir, tmp_path):
    """The recipe from the docs on the shared CT-ICH sample (a few steps), then tools/predict.py on one
    patient's brain/ folder, whose _HGE_Seg.jpg masks are not slices."""
    run = tmp_path / "run"
    from hemo_mtl.cli import predict, train

    assert train.cli(["--config", str(REPO / RECIPE), f"output_dir={run}", f"data.root={ctich_jpg_dir}", *TINY]) == 0
    final = json.loads((run / "final_metrics.json").read_text())
    assert "cls/any/auc" in final and "seg/any/dice" in final
    splits = json.loads((run / "splits.json").read_text())
    assert not set(splits["val"]) & set(splits["train"]) and "900" not in splits["train"]
    folder = ctich_jpg_dir / "Patients_CT" / "081" / "brain"
    assert predict.main(["--weights", str(run / "model_final.pth"), "--input", str(folder),
                         "--out", str(tmp_path / "pred"), "--threads", "1"]) == 0
    slices = [p for p in folder.glob("*.jpg") if not p.name.endswith("_HGE_Seg.jpg")]
    summary = pd.read_csv(tmp_path / "pred" / "summary.csv")
    assert len(summary) == 1 and summary["status"].iloc[0] == "ok"
    assert len(list((tmp_path / "pred").rglob("*.png"))) >= len(slices)
