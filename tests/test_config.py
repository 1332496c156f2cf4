"""Config loading: _base_ inheritance, overrides, validation messages, the shipped configs."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hemo_mtl.config import ConfigError, DEFAULTS, load_config, parse_override, save_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture()
def tree(tmp_path):
    write(tmp_path / "base" / "runtime.yaml", "train: {lr: 0.5, epochs: 3, lr_schedule: {name: step, steps: [0.5]}}\n")
    write(tmp_path / "base" / "data.yaml", "data: {windows: [brain], batch_size: 4}\n")
    return write(tmp_path / "exp.yaml", "_base_: [base/runtime.yaml, base/data.yaml]\n"
                                         "train: {epochs: 7}\ndata: {windows: [bone]}\noutput_dir: out\n")


def test_base_inheritance_deep_merges_dicts_and_replaces_lists(tree):
    cfg = load_config(tree)
    assert cfg["train"]["epochs"] == 7  # the file beats its base
    assert cfg["train"]["lr"] == 0.5  # untouched base key survives the merge
    assert cfg["train"]["lr_schedule"]["name"] == "step"
    assert cfg["train"]["lr_schedule"]["warmup_iters"] == DEFAULTS["train"]["lr_schedule"]["warmup_iters"]
    assert cfg["data"]["windows"] == ["bone"]  # lists replace
    assert cfg["data"]["batch_size"] == 4
    assert cfg["data"]["phantom"] == DEFAULTS["data"]["phantom"]


def test_base_as_a_single_string(tmp_path):
    write(tmp_path / "a.yaml", "seed: 5\n")
    cfg = load_config(write(tmp_path / "sub" / "b.yaml", "_base_: ../a.yaml\n"))
    assert cfg["seed"] == 5


@pytest.mark.parametrize("text,expected", [
    ("train.lr=1e-3", 1e-3),  # YAML 1.1 reads 1e-3 as a string; a float key accepts it
    ("train.lr=0.25", 0.25),
    ("train.epochs=2", 2),
    ("train.amp=false", False),
    ("train.grad_clip=null", None),
    ("data.windows=[bone]", ["bone"]),
    ("output_dir=/tmp/run", "/tmp/run"),
])
def test_overrides(tree, text, expected):
    cfg = load_config(tree, [text])
    node = cfg
    for part in text.split("=")[0].split("."):
        node = node[part]
    assert node == expected and type(node) is type(expected)


def test_parse_override_uses_yaml_safe_load():
    assert parse_override("a.b={x: 1}") == (["a", "b"], {"x": 1})
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("train.lr")


def test_unsafe_yaml_is_refused(tmp_path):
    path = write(tmp_path / "evil.yaml", "seed: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_unknown_key_suggests_close_match_and_names_file(tmp_path):
    path = write(tmp_path / "typo.yaml", "train: {lrr: 0.1}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "train.lrr" in msg and "'train.lr'" in msg and "typo.yaml" in msg


def test_unknown_key_in_override(tree):
    with pytest.raises(ConfigError, match=r"override 'trian.lr=1'.*did you mean 'train'"):
        load_config(tree, ["trian.lr=1"])


def test_wrong_type_names_key_and_types(tmp_path):
    path = write(tmp_path / "bad.yaml", "train: {epochs: ten}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*train.epochs must be int, got string \('ten'\)"):
        load_config(path)
    with pytest.raises(ConfigError, match="train.amp must be bool"):
        load_config(write(tmp_path / "ok.yaml", ""), ["train.amp=3"])


def test_bad_stage_key(tmp_path):
    path = write(tmp_path / "s.yaml", "schedule: {name: curriculum, stages: [{epochs: 1, head: [cls]}]}\n")
    with pytest.raises(ConfigError, match=r"schedule.stages.0.head.*did you mean 'schedule.stages.0.heads'"):
        load_config(path)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    path = write(tmp_path / "child.yaml", "_base_: [missing_base.yaml]\n")
    with pytest.raises(ConfigError, match=r"missing_base.yaml \(named in _base_ of .*child.yaml\)"):
        load_config(path)


def test_model_heads_follow_the_config_and_null_drops_one(tmp_path):
    pytest.importorskip("hemo_mtl.models")
    from hemo_mtl.models import MODEL_DEFAULTS

    base = write(tmp_path / "m.yaml", "model: {heads: {cls: {type: classification}, det: {type: rcnn}}}\n")
    cfg = load_config(write(tmp_path / "c.yaml", "_base_: m.yaml\nmodel: {heads: {det: null}}\n"))
    assert list(cfg["model"]["heads"]) == ["cls"]
    assert cfg["model"]["heads"]["cls"] == MODEL_DEFAULTS["heads"]["cls"]
    assert list(load_config(base)["model"]["heads"]) == ["cls", "det"]
    with pytest.raises(ConfigError, match="model.backbone.nmae"):
        load_config(base, ["model.backbone.nmae=resnet50"])


def test_a_head_of_another_type_replaces_the_base_section(tmp_path):
    pytest.importorskip("hemo_mtl.models")
    from hemo_mtl.models import HEAD_DEFAULTS

    write(tmp_path / "m.yaml", "model: {heads: {cls: {type: classification}, "
                               "det: {type: rcnn, anchor_sizes: [4, 8, 16, 32, 64], mask_layers: 2}}}\n")
    cfg = load_config(write(tmp_path / "y.yaml", "_base_: m.yaml\nmodel: {heads: {det: {type: yolo, levels: [p2]}}}\n"))
    assert cfg["model"]["heads"]["det"] == {**HEAD_DEFAULTS["yolo"], "levels": ["p2"]}  # no Mask R-CNN keys left
    same = load_config(write(tmp_path / "r.yaml", "_base_: m.yaml\nmodel: {heads: {det: {type: rcnn, mask: false}}}\n"))
    assert same["model"]["heads"]["det"]["anchor_sizes"] == [4, 8, 16, 32, 64]  # same type: still merges
    assert same["model"]["heads"]["det"]["mask"] is False


def test_saved_config_reloads_identically(tree, tmp_path):
    cfg = load_config(tree, ["train.lr=0.01"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load(path.read_text()) == cfg
    assert load_config(path) == cfg
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left


@pytest.mark.parametrize("name", sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml")
                                         if "_base_" not in p.parts))
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert cfg["schedule"]["name"] in ("joint", "curriculum", "cascade")


def test_input_channels_must_match_windows(tmp_path):
    pytest.importorskip("hemo_mtl.models")
    with pytest.raises(ConfigError, match=r"in_chans=1 but data.windows has 2"):
        load_config(write(tmp_path / "w.yaml", "data: {windows: [brain, bone]}\nmodel: {backbone: {in_chans: 1}}\n"))


@pytest.mark.parametrize("override, message", [
    ("train.lr=-1", "train.lr=-1 is out of range: must be > 0"),
    ("train.lr=0", "train.lr=0 is out of range: must be > 0"),
    ("data.batch_size=0", "data.batch_size=0 is out of range: must be > 0"),
    ("data.image_size=0", "data.image_size=0 is out of range: must be > 0"),
    ("train.epochs=0", "train.epochs=0 is out of range"),
    ("data.num_workers=-1", "data.num_workers=-1 is out of range: must be >= 0"),
    ("data.split.val=1.5", r"data.split.val=1.5 is out of range: must be in \[0, 1\]"),
    ("schedule.cascade.target_sensitivity=-0.1", "schedule.cascade.target_sensitivity=-0.1 is out of range"),
    ("schedule.stages=[{epochs: 0}]", "schedule.stages.0.epochs=0 is out of range"),
])
def test_numbers_out_of_range_are_named_at_the_config(override, message):
    with pytest.raises(ConfigError, match=f"command-line override .*{message}"):
        load_config(CONFIGS / "demo.yaml", [override])


def test_range_checked_in_files_too_and_none_means_off(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("_base_: " + str(CONFIGS / "demo.yaml") + "\ndata: {batch_size: -4}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: data.batch_size=-4 is out of range"):
        load_config(bad)
    cfg = load_config(CONFIGS / "demo.yaml", ["train.grad_clip=null", "train.lr=1e-4", "data.split.val=0"])
    assert cfg["train"]["grad_clip"] is None and cfg["train"]["lr"] == 1e-4 and cfg["data"]["split"]["val"] == 0
