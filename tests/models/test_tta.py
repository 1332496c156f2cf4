import pytest
import torch
from torchvision.ops import box_iou

from hemo_mtl.models.gating import CascadeGate
from hemo_mtl.models.tta import merge_instances, mirror_instances


def _inst(boxes, labels, scores, h=20, w=30):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    masks = torch.zeros(len(boxes), h, w)
    for m, (x0, y0, x1, y1) in zip(masks, boxes.long().tolist()):
        m[y0:y1, x0:x1] = 1
    return {"boxes": boxes, "labels": torch.tensor(labels), "scores": torch.tensor(scores), "masks": masks}


def test_mirror_rows_maps_boxes_with_their_masks_and_is_its_own_inverse():
    a = _inst([[2, 3, 10, 7], [0, 0, 30, 20]], [1, 4], [0.9, 0.5])
    m = mirror_instances(a, 20)
    assert m["boxes"].tolist() == [[2, 13, 10, 17], [0, 0, 30, 20]]  # rows [3, 7) -> [13, 17)
    for box, mask in zip(m["boxes"].long().tolist(), m["masks"]):  # the box still bounds its mask
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == box
    back = mirror_instances(m, 20)
    assert all(torch.equal(back[k], a[k]) for k in a)


def test_mirror_columns_maps_the_x_coordinates_for_display_images():
    from hemo_mtl.models.tta import lr_axis

    assert lr_axis("display") == -1 and lr_axis("hu") == -2
    a = _inst([[2, 3, 10, 7]], [1], [0.9])
    m = mirror_instances(a, 30, axis=-1)
    assert m["boxes"].tolist() == [[20, 3, 28, 7]]  # columns [2, 10) -> [20, 28) of 30
    assert torch.equal(m["masks"], a["masks"].flip(-1))
    assert all(torch.equal(mirror_instances(m, 30, axis=-1)[k], a[k]) for k in a)


def test_flip_tta_along_the_columns_averages_the_column_mirrored_pass():
    from hemo_mtl.models.tta import flip_tta_forward

    def model(batch):  # a "model" whose outputs are its input: the averaging is then visible exactly
        x = batch["image"]
        return {"cls_prob": x[:, 0, :1, :].mean(-1).expand(-1, 6), "seg_prob": x[:, :1]}

    x = torch.rand(2, 1, 8, 6)
    got = flip_tta_forward(model, {"image": x}, axis=-1)
    torch.testing.assert_close(got["seg_prob"], (x[:, :1] + x[:, :1].flip(-1).flip(-1)) / 2)
    torch.testing.assert_close(got["cls_prob"], model({"image": x})["cls_prob"])  # a row mean: mirror-invariant
    rows = flip_tta_forward(lambda b: {"cls_prob": b["image"][:, 0, 0, :1].expand(-1, 6)}, {"image": x}, axis=-1)
    torch.testing.assert_close(rows["cls_prob"][:, 0], (x[:, 0, 0, 0] + x[:, 0, 0, -1]) / 2)


def test_merge_keeps_one_box_per_lesion_and_class_best_first():
    first = _inst([[0, 0, 10, 10], [20, 10, 28, 18]], [2, 3], [0.6, 0.4])
    second = _inst([[1, 0, 10, 10], [0, 0, 10, 10]], [2, 5], [0.8, 0.7])  # same lesion as SDH, and as IVH
    assert abs(box_iou(first["boxes"][:1], second["boxes"][:1]).item() - 0.9) < 1e-6
    merged = merge_instances([first, second], iou=0.5)
    assert merged["labels"].tolist() == [2, 5, 3] and merged["scores"].tolist() == pytest.approx([0.8, 0.7, 0.4])
    assert merged["boxes"][0].tolist() == [1, 0, 10, 10] and torch.equal(merged["masks"][0], second["masks"][0])
    assert len(merge_instances([first, second], iou=0.95)["boxes"]) == 4  # IoU 0.9 < 0.95: both kept
    assert merge_instances([first, second], iou=0.5, max_det=2)["scores"].tolist() == pytest.approx([0.8, 0.7])


def test_flip_tta_forward_combines_the_two_passes_of_a_multitask_model(batch_fn, mask_fn):
    from hemo_mtl.models import build_model
    from hemo_mtl.models.tta import flip_tta_forward

    from .test_multitask import SMALL

    torch.manual_seed(0)
    model = build_model({**SMALL, "heads": {**SMALL["heads"], "det": {**SMALL["heads"]["det"], "box_score_thresh": 0.0}}})
    model.eval()
    batch = batch_fn([mask_fn(64, 0), mask_fn(64, 1), mask_fn(64, 2)], [True] * 3, [True] * 3, [True] * 3)
    with torch.no_grad():
        plain, mirrored = model(batch), model({**batch, "image": batch["image"].flip(-2)})
        got = flip_tta_forward(model, batch)
        p_any = got["cls_prob"][:, 0]
        gated = flip_tta_forward(model, batch, CascadeGate(("seg", "det"), threshold=float(p_any.median())))
    torch.testing.assert_close(got["cls_prob"], (plain["cls_prob"] + mirrored["cls_prob"]) / 2)
    torch.testing.assert_close(got["seg_prob"], (plain["seg_prob"] + mirrored["seg_prob"].flip(-2)) / 2)
    det = model.heads["det"]
    assert det.nms_iou == 0.5 and det.max_det == 20
    for i, inst in enumerate(got["instances"]):
        ref = merge_instances([plain["instances"][i], mirror_instances(mirrored["instances"][i], 64)], 0.5, 20)
        assert len(ref["boxes"]) > 0 and all(torch.equal(inst[k], ref[k]) for k in ref)
    keep = p_any >= p_any.median()
    assert torch.equal(gated["gate_passed"], keep) and 0 < int(keep.sum()) < 3
    for i in range(3):
        assert (len(gated["instances"][i]["boxes"]) > 0) == bool(keep[i])
        assert bool(keep[i]) or bool((gated["seg_prob"][i, 0] == 1).all())  # gated off: background only
