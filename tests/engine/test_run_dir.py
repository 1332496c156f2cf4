"""engine/run_dir.py: the run folder a training writes, refused when used, replaced, resumed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from hemo_mtl.config import ConfigError, load_config
from hemo_mtl.engine.checkpoint import CheckpointError, checkpoint_name
from hemo_mtl.engine.distributed import DistInfo
from hemo_mtl.engine.run_dir import (check_run_dir, clear_run_dir, eval_dir, open_run_dir, resume_state,
                                     trim_metrics, used_run_files, warn_config_differs, write_run_splits)

REPO = Path(__file__).resolve().parents[2]


def _cfg(out: Path, *opts: str) -> dict:
    return load_config(REPO / "configs" / "demo.yaml", [f"output_dir={out}", *opts])


def test_eval_dir_is_one_folder_per_weights_file_and_split(tmp_path):
    assert eval_dir(tmp_path, "runs/x/model_final.pth", "val") == tmp_path / "eval" / "model_final-val"
    assert eval_dir(tmp_path, "ckpt.pt", "test") == tmp_path / "eval" / "ckpt.pt-test"
    assert eval_dir(tmp_path, "../../elsewhere/model_0003.pth", "test").parent == tmp_path / "eval"
    with pytest.raises(ConfigError, match="--eval-only needs --weights"):
        eval_dir(tmp_path, None, "test")


def test_a_used_run_dir_is_refused_unless_resumed_or_replaced(tmp_path):
    check_run_dir(tmp_path / "new", resume=False, overwrite=False)  # nothing there: fine
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / checkpoint_name(1)).write_bytes(b"x")
    (tmp_path / "metrics.json").write_text("{}\n")
    assert used_run_files(tmp_path) == ["metrics.json", "checkpoints/"]
    with pytest.raises(ConfigError, match=r"already holds a run \(metrics.json, checkpoints/\)"):
        check_run_dir(tmp_path, resume=False, overwrite=False)
    with pytest.raises(ConfigError, match="give one"):
        check_run_dir(tmp_path, resume=True, overwrite=True)
    check_run_dir(tmp_path, resume=True, overwrite=False)
    check_run_dir(tmp_path, resume=False, overwrite=True)


def test_clear_run_dir_keeps_the_generated_data_and_foreign_files(tmp_path):
    for name in ("config.yaml", "model_final.pth", "metrics.json", "events.out.tfevents.1.host", "notes.txt"):
        (tmp_path / name).write_text("x")
    for folder in ("checkpoints", "report", "eval/model_final-test", "data"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "f").write_text("x")
    clear_run_dir(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["data", "data/f", "notes.txt"]


def test_open_run_dir_writes_the_config_and_leaves_a_run_alone_for_eval_only(tmp_path):
    cfg = _cfg(tmp_path / "run")
    dist = DistInfo()
    out = open_run_dir(cfg, dist)
    assert out == tmp_path / "run"
    assert yaml.safe_load((out / "config.yaml").read_text())["output_dir"] == str(tmp_path / "run")
    (out / "model_final.pth").write_bytes(b"weights")
    with pytest.raises(ConfigError, match="already holds a run"):
        open_run_dir(cfg, dist)
    ev = open_run_dir(_cfg(tmp_path / "run", "eval.final_split=val"), dist, eval_only=True,
                      weights=str(out / "model_final.pth"))
    assert ev == out / "eval" / "model_final-val" and (ev / "config.yaml").is_file()
    assert (out / "model_final.pth").read_bytes() == b"weights"
    open_run_dir(cfg, dist, overwrite=True)
    assert not (out / "model_final.pth").exists() and not (out / "eval").exists()


def test_run_splits_file_is_the_folds_or_a_copy_of_the_data_folders(tmp_path):
    data, out = tmp_path / "data", tmp_path / "run"
    data.mkdir(), out.mkdir()
    (data / "splits.json").write_text('{"train": ["a"], "val": ["b"], "test": ["c"]}')
    write_run_splits(_cfg(out), data, {"ignored": True}, out)
    assert json.loads((out / "splits.json").read_text()) == {"train": ["a"], "val": ["b"], "test": ["c"]}
    write_run_splits(_cfg(out), data, {}, data)  # the data folder is the run folder: nothing to copy
    fold = {"train": ["a"], "val": ["c"], "test": [], "fold": 1}
    write_run_splits(_cfg(out, "data.split.folds=2"), data, fold, out)
    assert json.loads((out / "splits.json").read_text()) == fold


def test_trim_metrics_keeps_the_validation_lines_up_to_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.json"
    rows = [{"epoch": 1, "split": "val"}, {"epoch": 2, "split": "val"}, {"epoch": 3, "split": "val"},
            {"epoch": 3, "split": "test"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    trim_metrics(path, 2)
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows[:2]
    trim_metrics(tmp_path / "missing.json", 2)  # no metrics yet: nothing to do


def test_resume_state_names_a_run_without_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        resume_state(tmp_path, "latest", "cpu")
    (tmp_path / "checkpoints").mkdir()
    torch.save({"epoch": 2}, tmp_path / "checkpoints" / checkpoint_name(2))
    path, state = resume_state(tmp_path, "latest", "cpu")
    assert path.name == checkpoint_name(2) and state["epoch"] == 2


def test_config_differences_are_a_warning_naming_the_keys(tmp_path, capsys):
    saved = _cfg(tmp_path)
    warn_config_differs(_cfg(tmp_path, "train.lr=0.5", "eval.flip_tta=true"), saved, "w.pth", ignore=("eval.",))
    err = capsys.readouterr().err
    assert "differs from w.pth's in 1 key(s)" in err and "train.lr" in err and "flip_tta" not in err
    warn_config_differs(saved, None, "w.pth")  # a checkpoint without a config: nothing to compare
    assert capsys.readouterr().err == ""
