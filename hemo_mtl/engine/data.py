"""From the config's ``data`` section to datasets and loaders: the I/O edge of a training run.

``data.root`` null -> a phantom is generated into ``output_dir/phantom`` and converted into
``output_dir/data`` on first use (write_phantom_dataset + convert_dataset("nifti", ...)), and reused
afterwards while its parameters are unchanged. The raw phantom sits beside the converted folder, not in
it: a conversion replaces its output folder whole.
``data.root`` a converted folder (manifest.csv + splits.json) -> used as is.
``data.root`` raw data + ``data.source`` -> converted into ``output_dir/data`` first.
``data.synthetic.patients`` > 0 -> that many phantom patients rendered as CT-ICH JPG slices into
``output_dir/synthetic`` and converted into ``output_dir/synthetic_data``; they join the training split
only (never validation or test), so every reported figure stays on real patients.
``data.train_also`` -> each listed dataset (a converted folder, or raw data + ``source`` converted into
``output_dir/train_also<i>``) joins the training split only, as the synthetic patients do.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Mapping

from torch.utils.data import DataLoader

from ..atomic import atomic_write_json
from .distributed import DistInfo, barrier

DATA_DIR = "data"
PHANTOM_DIR = "phantom"
PHANTOM_STAMP = "phantom.json"
SYNTHETIC_DIR = "synthetic"
SYNTHETIC_DATA_DIR = "synthetic_data"


def _convert(source: str, raw: Path, out: Path, data_cfg: Mapping) -> None:
    from ..data.convert import convert_dataset

    split = data_cfg["split"]
    convert_dataset(source, raw, out, window=list(data_cfg["windows"]), split_seed=int(split["seed"]),
                    val=float(split["val"]), test=float(split["test"]), progress=False)


def _convert_train_only(source: str, raw: Path, out: Path, data_cfg: Mapping) -> None:
    """A dataset that only joins training: every patient in its (unused) train split."""
    _convert(source, raw, out, {**data_cfg, "split": {"seed": 0, "val": 0.0, "test": 0.0}})


def prepare_synthetic_dir(cfg: Mapping, dist: DistInfo) -> Path | None:
    """The converted folder of ``data.synthetic``'s phantom patients (made on rank 0 while its
    parameters differ from the stamp), or None when the config asks for none."""
    syn = dict(cfg["data"].get("synthetic") or {})
    if int(syn.get("patients") or 0) <= 0:
        return None
    from ..data.phantom import GENERATOR_VERSION

    out = Path(cfg["output_dir"]) / SYNTHETIC_DATA_DIR
    stamp = {"synthetic": syn, "generator": GENERATOR_VERSION}
    if dist.is_main and not _stamp_matches(out / PHANTOM_STAMP, stamp):
        from ..data.phantom_display import write_ctich_phantom

        raw = Path(cfg["output_dir"]) / SYNTHETIC_DIR
        for folder in (out, raw):
            if folder.exists():
                shutil.rmtree(folder)
        write_ctich_phantom(raw, patients=int(syn["patients"]), seed=int(syn["seed"]), size=int(syn["size"]),
                            slices=int(syn["slices"]), canvas=int(syn["canvas"]))
        _convert_train_only("physionet", raw, out, cfg["data"])
        atomic_write_json(out / PHANTOM_STAMP, stamp)
    barrier()
    return out


def train_also_dirs(cfg: Mapping, dist: DistInfo | None = None, prepare: bool = False) -> list[Path]:
    """The converted folders of ``data.train_also`` (converting raw ones on rank 0 when ``prepare``)."""
    dist = dist or DistInfo()
    out = []
    for i, extra in enumerate(cfg["data"].get("train_also") or []):
        root = Path(extra["root"]).expanduser()
        if (root / "manifest.csv").is_file():
            out.append(root)
            continue
        if not extra.get("source"):
            raise FileNotFoundError(f"data.train_also[{i}].root {root} has no manifest.csv and no source to convert it")
        if not root.exists():
            raise FileNotFoundError(f"data.train_also[{i}].root {root} does not exist")
        target = Path(cfg["output_dir"]) / f"train_also{i}"
        if prepare and dist.is_main and not (target / "manifest.csv").is_file():
            _convert_train_only(str(extra["source"]), root, target, cfg["data"])
        out.append(target)
    if prepare:
        barrier()
    return out


def prepare_data_dir(cfg: Mapping, dist: DistInfo | None = None) -> Path:
    """The converted dataset folder of this run (generating / converting it on rank 0 if needed), and
    the folders of what joins its training split (``data.synthetic``, ``data.train_also``)."""
    dist = dist or DistInfo()
    prepare_synthetic_dir(cfg, dist)
    train_also_dirs(cfg, dist, prepare=True)
    data_cfg = cfg["data"]
    out = Path(cfg["output_dir"]) / DATA_DIR
    if data_cfg.get("root") is None:
        from ..data.phantom import GENERATOR_VERSION

        stamp = {"phantom": dict(data_cfg["phantom"]), "split": dict(data_cfg["split"]),
                 "windows": list(data_cfg["windows"]), "generator": GENERATOR_VERSION}
        if dist.is_main and not _stamp_matches(out / PHANTOM_STAMP, stamp):
            from ..data.phantom import write_phantom_dataset

            ph = data_cfg["phantom"]
            raw = Path(cfg["output_dir"]) / PHANTOM_DIR
            for folder in (out, raw):
                if folder.exists():
                    shutil.rmtree(folder)
            write_phantom_dataset(raw, patients=int(ph["patients"]), seed=int(ph["seed"]),
                                  size=int(ph["size"]), slices=int(ph["slices"]))
            _convert("nifti", raw, out, data_cfg)
            atomic_write_json(out / PHANTOM_STAMP, stamp)
        barrier()
        return out
    root = Path(data_cfg["root"]).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"data.root {root} does not exist")
    if (root / "manifest.csv").is_file():
        if not (root / "splits.json").is_file():
            raise FileNotFoundError(f"data.root {root} has manifest.csv but no splits.json (convert it with tools/convert.py)")
        return root
    if not data_cfg.get("source"):
        raise FileNotFoundError(
            f"data.root {root} has no manifest.csv: point it at a converted folder, or set data.source to convert it"
        )
    if dist.is_main and not (out / "manifest.csv").is_file():
        _convert(str(data_cfg["source"]), root, out, data_cfg)
    barrier()
    return out


def _stamp_matches(path: Path, stamp: dict) -> bool:
    if not path.is_file():
        return False
    return json.loads(path.read_text()) == json.loads(json.dumps(stamp))


def run_splits(cfg: Mapping, data_dir: Path, splits: Mapping) -> dict:
    """The train/val/test patients of this run: the persisted splits, or with ``data.split.folds`` > 0
    the k-fold split of the non-test patients (made once from the manifest with the split seed; fold
    ``data.split.fold`` validates, or with ``data.split.held_out_as: test`` tests while the next fold
    validates). The result is what the run writes as its ``splits.json``."""
    split = cfg["data"]["split"]
    folds = int(split.get("folds") or 0)
    if not folds:
        return dict(splits)
    from ..data.manifest import read_manifest
    from ..data.splits import fold_split, make_splits

    fold = int(split.get("fold") or 0)
    if splits.get("folds") and len(splits["folds"]) == folds and splits.get("seed") == int(split["seed"]):
        full = dict(splits)
    else:
        full = make_splits(read_manifest(data_dir / "manifest.csv"), seed=int(split["seed"]), val=0.0,
                           test=float(split["test"]), folds=folds)
    if not 0 <= fold < folds:
        raise ValueError(f"data.split.fold={fold} is outside 0..{folds - 1}")
    return {**full, **fold_split(full, fold, str(split.get("held_out_as") or "val")), "fold": fold}


def build_datasets(cfg: Mapping, data_dir: Path, splits: Mapping) -> dict:
    """{"train", "val", "test"} HemorrhageDatasets over the run's converted folder.

    ``test`` may be empty (absent from the result) when ``eval.final_split`` is ``val`` (protocols
    that report on their held-out validation set, e.g. Hemorica's 80/20 or k-fold CV). The training
    set becomes a view when ``data.patches`` or ``data.balance`` ask for one."""
    import pandas as pd

    from ..data.dataset import HemorrhageDataset
    from ..data.manifest import read_manifest

    d = cfg["data"]
    common = dict(windows=tuple(d["windows"]), image_size=int(d["image_size"]), seed=int(cfg["seed"]),
                  cls_labels=d.get("cls_labels"), location_classes=d.get("location_classes"),
                  context_slices=int(d.get("context_slices") or 0))
    needed = {"train", "val", (cfg.get("eval") or {}).get("final_split", "test")}
    manifest = read_manifest(data_dir / "manifest.csv")
    synthetic = Path(cfg["output_dir"]) / SYNTHETIC_DATA_DIR / "manifest.csv"
    out = {}
    for name in ("train", "val", "test"):
        if not splits.get(name):
            if name not in needed:
                continue
            raise ValueError(f"{data_dir / 'splits.json'}: split {name!r} is empty; adjust data.split")
        wanted = set(map(str, splits[name]))
        frame = manifest[manifest["patient_id"].isin(wanted)]
        missing = wanted - set(frame["patient_id"])
        if missing:
            raise ValueError(f"{data_dir / 'splits.json'}: patients not in the manifest: {sorted(missing)[:10]}")
        if name == "train":
            # (manifest, id prefix): another dataset's ids may repeat ours (Kaggle's 000-199 and CT-ICH's
            # 049-130), so a joined dataset's patients and studies are renamed after its folder
            joining = [(synthetic, "")] if int((d.get("synthetic") or {}).get("patients") or 0) > 0 else []
            joining += [(folder / "manifest.csv", f"{folder.name}-") for folder in train_also_dirs(cfg)]
            frames, seen = [frame], set(manifest["patient_id"])
            for path, prefix in joining:
                extra = read_manifest(path)
                if prefix:
                    extra["patient_id"] = prefix + extra["patient_id"].astype(str)
                    extra["study_id"] = prefix + extra["study_id"].astype(str)
                clash = sorted(set(extra["patient_id"]) & seen)
                if clash:
                    raise ValueError(f"{path}: patient ids {clash[:5]} are already used by another dataset of this run")
                seen |= set(extra["patient_id"])
                frames.append(extra)
            frame = pd.concat(frames, ignore_index=True)
        out[name] = HemorrhageDataset(frame, train=name == "train",
                                      augment=d.get("augment") if name == "train" else None,
                                      extra=d.get("extra"), lesion_insertion=d.get("lesion_insertion"),
                                      bleed_roi=d.get("bleed_roi") if name == "train" else None, **common)
    patches = d.get("patches") or {}
    if int(patches.get("size") or 0) > 0:
        from ..data.patches import patch_view

        out["train"] = patch_view(out["train"], int(patches["size"]), int(patches.get("stride") or patches["size"]),
                                  float(patches.get("neg_keep", 1.0)), seed=int(cfg["seed"]))
    if d.get("balance"):
        from ..data.sampling import balanced_view

        out["train"] = balanced_view(out["train"], str(d["balance"]), seed=int(cfg["seed"]))
    return out


def eval_loader(dataset, cfg: Mapping) -> DataLoader:
    """Ordered, unshuffled loader for evaluation."""
    from ..data.dataset import collate_samples

    bs = cfg["eval"].get("batch_size") or cfg["data"]["batch_size"]
    return DataLoader(dataset, batch_size=int(bs), shuffle=False, num_workers=int(cfg["data"]["num_workers"]),
                      collate_fn=collate_samples)
