"""mask -> COCO export, checked against pycocotools decoding and scipy.ndimage labelling."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import ndimage

import hemo_mtl
from converters.mask_to_coco import CocoBuilder, MaskToCoco, as_label_mask, make_info, volume_instances
from converters.validation import validate_coco
from hemo_mtl.categories import coco_categories

from converter_cases import components


def export(volume, tmp_path, **kw):
    builder = CocoBuilder(MaskToCoco(**kw))
    builder.add_volume(volume, lambda k: f"p1_{k:04d}.png", patient_id="p1", source="hand")
    coco = builder.to_dict(make_info("hand", window="brain", split_seed=7, split="train"),
                           licenses=[{"id": 1, "name": "CC-BY-4.0", "url": ""}])
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    with contextlib.redirect_stdout(io.StringIO()):
        api = COCO(str(path))
    return builder, coco, api


def test_every_annotation_decodes_to_its_component(volume, tmp_path):
    builder, coco, api = export(volume, tmp_path)
    by_slice = {img["slice_idx"]: img["id"] for img in coco["images"]}
    ious = []
    for k in range(volume.shape[2]):
        anns = api.loadAnns(api.getAnnIds(imgIds=[by_slice[k]]))
        ref = components(volume[:, :, k])
        assert len(anns) == len(ref), f"slice {k}"
        for cat, comp in ref:
            # the annotation of this component: same category, bbox == scipy's tight box
            rows, cols = ndimage.find_objects(comp.astype(np.uint8))[0]
            box = [cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start]
            match = [a for a in anns if a["category_id"] == cat and a["bbox"] == box]
            assert len(match) == 1, f"slice {k} category {cat} box {box}"
            ann = match[0]
            decoded = api.annToMask(ann).astype(bool)
            assert ann["area"] == comp.sum()
            if isinstance(ann["segmentation"], dict):
                assert np.array_equal(decoded, comp), f"RLE not exact: annotation {ann['id']}"
            else:
                assert len(ann["segmentation"]) == 1
                iou = (decoded & comp).sum() / (decoded | comp).sum()
                assert iou >= 0.95, f"annotation {ann['id']} IoU {iou}"
                ious.append(iou)
    assert ious and np.mean(ious) >= 0.98
    assert min(ious) == 1.0  # corner-traced polygons are exact, not just close


def test_images_one_per_slice_with_negatives_and_extra_keys(volume, tmp_path):
    builder, coco, _ = export(volume, tmp_path)
    assert len(coco["images"]) == volume.shape[2]
    annotated = {a["image_id"] for a in coco["annotations"]}
    negatives = [img for img in coco["images"] if img["id"] not in annotated]
    assert sorted(img["slice_idx"] for img in negatives) == [0, 7]
    assert builder.report.negative_images == 2
    for img in coco["images"]:
        assert (img["height"], img["width"]) == volume.shape[:2]
        assert img["patient_id"] == "p1" and img["source"] == "hand"
        assert img["file_name"] == f"p1_{img['slice_idx']:04d}.png"
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    assert [i["id"] for i in coco["images"]] == list(range(1, len(coco["images"]) + 1))
    assert all(a["iscrowd"] == 0 for a in coco["annotations"])
    assert coco["categories"] == coco_categories()
    assert coco["info"]["hemo_mtl_version"] == hemo_mtl.__version__
    assert coco["info"]["window"] == "brain" and coco["info"]["split_seed"] == 7
    assert coco["licenses"][0]["name"] == "CC-BY-4.0"


def test_cocoeval_gt_as_detections_gives_ap_one(volume, tmp_path):
    _, coco, api = export(volume, tmp_path)
    for iou_type in ("bbox", "segm"):
        dets = []
        for a in coco["annotations"]:
            det = {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            if iou_type == "segm":
                rle = api.annToRLE(a)
                det["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"]}
            dets.append(det)
        with contextlib.redirect_stdout(io.StringIO()):
            res = api.loadRes(dets)
            ev = COCOeval(api, res, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        assert ev.stats[0] == pytest.approx(1.0), iou_type  # AP@[.5:.95]
        assert ev.stats[1] == pytest.approx(1.0), iou_type  # AP50


def test_rle_reasons_holes_and_self_touching(volume):
    conv = MaskToCoco()
    ring = [i for i in conv.instances(volume[:, :, 1]) if i["category_id"] == 4]
    assert len(ring) == 1 and ring[0]["format"] == "rle" and ring[0]["rle_reason"] == "holes"
    pair = [i for i in conv.instances(volume[:, :, 2]) if i["area"] == 2]
    assert len(pair) == 1 and pair[0]["rle_reason"] == "self_touching"  # two pixels meeting at a corner
    single = [i for i in conv.instances(volume[:, :, 2]) if i["area"] == 1]
    assert len(single) == 3 and all(i["format"] == "polygon" for i in single)


def test_hole_is_kept_exactly():
    mask = np.zeros((9, 9), np.uint8)
    mask[1:8, 1:8] = 2
    mask[3:6, 3:6] = 0
    (inst,) = MaskToCoco().instances(mask, with_mask=True)
    from pycocotools import mask as mask_utils

    rle = {"size": inst["segmentation"]["size"], "counts": inst["segmentation"]["counts"].encode()}
    assert np.array_equal(mask_utils.decode(rle).astype(bool), mask == 2)
    assert np.array_equal(inst["mask"], mask == 2)
    assert inst["area"] == 49 - 9


def test_touching_components_of_different_subtypes_stay_separate():
    mask = np.zeros((6, 8), np.uint8)
    mask[1:5, 1:4] = 2
    mask[1:5, 4:7] = 5
    insts = MaskToCoco().instances(mask, with_mask=True)
    assert sorted(i["category_id"] for i in insts) == [2, 5]
    assert not (insts[0]["mask"] & insts[1]["mask"]).any()
    assert {tuple(i["bbox"]) for i in insts} == {(1, 1, 3, 4), (4, 1, 3, 4)}


def test_one_pixel_and_border_lesions_have_exact_boxes():
    mask = np.zeros((5, 7), np.uint8)
    mask[0, 0] = 1
    mask[4, 6] = 3
    mask[2, 3:7] = 4  # touches the right border
    insts = {i["category_id"]: i for i in MaskToCoco().instances(mask)}
    assert insts[1]["bbox"] == [0, 0, 1, 1] and insts[1]["area"] == 1
    assert insts[3]["bbox"] == [6, 4, 1, 1]
    assert insts[4]["bbox"] == [3, 2, 4, 1]
    pixel = np.asarray(insts[1]["segmentation"][0]).reshape(-1, 2)
    assert sorted(map(tuple, pixel.tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1)]  # the pixel's corners


def test_polygons_are_valid_for_consumers(volume):
    """>= 3 distinct points, even coordinate count >= 8, one orientation (positive shoelace area)."""
    for k in range(volume.shape[2]):
        for inst in MaskToCoco().instances(volume[:, :, k]):
            if inst["format"] != "polygon":
                continue
            (part,) = inst["segmentation"]
            assert len(part) % 2 == 0 and len(part) >= 8
            pts = np.asarray(part, float).reshape(-1, 2)
            assert len(np.unique(pts, axis=0)) == len(pts) >= 3  # distinct, no self-touching vertex
            x, y = pts[:, 0], pts[:, 1]
            assert 0.5 * (x @ np.roll(y, -1) - np.roll(x, -1) @ y) > 0


def test_export_avoids_consumer_traps(volume, tmp_path):
    _, coco, _ = export(volume, tmp_path)
    report = validate_coco(coco)
    assert report.problems == []
    assert report.counts["rles"] > 0 and report.counts["polygons"] > 0
    for a in coco["annotations"]:
        seg = a["segmentation"]
        assert seg  # never empty
        if isinstance(seg, dict):
            assert seg["size"] == [volume.shape[0], volume.shape[1]]
            assert isinstance(seg["counts"], str)
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])


def test_thin_streaks_round_trip_exactly(volume):
    streaks = volume[:, :, 4]
    for inst in MaskToCoco().instances(streaks, with_mask=True):
        from converters.rle import decode

        assert np.array_equal(decode(inst["segmentation"], *streaks.shape).astype(bool), inst["mask"])
    assert len(MaskToCoco().instances(streaks)) == len(components(streaks)) == 4


def test_min_area_components_are_reported_not_dropped_silently(volume):
    builder = CocoBuilder(MaskToCoco(min_area=3))
    builder.add_volume(volume, [f"s{k}.png" for k in range(volume.shape[2])], patient_id="p", source="hand")
    expected = [(k, c, int(m.sum())) for k in range(volume.shape[2]) for c, m in components(volume[:, :, k]) if m.sum() < 3]
    got = [(builder.images[e["image_id"] - 1]["slice_idx"], e["category_id"], e["area"]) for e in builder.report.below_min_area]
    assert sorted(got) == sorted(expected) and len(expected) >= 4
    assert all(a["area"] >= 3 for a in builder.annotations)
    assert "below min_area" in builder.report.summary()


def test_seg_format_rle_and_polygon():
    mask = np.zeros((10, 10), np.uint8)
    mask[1:9, 1:9] = 4
    mask[4:6, 4:6] = 0
    mask[0, 0] = 1
    rle = MaskToCoco(seg_format="rle").instances(mask)
    assert all(i["format"] == "rle" and i["rle_reason"] == "rle_requested" for i in rle)
    builder = CocoBuilder(MaskToCoco(seg_format="polygon"))
    builder.add_slice(builder.add_image("a.png", 10, 10), mask)
    assert builder.report.rles == 0 and builder.report.polygons == 2
    (filled,) = builder.report.holes_filled
    assert filled["polygon_iou"] == pytest.approx(60 / 64)


def test_float_masks_accepted_and_bad_masks_rejected():
    mask = np.zeros((4, 4))
    mask[1, 1] = 3.0
    assert MaskToCoco().instances(mask)[0]["category_id"] == 3
    builder = CocoBuilder()
    image_id = builder.add_image("x.png", 4, 4)
    with pytest.raises(ValueError, match=r"image 1 \(x.png\).*0\.\.6"):  # 6: bleed, subtype unknown
        builder.add_slice(image_id, np.full((4, 4), 7, np.uint8))
    with pytest.raises(ValueError, match=r"0\.\.5, found 0\.\.6"):  # a plain label mask has no unknown subtype
        as_label_mask(np.full((4, 4), 6, np.uint8))
    with pytest.raises(ValueError, match="shape"):
        builder.add_slice(image_id, np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match="non-integer"):
        MaskToCoco().instances(np.full((3, 3), 0.5))
    with pytest.raises(ValueError, match="seg_format"):
        MaskToCoco(seg_format="bitmask")
    with pytest.raises(ValueError, match="patient q"):
        CocoBuilder().add_volume(np.zeros((4, 4)), ["a"], patient_id="q", source="s")


def test_volume_instances_match_scipy_and_hand_computed_volume():
    vol = np.zeros((10, 10, 6), np.uint8)
    vol[2:5, 2:5, 1:4] = 4  # 27 voxels on slices 1..3
    vol[7, 7, 1] = 4
    vol[8, 8, 2] = 4  # corner-touching: one lesion at 26-connectivity, two at 18
    vol[0:2, 8:10, 5] = 2
    lesions = volume_instances(vol, spacing=(0.5, 0.5, 2.0))
    assert [(l["subtype"], l["voxels"]) for l in lesions] == [("SDH", 4), ("IPH", 27), ("IPH", 2)]
    iph = lesions[1]
    assert iph["slices"] == [1, 3] and iph["bbox3d"] == [2, 2, 1, 5, 5, 4]
    assert iph["volume_ml"] == pytest.approx(27 * 0.5 * 0.5 * 2.0 / 1000)
    assert iph["centroid"] == [3.0, 3.0, 2.0]
    assert len(volume_instances(vol, (1, 1, 1), connectivity=18)) == 4
    ref = ndimage.label(vol == 4, structure=ndimage.generate_binary_structure(3, 3))[1]
    assert ref == sum(l["subtype"] == "IPH" for l in lesions)
    assert volume_instances(np.zeros((3, 3, 3)), (1, 1, 1)) == []
    with pytest.raises(ValueError, match="spacing"):
        volume_instances(vol, (1, 1))


def test_unknown_subtype_pixels_get_no_annotation_and_are_flagged_and_reported():
    from pycocotools import mask as mask_utils

    from hemo_mtl.categories import UNKNOWN_SUBTYPE

    mixed = np.zeros((20, 24), np.uint8)
    mixed[2:6, 3:9] = 2  # a known SDH component
    mixed[10:15, 12:20] = UNKNOWN_SUBTYPE  # bleed of unknown subtype: 40 pixels
    unknown_only = np.where(mixed > 0, UNKNOWN_SUBTYPE, 0).astype(np.uint8)
    builder = CocoBuilder()
    ids = [builder.add_image(f"{i}.png", 20, 24) for i in range(3)]
    builder.add_slice(ids[0], mixed)
    builder.add_slice(ids[1], unknown_only)
    builder.add_slice(ids[2], np.zeros((20, 24), np.uint8))
    coco = builder.to_dict()
    assert coco["categories"] == coco_categories()  # the five fixed ids, nothing added
    assert [(a["image_id"], a["category_id"]) for a in coco["annotations"]] == [(ids[0], 2)]
    decoded = mask_utils.decode(mask_utils.frPyObjects(coco["annotations"][0]["segmentation"], 20, 24))
    if decoded.ndim == 3:
        decoded = decoded.max(axis=2)
    assert np.array_equal(decoded, (mixed == 2).astype(np.uint8))  # pycocotools decodes the SDH alone
    assert [i.get("unknown_subtype_pixels") for i in coco["images"]] == [40, 64, None]
    report = builder.report
    assert report.unknown_subtype == [{"image_id": ids[0], "pixels": 40}, {"image_id": ids[1], "pixels": 64}]
    assert report.negative_images == 1  # an unknown-subtype bleed is not a slice without bleed
    assert "2 images with bleed of unknown subtype (104 pixels, not annotated)" in report.summary()
    assert validate_coco(coco).problems == []


def test_volume_instances_leave_unknown_subtype_voxels_out():
    from hemo_mtl.categories import UNKNOWN_SUBTYPE

    vol = np.zeros((10, 10, 4), np.uint8)
    vol[1:4, 1:4, 0:2] = 4
    vol[6:9, 6:9, 1:3] = UNKNOWN_SUBTYPE
    lesions = volume_instances(vol, (1.0, 1.0, 2.0))
    assert [(l["category_id"], l["voxels"]) for l in lesions] == [(4, 18)]
