"""Validation catches each broken case, built from small hand-made COCO dicts."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from converters.validation import validate_coco, validate_coco_file


def good() -> dict:
    full = np.zeros((10, 12), np.uint8)
    full[2:5, 3:7] = 1
    rle = mask_utils.encode(np.asfortranarray(full))
    return {
        "info": {}, "licenses": [],
        "categories": [{"id": 1, "name": "EDH"}, {"id": 2, "name": "SDH"}],
        "images": [{"id": 1, "file_name": "a.png", "height": 10, "width": 12},
                   {"id": 2, "file_name": "b.png", "height": 10, "width": 12}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 12, "bbox": [3, 2, 4, 3],
             "segmentation": [[3, 2, 7, 2, 7, 5, 3, 5]]},
            {"id": 2, "image_id": 1, "category_id": 2, "iscrowd": 0, "area": 12, "bbox": [3, 2, 4, 3],
             "segmentation": {"size": [10, 12], "counts": rle["counts"].decode()}},
        ],
    }


def broken(edit) -> set[str]:
    data = copy.deepcopy(good())
    edit(data)
    report = validate_coco(data)
    assert not report.ok
    for p in report.errors:
        assert p.where and p.message  # every problem names where it is
    return report.codes()


def test_good_file_is_clean():
    report = validate_coco(good())
    assert report.ok and report.problems == []
    assert report.counts["images"] == 2 and report.counts["negative_images"] == 1
    assert report.counts["polygons"] == 1 and report.counts["rles"] == 1


def ann(data, i=0):
    return data["annotations"][i]


@pytest.mark.parametrize("edit, code", [
    (lambda d: d.pop("images"), "schema"),
    (lambda d: d["images"].append(dict(d["images"][0])), "duplicate_image_id"),
    (lambda d: d["annotations"].append(dict(ann(d))), "duplicate_annotation_id"),
    (lambda d: ann(d).update(image_id=99), "missing_image"),
    (lambda d: ann(d).update(category_id=7), "unknown_category"),
    (lambda d: ann(d).update(bbox=[10, 2, 4, 3]), "bbox_outside_image"),
    (lambda d: ann(d).update(bbox=[3, 2, 0, 3]), "bbox_empty"),
    (lambda d: ann(d).update(bbox=[3, 2, 4]), "bbox_invalid"),
    (lambda d: ann(d).update(segmentation=[[3, 2, 7, 2]]), "polygon_too_few_points"),
    (lambda d: ann(d).update(segmentation=[[3, 2, 7, 2, 7, 2, 3, 2]]), "polygon_too_few_points"),
    (lambda d: ann(d).update(segmentation=[[3, 2, 7, 2, 7, 5, 3]]), "polygon_odd"),
    (lambda d: ann(d).update(segmentation=[]), "segmentation_empty"),
    (lambda d: ann(d).pop("segmentation"), "segmentation_empty"),
    (lambda d: ann(d, 1)["segmentation"].update(size=[12, 10]), "rle_size_mismatch"),
    (lambda d: ann(d, 1)["segmentation"].update(counts=[5, 3]), "rle_counts_mismatch"),
    (lambda d: ann(d, 1)["segmentation"].update(counts="\x01\x02"), "rle_invalid"),
    (lambda d: ann(d, 1)["segmentation"].update(counts=[120]), "segmentation_empty"),
    (lambda d: d["images"][0].update(height=0), "image_size_invalid"),
    (lambda d: d["categories"].append({"id": 1, "name": "x"}), "duplicate_category_id"),
    (lambda d: ann(d).update(iscrowd=2), "iscrowd_invalid"),
    (lambda d: ann(d).update(id="1"), "annotation_id_invalid"),
    (lambda d: d["annotations"].append({**ann(d), "id": 9}), "duplicate_annotation"),
    (lambda d: d["images"][1].update(file_name="a.png"), "duplicate_file_name"),
    (lambda d: d["images"][1].update(file_name="../../etc/b.png"), "file_name_outside_root"),
    (lambda d: d["images"][1].update(file_name="/abs/b.png"), "file_name_outside_root"),
    (lambda d: d["images"][1].update(file_name="C:\\data\\b.png"), "file_name_outside_root"),
    (lambda d: d["images"][1].update(file_name="train\\..\\..\\b.png"), "file_name_outside_root"),
])
def test_each_broken_case_is_caught(edit, code):
    assert code in broken(edit)


def test_problems_name_the_annotation():
    data = good()
    data["annotations"][1]["segmentation"]["size"] = [12, 10]
    (problem,) = validate_coco(data).errors
    assert problem.where.startswith("annotation 2") and "[12, 10]" in problem.message


def test_xyxy_bbox_is_a_warning():
    data = good()
    data["annotations"][0]["bbox"] = [3, 2, 7, 5]  # xyxy by mistake, still inside the image
    report = validate_coco(data)
    assert report.ok and "bbox_mismatch" in report.codes()


def test_file_entry_points(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps(good()))
    assert validate_coco_file(path).ok
    path.write_text("{not json")
    report = validate_coco_file(path)
    assert not report.ok and report.codes() == {"invalid_json"} and str(path) in report.summary()
    with pytest.raises(FileNotFoundError, match="nope.json"):
        validate_coco_file(tmp_path / "nope.json")
    assert not validate_coco([1, 2]).ok


def test_box_only_annotations_when_segmentation_is_not_required():
    data = good()
    for a in data["annotations"]:
        a.pop("segmentation")
    assert "segmentation_empty" in validate_coco(data).codes()
    assert validate_coco(data, require_segmentation=False).ok
    data["annotations"][0]["segmentation"] = []
    assert "segmentation_empty" in validate_coco(data, require_segmentation=False).codes()


def test_subfolders_and_same_annotation_in_two_categories_are_fine():
    data = good()
    data["images"][1]["file_name"] = "train/P1/b..png"
    assert validate_coco(data).ok  # '..' inside a name is not a parent folder


def test_deeply_nested_json_is_reported_not_raised(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    report = validate_coco_file(path)
    assert not report.ok and report.codes() == {"invalid_json"} and "nested too deeply" in report.summary()
