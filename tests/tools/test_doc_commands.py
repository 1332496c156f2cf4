"""Every command that README.md and docs/*.md show runs, on tiny inputs, so none can silently break.

The documented commands are read from the Markdown (fenced and indented code blocks, inline code in
text and tables; backslash continuations joined) and reduced to a key: the tool, its sub-command
(benchmark.py) or task (evaluate.py), its config file when that is a real file, and the set of
``--flags`` it uses (``[--optional]`` parts included). ``SMOKE`` holds one invocation per key, with the
same tool and flags on inputs this test makes (a phantom of a few 32 px patients, configs shortened
by overrides); only flags listed in ``tiny`` may be added to keep it small. A documented command
without an entry fails ``test_every_documented_command_has_a_smoke_entry``.

Tools run in this process (the ``cli`` function that ``tools/<name>.py`` and its console command
call), which shares the imports; ``run_grid`` launches ``train_net`` in-process too. torchrun and ``benchmark.py model`` start processes of their own and
are marked slow.
"""
from __future__ import annotations

import importlib.util
import json
import runpy
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LAUNCHERS = ("python tools/", "torchrun ")

# a run small enough for seconds: 5 patients x 4 slices at 32 px, 2 epochs
TINY_DATA = ["data.image_size=32", "data.phantom={patients: 5, seed: 1, size: 32, slices: 4}",
             "data.split={seed: 32, val: 0.2, test: 0.2}", "data.batch_size=4", "data.num_workers=0"]
TINY_TRAIN = [*TINY_DATA, "train.progress=false", "train.num_threads=1", "train.lr_schedule.warmup_iters=2",
              "eval.image_panels=0", "train.epochs=2", "eval.select.rule=null"]
TWO_STAGES = "schedule.stages=[{name: classifier, epochs: 1, heads: [cls], labels: cls}, " \
             "{name: localizers, epochs: 1, heads: [cls, seg, det], labels: boxes}]"


# ------------------------------------------------------------------------------------ the documents
def _code_lines(text: str):
    """(line number, code) of fenced blocks, indented blocks and inline code spans."""
    fence = None
    lines = text.splitlines()
    for i, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence else stripped
            continue
        if fence or (line.startswith("    ") and stripped):
            yield i, stripped
        else:
            for span in re.findall(r"`([^`]+)`", line):
                yield i, span.strip()


def documented_commands() -> list[tuple[str, str]]:
    """("README.md:216", command) for every `python tools/...` and `torchrun ...` the docs show."""
    found = []
    for doc in DOCS:
        pending, start = "", 0
        for number, code in _code_lines(doc.read_text(encoding="utf-8")):
            if pending:
                code = pending + " " + code
            else:
                start = number
            if code.endswith("\\"):
                pending = code[:-1].rstrip()
                continue
            pending = ""
            code = re.sub(r"^(\$ |/usr/bin/time )", "", code)
            code = re.sub(r"\s+#.*$", "", code)  # a trailing comment
            if code.startswith(LAUNCHERS):
                found.append((f"{doc.relative_to(REPO)}:{start}", " ".join(code.split())))
    return found


def command_key(command: str, leave_out: tuple[str, ...] = ()) -> str:
    """tool [sub-command | --task X | --config FILE] --flag ... (sorted): what a smoke entry must match
    (``leave_out``: flags not counted)."""
    tokens = shlex.split(command.replace("[", " ").replace("]", " "))
    launcher = "torchrun " if tokens[0] == "torchrun" else ""
    script_at = next(i for i, t in enumerate(tokens) if t.endswith(".py"))
    script, rest = tokens[script_at], tokens[script_at + 1:]
    parts = [launcher + script]
    if script == "tools/benchmark.py" and rest:
        parts.append(rest[0])
    named = set()
    for option in ("--task", "--config"):
        if option in rest and rest.index(option) + 1 < len(rest):
            value = rest[rest.index(option) + 1]
            if option == "--task" or (REPO / value).is_file():
                parts.append(f"{option} {value}")
                named.add(option)
    flags = sorted({t.split("=")[0] for t in rest if t.startswith("--")} - named - set(leave_out))
    return " ".join(parts + flags)


# ------------------------------------------------------------------------------------ tiny inputs
def _load(tool: str):
    """The hemo_mtl.cli module whose ``cli`` the script ``tools/<tool>`` runs."""
    return sys.modules[runpy.run_path(str(REPO / "tools" / tool))["cli"].__module__]


class Workspace:
    """Inputs the smoke invocations share, each made once on first use."""

    def __init__(self, root: Path):
        self.root = root
        self._made: dict = {}
        self._tools: dict = {}

    def tool(self, name: str):
        if name not in self._tools:
            self._tools[name] = _load(name)
        return self._tools[name]

    def once(self, key, make: Callable):
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]

    def phantom(self) -> Path:
        def make():
            from hemo_mtl.data.phantom import write_phantom_dataset

            write_phantom_dataset(self.root / "phantom", patients=4, seed=0, size=32, slices=4)
            return self.root / "phantom"
        return self.once("phantom", make)

    def converted(self) -> Path:
        def make():
            from hemo_mtl.data.convert import convert_dataset

            out = self.root / "converted"
            convert_dataset("nifti", self.phantom(), out, formats=["manifest", "png", "coco"], progress=False)
            return out
        return self.once("converted", make)

    def trained(self, config: str, *extra: str) -> Path:
        """A finished tiny run of ``config`` (its run dir)."""
        def make():
            out = self.root / "runs" / Path(config).stem
            assert self.tool("train_net.py").cli(["--config", config, f"output_dir={out}", *TINY_TRAIN,
                                                  *extra]) == 0
            return out
        return self.once(("trained", config), make)

    def demo_weights(self) -> Path:
        return self.trained("configs/demo.yaml") / "model_final.pth"

    def scan(self) -> Path:
        """A phantom scan (NIfTI) and the same scan as a DICOM series and as PNG slices."""
        def make():
            import nibabel as nib
            import numpy as np
            from PIL import Image

            from hemo_mtl.data.io import write_dicom_series
            from hemo_mtl.data.phantom import make_phantom_case
            from hemo_mtl.data.windowing import window_hu

            case = make_phantom_case(2, size=32, slices=4)
            root = self.root / "scans"
            root.mkdir()
            volume = np.round(case.volume).astype(np.float32)
            nib.save(nib.Nifti1Image(volume, case.affine), str(root / "scan.nii.gz"))
            write_dicom_series(volume, case.affine, root / "dicom_series")
            (root / "slices_png").mkdir()
            for k in range(volume.shape[2]):
                png = (window_hu(volume[:, :, k], 40, 80) * 255).astype(np.uint8)
                Image.fromarray(png).save(root / "slices_png" / f"{k + 1}.png")
            (root / "folder_of_scans").mkdir()
            shutil.copy(root / "scan.nii.gz", root / "folder_of_scans" / "a.nii.gz")
            shutil.copytree(root / "dicom_series", root / "folder_of_scans" / "b")
            return root
        return self.once("scan", make)

    def ctich_release(self) -> Path:
        """Phantom patients in the CT-ICH JPG release layout (the real-data recipe's input)."""
        def make():
            from hemo_mtl.data.phantom_display import write_ctich_phantom

            write_ctich_phantom(self.root / "ctich", patients=6, seed=3, size=32, slices=4, canvas=40, first_number=100)
            return self.root / "ctich"
        return self.once("ctich", make)

    def eval_files(self) -> Path:
        """cls CSVs (test + validation), a COCO ground truth with results, label-mask folders."""
        def make():
            import nibabel as nib
            import numpy as np
            import pandas as pd

            from hemo_mtl.categories import LABELS, coco_categories

            root = self.root / "evalfiles"
            root.mkdir()
            rng = np.random.default_rng(0)
            for name in ("", "val_"):
                rows = pd.DataFrame([(f"P{p}", s) for p in range(6) for s in range(4)],
                                    columns=["patient_id", "slice_idx"])
                y = (rng.random((len(rows), 6)) < 0.4).astype(int)
                truth, prob = rows.copy(), rows.copy()
                for j, label in enumerate(LABELS):
                    truth[label] = y[:, j]
                    prob[label] = np.clip(0.4 * y[:, j] + 0.6 * rng.random(len(rows)), 0, 1).round(3)
                truth.to_csv(root / f"{name}labels.csv", index=False)
                prob.to_csv(root / f"{name}probs.csv", index=False)
            images = [{"id": i, "file_name": f"s{i}.png", "height": 32, "width": 32} for i in (1, 2)]
            anns = [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [4, 4, 8, 8], "area": 64, "iscrowd": 0,
                     "segmentation": [[4, 4, 12, 4, 12, 12, 4, 12]]}]
            (root / "instances.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                             "categories": coco_categories()}))
            (root / "results.json").write_text(json.dumps([
                {"image_id": 1, "category_id": 2, "bbox": [5, 4, 8, 8], "score": 0.9,
                 "segmentation": [[5, 4, 13, 4, 13, 12, 5, 12]]}]))
            for folder in ("gt_masks", "pred_masks"):
                (root / folder).mkdir()
                mask = np.zeros((16, 16, 3), np.uint8)
                mask[2:6, 2:6 if folder == "gt_masks" else 7, 1] = 4
                nib.save(nib.Nifti1Image(mask, np.diag([0.5, 0.5, 5.0, 1.0])), str(root / folder / "case.nii.gz"))
            return root
        return self.once("eval", make)


# ------------------------------------------------------------------------------------ smoke entries
@dataclass
class Smoke:
    """One documented command on tiny inputs: ``run(ws)`` returns (command it ran, exit status)."""
    run: Callable
    tiny: tuple[str, ...] = ()  # flags added only to keep the run small
    needs: tuple[str, ...] = ()  # "yolo": the ultralytics extra
    slow: str = ""  # why it cannot be fast
    instance_of: str = ""  # for a documented template (`mtl_<x>.yaml`): the key of the command it runs
    marks: list = field(default_factory=list)


def _main(ws, tool: str, command: str, *extra: str) -> tuple[str, int]:
    """Run ``command`` (as documented, tiny inputs filled in) + ``extra`` (overrides and tiny flags)
    through the tool's ``cli`` in this process; returns (the whole command line, exit status)."""
    argv = shlex.split(command)[2:] + list(extra)
    ran = " ".join([command, *map(shlex.quote, extra)])
    return ran, ws.tool(tool).cli(argv)


def _train(config: str, *extra: str, flags: str = ""):
    def run(ws):
        cmd, code = _main(ws, "train_net.py", f"python tools/train_net.py --config {config} {flags}".strip(),
                          f"output_dir={ws.root / 'runs' / ('x_' + Path(config).stem)}", *TINY_TRAIN, *extra)
        return cmd, code
    return run


def _resume(ws):
    """Both documented forms: the latest checkpoint, and a given one."""
    run_dir = ws.trained("configs/mtl_joint.yaml")
    for target in ("", str(run_dir / "checkpoints" / "model_0001.pth")):
        cmd = f"python tools/train_net.py --config configs/mtl_joint.yaml --resume {target}".strip()
        ran, code = _main(ws, "train_net.py", cmd, f"output_dir={run_dir}", *TINY_TRAIN)
        if code:
            break
    return ran, code


def _eval_only(ws):
    run_dir = ws.trained("configs/mtl_joint.yaml")
    cmd = f"python tools/train_net.py --config configs/mtl_joint.yaml --eval-only --weights {run_dir / 'model_final.pth'}"
    result = _main(ws, "train_net.py", cmd, f"output_dir={run_dir}", *TINY_TRAIN)
    assert (run_dir / "eval" / "model_final-test" / "final_metrics.json").is_file()
    return result


def _torchrun(ws):
    out = ws.root / "runs" / "ddp"
    cmd = ["torchrun", "--nproc_per_node", "2", "tools/train_net.py", "--config", "configs/mtl_joint.yaml",
           f"output_dir={out}", *TINY_TRAIN]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return shlex.join(cmd), done.returncode


def _make_phantom(ws):
    out = ws.root / "made_phantom"
    result = _main(ws, "make_phantom.py", f"python tools/make_phantom.py --out {out} --patients 2 --seed 0",
                   "--size", "32", "--slices", "4")
    assert (out / "slice_labels.csv").is_file()
    return result


def _convert(ws):
    out = ws.root / "conv_all"
    result = _main(ws, "convert.py", f"python tools/convert.py --source nifti --input {ws.phantom()} --out {out} "
                                     "--formats manifest,png,coco,yolo", "--quiet")
    assert (out / "annotations" / "instances_train.json").is_file() and (out / "yolo").is_dir()
    return result


def _validate(ws):
    return _main(ws, "convert.py", "python tools/convert.py --validate "
                 f"{ws.converted() / 'annotations' / 'instances_train.json'}")


def _stats(ws):
    out = ws.root / "stats"
    result = _main(ws, "dataset_stats.py", f"python tools/dataset_stats.py --manifest "
                                           f"{ws.converted() / 'manifest.csv'} --out {out}")
    assert (out / "stats.json").is_file()
    return result


def _evaluate_cls_short(ws):
    e = ws.eval_files()
    return _main(ws, "evaluate.py", f"python tools/evaluate.py --task cls --gt {e / 'labels.csv'} "
                                    f"--pred {e / 'probs.csv'} --out {ws.root / 'eval_cls_short'}")


def _evaluate_cls(ws):
    e = ws.eval_files()
    return _main(ws, "evaluate.py", f"python tools/evaluate.py --task cls --gt {e / 'labels.csv'} --pred "
                 f"{e / 'probs.csv'} --out {ws.root / 'eval_cls'} --val-gt {e / 'val_labels.csv'} --val-pred "
                 f"{e / 'val_probs.csv'} --threshold-method sensitivity --target-sensitivity 0.9 --aggregation "
                 "topk --top-k 3 --bootstrap 20 --seed 0")


def _evaluate_det(ws):
    e = ws.eval_files()
    return _main(ws, "evaluate.py", f"python tools/evaluate.py --task det --gt {e / 'instances.json'} --pred "
                 f"{e / 'results.json'} --out {ws.root / 'eval_det'} --iou-type both --engine pycocotools "
                 "--froc-iou 0.5 --froc-criterion center")


def _evaluate_seg(ws):
    e = ws.eval_files()
    return _main(ws, "evaluate.py", f"python tools/evaluate.py --task seg --gt-masks {e / 'gt_masks'} "
                 f"--pred-masks {e / 'pred_masks'} --out {ws.root / 'eval_seg'} --hd95")


def _predict(kind: str):
    def run(ws):
        out = ws.root / f"preds_{kind}"
        result = _main(ws, "predict.py", f"python tools/predict.py --weights {ws.demo_weights()} --input "
                                         f"{ws.scan() / kind} --out {out}", "--threads", "1")
        assert (out / "summary.csv").is_file()
        return result
    return run


def _predict_dicom_seg(ws):
    out = ws.root / "preds_seg"
    result = _main(ws, "predict.py", f"python tools/predict.py --weights {ws.demo_weights()} --input "
                                     f"{ws.scan() / 'dicom_series'} --out {out} --dicom-seg", "--threads", "1")
    assert (out / "dicom_series" / "seg.dcm").is_file()
    return result


REAL_TINY = ["data.image_size=32", "data.batch_size=4", "data.num_workers=0", "train.epochs=1", "train.progress=false",
             "train.num_threads=1", "train.lr_schedule.warmup_iters=2",
             "data.synthetic={patients: 1, seed: 0, size: 32, slices: 4, canvas: 40}"]


def _train_real(ws):
    out = ws.root / "runs" / "ctich_jpg"
    return _main(ws, "train_net.py", f"python tools/train_net.py --config configs/real/ctich_jpg.yaml "
                                     f"data.root={ws.ctich_release()}", f"output_dir={out}", *REAL_TINY)


def _cross_validate(ws):
    out = ws.root / "cv"
    result = _main(ws, "cross_validate.py", f"python tools/cross_validate.py --config configs/real/ctich_jpg.yaml "
                                            f"--out {out} data.root={ws.ctich_release()}", "--folds", "3", *REAL_TINY)
    assert (out / "cv_results.json").is_file() and (out / "cv_report.md").is_file()
    return result


def _docs_tables(ws):
    return _main(ws, "docs_tables.py", "python tools/docs_tables.py", "--check")


def _predict_flags(*flags: str, ensemble: bool = False):
    """predict.py on the NIfTI scan with ``flags``; ``ensemble``: the demo checkpoint twice (an ensemble)."""
    def run(ws):
        out = ws.root / ("preds_" + "_".join(f.strip("-") for f in flags) + ("_ens" if ensemble else ""))
        weights = " ".join([str(ws.demo_weights())] * (2 if ensemble else 1))
        result = _main(ws, "predict.py", f"python tools/predict.py --weights {weights} --input "
                                         f"{ws.scan() / 'scan.nii.gz'} --out {out} {' '.join(flags)}", "--threads", "1")
        summary = json.loads((out / "scan" / "summary.json").read_text())
        assert summary["members"] == (2 if ensemble else 1)
        for flag, name in (("--save-probabilities", "probabilities.nii.gz"), ("--saliency", "saliency.nii.gz")):
            assert (out / "scan" / name).is_file() == (flag in flags), name
        return result
    return run


def _make_phantom_sized(ws):
    out = ws.root / "made_phantom_sized"
    result = _main(ws, "make_phantom.py", f"python tools/make_phantom.py --out {out} --patients 2 --seed 7 --size 32 "
                                          "--slices 4")
    assert len(list((out / "volumes").glob("*.nii.gz"))) == 2
    return result


def _benchmark_costs(ws):
    out = ws.root / "predict_costs.json"
    result = _main(ws, "benchmark.py", f"python tools/benchmark.py predict --costs --size 32 --slices 4 --repeats 1 "
                                       f"--out {out}", "--threads", "1", "--image-size", "32")
    assert len(json.loads(out.read_text())["rows"]) == 6
    return result


def _export(ws):
    out = ws.root / "exported"
    result = _main(ws, "export.py", f"python tools/export.py --weights {ws.demo_weights()} --format onnx --out {out}")
    assert (out / "model.onnx").is_file()
    return result


def _convert_nnunet(ws):
    out = ws.root / "conv_nnunet"
    result = _main(ws, "convert.py", f"python tools/convert.py --source nifti --input {ws.phantom()} --out {out} "
                                     "--formats manifest,nnunet --folds 2", "--quiet")
    assert list((out / "nnUNet_raw").glob("Dataset*/dataset.json"))
    return result


def _evaluate_seg_short(ws):
    e = ws.eval_files()
    return _main(ws, "evaluate.py", f"python tools/evaluate.py --task seg --gt-masks {e / 'gt_masks'} "
                 f"--pred-masks {e / 'pred_masks'} --out {ws.root / 'eval_seg_short'}")


def _benchmark(sub: str, *tiny: str, weights: bool = False):
    def run(ws):
        extra = ["--weights", str(ws.demo_weights())] if weights else []
        return _main(ws, "benchmark.py", f"python tools/benchmark.py {sub}", *extra, *tiny)
    return run


def _benchmark_train(ws):
    return _main(ws, "benchmark.py", "python tools/benchmark.py train --config configs/mtl_joint.yaml --iters 2 "
                 "--per-head", "--warmup", "0", *TINY_DATA, "train.num_threads=1")


def _grid(ws, folds: bool, documented: str = "--out --set"):
    """run_grid with train_net run in this process instead of a new interpreter (same command line)."""
    train = ws.tool("train_net.py")
    grid = ws.tool("run_grid.py")
    out = ws.root / ("grid_folds" if folds else "grid")
    config = "configs/physionet/unet_patch.yaml" if folds else "configs/hemorica/cls_resnet18.yaml"
    sets = [f"--set={o}" for o in ["data.root=null", "data.source=null", *TINY_TRAIN]]
    if folds:
        sets += [f"--set={o}" for o in ("data.split={seed: 32, val: 0.0, test: 0.0, folds: 2, fold: 0}",
                                         "data.patches.size=16", "data.patches.stride=16",
                                         "eval.sliding_window.size=16", "eval.sliding_window.stride=16")]
    command = f"python tools/run_grid.py {config} --out {out}" + (" --folds 2" if folds else "")
    calls = []

    def call(cmd):
        calls.append(cmd)
        assert cmd[:len(grid.TRAIN)] == grid.TRAIN
        return train.cli(cmd[len(grid.TRAIN):])

    original = grid.subprocess.call
    grid.subprocess.call = call
    try:
        result = _main(ws, "run_grid.py", command, *sets)
    finally:
        grid.subprocess.call = original
    assert len(calls) == (2 if folds else 1) and (out / "grid.md").is_file()
    return result


def _grid_folds(ws):
    return ws.once("grid_folds", lambda: _grid(ws, True))


def _threshold(ws):
    _grid_folds(ws)
    runs = ws.root / "grid_folds" / "unet_patch"
    result = _main(ws, "threshold_baseline.py", f"python tools/threshold_baseline.py {runs} --folds 2")
    assert (runs / "fold1" / "threshold_metrics.json").is_file()
    return result


SMOKE: dict[str, Smoke] = {
    "tools/train_net.py --config configs/demo.yaml": Smoke(lambda ws: (
        "python tools/train_net.py --config configs/demo.yaml", int(not ws.demo_weights().is_file()))),
    "tools/train_net.py --config configs/mtl_cascade.yaml": Smoke(_train("configs/mtl_cascade.yaml", TWO_STAGES),
                                                                  needs=("yolo",)),
    "tools/train_net.py --config": Smoke(  # the `configs/mtl_<x>.yaml` template: the demo config is one
        lambda ws: ("python tools/train_net.py --config configs/demo.yaml", int(not ws.demo_weights().is_file())),
        instance_of="tools/train_net.py --config configs/demo.yaml"),
    "tools/train_net.py --config configs/mtl_joint.yaml --resume": Smoke(_resume, needs=("yolo",)),
    "tools/train_net.py --config configs/mtl_joint.yaml --eval-only --weights": Smoke(_eval_only, needs=("yolo",)),
    "torchrun tools/train_net.py --config configs/mtl_joint.yaml": Smoke(
        _torchrun, needs=("yolo",), slow="two processes, each importing torch and training"),
    "tools/make_phantom.py --out --patients --seed": Smoke(_make_phantom, tiny=("--size", "--slices")),
    "tools/convert.py --formats --input --out --source": Smoke(_convert, tiny=("--quiet",)),
    "tools/convert.py --validate": Smoke(_validate),
    "tools/dataset_stats.py --manifest --out": Smoke(_stats),
    "tools/evaluate.py --task cls --gt --out --pred": Smoke(_evaluate_cls_short),
    "tools/evaluate.py --task cls --aggregation --bootstrap --gt --out --pred --seed --target-sensitivity "
    "--threshold-method --top-k --val-gt --val-pred": Smoke(_evaluate_cls),
    "tools/evaluate.py --task det --engine --froc-criterion --froc-iou --gt --iou-type --out --pred": Smoke(_evaluate_det),
    "tools/evaluate.py --task seg --gt-masks --hd95 --out --pred-masks": Smoke(_evaluate_seg),
    "tools/predict.py --input --out --weights": Smoke(_predict("scan.nii.gz"), tiny=("--threads",)),
    "tools/benchmark.py convert": Smoke(_benchmark("convert", "--patients", "2", "--size", "32", "--slices", "4",
                                                   "--workers", "1", "--export-slices", "2"),
                                        tiny=("--patients", "--size", "--slices", "--workers", "--export-slices")),
    "tools/benchmark.py convert --skip-export": Smoke(_benchmark("convert --skip-export", "--patients", "2", "--size",
                                                                 "32", "--slices", "4", "--workers", "1"),
                                                      tiny=("--patients", "--size", "--slices", "--workers")),
    "tools/benchmark.py cocoeval": Smoke(_benchmark("cocoeval", "--images", "20", "--segm-images", "5"),
                                         tiny=("--images", "--segm-images")),
    # batch 2: at 32 px resnet18's last stage is 1x1, and BatchNorm cannot train on one value per channel
    "tools/benchmark.py model": Smoke(_benchmark("model", "--backbones", "resnet18", "--batch", "2", "--size", "32",
                                                 "--repeats", "1", "--warmup", "0", "--fpn-channels", "16"),
                                      tiny=("--backbones", "--batch", "--size", "--repeats", "--warmup",
                                            "--fpn-channels"),
                                      slow="one spawned process per model variant, each importing torch"),
    "tools/benchmark.py train --config configs/mtl_joint.yaml --iters --per-head": Smoke(
        _benchmark_train, tiny=("--warmup",), needs=("yolo",)),
    "tools/benchmark.py predict --weights": Smoke(_benchmark("predict", "--size", "32", "--slices", "4",
                                                             "--repeats", "1", "--threads", "1", weights=True),
                                                  tiny=("--size", "--slices", "--repeats", "--threads")),
    "tools/run_grid.py --out --set": Smoke(lambda ws: _grid(ws, False)),
    "tools/run_grid.py --folds --out --set": Smoke(_grid_folds),
    "tools/threshold_baseline.py --folds": Smoke(_threshold),
    "tools/predict.py --dicom-seg --input --out --weights": Smoke(_predict_dicom_seg, tiny=("--threads",)),
    "tools/export.py --format --out --weights": Smoke(_export),
    "tools/train_net.py --config configs/real/ctich_jpg.yaml": Smoke(_train_real),
    "tools/cross_validate.py --config configs/real/ctich_jpg.yaml --out": Smoke(_cross_validate, tiny=("--folds",)),
    "tools/docs_tables.py": Smoke(_docs_tables, tiny=("--check",)),
    "tools/convert.py --folds --formats --input --out --source": Smoke(_convert_nnunet, tiny=("--quiet",)),
    "tools/evaluate.py --task seg --gt-masks --out --pred-masks": Smoke(_evaluate_seg_short),
    "tools/predict.py --flip-tta --input --out --save-probabilities --weights": Smoke(
        _predict_flags("--save-probabilities", "--flip-tta"), tiny=("--threads",)),
    "tools/predict.py --input --out --saliency --weights": Smoke(_predict_flags("--saliency"), tiny=("--threads",)),
    "tools/predict.py --input --out --save-probabilities --weights": Smoke(
        _predict_flags("--save-probabilities", ensemble=True), tiny=("--threads",)),
    "tools/make_phantom.py --out --patients --seed --size --slices": Smoke(_make_phantom_sized),
    "tools/benchmark.py predict --costs --out --repeats --size --slices": Smoke(
        _benchmark_costs, tiny=("--threads", "--image-size")),
    "tools/benchmark.py predict": Smoke(_benchmark("predict", "--size", "32", "--slices", "4", "--repeats", "1",
                                                   "--threads", "1", "--image-size", "32"),
                                        tiny=("--size", "--slices", "--repeats", "--threads", "--image-size")),
}
# predict's four documented inputs differ only in --input: the same key, one entry runs each kind
_PREDICT_KINDS = ("scan.nii.gz", "dicom_series", "slices_png", "folder_of_scans")


# ------------------------------------------------------------------------------------ tests
def test_every_documented_command_has_a_smoke_entry():
    documented = {}
    for where, command in documented_commands():
        documented.setdefault(command_key(command), []).append(f"{where}: {command}")
    missing = {k: v for k, v in documented.items() if k not in SMOKE}
    assert not missing, "documented commands without a smoke entry in SMOKE:\n" + "\n".join(
        f"  {key!r}  <- {places[0]}" for key, places in missing.items())
    stale = sorted(set(SMOKE) - set(documented))
    assert not stale, f"SMOKE entries whose command no document shows any more: {stale}"


def test_command_keys():
    assert command_key("python tools/evaluate.py --task seg --gt-masks g/ --pred-masks p/ --out e [--hd95]") == \
        "tools/evaluate.py --task seg --gt-masks --hd95 --out --pred-masks"
    assert command_key("torchrun --nproc_per_node 2 tools/train_net.py --config configs/mtl_joint.yaml") == \
        "torchrun tools/train_net.py --config configs/mtl_joint.yaml"
    assert command_key("python tools/train_net.py --config configs/mtl_<x>.yaml") == "tools/train_net.py --config"
    assert command_key("python tools/benchmark.py convert --skip-export") == "tools/benchmark.py convert --skip-export"
    text = "x\n```bash\npython tools/a.py --b 1 \\\n    --c 2   # note\n```\n| `python tools/d.py --e` |\n"
    doc = REPO / "README.md"
    assert [c for _, c in _commands_of(text, doc)] == ["python tools/a.py --b 1 --c 2", "python tools/d.py --e"]


def _commands_of(text: str, doc: Path):
    """documented_commands on one text (for the parser's own test)."""
    global DOCS
    saved = DOCS
    tmp = doc.parent / ".doc_commands_probe.md"
    try:
        tmp.write_text(text, encoding="utf-8")
        DOCS = [tmp]
        return documented_commands()
    finally:
        DOCS = saved
        tmp.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("docs"))


def _params():
    for key, smoke in SMOKE.items():
        marks = list(smoke.marks) + ([pytest.mark.slow] if smoke.slow else [])
        yield pytest.param(key, marks=marks, id=key)


@pytest.mark.parametrize("key", list(_params()))
def test_documented_command_runs(key, workspace, monkeypatch):
    smoke = SMOKE[key]
    if "yolo" in smoke.needs and importlib.util.find_spec("ultralytics") is None:
        pytest.skip("needs the yolo extra (pip install -e '.[yolo]')")
    if key.startswith("torchrun") and shutil.which("torchrun") is None:
        pytest.skip("torchrun is not on PATH")
    monkeypatch.chdir(REPO)  # documented commands run from the repository root
    monkeypatch.setenv("MPLBACKEND", "Agg")
    runs = [smoke.run] if key != "tools/predict.py --input --out --weights" else [_predict(k) for k in _PREDICT_KINDS]
    for run in runs:
        command, code = run(workspace)
        assert code == 0, f"{command} exited {code}"
        # the same tool and flags as documented; only the entry's tiny flags added
        assert command_key(command, leave_out=smoke.tiny) == (smoke.instance_of or key), command
