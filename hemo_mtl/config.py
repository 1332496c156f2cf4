"""Run configuration: YAML files with ``_base_`` inheritance, ``key.sub=value`` overrides, validation.

A config describes a run with names and numbers; code decides what they mean. Loading order, later
wins: the defaults <- each ``_base_`` file (in list order, resolved relative to the file that names it)
<- the file itself <- command-line overrides. Dicts merge deeply; lists and scalars replace.

Model heads are the one exception to "merge with the defaults": a run trains the heads its config
names (each filled in from the defaults of its ``type``), and a child config drops a head it
inherited by setting it to ``null`` (``model.heads.det=null``).

``SCHEMA`` types every key of a run (``hemo_mtl.config_schema.Key``: default, type, range, doc);
:func:`config_schema` adds the sections the model and the augmentation own. Each file and override
is checked as it is read, and the merged result once more, by the one validator
(``hemo_mtl.config_schema.check``): an unknown key gets a "did you mean" from :mod:`difflib`, a wrong
type names the key, the file (or the override) and both types. Only ``yaml.safe_load`` is used: a
config can never run code. ``docs/configs.md`` is generated from the schema
(``python -m hemo_mtl.config_reference``).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .atomic import atomic_write_text
from .config_schema import (FRACTION, NONNEGATIVE, OPEN_FRACTION, POSITIVE, ConfigError, K, Key, check, coerce,
                            defaults_of, fill, key_at)

# Stage of a multi-stage schedule (curriculum / cascade); see hemo_mtl.engine.schedules. Its sampling keys
# are also those of schedule.joint (the joint schedule's one stage) and of the cascade's default stages.
STAGE_SAMPLING: dict[str, Key] = {
    "neg_fraction": K(None, "keep this share of negative (any == 0) slices per epoch; null = all", "float",
                      FRACTION),
    "repeat_threshold": K(None, "repeat the slices of subtypes rarer than this slice frequency (LVIS "
                                "repeat-factor sampling), redrawn each epoch; null = off", "float", OPEN_FRACTION),
    "hard_negatives": K(None, "share of the kept negatives taken hardest-first (the classifier's p(any)); "
                              "null = all at random", "float", FRACTION),
}
STAGE: dict[str, Key] = {
    "name": K(None, "shown in logs; null = stage<i>", "str"),
    "epochs": K(1, "epochs of this stage", range=POSITIVE),
    "heads": K(None, "heads trained in this stage; null = every head the model has", "list", items="str"),
    "loss_weights": K({}, "multipliers by task (cls, seg, det) or by loss name (loss_mask)", items="float"),
    "freeze": K([], "parameter-name prefixes kept frozen, e.g. backbone", items="str"),
    "labels": K(None, "cls | boxes | mask: train only on slices that have this label", "str"),
    **STAGE_SAMPLING,
}

TRAIN_ALSO: dict[str, Key] = {
    "root": K(None, "a converted folder (manifest.csv), or raw data with `source`", "str"),
    "source": K(None, "the source adapter that converts a raw root first (e.g. kaggle)", "str"),
}

SCHEMA: dict[str, Any] = {
    "seed": K(0, "seeds python, numpy and torch (and the phantom's split)", range=NONNEGATIVE),
    "output_dir": K("runs/default", "the run folder; every file a run writes is under it"),
    "data": {
        "root": K(None, "converted dataset dir (manifest.csv + splits.json); null = generated phantom", "str"),
        "source": K(None, "when root is raw data: the source adapter that converts it first", "str"),
        "windows": K(["brain"], "HU windows stacked as input channels", items="str"),
        "context_slices": K(0, "2.5D: c neighbours each side as channels, in_chans = windows x (2c+1)",
                            range=NONNEGATIVE),
        "image_size": K(256, "slices fit (longest side) and pad to this square, px", range=POSITIVE),
        "batch_size": K(8, range=POSITIVE),
        "num_workers": K(0, "DataLoader worker processes", range=NONNEGATIVE),
        "augment": {},  # the augmentation section of hemo_mtl.data.transforms (config_schema fills it in)
        "phantom": {
            "patients": K(24, range=POSITIVE),
            "seed": K(0, range=NONNEGATIVE),
            "size": K(256, "px", range=POSITIVE),
            "slices": K(24, "slices per patient", range=POSITIVE),
        },
        "synthetic": {  # display-image datasets: phantom patients as CT-ICH JPG slices (data.phantom_display)
            "patients": K(0, "phantom patients joining the training split only, with exact masks; 0 = none",
                          range=NONNEGATIVE),
            "seed": K(0, range=NONNEGATIVE),
            "size": K(256, "phantom px before placing in the canvas", range=POSITIVE),
            "slices": K(24, "slices per patient", range=POSITIVE),
            "canvas": K(512, "JPEG side, px (the head fills a random 60-90% of it)", range=POSITIVE),
        },
        "lesion_insertion": {  # hemo_mtl.data.lesion_insertion (display-image datasets)
            "p": K(0.0, "probability that a training slice with a known-empty mask gets a synthetic bleed drawn in",
                   range=FRACTION),
            "subtypes": K(["SDH", "EDH", "IPH"], "shapes drawn (subdural crescent, epidural lens, parenchymal blob)",
                          items="str"),
        },
        "bleed_roi": K(None, "training samples carry where a bleed may be (`roi`: `skull`, the inside of the skull; "
                             "`hyperdense`, its pixels denser than brain), where the segmenter's weak loss looks "
                             "for a labelled bleed (brain-window display inputs)", "str"),
        "train_also": K([], "more labelled datasets that join the training split only (never validation or "
                            "test), e.g. Kaggle head_ct's `any` labels beside a masked release", items=TRAIN_ALSO),
        "split": {
            "seed": K(32, range=NONNEGATIVE),
            "val": K(0.2, "share of patients", range=FRACTION),
            "test": K(0.2, "share of patients", range=FRACTION),
            "folds": K(0, ">0: k-fold cross-validation of the non-test patients (val = fold `fold`)",
                       range=NONNEGATIVE),
            "fold": K(0, range=NONNEGATIVE),
            "held_out_as": K("val", "val: fold `fold` validates, the test split tests; test: fold `fold` tests and "
                                    "the next fold validates (nested CV over every patient; set test: 0.0)"),
        },
        "cls_labels": K(None, "e.g. [any]: only these labels count as known (binary protocols)", "list", items="str"),
        "location_classes": K(None, "e.g. [deep, lobar, subtentorial]: manifest `location` value -> class index",
                              "list", items="str"),
        "balance": K(None, "a label name (any): oversample its minority class in the training split", "str"),
        "patches": {  # train on size x size windows (0 = whole slices)
            "size": K(0, "px; 0 = whole slices", range=NONNEGATIVE),
            "stride": K(0, "px", range=NONNEGATIVE),
            "neg_keep": K(1.0, "share of windows without a bleed kept", range=FRACTION),
        },
        "extra": {  # hemo_mtl.data.protocol_transforms
            "center_crop": K(None, "crop the image_size square to this center square, px; null = off", "int",
                             NONNEGATIVE),
            "sharpen": K(0.0, "probability of a random sharpening (train only)", range=FRACTION),
            "normalize": K(None, "imagenet: (x - mean) / std per channel (3 channels)", "str"),
        },
    },
    "model": {},  # the models package's section (config_schema fills it in)
    "schedule": {
        "name": K("joint", "joint | curriculum | cascade"),
        "stages": K([], "curriculum / cascade stages, in order (the one way to write a stage; keys below)",
                    items=STAGE),
        "joint": dict(STAGE_SAMPLING),  # the joint schedule's one stage: all slices unless these thin or repeat
        "cascade": {
            "gate": K(["seg", "det"], "heads the classifier gates at evaluation", items="str"),
            "target_sensitivity": K(0.95, "slice-level `any` sensitivity the threshold keeps on val",
                                    range=OPEN_FRACTION),
            "threshold": K(None, "fixed gate threshold; null = choose on the validation split", "float", FRACTION),
            # without schedule.stages, the two default stages (classifier, localizers) are made of these
            "cls_epochs": K(None, "default stages: classifier epochs (null or 0 = a third of train.epochs)", "int",
                            NONNEGATIVE),
            "cls_neg_fraction": K(None, "default stages: the classifier stage's neg_fraction (null = all)",
                                  "float", FRACTION),
            "neg_fraction": K(0.25, "default stages: the localizer stage's neg_fraction", range=FRACTION),
            "repeat_threshold": K(None, "default stages: the localizer stage's repeat_threshold", "float",
                                  OPEN_FRACTION),
            "hard_negatives": K(None, "default stages: the localizer stage's hard_negatives", "float", FRACTION),
        },
    },
    "train": {
        "epochs": K(12, range=POSITIVE),
        "lr": K(1.0e-3, range=POSITIVE),
        "optimizer": K("adamw", "adamw | adam | sgd"),
        "momentum": K(0.9, "sgd momentum", range=FRACTION),
        "weight_decay": K(1.0e-4, range=NONNEGATIVE),
        "lr_schedule": {
            "name": K("cosine", "cosine | step | constant"),
            "warmup_iters": K(50, range=NONNEGATIVE),
            "warmup_factor": K(0.001, "lr factor at the first warmup iteration", range=OPEN_FRACTION),
            "min_lr_factor": K(0.01, "cosine floor, as a fraction of lr", range=FRACTION),
            "steps": K([0.7, 0.9], "step: fractions of the stage where lr *= gamma", items="float"),
            "gamma": K(0.1, range=POSITIVE),
        },
        "amp": K(True, "mixed precision; CUDA only, ignored on CPU"),
        "channels_last": K(True, "CUDA only"),
        "grad_clip": K(10.0, "max global grad norm; null = off", range=POSITIVE, nullable=True),
        "accum_steps": K(1, "gradient accumulation steps", range=POSITIVE),
        "ema": {
            "enabled": K(False, "keep an exponential moving average of the weights (model_final.pth holds it)"),
            "decay": K(0.999, range=FRACTION),
            "tau": K(200.0, "warmup of the decay, iterations", range=POSITIVE),
        },
        "checkpoint_period": K(1, "epochs", range=NONNEGATIVE),
        "checkpoint_keep": K(3, "newest periodic checkpoints kept", range=NONNEGATIVE),
        "eval_period": K(1, "epochs; 0 = only at the end", range=NONNEGATIVE),
        "log_period": K(20, "iterations", range=NONNEGATIVE),
        "device": K("auto", "auto | cpu | cuda | cuda:N"),
        "deterministic": K(True),
        "num_threads": K(2, "CPU threads of the machine, split among torchrun's local ranks; null = torch's default",
                         range=POSITIVE, nullable=True),
        "progress": K(True, "progress bar"),
    },
    "eval": {
        "tasks": K(["cls", "seg", "det"], items="str"),
        "batch_size": K(None, "null = data.batch_size", "int", POSITIVE),
        "image_panels": K(4, "slices drawn to tensorboard per evaluation", range=NONNEGATIVE),
        "flip_tta": K(False, "add the left-right mirrored pass (hemo_mtl.models.tta), as predict.py --flip-tta"),
        "temperature_scaling": K(False, "fit one temperature per label on the validation split (carried in "
                                        "model_final.pth, applied by the predictor; reports show ECE/NLL before "
                                        "and after)"),
        "slice_context": K(0, "c > 0: a slice's classifier probabilities become the max of their own and the "
                              "mean over its scan's slices z-c..z+c, in evaluation and in the predictor "
                              "(evaluation.classification.slice_context_max); patient scores are unchanged",
                           range=NONNEGATIVE),
        "patient_window": K(1, "k > 1: a patient's score is the highest mean of k adjacent slices of one scan, "
                               "not its single highest slice (a bleed spans neighbouring slices; a lone sure "
                               "slice at the skull base does not), in evaluation, cross-validation and the "
                               "predictor's summary (evaluation.classification.adjacent_mean)",
                            range=POSITIVE),
        "final_split": K("test", "the split final_metrics.json reports"),
        "select": {  # report the mean over selected epochs (hemo_mtl.evaluation.epoch_selection)
            "rule": K(None, "epoch selection rule; null = off", "str"),
            "k": K(10, range=POSITIVE),
            "after_epoch": K(10, range=NONNEGATIVE),
        },
        "sliding_window": {  # full-slice prediction by overlap-averaged windows + closing/opening
            "size": K(0, "window, px; 0 = whole slice", range=NONNEGATIVE),
            "stride": K(0, "px", range=NONNEGATIVE),
            "closing": K(0, "morphological closing radius, px", range=NONNEGATIVE),
            "opening": K(0, "morphological opening radius, px", range=NONNEGATIVE),
        },
    },
}
DEFAULTS: dict[str, Any] = defaults_of(SCHEMA)  # the plain default values of SCHEMA

BASE_KEY = "_base_"


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> dict:
    """The resolved config of ``path`` with ``overrides`` (``"train.lr=0.01"``) applied and validated."""
    schema = config_schema()
    cfg = _load_file_tree(Path(path), schema, chain=())
    cfg = apply_overrides(cfg, overrides, schema)
    return resolve(cfg, schema)


def config_schema() -> dict:
    """``SCHEMA`` with the sections other components own: the model (``hemo_mtl.models.MODEL_SCHEMA``)
    and the augmentation (``hemo_mtl.data.transforms.AUGMENT_SCHEMA``)."""
    from .data.transforms import AUGMENT_SCHEMA  # noqa: PLC0415 (albumentations: loaded when a config is)
    from .models import MODEL_SCHEMA  # noqa: PLC0415 (torch: loaded when a config is)

    schema = dict(SCHEMA)
    schema["data"] = {**SCHEMA["data"], "augment": AUGMENT_SCHEMA}
    schema["model"] = MODEL_SCHEMA
    return schema


def resolve(cfg: Mapping, schema: Mapping | None = None) -> dict:
    """Defaults filled in under ``cfg``, then the whole result validated."""
    schema = config_schema() if schema is None else schema
    out = fill(cfg, schema)
    validate(out, schema, origin="resolved config")
    in_chans = out["model"]["backbone"]["in_chans"]
    context, windows = out["data"]["context_slices"], len(out["data"]["windows"])
    prior = out["model"]["input_prior"]
    if in_chans != windows * (2 * context + 1) + bool(prior["kind"]):
        raise ConfigError(
            f"model.backbone.in_chans={in_chans} but data.windows has {windows} window(s) "
            f"{out['data']['windows']} and data.context_slices={context}: the input has windows x (2 x "
            f"context_slices + 1) = {windows * (2 * context + 1)} channel(s)"
            + (", + 1 for model.input_prior" if prior["kind"] else "")
        )
    if prior["kind"]:
        check_input_prior(prior, out["data"])
    if out["model"]["seg_vote"] > 0:
        check_seg_vote(out["model"], out["schedule"])
    return out


def check_seg_vote(model: Mapping, schedule: Mapping) -> None:
    """``model.seg_vote`` mixes the segmenter into p(any): it needs both heads, and a cascade whose gate
    reads p(any) to decide where the segmenter runs would read its own output."""
    from .registry import HEADS  # noqa: PLC0415 (the head types register with the model package)

    tasks = {HEADS.get(section["type"]).task for section in model["heads"].values() if section}
    if not {"cls", "seg"} <= tasks:
        raise ConfigError(f"model.seg_vote={model['seg_vote']} needs a classification and a segmentation head; "
                          f"model.heads has the tasks {sorted(tasks)}")
    if schedule["name"] == "cascade" and "seg" in schedule["cascade"]["gate"]:
        raise ConfigError("model.seg_vote mixes the segmenter into the p(any) that schedule.cascade.gate "
                          "uses to decide where the segmenter runs; set model.seg_vote=0 or drop seg from the gate")


def check_input_prior(prior: Mapping, data: Mapping) -> None:
    """``model.input_prior`` reads a brain-window slice (``anatomy``'s thresholds are brain-window
    levels): the first window must be brain, and ``channel`` its centre slice."""
    from .data.anatomy import check_bleed_roi
    from .data.windowing import WINDOWS, parse_window

    try:
        check_bleed_roi(prior["kind"])
    except ValueError as exc:
        raise ConfigError(str(exc).replace("data.bleed_roi", "model.input_prior.kind")) from None
    if parse_window(data["windows"][0]) != WINDOWS["brain"]:
        raise ConfigError(f"model.input_prior reads the brain window, but data.windows starts with "
                          f"{data['windows'][0]!r}: put brain first")
    if prior["channel"] != data["context_slices"]:
        raise ConfigError(f"model.input_prior.channel={prior['channel']} but the brain window's centre slice is "
                          f"channel {data['context_slices']} (data.context_slices)")


def deep_merge(base: dict, update: Mapping) -> dict:
    """``base`` updated in place by ``update``: nested dicts merge, anything else replaces. A dict that
    names another ``type`` than the one it lands on replaces it too: a YOLO ``det`` written over a
    Mask R-CNN ``det`` from a ``_base_`` file keeps none of the Mask R-CNN settings."""
    for key, value in update.items():
        old = base.get(key)
        retyped = isinstance(old, dict) and isinstance(value, Mapping) and "type" in value and "type" in old \
            and value["type"] != old["type"]
        if isinstance(value, Mapping) and isinstance(old, dict) and not retyped:
            deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], yaml.safe_load("value"))."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r}: empty key part in {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return parts, value


def apply_overrides(cfg: dict, overrides: Iterable[str], schema: Mapping | None = None) -> dict:
    """A copy of ``cfg`` with each ``key.sub=value`` set; each override is checked before it lands."""
    schema = config_schema() if schema is None else schema
    out = copy.deepcopy(cfg)
    for text in overrides:
        parts, value = parse_override(text)
        nested: Any = value
        for part in reversed(parts):
            nested = {part: nested}
        validate(nested, schema, origin=f"command-line override {text!r}", partial=True)
        node = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        key = key_at(schema, parts)
        node[parts[-1]] = coerce(value, key.type) if isinstance(key, Key) else value
    return out


def save_config(cfg: Mapping, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically; reloading it gives the same dict."""
    path = Path(path)
    atomic_write_text(path, yaml.safe_dump(_plain(cfg), sort_keys=False, default_flow_style=None))
    return path


def validate(cfg: Mapping, schema: Mapping, origin: str, partial: bool = False) -> None:
    """Raise ConfigError for the first unknown key or wrongly typed value in ``cfg`` (``partial``: one
    file or override, before the merge)."""
    check(cfg, schema, origin, partial=partial)


# -- internals ---------------------------------------------------------------------------------------


def _load_file_tree(path: Path, schema: Mapping, chain: tuple[Path, ...]) -> dict:
    path = path.expanduser()
    if not path.is_file():
        named_by = f" (named in _base_ of {chain[-1]})" if chain else ""
        raise ConfigError(f"config file not found: {path}{named_by}")
    resolved = path.resolve()
    if resolved in chain:
        raise ConfigError(f"config {path}: _base_ cycle through {' -> '.join(map(str, chain + (resolved,)))}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path}: not valid YAML ({exc})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: top level must be a mapping, got {type(data).__name__}")
    bases = data.pop(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"config {path}: {BASE_KEY} must be a file name or a list of file names")
    validate(data, schema, origin=f"config {path}", partial=True)
    merged: dict = {}
    for base in bases:
        base_cfg = _load_file_tree(path.parent / base, schema, chain + (resolved,))
        _merge_with_heads(merged, base_cfg)
    return _merge_with_heads(merged, data)


def _merge_with_heads(base: dict, update: Mapping) -> dict:
    """deep_merge, except a head set to None in ``update`` is removed from ``base``."""
    deep_merge(base, update)
    heads = (base.get("model") or {}).get("heads") if isinstance(base.get("model"), dict) else None
    if isinstance(heads, dict):
        for name in [n for n, spec in heads.items() if spec is None]:
            del heads[name]
    return base


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
