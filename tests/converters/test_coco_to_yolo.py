"""COCO -> YOLO labels and tree; the tree is checked by ultralytics itself when it is installed."""
from __future__ import annotations

import logging
import os

import cv2
import numpy as np
import pytest
import yaml
from pycocotools import mask as mask_utils
from scipy import ndimage

from converters.coco_to_yolo import export_yolo_split, write_yolo_tree, yolo_lines
from converters.mask_to_coco import CocoBuilder, MaskToCoco


def export(volume, prefix="p", seg_format="auto"):
    builder = CocoBuilder(MaskToCoco(seg_format=seg_format))
    builder.add_volume(volume, lambda k: f"{prefix}_{k:03d}.png", patient_id=prefix, source="hand")
    return builder.to_dict()


def write_pngs(coco, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for img in coco["images"]:
        cv2.imwrite(str(folder / img["file_name"]), np.full((img["height"], img["width"]), 60, np.uint8))
    return folder


def parse(line):
    values = line.split()
    return int(values[0]), np.asarray(values[1:], dtype=np.float64)


def test_detect_line_is_normalised_xywh_centre():
    coco = {"categories": [{"id": i, "name": str(i)} for i in range(1, 6)]}
    image = {"id": 1, "height": 50, "width": 100}
    ann = {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 5, 20, 10], "iscrowd": 0, "segmentation": []}
    (line,) = yolo_lines(coco, image, [ann], task="detect")
    cls, v = parse(line)
    assert cls == 2 and np.allclose(v, [20 / 100, 10 / 50, 20 / 100, 10 / 50])
    assert yolo_lines(coco, image, [dict(ann, iscrowd=1)], task="detect") == []
    with pytest.raises(ValueError, match="task"):
        yolo_lines(coco, image, [ann], task="pose")


def test_segment_lines_decode_to_the_hole_filled_components(volume):
    coco = export(volume)
    h, w = volume.shape[:2]
    anns = {}
    for a in coco["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    checked = 0
    for img in coco["images"]:
        lines = yolo_lines(coco, img, anns.get(img["id"], []))
        k = img["slice_idx"]
        assert len(lines) == len(anns.get(img["id"], []))
        for line in lines:
            cls, v = parse(line)
            assert 0 <= cls <= 4 and len(v) % 2 == 0 and len(v) >= 6
            assert v.min() >= 0 and v.max() <= 1
            pts = (v.reshape(-1, 2) * [w, h]).ravel().tolist()
            decoded = mask_utils.decode(mask_utils.frPyObjects([pts], h, w))[:, :, 0].astype(bool)
            labels, _ = ndimage.label(volume[:, :, k] == cls + 1, structure=np.ones((3, 3)))
            comp = labels == np.bincount(labels[decoded]).argmax()  # the component this line covers
            assert np.array_equal(decoded, ndimage.binary_fill_holes(comp))
            checked += 1
    assert checked == len(coco["annotations"])


def test_tree_negatives_missing_images_and_report(volume, tmp_path):
    coco = export(volume)
    src = write_pngs(coco, tmp_path / "png")
    (src / coco["images"][3]["file_name"]).unlink()
    report = export_yolo_split(coco, tmp_path / "yolo", "train", src, link="copy")
    assert report.images == len(coco["images"]) - 1 and report.missing_images == [str(src / "p_003.png")]
    labels = sorted((tmp_path / "yolo" / "labels" / "train").glob("*.txt"))
    assert [p.stem for p in labels] == [f"p_{k:03d}" for k in range(8) if k != 3]
    assert (tmp_path / "yolo/labels/train/p_000.txt").read_text() == ""  # negative slice: empty file
    assert (tmp_path / "yolo/images/train/p_000.png").is_file()
    assert report.negative_images == 2
    ring = [a["id"] for a in coco["annotations"] if a["image_id"] == 2 and a["category_id"] == 4]
    assert ring[0] in report.holes_filled and report.from_mask > 0


def test_write_yolo_tree_data_yaml(volume, tmp_path):
    splits = {}
    for split in ("train", "val"):
        coco = export(volume, prefix=split)
        splits[split] = (coco, write_pngs(coco, tmp_path / "png" / split))
    report = write_yolo_tree(splits, tmp_path / "yolo")
    data = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())
    assert os.path.isabs(data["path"]) and data["path"] == str((tmp_path / "yolo").resolve())
    assert data["train"] == "images/train" and data["val"] == "images/val"
    assert data["names"] == {0: "EDH", 1: "SDH", 2: "SAH", 3: "IPH", 4: "IVH"} and data["nc"] == 5
    assert report["splits"]["val"]["images"] == volume.shape[2]
    src = tmp_path / "png" / "train" / "train_001.png"
    assert os.stat(tmp_path / "yolo/images/train/train_001.png").st_ino == os.stat(src).st_ino  # hard link


@pytest.fixture
def ultralytics_offline(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("yolo_config")))
    return pytest.importorskip("ultralytics")


@pytest.mark.yolo
@pytest.mark.parametrize("task", ["segment", "detect"])
def test_ultralytics_accepts_the_tree(volume, tmp_path, ultralytics_offline, task):
    from ultralytics.data import YOLODataset
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils import LOGGER

    splits = {}
    for split in ("train", "val"):
        coco = export(volume, prefix=split)
        splits[split] = (coco, write_pngs(coco, tmp_path / "png" / split))
    write_yolo_tree(splits, tmp_path / "yolo", task=task)

    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    LOGGER.addHandler(handler)
    try:
        data = check_det_dataset(str(tmp_path / "yolo" / "data.yaml"))
        dataset = YOLODataset(img_path=data["val"], data=data, task=task, augment=False, imgsz=64, batch_size=2)
        sample = dataset[1]
    finally:
        LOGGER.removeHandler(handler)
    assert [r.getMessage() for r in records] == []
    assert data["nc"] == 5 and len(dataset) == volume.shape[2]
    coco = splits["val"][0]
    per_image = {img["file_name"]: sum(a["image_id"] == img["id"] for a in coco["annotations"]) for img in coco["images"]}
    for label in dataset.labels:
        n = per_image[os.path.basename(label["im_file"])]
        assert len(label["cls"]) == n
        assert len(label["segments"]) == (n if task == "segment" else 0)
    assert sample["cls"].shape[0] == per_image["val_001.png"]


def test_bad_annotations_are_named_and_source_folder_reuse_is_safe(tmp_path):
    coco = {"categories": [{"id": 1, "name": "EDH"}]}
    image = {"id": 1, "height": 8, "width": 8}
    bad = {"id": 7, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2], "segmentation": [[0, 0, 2, 0, 2]]}
    with pytest.raises(ValueError, match="annotation 7: polygon"):
        yolo_lines(coco, image, [bad])
    with pytest.raises(ValueError, match=r"annotation 7: RLE size \[4, 4\]"):
        yolo_lines(coco, image, [dict(bad, segmentation={"size": [4, 4], "counts": "04"})])
    # exporting into the folder the images already live in must not delete them
    src = tmp_path / "yolo" / "images" / "train"
    one = {**coco, "images": [dict(image, file_name="a.png")], "annotations": []}
    write_pngs(one, src)
    report = export_yolo_split(one, tmp_path / "yolo", "train", src)
    assert report.images == 1 and (src / "a.png").is_file()
