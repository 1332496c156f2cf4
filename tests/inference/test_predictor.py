import os
from types import SimpleNamespace

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from hemo_mtl.data.windowing import window_hu  # noqa: E402
from hemo_mtl.inference import PredictOptions, Predictor, Scan, load_scan  # noqa: E402
from hemo_mtl.models.gating import CascadeGate, gate_outputs  # noqa: E402

torch.set_num_threads(2)
CENTERS = torch.linspace(0, 1, 6)


class IntensityModel(nn.Module):
    """Pixelwise stand-in: label = nearest of 6 intensity levels, p(any) = mean intensity of the slice."""

    def forward(self, batch, gate=None):
        x = batch["image"][:, :1]
        seg = torch.softmax(-50 * (x - CENTERS.view(1, 6, 1, 1)) ** 2, dim=1)
        cls = x.mean((2, 3)).repeat(1, 6)
        out = {"cls_prob": cls, "seg_prob": seg}
        if gate is None:
            return out
        keep = gate.keep(cls[:, 0])
        return {**gate_outputs(out, keep, gate.heads), "gate_passed": keep}


def _reference_labels(volume):
    return np.abs(window_hu(volume, 40, 80)[..., None] - CENTERS.numpy()).argmin(-1).astype(np.uint8)


def _predictor(size, **opts):
    cfg = {"data": {"windows": ["brain"], "image_size": size}, "model": {}}
    return Predictor(IntensityModel(), cfg, options=PredictOptions(**opts))


def test_pad_undo_keeps_voxels_in_place(phantom_scan):
    _, volume, affine = phantom_scan  # 64 x 48 slices into a 64 px model: pad only, exact
    pred = _predictor(64).predict(Scan("x", "hu", volume, affine))
    assert pred.mask.shape == volume.shape
    assert np.array_equal(pred.mask, _reference_labels(volume))
    # the model sees the slice padded with zeros to 64 x 64: its mean shrinks by 48/64
    assert np.allclose(pred.cls_prob[:, 0], window_hu(volume, 40, 80).mean((0, 1)) * 48 / 64, atol=1e-5)


def test_resize_undo_puts_a_ramp_back_in_place():
    # bilinear down- and up-sampling of a linear ramp is exact away from the border: a transposed,
    # shifted or mis-scaled map would move the label boundaries
    x, y = np.meshgrid(np.arange(64), np.arange(48), indexing="ij")
    volume = np.repeat((70.0 * x / 63 + 10.0 * y / 47)[..., None], 3, axis=2).astype(np.float32)
    pred = _predictor(32).predict(Scan("x", "hu", volume, np.eye(4)))
    assert pred.mask.shape == volume.shape
    ref = _reference_labels(volume)
    assert (pred.mask[2:-2, 2:-2] == ref[2:-2, 2:-2]).mean() > 0.98


def test_sliding_window_and_flip_tta_leave_a_pixelwise_model_unchanged(phantom_scan):
    _, volume, affine = phantom_scan
    scan = Scan("x", "hu", volume, affine)
    plain = _predictor(64).predict(scan)
    slid = _predictor(64, sliding_window=True, patch=32, stride=16).predict(scan)
    flip = _predictor(64, flip_tta=True).predict(scan)
    assert np.array_equal(slid.mask, plain.mask) and np.array_equal(flip.mask, plain.mask)
    assert np.allclose(flip.cls_prob, plain.cls_prob, atol=1e-6)


class BrightBoxModel(IntensityModel):
    """IntensityModel + one detection per slice: the box of the pixels above 0.6 (a bright block),
    looked for in the upper half of the rows only when ``upper_only`` (a detector that is not mirror-invariant)."""
    heads = {"det": SimpleNamespace(nms_iou=0.5, max_det=10)}

    def __init__(self, upper_only=False):
        super().__init__()
        self.upper_only = upper_only

    def forward(self, batch, gate=None):
        out = super().forward(batch)
        out["instances"] = []
        for x in batch["image"][:, 0]:
            bright = x > 0.6
            if self.upper_only:
                bright[len(x) // 2:] = False
            ys, xs = torch.nonzero(bright, as_tuple=True)
            if len(ys) == 0:
                out["instances"].append({"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
                                         "scores": torch.zeros(0), "masks": torch.zeros(0, *x.shape)})
                continue
            box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()[None]
            out["instances"].append({"boxes": box, "labels": torch.tensor([2]), "scores": torch.tensor([0.9]),
                                     "masks": bright.float()[None]})
        return out


def test_flip_tta_maps_the_mirrored_detections_back_and_merges_them():
    volume = np.full((40, 30, 2), 20.0, np.float32)
    volume[4:12, 6:20, 0] = 70.0  # a bright block in the upper rows (brain window 0.875) ...
    volume[28:36, 6:20, 1] = 70.0  # ... and one in the lower rows
    cfg = {"data": {"windows": ["brain"], "image_size": 40}, "model": {}}
    scan = Scan("x", "hu", volume, np.eye(4))

    def boxes(upper_only, tta):
        pred = Predictor(BrightBoxModel(upper_only), cfg, options=PredictOptions(flip_tta=tta)).predict(scan)
        return [i["boxes"].tolist() for i in pred.instances], pred

    # found by both passes: one box after the merge, where it was (mapped back wrongly: two boxes)
    assert boxes(False, True)[0] == boxes(False, False)[0] == [[[6, 4, 20, 12]], [[6, 28, 20, 36]]]
    # a detector that sees the upper rows only finds the lower block through the mirrored pass alone
    assert boxes(True, False)[0] == [[[6, 4, 20, 12]], []]
    found, pred = boxes(True, True)
    assert found == [[[6, 4, 20, 12]], [[6, 28, 20, 36]]]
    assert np.array_equal(pred.instances[1]["masks"][0], volume[:, :, 1] > 60)


def test_cascade_gate_empties_slices_below_threshold(phantom_scan):
    _, volume, affine = phantom_scan
    scan = Scan("x", "hu", volume, affine)
    p_any = _predictor(64).predict(scan).cls_prob[:, 0]
    thr = float(np.median(p_any))
    predictor = _predictor(64)
    predictor.gate = CascadeGate(("seg", "det"), threshold=thr)
    pred = predictor.predict(scan)
    off = p_any < thr
    assert off.any() and (~off).any()
    assert np.array_equal(pred.gate_passed, ~off)
    assert (pred.mask[:, :, off] == 0).all()
    assert np.array_equal(pred.mask[:, :, ~off], _reference_labels(volume)[:, :, ~off])
    predictor.options.gate = False
    assert predictor.predict(scan).gate_passed is None


def test_batched_equals_per_slice_loop(weights, phantom_scan):
    path, _, _ = phantom_scan
    full = load_scan(path)
    scan = Scan(full.path, full.kind, full.slices[:, :, :3], full.affine)  # 3 slices keep it quick
    batched = Predictor.from_checkpoint(weights, PredictOptions(batch_size=16, score_threshold=0.0)).predict(scan)
    single = Predictor.from_checkpoint(weights, PredictOptions(batch_size=1, score_threshold=0.0)).predict(scan)
    assert np.allclose(batched.cls_prob, single.cls_prob, atol=1e-5)
    assert (batched.mask == single.mask).mean() > 0.999
    assert batched.mask.any()
    for a, b in zip(batched.instances, single.instances):
        assert len(a["boxes"]) == len(b["boxes"])
        assert np.allclose(a["boxes"], b["boxes"], atol=1e-2)


def test_label_map_equals_torch_argmax_including_ties():
    from hemo_mtl.inference.predictor import label_map

    prob = torch.rand(3, 6, 17, 9, generator=torch.Generator().manual_seed(0))
    prob[:, 3, :4] = prob[:, 1, :4] = 2.0  # ties: the first maximum wins
    assert torch.equal(label_map(prob), prob.argmax(1).to(torch.uint8))


def test_score_threshold_inside_the_model_keeps_the_same_detections(weights, phantom_scan):
    # the predictor lifts RoIHeads' score threshold so low-score boxes skip the mask head and pasting;
    # the kept detections must equal those of a full run filtered afterwards
    path, _, _ = phantom_scan
    full = load_scan(path)
    scan = Scan(full.path, full.kind, full.slices[:, :, :3], full.affine)
    everything = Predictor.from_checkpoint(weights, PredictOptions(score_threshold=0.0)).predict(scan)
    scores = np.concatenate([i["scores"] for i in everything.instances])
    assert len(scores) > 4
    thr = float(np.quantile(scores, 0.6))
    lifted = Predictor.from_checkpoint(weights, PredictOptions(score_threshold=thr)).predict(scan)
    for a, b in zip(everything.instances, lifted.instances):
        keep = a["scores"] >= thr
        assert len(b["scores"]) == keep.sum()
        assert np.allclose(np.sort(a["scores"][keep]), np.sort(b["scores"]), atol=1e-6)
        order_a, order_b = np.argsort(-a["scores"][keep]), np.argsort(-b["scores"])
        assert np.allclose(a["boxes"][keep][order_a], b["boxes"][order_b], atol=1e-3)
        assert np.array_equal(a["masks"][keep][order_a], b["masks"][order_b])


def test_model_runs_gated_heads_only_on_passing_slices_with_the_same_outputs(weights, phantom_scan):
    # MultiTaskModel(gate=...) runs seg/det on the passing slices only; the result must equal the
    # ungated pass with the gated-off slices blanked (gate_outputs), and an all-off batch must work
    from hemo_mtl.inference.predictor import load_model

    model, _ = load_model(weights)
    model.eval()
    path, _, _ = phantom_scan
    x = Predictor(model, {"data": {"windows": ["brain", "subdural", "bone"], "image_size": 64}, "model": {}},
                  options=PredictOptions(channels_last=False)).model_inputs(load_scan(path))[1][0]
    calls = []
    hook = model.heads["det"].register_forward_pre_hook(lambda mod, args: calls.append(len(args[1]["image"])))
    with torch.inference_mode():
        full = model({"image": x})
        p = full["cls_prob"][:, 0]
        thr = float(p.median())
        gated = model({"image": x}, gate=CascadeGate(("seg", "det"), threshold=thr))
        nothing = model({"image": x}, gate=CascadeGate(("seg", "det"), threshold=2.0))
    hook.remove()
    keep = p >= thr
    assert 0 < int(keep.sum()) < len(x) and calls == [len(x), int(keep.sum()), 0]
    ref = gate_outputs(full, keep, ("seg", "det"))
    assert torch.equal(gated["gate_passed"], keep)
    assert torch.allclose(gated["seg_prob"], ref["seg_prob"], atol=1e-5)
    assert torch.equal(gated["cls_prob"], full["cls_prob"])
    for a, b in zip(gated["instances"], ref["instances"]):
        assert len(a["boxes"]) == len(b["boxes"]) and torch.allclose(a["boxes"], b["boxes"], atol=1e-3)
    assert not nothing["gate_passed"].any() and (nothing["seg_prob"][:, 0] == 1).all()
    assert all(len(i["boxes"]) == 0 and i["masks"].shape[-2:] == x.shape[-2:] for i in nothing["instances"])
    with pytest.raises(ValueError, match="inference step"):
        model.train()({"image": x}, gate=CascadeGate(("seg",), threshold=thr))
