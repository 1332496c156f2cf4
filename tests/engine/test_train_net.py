"""tools/train_net.py end to end on a tiny phantom with the real model, data and evaluator (slow)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TINY = ["data.image_size=64", "data.phantom={patients: 6, seed: 1, size: 64, slices: 8}",
        "data.split={seed: 32, val: 0.2, test: 0.2}", "data.batch_size=4", "train.progress=false",
        "train.num_threads=1", "train.lr_schedule.warmup_iters=2", "eval.image_panels=1"]


def train_net():
    from hemo_mtl.cli import train

    return train


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["cascade", "curriculum"])
def test_train_resume_and_eval_only(tmp_path, schedule):
    tool = train_net()
    out = tmp_path / schedule
    opts = [f"output_dir={out}", f"schedule.name={schedule}", "train.epochs=3", *TINY]
    args = tool.parse_args(["--config", str(REPO / "configs" / "demo.yaml"), *opts])
    final = tool.main(args)
    for name in ("config.yaml", "splits.json", "model_final.pth", "metrics.json", "final_metrics.json",
                 "report.md", "checkpoints/model_0003.pth"):
        assert (out / name).is_file(), name
    assert list(out.glob("events.out.tfevents.*"))
    lines = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert lines[-1]["split"] == "test" and "cls/any/auc" in lines[-1]
    if schedule == "cascade":
        assert "cascade/gate/skipped_fraction" in final
        assert torch.load(out / "model_final.pth", weights_only=True)["cascade"]["threshold"] == pytest.approx(
            final["cascade/gate/threshold"])
    # --eval-only on the shipped weights reproduces the final test metrics
    again = tool.main(tool.parse_args(["--config", str(REPO / "configs" / "demo.yaml"), *opts, "--eval-only",
                                       "--weights", str(out / "model_final.pth")]))
    for k in ("cls/any/auc", "seg/any/dice"):
        assert again[k] == pytest.approx(final[k], nan_ok=True)
    if schedule == "cascade":  # the config's gate wins over the checkpoint's: a fixed threshold, a new target
        def eval_only(*extra):
            return tool.main(tool.parse_args(["--config", str(REPO / "configs" / "demo.yaml"), *opts, *extra,
                                              "--eval-only", "--weights", str(out / "model_final.pth")]))
        assert again["cascade/gate/threshold"] == pytest.approx(final["cascade/gate/threshold"])
        fixed = eval_only("schedule.cascade.threshold=0.0")
        assert fixed["cascade/gate/threshold"] == 0.0 and fixed["cascade/gate/skipped_fraction"] == 0.0
        strict = eval_only("schedule.cascade.target_sensitivity=1.0")
        assert strict["cascade/gate/threshold"] <= final["cascade/gate/threshold"]
        assert strict["cascade/gate/sensitivity"] >= final["cascade/gate/sensitivity"]
    # --resume after the last epoch trains nothing more and keeps the iteration count
    resumed = tool.main(tool.parse_args(["--config", str(REPO / "configs" / "demo.yaml"), *opts, "--resume"]))
    assert resumed["cls/any/auc"] == pytest.approx(final["cls/any/auc"], nan_ok=True)


def test_cli_reports_config_errors_in_one_line(tmp_path, capsys):
    tool = train_net()
    code = tool.cli(["--config", str(REPO / "configs" / "demo.yaml"), "train.lrr=0.1", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "did you mean 'train.lr'" in err
    assert tool.cli(["--config", str(tmp_path / "missing.yaml")]) == 2


# a run small enough for the fast suite: joint schedule, cls + seg, 5 patients of 4 slices at 32 px
SMALL = ["data.image_size=32", "data.phantom={patients: 5, seed: 1, size: 32, slices: 4}",
         "data.split={seed: 32, val: 0.2, test: 0.2}", "data.batch_size=4", "train.progress=false",
         "train.num_threads=1", "train.lr_schedule.warmup_iters=2", "eval.image_panels=0", "schedule.name=joint",
         "train.epochs=2", "eval.tasks=[cls, seg]", "model.heads.det=null"]


def _cli(tool, out, *extra, opts=()):
    return tool.cli(["--config", str(REPO / "configs" / "demo.yaml"), f"output_dir={out}", *SMALL, *opts, *extra])


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    tool = train_net()
    out = tmp_path_factory.mktemp("run") / "small"
    assert _cli(tool, out) == 0
    return tool, out


def _copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_used_output_dir_is_refused_without_resume_or_overwrite(small_run, tmp_path, capsys):
    tool, src = small_run
    out = _copy_run(src, tmp_path / "run")
    before = (out / "model_final.pth").read_bytes()
    metrics = (out / "metrics.json").read_text()
    capsys.readouterr()
    assert _cli(tool, out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a run (model_final.pth, metrics.json" in err and "--overwrite" in err
    assert (out / "model_final.pth").read_bytes() == before and (out / "metrics.json").read_text() == metrics
    assert _cli(tool, out, "--resume", "--overwrite") == 2
    assert "give one" in capsys.readouterr().err
    # --overwrite replaces the run: metrics.json holds only the new run's lines (eval_period 0: the last epoch + test)
    assert _cli(tool, out, "--overwrite") == 0
    lines = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert [(r["split"], r["epoch"]) for r in lines] == [("val", 2), ("test", 2)]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["model_0001.pth", "model_0002.pth"]


def test_resume_skips_a_truncated_checkpoint_and_says_so(small_run, tmp_path, capsys):
    tool, src = small_run
    out = _copy_run(src, tmp_path / "run")
    last = out / "checkpoints" / "model_0002.pth"
    last.write_bytes(last.read_bytes()[:1000])  # a kill during a copy / a full disk
    capsys.readouterr()
    assert _cli(tool, out, "--resume", opts=["train.lr=0.003"]) == 0
    err = capsys.readouterr().err
    assert "skipped cannot load checkpoint" in err and "model_0002.pth: truncated" in err
    assert "resuming from the newest intact checkpoint model_0001.pth" in err and "at epoch 1" in err
    assert "config differs" in err and "train.lr: 0.002 -> 0.003" in err  # named, not refused
    lines = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert [(r["split"], r["epoch"]) for r in lines] == [("val", 2), ("test", 2)]  # not mixed
    assert torch.load(last, weights_only=True)["epoch"] == 2  # epoch 2 trained again and saved whole


def test_resume_with_bad_checkpoints_is_one_line(small_run, tmp_path, capsys):
    tool, src = small_run
    out = _copy_run(src, tmp_path / "run")
    for p in (out / "checkpoints").iterdir():
        p.write_bytes(b"\x00" * 64)
    capsys.readouterr()
    assert _cli(tool, out, "--resume") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no intact checkpoint" in err and "weights_only" not in err
    assert _cli(tool, out, "--resume", str(tmp_path / "missing.pth")) == 2
    assert capsys.readouterr().err == f"error: checkpoint not found: {tmp_path / 'missing.pth'}\n"
    # weights of another model: the first differing keys, not every name
    assert _cli(tool, tmp_path / "other", "--eval-only", "--weights", str(src / "model_final.pth"),
                opts=["model.heads.seg=null"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights do not fit the model" in err and "unexpected (heads.seg." in err
    assert len(err) < 600


def test_eval_only_writes_its_own_folder_and_names_its_split(small_run, tmp_path):
    tool, src = small_run
    out = _copy_run(src, tmp_path / "run")
    run_files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert _cli(tool, out, "--eval-only", "--weights", str(out / "model_final.pth"), opts=["eval.final_split=val"]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == run_files  # the run is untouched
    ev = out / "eval" / "model_final-val"
    lines = [json.loads(line) for line in (ev / "metrics.json").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["split"] == "val"
    assert json.loads((ev / "final_metrics.json").read_text())["cls/any/auc"] == pytest.approx(lines[0]["cls/any/auc"], nan_ok=True)
    assert "hemo-mtl val report" in (ev / "report.md").read_text()
    # a rerun replaces this evaluation rather than appending to it
    assert _cli(tool, out, "--eval-only", "--weights", str(out / "model_final.pth"), opts=["eval.final_split=val"]) == 0
    assert len((ev / "metrics.json").read_text().splitlines()) == 1


def test_resume_followed_by_overrides_reads_them_as_overrides(tmp_path):
    tool = train_net()
    args = tool.parse_args(["--config", "c.yaml", "--resume", "train.epochs=4", "data.batch_size=2"])
    assert args.resume == "latest" and args.opts == ["train.epochs=4", "data.batch_size=2"]
    ckpt = tmp_path / "model_0002.pth"
    ckpt.write_bytes(b"")
    assert tool.parse_args(["--config", "c.yaml", "--resume", str(ckpt)]).resume == str(ckpt)
