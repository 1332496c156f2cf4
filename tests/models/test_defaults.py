from __future__ import annotations

import pytest

from hemo_mtl.models import HEAD_DEFAULTS, MODEL_DEFAULTS, resolve_model_cfg


def test_defaults_cover_every_section_and_build():
    assert set(MODEL_DEFAULTS) == {"backbone", "heads", "loss", "input_prior", "seg_vote"}
    assert MODEL_DEFAULTS["seg_vote"] == 0.0  # p(any) is the classifier's unless a config asks for the vote
    assert set(MODEL_DEFAULTS["heads"]) == {"cls", "seg", "det"}
    assert MODEL_DEFAULTS["heads"]["det"]["type"] == "rcnn"
    assert resolve_model_cfg(None) == MODEL_DEFAULTS
    assert {"classification", "segmentation", "rcnn", "yolo"} <= set(HEAD_DEFAULTS)


def test_partial_sections_are_filled_and_heads_chosen():
    cfg = resolve_model_cfg({"backbone": {"name": "resnet50"}, "heads": {"cls": {}, "det": {"type": "yolo"}, "seg": None}})
    assert cfg["backbone"]["fpn_channels"] == MODEL_DEFAULTS["backbone"]["fpn_channels"]
    assert set(cfg["heads"]) == {"cls", "det"} and cfg["heads"]["det"]["levels"] == ["p3", "p4", "p5"]


@pytest.mark.parametrize("cfg,match", [
    ({"backbone": {"nmae": "resnet18"}}, r"unknown config key 'model\.backbone\.nmae'; did you mean 'model\.backbone\.name'"),
    ({"heads": {"det": {"type": "rcnn", "levels": ["p3"]}}}, r"unknown config key 'model\.heads\.det\.levels'"),
    ({"heads": {"seg": {"channels": "wide"}}}, r"model\.heads\.seg\.channels must be int, got string"),
    ({"heads": {"aux": {}}}, r"model\.heads\.aux names no 'type'"),
    ({"heads": {"det": {"type": "detr"}}}, r"unknown head type 'detr'"),
    ({"loss": {"pcgrad": "yes"}}, r"model\.loss\.pcgrad must be bool"),
    ({"optimizer": {}}, r"unknown config key 'model\.optimizer'; known keys here: backbone, input_prior, heads, loss"),
    ({"heads": {"cls": None, "seg": None, "det": None}}, r"model\.heads: at least one head is needed"),
])
def test_bad_config_names_the_key(cfg, match):
    with pytest.raises(ValueError, match=match):
        resolve_model_cfg(cfg)
