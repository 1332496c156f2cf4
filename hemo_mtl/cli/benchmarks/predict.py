#!/usr/bin/env python
"""Predictor throughput on one volume: torch vs onnxruntime, batched vs a per-slice loop, where the time goes.

    python tools/benchmark.py predict                       # 512x512x32, configs/demo.yaml model
    python tools/benchmark.py predict --size 256 --slices 16 --weights RUN/model_final.pth
    python tools/benchmark.py predict --no-per-slice        # the backends only
    python tools/benchmark.py predict --costs --out costs.json   # ensembles of 1-3, maps, saliency

Writes a synthetic head-like HU volume as an int16 NIfTI (how CT is stored), then times these modes,
each run interleaved with the others (A B C A B C ...; a ratio is of the fastest and of the median runs):
- ``torch cls+seg`` / ``onnxruntime cls+seg``: the model exported to ONNX (its exportable heads) run by
  onnxruntime, next to the same heads in torch eager: the same pipeline, only the model call differs;
- ``batched``: the predictor as shipped, ``--batch`` slices per forward, every stage on the whole volume;
- ``per-slice forward``: the same pipeline with ``batch_size=1`` (only the model runs slice by slice);
- ``per-slice loop``: what the batched predictor replaces, each slice windowed, resized, run and
  mapped back on its own (``predict_slice_by_slice``); the volume's morphology and the output files
  are shared. Its mask must equal the batched one (checked, agreement printed).
With ``--costs`` the modes are instead what the trust outputs cost next to one model: ensembles of 2 and
3 members (copies of the model: speed does not depend on the weights), ``--save-probabilities``
(probability maps; with 2 members also uncertainty) and ``--saliency`` (Grad-CAM), all interleaved.
Stages: I/O (NIfTI read + writing every output file), preprocessing (windowing + resize/pad), model
and postprocessing (un-pad/resize, argmax, morphology, instances). Without ``--weights`` the model is
the config's, randomly initialised (speed does not depend on training).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from hemo_mtl.atomic import atomic_write_text
from hemo_mtl.inference import PredictOptions, Predictor, load_scan, write_scan_outputs
from hemo_mtl.inference.postprocess import clean_mask
from hemo_mtl.inference.predictor import ScanPrediction

REPO = Path(__file__).resolve().parents[3]  # the checkout: configs/ is not installed with the package


def synthetic_volume(size: int, slices: int, seed: int = 0) -> np.ndarray:
    """Air, a 1000 HU skull ring and 30 HU brain with noise, plus a 70 HU blob: enough for every stage."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    r = np.sqrt(x ** 2 + (1.2 * y) ** 2)
    plane = np.where(r < 0.8, 30.0, np.where(r < 0.88, 1000.0, -1000.0))
    plane = np.where((x - 0.3) ** 2 + y ** 2 < 0.02, 70.0, plane)
    vol = np.repeat(plane[..., None], slices, axis=2) + rng.normal(0, 5, (size, size, slices))
    return np.round(vol).astype(np.int16)


def predict_slice_by_slice(predictor: Predictor, scan) -> ScanPrediction:
    """The per-slice loop: one slice at a time through windowing, resize, model and mapping back
    (the predictor's own steps on a one-slice scan, morphology off), then the volume's morphology."""
    if predictor.context_slices or scan.kind != "hu":
        raise ValueError("the per-slice loop benchmark takes a 2D checkpoint and a HU volume")
    options = predictor.options
    single = copy.copy(predictor)  # same model, its own options
    single.options = dataclasses.replace(options, batch_size=1, closing=0, opening=0, min_voxels=0)
    parts = [single.predict(dataclasses.replace(scan, slices=scan.slices[:, :, k:k + 1]))
             for k in range(scan.num_slices)]
    t0 = time.perf_counter()
    mask = clean_mask(np.concatenate([p.mask for p in parts], axis=2), options.closing, options.opening,
                      options.min_voxels)
    gates = [p.gate_passed for p in parts]
    pred = ScanPrediction(np.concatenate([p.cls_prob for p in parts]), mask,
                          [inst for p in parts for inst in p.instances],
                          None if gates[0] is None else np.concatenate(gates))
    pred.timings = {k: sum(p.timings[k] for p in parts) for k in parts[0].timings}
    pred.timings["postprocess"] += time.perf_counter() - t0
    return pred


def build_predictor(args, options: PredictOptions) -> Predictor:
    if args.weights:
        return Predictor.from_checkpoint(args.weights, options)
    from hemo_mtl.config import load_config
    from hemo_mtl.models import build_model

    cfg = load_config(args.config, [f"data.image_size={args.image_size}"] if args.image_size else [])
    return Predictor(build_model(cfg["model"]), cfg, options=options)


def time_once(predictor: Predictor, path: Path, out: Path, loop: bool = False) -> tuple[dict, np.ndarray]:
    """One scan end to end: read, predict, write every output; seconds per stage, and the mask."""
    t0 = time.perf_counter()
    scan = load_scan(path)
    t_read = time.perf_counter() - t0
    pred = predict_slice_by_slice(predictor, scan) if loop else predictor.predict(scan)
    t1 = time.perf_counter()
    write_scan_outputs(out, scan, pred, predictor)
    t_write = time.perf_counter() - t1
    return {"io": t_read + t_write, **pred.timings, "slices": scan.num_slices}, pred.mask


STAGES = ("io", "preprocess", "model", "postprocess", "saliency")  # saliency: 0 unless --saliency


def total_s(rows: list[dict]) -> list[float]:
    return [sum(r.get(k, 0.0) for k in STAGES) for r in rows]


def best_row(rows: list[dict]) -> dict:
    best = dict(min(rows, key=lambda r: total_s([r])[0]))
    best["saliency"] = best.get("saliency", 0.0)
    best["total"] = total_s([best])[0]
    best["slices_per_s"] = best["slices"] / best["total"]
    best["model_slices_per_s"] = best["slices"] / best["model"]
    return best


def table(rows: list[dict]) -> str:
    lines = ["| mode | slices/s (end to end) | slices/s (model) | I/O | preprocess | model | postprocess | saliency | total s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = {k: 100 * r[k] / r["total"] for k in STAGES}
        lines.append(f"| {r['mode']} | {r['slices_per_s']:.2f} | {r['model_slices_per_s']:.2f} | {share['io']:.1f}% | "
                     f"{share['preprocess']:.1f}% | {share['model']:.1f}% | {share['postprocess']:.1f}% | "
                     f"{share['saliency']:.1f}% | {r['total']:.2f} |")
    return "\n".join(lines)


def exported_predictor(args, base: Predictor, tmp: Path, options: PredictOptions) -> Predictor:
    """``base``'s model exported to ONNX (its exportable heads) and run by onnxruntime."""
    from hemo_mtl.export import export_checkpoint

    weights = args.weights
    if not weights:  # the random-init --config model, as a checkpoint the exporter reads
        weights = tmp / "model_final.pth"
        torch.save({"model": base.model.state_dict(), "config": base.config, "cascade": base.gate.state_dict() if base.gate else {}}, weights)
    result = export_checkpoint(weights, "onnx", tmp / "onnx")
    return Predictor.from_checkpoint(result.model_path, options, backend="onnxruntime")


def same_heads(predictor: Predictor, heads) -> Predictor:
    """The torch predictor restricted to ``heads`` (what the exported graph holds), same weights."""
    model = copy.deepcopy(predictor.model)
    model.set_active_heads(heads)
    return Predictor(model, predictor.config, predictor.gate.state_dict() if predictor.gate else None, predictor.options, weights_sha256=predictor.weights_sha256)


def cost_predictors(base: Predictor, batch: int) -> dict[str, Predictor]:
    """The ``--costs`` modes: ensembles of 2 and 3 copies of ``base``'s model, probability maps, saliency."""
    from hemo_mtl.inference.ensemble import EnsemblePredictor

    def one(**opts) -> Predictor:
        return Predictor(copy.deepcopy(base.model), base.config, base.gate.state_dict() if base.gate else None,
                         PredictOptions(batch_size=batch, **opts))

    def ensemble(k: int, **opts) -> Predictor:
        return EnsemblePredictor([one(**opts) for _ in range(k)], PredictOptions(batch_size=batch, **opts))

    return {"ensemble of 2": ensemble(2), "ensemble of 3": ensemble(3),
            "--save-probabilities": one(save_probabilities=True),
            "ensemble of 2, --save-probabilities (+ uncertainty)": ensemble(2, save_probabilities=True),
            "--saliency": one(saliency=True)}


def ratio_line(runs: dict, a: str, b: str, stage: str) -> str:
    """a's speed over b's for ``stage`` ("model" or "total"), from the interleaved runs: min and median."""
    def stage_s(rows):
        return total_s(rows) if stage == "total" else [r[stage] for r in rows]
    ta, tb = stage_s(runs[a]), stage_s(runs[b])
    return f"{min(tb) / min(ta):.2f}x (min), {float(np.median(tb)) / float(np.median(ta)):.2f}x (median)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--slices", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    p.add_argument("--image-size", type=int, default=None, help="override data.image_size of --config")
    p.add_argument("--weights", default=None, help="a model_final.pth instead of a random-init --config model")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"], choices=["torch", "onnxruntime"],
                   help="onnxruntime: the model exported to ONNX, next to torch on the same heads")
    p.add_argument("--no-per-slice", action="store_true", help="skip the per-slice modes")
    p.add_argument("--costs", action="store_true",
                   help="time ensembles of 1-3 models, --save-probabilities and --saliency instead of the backends")
    p.add_argument("--out", type=Path, default=None, help="also write the rows as json here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "volume.nii.gz"
        nib.save(nib.Nifti1Image(synthetic_volume(a.size, a.slices), np.diag([0.45, 0.45, 5.0, 1.0])), str(path))
        batched = f"torch, batched ({a.batch}/forward)"
        base = build_predictor(a, PredictOptions(batch_size=a.batch))
        predictors, loops = {batched: base}, {batched: False}
        if a.costs:
            a.no_per_slice, a.backends = True, []
            for mode, predictor in cost_predictors(base, a.batch).items():
                predictors[mode], loops[mode] = predictor, False
        if not a.no_per_slice:
            for mode, loop in (("torch, per-slice forward", False), ("torch, per-slice loop", True)):
                predictors[mode] = Predictor(base.model, base.config, base.gate.state_dict() if base.gate else None, PredictOptions(batch_size=1))
                loops[mode] = loop
        pairs = []
        if "onnxruntime" in a.backends:
            ort = exported_predictor(a, base, tmp, PredictOptions(batch_size=a.batch))
            heads = sorted(ort.backend.sidecar["heads"])
            torch_same = f"torch {'+'.join(heads)}, batched"
            ort_mode = f"onnxruntime {'+'.join(heads)}, batched"
            predictors[torch_same], loops[torch_same] = same_heads(base, heads), False
            predictors[ort_mode], loops[ort_mode] = ort, False
            pairs.append((ort_mode, torch_same))
        for predictor in predictors.values():
            predictor.predict(load_scan(path))  # warm-up: allocator, lazy init
        runs = {mode: [] for mode in predictors}
        masks = {}
        for _ in range(a.repeats):  # modes interleaved: load from other processes hits all alike
            for mode, predictor in predictors.items():
                row, masks[mode] = time_once(predictor, path, tmp / "out", loop=loops[mode])
                runs[mode].append(row)
    rows = [{"mode": mode, **best_row(r)} for mode, r in runs.items()]
    print(f"volume {a.size}x{a.size}x{a.slices}, model input {base.image_size} px, {a.threads} threads, "
          f"{a.repeats} interleaved runs per mode (table: the fastest); load average (1 min) {load_before[0]:.1f} "
          f"before, {os.getloadavg()[0]:.1f} after")
    print(table(rows))
    for mode in list(predictors)[1:1 + 2 * (not a.no_per_slice)]:
        print(f"{batched} vs {mode}: {ratio_line(runs, batched, mode, 'total')} end to end, "
              f"{ratio_line(runs, batched, mode, 'model')} model")
        print(f"  mask voxels equal to the batched mode's: {100 * float((masks[batched] == masks[mode]).mean()):.3f}%")
    for mode in list(predictors)[1:] if a.costs else []:
        print(f"{mode}: {ratio_line(runs, batched, mode, 'total')} the time of one model end to end")
    for fast, slow in pairs:
        print(f"{fast} vs {slow}: {ratio_line(runs, fast, slow, 'model')} model stage, "
              f"{ratio_line(runs, fast, slow, 'total')} end to end")
        print(f"  mask voxels equal: {100 * float((masks[fast] == masks[slow]).mean()):.3f}%")
    if a.out:
        for row in rows:  # the cost of each mode over one model's, fastest and median runs
            row["times_one_model_min"] = min(total_s(runs[row["mode"]])) / min(total_s(runs[batched]))
            row["times_one_model_median"] = float(np.median(total_s(runs[row["mode"]])) /
                                                  np.median(total_s(runs[batched])))
        setup = {"volume": [a.size, a.size, a.slices], "image_size": base.image_size, "threads": a.threads,
                 "repeats": a.repeats, "load_before": load_before[0], "load_after": os.getloadavg()[0]}
        atomic_write_text(a.out, json.dumps({"setup": setup, "rows": rows} if a.costs else rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
