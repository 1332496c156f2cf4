"""Schedules: curriculum stage switching, label-depth filtering, cascade gating (vs sklearn)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_curve

from hemo_mtl.config import ConfigError
from hemo_mtl.engine import HookBase, build_schedule
from hemo_mtl.evaluation.loop import evaluate
from hemo_mtl.models.gating import CascadeGate, gate_outputs


def choose_gate_threshold(y, p, target):
    return CascadeGate(target_sensitivity=target).choose(y, p).threshold
from hemo_mtl.data.dataset import collate_samples

from .test_trainer import make_trainer
from .toy import ToyDataset, ToyModel

torch.set_num_threads(2)


class Recorder(HookBase):
    def __init__(self):
        self.epochs = []

    def before_epoch(self):
        t = self.trainer
        assert t.epoch_iters == len(t.train_loader)  # this epoch's length (the progress bar's total)
        ds = t.train_loader.dataset
        idx = ds.index if hasattr(ds, "index") else list(range(len(ds)))
        self.epochs.append({
            "stage": t.stage.name, "heads": set(unwrap_heads(t.model)), "groups": len(t.optimizer.param_groups),
            "indices": list(idx), "cls_weight": t.model.heads["cls"].weight.detach().clone(),
            "frozen": [n for n, p in t.model.named_parameters() if not p.requires_grad],
        })


def unwrap_heads(model):
    return model.active


def test_curriculum_switches_heads_freezing_groups_and_slices(tmp_path):
    cfg = {"name": "curriculum", "stages": [
        {"name": "cls", "epochs": 1, "heads": ["cls"], "labels": "cls", "freeze": ["heads.seg"]},
        {"name": "seg", "epochs": 2, "heads": ["seg"], "labels": "mask", "freeze": ["heads.cls"],
         "neg_fraction": 0.0},
        {"name": "all", "epochs": 1, "heads": ["cls", "seg"], "loss_weights": {"seg": 0.5}},
    ]}
    data = ToyDataset(patients=6, cls_only=("p00", "p01"))
    trainer = make_trainer(tmp_path, cfg, dataset=data)
    rec = Recorder()
    trainer.register_hooks([rec])
    seg_before = trainer.model.heads["seg"].weight.detach().clone()
    trainer.train()
    e = rec.epochs
    assert [x["stage"] for x in e] == ["cls", "seg", "seg", "all"]
    assert [x["heads"] for x in e] == [{"cls"}, {"seg"}, {"seg"}, {"cls", "seg"}]
    # stage 0 froze the seg head, so it was not in the optimizer; stage 1 adds it as a new param group
    assert [x["groups"] for x in e] == [1, 2, 2, 2]
    assert e[0]["frozen"] == ["heads.seg.weight", "heads.seg.bias"]
    assert e[1]["frozen"] == ["heads.cls.weight", "heads.cls.bias"]
    # the frozen classifier does not move during the seg stage, and moves again in the last stage
    assert torch.equal(e[1]["cls_weight"], e[2]["cls_weight"])
    assert torch.equal(e[2]["cls_weight"], e[3]["cls_weight"])  # (recorded before each epoch)
    assert not torch.equal(e[3]["cls_weight"], trainer.model.heads["cls"].weight)
    assert not torch.equal(seg_before, trainer.model.heads["seg"].weight)
    # label depth: the seg stage trains on positive slices with masks only (cls-only patients excluded)
    table = data.has_table
    want = set(np.flatnonzero(table["has_mask"].to_numpy() & (table["any"].to_numpy() > 0)))
    for x in e[1:3]:
        assert set(x["indices"]) <= want and len(x["indices"]) >= len(want) - trainer.batch_size
    assert trainer.stage.loss_weight("loss_seg") == 0.5 and trainer.stage.loss_weight("loss_cls") == 1.0


def test_neg_fraction_keeps_all_positives_and_a_seeded_share_of_negatives():
    data = ToyDataset(patients=10)
    sched = build_schedule({"name": "cascade"}, 6, ["cls", "seg"])
    stage = sched.stages[1]
    assert stage.heads == {"cls", "seg"} and stage.labels == "mask" and stage.neg_fraction == 0.25
    table = data.has_table
    pos, neg = np.flatnonzero(table["any"] > 0), np.flatnonzero(table["any"] == 0)
    a, w = sched.select_indices(stage, table, epoch=3, seed=1)
    assert set(pos) <= set(a)
    assert len(set(a) & set(neg)) == round(0.25 * len(neg))
    # importance weights: positives 1, each kept negative stands for len(neg) / kept of them
    is_neg = np.isin(a, neg)
    assert np.all(w[~is_neg] == 1.0) and w[is_neg] == pytest.approx(len(neg) / round(0.25 * len(neg)))
    assert w[is_neg].sum() == pytest.approx(len(neg))
    assert np.array_equal(a, sched.select_indices(stage, table, epoch=3, seed=1)[0])
    assert not np.array_equal(a, sched.select_indices(stage, table, epoch=4, seed=1)[0])


def test_default_stages_and_bad_stage_configs():
    cur = build_schedule({"name": "curriculum"}, 7, ["cls", "seg", "det"])
    assert [(s.labels, sorted(s.heads), s.epochs) for s in cur.stages] == [
        ("cls", ["cls"], 2), ("boxes", ["cls", "det"], 2), ("mask", ["cls", "det", "seg"], 3)]
    assert cur.stage_index(0) == 0 and cur.stage_index(4) == 2 and cur.total_epochs == 7
    with pytest.raises(ValueError, match=r"heads \['det'\] are not in the model"):
        build_schedule({"name": "curriculum", "stages": [{"heads": ["det"]}]}, 2, ["cls", "seg"])
    with pytest.raises(ValueError, match="needs a classification head"):
        build_schedule({"name": "cascade"}, 4, ["seg"])
    with pytest.raises(KeyError, match="unknown schedule 'alternate'"):
        build_schedule({"name": "alternate"}, 4, ["cls"])


@pytest.mark.parametrize("seed,target", [(0, 0.95), (1, 0.8), (2, 1.0)])
def test_gate_threshold_is_the_highest_meeting_the_target_sensitivity(seed, target):
    rng = np.random.default_rng(seed)
    y = rng.random(200) < 0.3
    p = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
    t = choose_gate_threshold(y, p, target)
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)  # reference: sklearn's operating points
    expected = thresholds[np.flatnonzero(tpr >= target - 1e-12)[0]]
    assert t == pytest.approx(expected)
    assert (p[y] >= t).mean() >= target


def test_gate_outputs_and_summary():
    seg = torch.rand(3, 6, 4, 4).softmax(1)
    inst = [{"boxes": torch.ones(2, 4), "labels": torch.ones(2, dtype=torch.long), "scores": torch.ones(2),
             "masks": torch.ones(2, 4, 4)} for _ in range(3)]
    out = gate_outputs({"seg_prob": seg, "instances": inst, "cls_prob": torch.rand(3, 6)},
                       torch.tensor([True, False, True]), ["seg", "det"])
    assert torch.equal(out["seg_prob"][0], seg[0]) and torch.equal(out["seg_prob"][2], seg[2])
    assert torch.equal(out["seg_prob"][1].argmax(0), torch.zeros(4, 4, dtype=torch.long))
    assert out["seg_prob"][1].sum(0).allclose(torch.ones(4, 4))
    assert [len(i["boxes"]) for i in out["instances"]] == [2, 0, 2]
    assert out["instances"][1]["masks"].shape == (0, 4, 4)
    s = CascadeGate(threshold=0.5).summary(np.array([1, 1, 1, 0, 0]), np.array([0.9, 0.2, 0.6, 0.1, 0.7]),
                                           lesions_per_slice=np.array([2, 1, 1, 0, 0]))
    assert s["cascade/gate/sensitivity"] == pytest.approx(2 / 3)
    assert s["cascade/gate/sensitivity_lost"] == pytest.approx(1 / 3)
    assert s["cascade/gate/skipped_fraction"] == pytest.approx(2 / 5)
    assert s["cascade/gate/lesions_lost"] == pytest.approx(1 / 4)


class Capture:
    def reset(self):
        self.seen = []

    def process(self, batch, outputs):
        self.seen.append((outputs["cls_prob"][:, 0].clone(), outputs["seg_prob"].clone()))

    def evaluate(self):
        return {"n": sum(len(p) for p, _ in self.seen)}


def test_cascade_evaluation_chooses_threshold_and_empties_gated_slices():
    torch.manual_seed(0)
    model = ToyModel()
    data = ToyDataset(patients=4, noise=0.0)
    loader = torch.utils.data.DataLoader(data, batch_size=5, collate_fn=collate_samples)
    gate = CascadeGate(heads=("seg",), target_sensitivity=0.9)
    ev = Capture()
    result = evaluate(model, loader, ev, torch.device("cpu"), heads={"cls", "seg"}, gate=gate)
    p = torch.cat([p for p, _ in ev.seen])
    seg = torch.cat([s for _, s in ev.seen])
    y = np.array([float(data[i]["cls"][0]) for i in range(len(data))]) > 0
    assert result.gate.threshold == pytest.approx(choose_gate_threshold(y, p.numpy(), 0.9))
    off = p < result.gate.threshold
    assert off.any() and (~off).any()
    assert (seg[off].argmax(1) == 0).all() and (seg[off][:, 0] == 1).all()
    assert result.metrics["cascade/gate/skipped_fraction"] == pytest.approx(float(off.float().mean()))
    assert result.metrics["n"] == len(data)


class RowWeightedToy(ToyModel):
    """ToyModel looking at the image through a ramp along the rows: not mirror-invariant."""

    def forward(self, batch, gate=None):
        ramp = torch.linspace(0.0, 2.0, batch["image"].shape[-2]).view(-1, 1)
        return super().forward({**batch, "image": batch["image"] * ramp}, gate)


def test_cascade_evaluation_with_flip_tta_gates_on_the_averaged_probability():
    torch.manual_seed(0)
    model = RowWeightedToy().eval()
    data = ToyDataset(patients=4, noise=0.0)
    loader = torch.utils.data.DataLoader(data, batch_size=5, collate_fn=collate_samples)
    gate = CascadeGate(heads=("seg",), target_sensitivity=0.9)
    ev = Capture()
    result = evaluate(model, loader, ev, torch.device("cpu"), heads={"cls", "seg"}, gate=gate, flip_tta=True)
    with torch.no_grad():
        x = torch.stack([data[i]["image"] for i in range(len(data))])
        p_avg = (model({"image": x})["cls_prob"][:, 0] + model({"image": x.flip(-2)})["cls_prob"][:, 0]) / 2
        mirror_matters = (model({"image": x})["cls_prob"][:, 0] - p_avg).abs().max()
    y = np.array([float(data[i]["cls"][0]) for i in range(len(data))]) > 0
    assert mirror_matters > 1e-4  # 10x assert_close's tolerance below
    torch.testing.assert_close(torch.cat([p for p, _ in ev.seen]), p_avg)
    assert result.gate.threshold == pytest.approx(choose_gate_threshold(y, p_avg.numpy(), 0.9))
    off = p_avg < result.gate.threshold
    assert off.any() and (~off).any()
    assert (torch.cat([s for _, s in ev.seen])[off][:, 0] == 1).all()


def test_task_of_loss_names_each_head():
    from hemo_mtl.engine import task_of_loss

    assert [task_of_loss(k) for k in ("loss_cls", "loss_seg", "loss_location", "loss_box_reg", "loss_consistency")] \
        == ["cls", "seg", "location", "det", "aux"]


def test_repeat_threshold_repeats_rare_subtype_slices_within_the_stage_selection():
    # 40 slices: 2 SAH, 10 SDH, 28 negatives; the stage keeps positives + half of the negatives
    n = 40
    table = pd.DataFrame({"has_cls": True, "has_mask": True, "has_boxes": True, "any": 0,
                          **{c: 0 for c in ("EDH", "SDH", "SAH", "IPH", "IVH")}}, index=range(n))
    table.loc[0:1, ["any", "SAH"]] = 1
    table.loc[2:11, ["any", "SDH"]] = 1
    sched = build_schedule({"name": "cascade", "stages": [
        {"name": "cls", "heads": ["cls"]},
        {"name": "loc", "heads": ["cls", "seg"], "neg_fraction": 0.5, "repeat_threshold": 0.2}]}, 2, ["cls", "seg"])
    stage = sched.stages[1]
    idx, weight = sched.select_indices(stage, table, epoch=1, seed=0)
    counts = np.bincount(idx, minlength=n)
    # selection: 12 positives + 14 negatives = 26 slices; f(SAH) = 2/26 -> r = sqrt(0.2 * 13) = 1.61,
    # f(SDH) = 10/26 > 0.2 -> r = 1: SDH and negatives once, SAH once or twice
    assert counts[2:12].tolist() == [1] * 10
    assert set(counts[12:]) <= {0, 1} and (counts[12:] == 1).sum() == 14
    assert set(counts[:2]) <= {1, 2}
    # weights: SDH 1, kept negatives 28 / 14 = 2, every SAH copy 1 / r
    r = np.sqrt(0.2 * 13)
    assert np.all(weight[np.isin(idx, range(2, 12))] == 1.0)
    assert weight[idx >= 12] == pytest.approx(2.0) and weight[idx < 2] == pytest.approx(1 / r)
    many = np.stack([np.bincount(sched.select_indices(stage, table, epoch=e, seed=0)[0], minlength=n)[:2]
                     for e in range(400)])
    assert many.mean() == pytest.approx(r, abs=0.05)  # so an SAH slice's weights sum to 1 on average
    assert np.array_equal(idx, sched.select_indices(stage, table, epoch=1, seed=0)[0])
    with pytest.raises(ValueError, match=r"repeat_threshold needs the subtype columns \['EDH'"):
        sched.select_indices(stage, table[["has_cls", "has_mask", "has_boxes", "any"]], epoch=1, seed=0)
    with pytest.raises(ValueError, match=r"repeat_threshold=2 is out of range: must be in \(0, 1\]"):
        build_schedule({"name": "curriculum", "stages": [{"repeat_threshold": 2}]}, 2, ["cls"])


def test_joint_and_default_cascade_stages_take_slice_selection_options():
    sched = build_schedule({"name": "joint", "joint": {"neg_fraction": 0.4, "repeat_threshold": 0.1}}, 3,
                           ["cls", "seg", "det"])
    (stage,) = sched.stages
    assert stage.heads == {"cls", "seg", "det"} and stage.epochs == 3
    assert stage.neg_fraction == 0.4 and stage.repeat_threshold == 0.1
    (plain,) = build_schedule({"name": "joint"}, 3, ["cls"]).stages
    assert plain.neg_fraction is None and plain.repeat_threshold is None and plain.labels is None
    cls_stage, loc = build_schedule({"name": "cascade", "cascade": {"cls_epochs": 1, "repeat_threshold": 0.2}}, 3,
                                    ["cls", "seg"]).stages
    assert cls_stage.repeat_threshold is None and loc.repeat_threshold == 0.2 and loc.heads == {"cls", "seg"}
    assert cls_stage.neg_fraction is None and cls_stage.epochs == 1 and loc.epochs == 2  # the classifier sees all
    cls_stage, loc = build_schedule({"name": "cascade", "cascade": {"cls_epochs": 1, "cls_neg_fraction": 0.3,
                                                                     "neg_fraction": 0.2}}, 4, ["cls", "seg"]).stages
    assert cls_stage.neg_fraction == 0.3 and loc.neg_fraction == 0.2 and loc.epochs == 3
    with pytest.raises(ConfigError, match=r"neg_fraction=1.5 is out of range: must be in \[0, 1\]"):
        build_schedule({"name": "cascade", "cascade": {"cls_neg_fraction": 1.5}}, 3, ["cls", "seg"])


def test_hard_negatives_take_the_classifier_s_highest_scored_negatives_first():
    # 40 slices: 10 bleeds, 30 normal; the stage keeps half of the normal ones (15), 40% of those (6) hardest-first
    n = 40
    table = pd.DataFrame({"has_cls": True, "has_mask": True, "has_boxes": True, "any": [1] * 10 + [0] * 30})
    p_any = pd.Series(np.random.default_rng(5).random(n))  # the classifier's score of each slice
    asked = []

    def score_fn(indices):
        asked.append(np.asarray(indices).copy())
        return p_any[indices].to_numpy()

    def schedule(hard):
        return build_schedule({"name": "cascade", "cascade": {"cls_epochs": 1, "neg_fraction": 0.5,
                                                              "hard_negatives": hard}}, 3, ["cls", "seg"])
    sched = schedule(0.4)
    stage = sched.stages[1]
    assert stage.hard_negatives == 0.4 and sched.stages[0].hard_negatives is None
    idx, weight = sched.select_indices(stage, table, epoch=1, seed=0, score_fn=score_fn)
    assert np.array_equal(asked[-1], np.arange(10, 40))  # only the normal slices are scored
    hardest = set(p_any[10:].nlargest(6).index)
    negatives = set(idx) - set(range(10))
    assert set(range(10)) <= set(idx) and len(negatives) == 15 and hardest <= negatives
    # weights: bleeds and hard negatives 1 (kept for sure), each drawn one stands for (30 - 6) / 9 normal slices
    is_hard = np.isin(idx, list(hardest))
    assert np.all(weight[(idx < 10) | is_hard] == 1.0) and weight[(idx >= 10) & ~is_hard] == pytest.approx(24 / 9)
    assert weight[idx >= 10].sum() == pytest.approx(30)
    other = set(sched.select_indices(stage, table, epoch=2, seed=0, score_fn=score_fn)[0]) - set(range(10))
    assert hardest <= other and other != negatives  # the random rest is redrawn each epoch
    # all hard: exactly the 15 highest; none: the plain random draw, scores unused
    all_hard = schedule(1.0)
    assert set(all_hard.select_indices(all_hard.stages[1], table, 1, 0, score_fn)[0]) == \
        set(range(10)) | set(p_any[10:].nlargest(15).index)
    plain = schedule(None)
    assert np.array_equal(plain.select_indices(plain.stages[1], table, 1, 0, score_fn)[0],
                          plain.select_indices(plain.stages[1], table, 1, 0)[0])
    with pytest.raises(ValueError, match="hard_negatives needs the classifier's scores"):
        sched.select_indices(stage, table, epoch=1, seed=0)
    with pytest.raises(ConfigError, match=r"hard_negatives=1.5 is out of range: must be in \[0, 1\]"):
        schedule(1.5)
    with pytest.raises(ConfigError, match="it needs neg_fraction"):
        build_schedule({"name": "curriculum", "stages": [{"heads": ["cls"], "hard_negatives": 0.5}]}, 2, ["cls"])


def test_cascade_gate_state_round_trip_and_saved_threshold_rule():
    """The checkpoint state is the gate; --eval-only keeps a saved threshold only for the same target."""
    gate = CascadeGate(("seg", "det"), 0.98)
    chosen = gate.with_threshold(0.31)
    assert CascadeGate.from_state(chosen.state_dict()) == chosen and CascadeGate.from_state({}) is None
    assert gate.with_saved(chosen.state_dict()).threshold == pytest.approx(0.31)
    assert gate.with_saved({**chosen.state_dict(), "target_sensitivity": 0.9}).threshold is None
    assert CascadeGate(threshold=0.0).with_saved(chosen.state_dict()).threshold == 0.0  # a fixed one wins
    assert gate.restricted_to({"cls", "seg"}).heads == ("seg",) and gate.restricted_to({"seg"}) is None
    with pytest.raises(ValueError, match="no threshold chosen"):
        gate.keep(np.array([0.5]))
