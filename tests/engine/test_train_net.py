"""tools/train_net.py end to end on a tiny phantom with the real model, data and evaluator (slow)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TINY = ["data.image_size=64", "data.phantom={patients: 6, seed: 1, size: 64, slices: 8}",
        "data.split={seed: 32, val: 0.2, test: 0.2}", "data.batch_size=4", "train.progress=false",
        "train.num_threads=1", "train.lr_schedule.warmup_iters=2", "eval.image_panels=1"]


def train_net():
    spec = importlib.util.spec_from_file_location("train_net", REPO / "tools" / "train_net.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
