"""tools/run_grid.py: run plan, resume (finished runs skipped), fold mean/std table."""
import json
from pathlib import Path

import pytest

from hemo_mtl.cli import run_grid

REPO = Path(__file__).resolve().parents[2]


def _finish(run_dir: Path, metrics: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "final_metrics.json").write_text(json.dumps(metrics))


def test_plan_expands_globs_skips_bases_and_adds_folds(tmp_path):
    configs = run_grid.expand([str(REPO / "configs/hemorica/cls_resnet*.yaml"), str(REPO / "configs/hemorica/_base_cls.yaml")])
    assert [c.stem for c in configs] == ["cls_resnet18", "cls_resnet50"]
    runs = run_grid.plan(configs[:1], tmp_path, folds=3)
    assert [(f, d.relative_to(tmp_path).as_posix()) for _, f, d in runs] == [
        (0, "cls_resnet18/fold0"), (1, "cls_resnet18/fold1"), (2, "cls_resnet18/fold2")]
    cmd = run_grid.command(configs[0], 2, runs[2][2], ["train.epochs=1"])
    assert cmd[-2:] == ["train.epochs=1", "data.split.fold=2"] and f"output_dir={runs[2][2]}" in cmd
    with pytest.raises(FileNotFoundError):
        run_grid.expand([str(tmp_path / "nothing*.yaml")])


def test_finished_runs_are_skipped_and_the_table_has_fold_mean_and_std(tmp_path, capsys, monkeypatch):
    cfg = "configs/kaggle/cls_resnet18.yaml"
    for k, f1 in enumerate([0.5, 0.7]):
        _finish(tmp_path / "cls_resnet18" / f"fold{k}", {"cls/any/f1": f1, "init": "random"})
    calls = []
    monkeypatch.setattr(run_grid.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    monkeypatch.chdir(REPO)
    code = run_grid.main(run_grid.parse_args([cfg, "--folds", "3", "--out", str(tmp_path), "--keys", "cls/any/f1"]))
    assert code == 0
    assert len(calls) == 1 and calls[0][-1] == "data.split.fold=2"  # only the unfinished fold ran
    assert capsys.readouterr().out.count("skip (finished)") == 2
    lines = (tmp_path / "grid.csv").read_text().splitlines()
    assert lines[0] == "config,fold,init,cls/any/f1"
    assert lines[-2].endswith(",mean of 2,random,0.6") and lines[-1].startswith(f"{cfg},std of 2,random,0.1414")
    assert "| configs/kaggle/cls_resnet18.yaml | mean of 2 | random | 0.6000 |" in (tmp_path / "grid.md").read_text()


def test_an_unfinished_run_resumes_or_restarts_and_a_bad_metrics_file_is_left_out(tmp_path, capsys):
    cfg = REPO / "configs" / "kaggle" / "cls_resnet18.yaml"
    crashed, early, fresh = tmp_path / "crashed", tmp_path / "early", tmp_path / "fresh"
    (crashed / "checkpoints").mkdir(parents=True)
    (crashed / "checkpoints" / "model_0002.pth").write_bytes(b"x")
    early.mkdir()
    (early / "metrics.json").write_text("{}\n")  # stopped after an evaluation, before its first checkpoint
    # train_net refuses a used run dir without --resume or --overwrite: the grid passes the right one, last
    # (an override after `--resume` would be read as its checkpoint path)
    assert run_grid.command(cfg, 1, crashed, ["train.epochs=2"])[-2:] == ["data.split.fold=1", "--resume"]
    assert run_grid.command(cfg, None, early, [])[-1] == "--overwrite"
    assert "--resume" not in run_grid.command(cfg, None, fresh, []) and "--overwrite" not in run_grid.command(cfg, None, fresh, [])
    _finish(tmp_path / "cls_resnet18", {"cls/any/f1": 0.5})
    (tmp_path / "cls_resnet18" / "final_metrics.json").write_text("{cut")
    rows = run_grid.collect(run_grid.plan([cfg], tmp_path, 0), ["cls/any/f1"])
    assert rows == [] and "final_metrics.json: unreadable" in capsys.readouterr().err
