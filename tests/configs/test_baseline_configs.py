"""The published-baseline configs (configs/hemorica, physionet, dtvit, kaggle): every one loads,
builds and trains a short epoch offline; one fast build-and-train check per protocol, the rest slow."""
import json
import math
from pathlib import Path

import pytest

from hemo_mtl.config import load_config

REPO = Path(__file__).resolve().parents[2]

PROTOCOL_DIRS = ("hemorica", "physionet", "dtvit", "kaggle")
CONFIGS = sorted(p for d in PROTOCOL_DIRS for p in (REPO / "configs" / d).glob("*.yaml") if not p.name.startswith("_"))
TINY = ["data.root=null", "data.source=null", "data.phantom.patients=5", "data.phantom.size=64",
        "data.phantom.slices=6", "data.image_size=64", "data.batch_size=4", "data.num_workers=0", "train.epochs=1",
        "train.num_threads=1", "train.progress=false", "train.eval_period=0", "train.checkpoint_period=0",
        "eval.image_panels=0"]


def _overrides(cfg_path: Path, out: Path) -> list[str]:
    cfg = load_config(cfg_path)
    extra = [f"output_dir={out}"] + TINY
    if (cfg["data"]["patches"] or {}).get("size"):
        extra += ["data.patches.size=32", "data.patches.stride=16", "data.patches.neg_keep=0.5"]
    if (cfg["eval"]["sliding_window"] or {}).get("size"):
        extra += ["eval.sliding_window.size=32", "eval.sliding_window.stride=16"]
    if (cfg["data"]["extra"] or {}).get("center_crop"):
        extra += ["data.extra.center_crop=48"]
    if cfg["eval"]["select"]["rule"]:
        extra += ["eval.select.k=1", "eval.select.after_epoch=0"]
    if cfg["data"]["split"]["folds"]:
        extra += ["data.split.folds=2"]
    name = cfg["model"]["backbone"]["name"]
    if name.startswith("vit_"):
        extra += ["model.backbone.name=vit_tiny_patch16_224"]
    if "swinv2" in name:
        extra += ["model.backbone.kwargs.img_size=64"]
    return extra


def _train(cfg_path: Path, out: Path, extra=()) -> dict:
    from hemo_mtl.cli import train as train_net

    final = train_net.main(train_net.parse_args(["--config", str(cfg_path), *_overrides(cfg_path, out), *extra]))
    assert (out / "final_metrics.json").is_file() and (out / "model_final.pth").is_file()
    assert final["init"] == "random"
    return final


def test_there_is_a_config_per_published_model():
    names = {p.stem for p in CONFIGS}
    for m in ("resnet18", "resnet50", "densenet121", "densenet161", "efficientnetv2_s", "efficientnetv2_l",
              "swinv2_t", "swinv2_s", "mobilevit_xs", "mobilevit_s"):
        assert f"cls_{m}" in names
    for arch in ("unet", "pspnet"):
        for enc in ("efficientnet_b0", "efficientnet_b5", "resnet18", "resnet50", "densenet121", "densenet161",
                    "swinv2_t", "swinv2_s"):
            assert f"seg_{arch}_{enc}" in names
    assert {"unet_patch", "vit_dual", "resnet18_dual", "vgg16_dual"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_loads_and_states_its_gpu_time(path):
    cfg = load_config(path)
    assert "GPU time" in path.read_text().split("\n_base_")[0].split("\nseed")[0]
    assert cfg["model"]["backbone"]["weights"] is None  # random init unless a local file is named
    assert cfg["model"]["backbone"]["in_chans"] == len(cfg["data"]["windows"])


def test_hemorica_protocol_values():
    cfg = load_config(REPO / "configs/hemorica/cls_mobilevit_xs.yaml")
    assert cfg["data"]["windows"] == ["brain"] * 3 and cfg["data"]["image_size"] == 224
    assert cfg["data"]["split"] == {"seed": 32, "val": 0.2, "test": 0.0, "folds": 0, "fold": 0,
                                    "held_out_as": "val"}
    assert (cfg["train"]["optimizer"], cfg["data"]["batch_size"], cfg["train"]["epochs"]) == ("adam", 16, 50)
    assert cfg["train"]["lr"] == 1e-4 and load_config(REPO / "configs/hemorica/cls_resnet50.yaml")["train"]["lr"] == 1e-3
    assert cfg["eval"]["select"] == {"rule": "lowest_val_loss", "k": 10, "after_epoch": 10}


def test_hemorica_cls_trains_and_reports_the_selected_epochs(tmp_path):
    """3 epochs, k=1 after epoch 1: select/* must equal the metrics of the lower-loss epoch of 2 and 3."""
    path = REPO / "configs/hemorica/cls_resnet18.yaml"
    final = _train(path, tmp_path, ["train.epochs=3", "eval.select.after_epoch=1"])
    records = [json.loads(line) for line in (tmp_path / "epochs.json").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    best = min(records[1:], key=lambda r: r["val_loss"])
    assert final["select/epochs"] == [best["epoch"]]
    for key in ("cls/any/auc", "cls/any/specificity"):
        want = best[key]
        got = final[f"select/{key}"]
        assert (want is None and math.isnan(got)) or got == pytest.approx(want)
    assert "cls/EDH/auc" not in final or math.isnan(final["cls/EDH/auc"])  # binary protocol: subtypes unscored
    assert "mean over the 1 epochs" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("name", ["hemorica/seg_unet_resnet18", "hemorica/seg_pspnet_resnet18",
                                  "physionet/unet_patch", "dtvit/vit_dual"])
def test_one_fast_training_run_per_protocol(name, tmp_path):
    final = _train(REPO / "configs" / f"{name}.yaml", tmp_path)
    if name.startswith("hemorica/seg"):
        assert 0.0 <= final["seg/any/dice"] <= 1.0 and "seg/any/iou" in final
    if name == "physionet/unet_patch":
        assert "cls/any/recall" in final and "cls/any/specificity" in final and "seg/any/dice" in final
        assert final["fold"] == 0
        splits = json.loads((tmp_path / "splits.json").read_text())
        assert len(splits["folds"]) == 2 and splits["val"] == splits["folds"][0]
    if name == "dtvit/vit_dual":
        assert "location/accuracy" in final and "location/cm/deep/lobar" in final and "cls/any/tp" in final


def test_kaggle_fold_run(kaggle_head_ct_dir, tmp_path):
    path = REPO / "configs/kaggle/cls_resnet18.yaml"
    final = _train(path, tmp_path, [f"data.root={kaggle_head_ct_dir}", "data.source=kaggle", "data.split.fold=1"])
    splits = json.loads((tmp_path / "splits.json").read_text())
    assert final["fold"] == 1 and splits["val"] == splits["folds"][1]
    assert final["cls/any/n"] == len(splits["val"])  # one slice per patient in head_ct


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_config_trains_one_short_epoch(path, tmp_path):
    _train(path, tmp_path)
