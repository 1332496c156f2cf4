"""engine/run_eval.py: which tasks a run scores, its refusals, its evaluators and protocol model."""
from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from hemo_mtl.config import ConfigError, load_config
from hemo_mtl.engine.run_eval import RunEvaluation, check_eval_settings, eval_tasks

REPO = Path(__file__).resolve().parents[2]


def _cfg(*opts: str) -> dict:
    return load_config(REPO / "configs" / "demo.yaml", list(opts))


class _Heads(nn.Module):
    """A stand-in model: only its ``heads`` are read."""

    def __init__(self, **heads):
        super().__init__()
        self.heads = nn.ModuleDict(heads)


class _Location(nn.Module):
    num_classes = 3


def test_eval_settings_a_run_cannot_carry_out_are_refused():
    check_eval_settings(_cfg())
    with pytest.raises(ConfigError, match="final_split must be val or test, got 'train'"):
        check_eval_settings(_cfg("eval.final_split=train"))
    # 4 epochs cannot hold k=3 selected epochs after epoch 2
    with pytest.raises(ConfigError, match=r"train.epochs >= after_epoch \+ k = 5, got 4"):
        check_eval_settings(_cfg("eval.select.rule=lowest_val_loss", "eval.select.k=3", "eval.select.after_epoch=2",
                                 "train.epochs=4"))
    check_eval_settings(_cfg("eval.select.rule=lowest_val_loss", "eval.select.k=2", "eval.select.after_epoch=2",
                             "train.epochs=4"))


def test_tasks_are_the_models_heads_and_cls_derived_from_sliding_windows():
    cfg = _cfg("eval.tasks=[cls, seg, det]")
    assert eval_tasks(cfg, ["seg"]) == ["seg"]
    assert eval_tasks(cfg, ["cls", "det"]) == ["cls", "det"]
    windows = _cfg("eval.tasks=[cls, seg, det]", "eval.sliding_window={size: 32, stride: 16}")
    assert eval_tasks(windows, ["seg"]) == ["cls", "seg"]


def test_location_head_adds_its_evaluator_with_the_configs_classes():
    from hemo_mtl.evaluation import MultiTaskEvaluator
    from hemo_mtl.evaluation.location import CombinedEvaluator, LocationEvaluator

    plain = RunEvaluation(_cfg("eval.tasks=[cls]"), _Heads(cls=nn.Identity()), "cpu")
    assert isinstance(plain.evaluator(), MultiTaskEvaluator)
    located = RunEvaluation(_cfg("eval.tasks=[cls]"), _Heads(cls=nn.Identity(), location=_Location()), "cpu")
    assert located.location_classes == ["0", "1", "2"]  # no data.location_classes: numbered by the head
    combined = located.evaluator()
    assert isinstance(combined, CombinedEvaluator)
    assert [type(e) for e in combined.evaluators] == [MultiTaskEvaluator, LocationEvaluator]


def test_protocol_model_is_the_sliding_window_wrapper_only_when_configured():
    from hemo_mtl.inference.window_eval import SlidingWindowModel

    model = nn.Identity()
    assert RunEvaluation(_cfg(), _Heads(seg=nn.Identity()), "cpu").protocol_model(model) is model
    cfg = _cfg("eval.sliding_window={size: 32, stride: 16, closing: 1, opening: 2}")
    wrapped = RunEvaluation(cfg, _Heads(seg=nn.Identity()), "cpu").protocol_model(model)
    assert isinstance(wrapped, SlidingWindowModel)
    assert wrapped.model is model
    o = wrapped.options
    assert (o.patch, o.stride, o.closing, o.opening, o.batch_size) == (32, 16, 1, 2, cfg["data"]["batch_size"])
