"""The typed schema: every key refuses a value of another type, optional keys included; free-form
sections are checked against their defaults; stages have one form; docs/configs.md is generated."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hemo_mtl.config import STAGE, ConfigError, config_schema, load_config, resolve
from hemo_mtl.config_reference import render
from hemo_mtl.config_schema import K, Key
from hemo_mtl.engine.schedules import build_schedule, stage_specs

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"

# a value of another type for each key type (a float key accepts ints and float text, so a list)
WRONG = {"bool": 3, "int": 2.5, "float": [1, 2], "str": 7, "list": 7, "mapping": 7, "heads": 7}


def _leaves(section, prefix=()):
    for name, spec in section.items():
        if isinstance(spec, Key):
            yield prefix + (name,), spec
        else:
            yield from _leaves(spec, prefix + (name,))


def _nested(path, value):
    for part in reversed(path):
        value = {part: value}
    return value


LEAVES = list(_leaves(config_schema()))


@pytest.mark.parametrize("path,key", LEAVES, ids=[".".join(p) for p, _ in LEAVES])
def test_every_key_refuses_a_value_of_another_type(path, key):
    dotted = ".".join(path)
    wrong = WRONG[key.type]
    with pytest.raises(ConfigError, match=rf"{dotted} must be .*, got "):
        resolve(_nested(path, wrong))
    if not key.accepts_none:
        with pytest.raises(ConfigError, match=rf"{dotted} must be .*, got null"):
            resolve(_nested(path, None))


HEAD_LEAVES = [(kind, path, key) for kind, section in config_schema()["model"]["heads"].items.sections.items()
               for path, key in _leaves(section) if path != ("type",)]


@pytest.mark.parametrize("kind,path,key", HEAD_LEAVES, ids=[f"{k}.{'.'.join(p)}" for k, p, _ in HEAD_LEAVES])
def test_every_head_key_refuses_a_value_of_another_type(kind, path, key):
    dotted = ".".join(("model", "heads", "h") + path)
    with pytest.raises(ConfigError, match=rf"{dotted} must be .*, got "):
        resolve({"model": {"heads": {"h": {"type": kind, **_nested(path, WRONG[key.type])}}}})


@pytest.mark.parametrize("override,message", [
    ("data.root=7", r"data.root must be string or null, got int \(7\)"),
    ("schedule.cascade.threshold=[1, 2]", r"schedule.cascade.threshold must be float or null, got list"),
    ("data.cls_labels=[1]", r"data.cls_labels.0 must be string, got int"),
    ("schedule.stages=[{heads: cls}]", r"schedule.stages.0.heads must be list of string or null, got string"),
    ("model.backbone.weights=3", r"model.backbone.weights must be string or null, got int"),
    ("train.epochs=null", r"train.epochs must be int, got null"),
])
def test_optional_keys_have_a_type(override, message):
    with pytest.raises(ConfigError, match=rf"command-line override .*{message}"):
        load_config(DEMO, [override])


def test_a_none_default_must_name_its_type():
    with pytest.raises(TypeError, match="must name its type"):
        K(None, "an optional key without a type")


def test_head_keys_are_typed_and_checked_in_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_base_: {DEMO}\nmodel: {{heads: {{cls: {{type: classification, pos_weight: 2}}}}}}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: model.heads.cls.pos_weight must be list of float or null"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"unknown config key 'model.heads.det.lvels'; did you mean "
                                          r"'model.heads.det.levels'"):
        load_config(DEMO, ["model.heads.det={type: yolo, lvels: [p3]}"])


def test_augment_keys_are_checked_against_their_defaults(tmp_path):
    from hemo_mtl.data.transforms import AUGMENT_DEFAULTS

    with pytest.raises(ConfigError, match=r"unknown config key 'data.augment.rotat'; did you mean 'data.augment.rotate'"):
        load_config(DEMO, ["data.augment.rotat=5"])
    with pytest.raises(ConfigError, match=r"data.augment.rotate must be float, got string"):
        load_config(DEMO, ["data.augment.rotate=much"])
    cfg = load_config(DEMO, ["data.augment.rotate=5"])
    assert cfg["data"]["augment"]["rotate"] == 5.0 and set(cfg["data"]["augment"]) == set(AUGMENT_DEFAULTS)


def test_a_model_package_that_fails_to_import_is_not_reported_as_unknown_keys(monkeypatch):
    monkeypatch.setitem(sys.modules, "hemo_mtl.models", None)  # importing it now raises ImportError
    with pytest.raises(ImportError, match="hemo_mtl.models"):
        load_config(DEMO)


def _as_tuple(stages):
    return [(s.name, s.epochs, sorted(s.heads), s.labels, s.neg_fraction, s.repeat_threshold, s.hard_negatives)
            for s in stages]


@pytest.mark.parametrize("shorthand", [
    {"name": "cascade", "cascade": {"cls_epochs": 1, "cls_neg_fraction": 0.3, "neg_fraction": 0.3,
                                    "repeat_threshold": 0.2, "hard_negatives": 0.5}},
    {"name": "curriculum"},
])
def test_default_stages_are_the_stages_written_out(shorthand):
    heads = ["cls", "seg", "det"]
    specs = stage_specs(shorthand, 4, heads)
    for i, spec in enumerate(specs):
        assert set(spec) <= set(STAGE), spec  # plain stage sections: the one form
    written = {"name": shorthand["name"], "stages": specs}
    assert _as_tuple(build_schedule(shorthand, 4, heads).stages) == _as_tuple(build_schedule(written, 4, heads).stages)
    assert _as_tuple(build_schedule(written, 4, heads).stages) == [
        (s["name"], s["epochs"], sorted(s["heads"]), s["labels"], s.get("neg_fraction"), s.get("repeat_threshold"),
         s.get("hard_negatives")) for s in specs]


def test_joint_shorthand_is_one_stage_of_the_stage_keys():
    (spec,) = stage_specs({"name": "joint", "joint": {"neg_fraction": 0.2}}, 3, ["cls"])
    assert spec == {"name": "joint", "epochs": 3, "neg_fraction": 0.2}
    with pytest.raises(ConfigError, match="schedule.stages is for curriculum and cascade"):
        stage_specs({"name": "joint", "stages": [{"epochs": 1}]}, 3, ["cls"])


def test_docs_config_page_is_the_generated_one():
    page = REPO / "docs" / "configs.md"
    assert page.read_text(encoding="utf-8") == render(), "regenerate: python -m hemo_mtl.config_reference > docs/configs.md"
