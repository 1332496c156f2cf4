"""Run configuration: YAML files with ``_base_`` inheritance, ``key.sub=value`` overrides, validation.

A config describes a run with names and numbers; code decides what they mean. Loading order, later
wins: ``DEFAULTS`` <- each ``_base_`` file (in list order, resolved relative to the file that names it)
<- the file itself <- command-line overrides. Dicts merge deeply; lists and scalars replace.

Model heads are the one exception to "merge with the defaults": a run trains the heads its config
names (each filled in from ``MODEL_DEFAULTS["heads"][name]``), and a child config drops a head it
inherited by setting it to ``null`` (``model.heads.det=null``).

Everything is checked against ``DEFAULTS`` (the ``model`` section against
``hemo_mtl.models.MODEL_DEFAULTS`` when the models package provides it): an unknown key gets a
"did you mean" from :mod:`difflib`, a wrong type names the key, the file (or the override) and both
types. Only ``yaml.safe_load`` is used: a config can never run code.
"""
from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .atomic import atomic_write_text

# Stage of a multi-stage schedule (curriculum / cascade); see hemo_mtl.engine.schedules.
STAGE_DEFAULTS: dict[str, Any] = {
    "name": None,
    "epochs": 1,
    "heads": None,  # None = every head the model has
    "loss_weights": {},  # multipliers by task ("cls", "seg", "det") or by loss name ("loss_mask")
    "freeze": [],  # parameter-name prefixes, e.g. "backbone"
    "labels": None,  # "cls" | "boxes" | "mask": train only on slices that have this label
    "neg_fraction": None,  # keep this share of negative (any == 0) slices per epoch; None = all
    "repeat_threshold": None,  # repeat slices of subtypes rarer than this slice frequency (LVIS RFS); None = off
    "hard_negatives": None,  # share of the kept negatives taken hardest-first (classifier p(any)); None = random
}

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "output_dir": "runs/default",
    "data": {
        "root": None,  # converted dataset dir (manifest.csv + splits.json); None = generated phantom
        "source": None,  # when root is raw data: the source adapter that converts it first
        "windows": ["brain"],
        "context_slices": 0,  # 2.5D: c neighbours each side as channels, in_chans = windows x (2c+1)
        "image_size": 256,
        "batch_size": 8,
        "num_workers": 0,
        "augment": {},  # free-form: hemo_mtl.data.transforms.build_transforms(aug_cfg, train)
        "phantom": {"patients": 24, "seed": 0, "size": 256, "slices": 24},
        # display-image datasets: phantom patients rendered as CT-ICH JPG slices (hemo_mtl.data.phantom_display)
        # join the training split only, with their exact masks (0 = none)
        "synthetic": {"patients": 0, "seed": 0, "size": 256, "slices": 24, "canvas": 512},
        "split": {"seed": 32, "val": 0.2, "test": 0.2,
                  "folds": 0,  # >0: k-fold cross-validation of the non-test patients (val = fold `fold`)
                  "fold": 0,
                  # "val": fold `fold` validates, the test split tests; "test": fold `fold` tests and the
                  # next fold validates (nested cross-validation over every patient; set test: 0.0)
                  "held_out_as": "val"},
        "cls_labels": None,  # e.g. [any]: only these labels count as known (binary protocols)
        "location_classes": None,  # e.g. [deep, lobar, subtentorial]: manifest `location` value -> class index
        "balance": None,  # a label name (any): oversample its minority class in the training split
        "patches": {"size": 0, "stride": 0, "neg_keep": 1.0},  # train on size x size windows (0 = whole slices)
        "extra": {"center_crop": None, "sharpen": 0.0, "normalize": None},  # hemo_mtl.data.protocol_transforms
    },
    "model": {},  # replaced by hemo_mtl.models.MODEL_DEFAULTS when available
    "schedule": {
        "name": "joint",  # joint | curriculum | cascade
        "stages": [],
        "joint": {  # the joint schedule's one stage trains on all slices unless these thin or repeat them
            "neg_fraction": None,  # share of negative slices per epoch (None = all)
            "repeat_threshold": None,  # repeat-factor sampling of rare subtypes (see STAGE_DEFAULTS)
            "hard_negatives": None,  # hard-negative share of the kept negatives (see STAGE_DEFAULTS)
        },
        "cascade": {
            "gate": ["seg", "det"],  # heads the classifier gates at evaluation
            "target_sensitivity": 0.95,  # slice-level `any` sensitivity the threshold keeps on val
            "threshold": None,  # fixed gate threshold; None = choose on the validation split
            "neg_fraction": 0.25,  # share of negative slices det/seg see per epoch (default stages)
            "repeat_threshold": None,  # default stages: repeat-factor sampling for det/seg (see STAGE_DEFAULTS)
            "hard_negatives": None,  # default stages: share of det/seg's negatives that the classifier scores highest
            "cls_epochs": None,  # default stages: classifier epochs (None = a third of train.epochs)
            "cls_neg_fraction": None,  # default stages: share of negatives the classifier stage sees (None = all)
        },
    },
    "train": {
        "epochs": 12,
        "lr": 1.0e-3,
        "optimizer": "adamw",  # adamw | adam | sgd
        "momentum": 0.9,
        "weight_decay": 1.0e-4,
        "lr_schedule": {
            "name": "cosine",  # cosine | step | constant
            "warmup_iters": 50,
            "warmup_factor": 0.001,
            "min_lr_factor": 0.01,  # cosine floor, as a fraction of lr
            "steps": [0.7, 0.9],  # step: fractions of the stage where lr *= gamma
            "gamma": 0.1,
        },
        "amp": True,  # CUDA only; ignored on CPU
        "channels_last": True,  # CUDA only
        "grad_clip": 10.0,  # max global grad norm; None = off
        "accum_steps": 1,
        "ema": {"enabled": False, "decay": 0.999, "tau": 200.0},
        "checkpoint_period": 1,  # epochs
        "checkpoint_keep": 3,  # newest periodic checkpoints kept
        "eval_period": 1,  # epochs; 0 = only at the end
        "log_period": 20,  # iterations
        "device": "auto",  # auto | cpu | cuda | cuda:N
        "deterministic": True,
        "num_threads": 2,  # CPU threads of the machine, split among torchrun's local ranks; None = torch's default
        "progress": True,
    },
    "eval": {
        "tasks": ["cls", "seg", "det"],
        "batch_size": None,  # None = data.batch_size
        "image_panels": 4,  # slices drawn to tensorboard per evaluation
        "flip_tta": False,  # add the left-right mirrored pass (hemo_mtl.models.tta), as predict.py --flip-tta
        # fit one temperature per label on the validation split (hemo_mtl.evaluation.calibration); carried
        # in model_final.pth, applied by the predictor; reports show ECE/NLL before and after
        "temperature_scaling": False,
        "final_split": "test",
        # report the mean over selected epochs (hemo_mtl.evaluation.epoch_selection); rule null = off
        "select": {"rule": None, "k": 10, "after_epoch": 10},
        # full-slice prediction by overlap-averaged windows + closing/opening (size 0 = whole slice)
        "sliding_window": {"size": 0, "stride": 0, "closing": 0, "opening": 0},
    },
}

# Numbers with a range, checked where they are read (file or override) so a bad value is named at the
# config rather than deep inside torch or albumentations: dotted key ("*" = any list index) ->
# (low, high, low_open); None = unbounded. None values (off / not set) are never range-checked.
_POS, _NONNEG, _FRACTION = (0, None, True), (0, None, False), (0, 1, False)
RANGES: dict[str, tuple] = {
    "seed": _NONNEG,
    "data.image_size": _POS, "data.batch_size": _POS, "data.num_workers": _NONNEG, "data.context_slices": _NONNEG,
    "data.phantom.patients": _POS, "data.phantom.size": _POS, "data.phantom.slices": _POS,
    "data.phantom.seed": _NONNEG,
    "data.synthetic.patients": _NONNEG, "data.synthetic.seed": _NONNEG, "data.synthetic.size": _POS,
    "data.synthetic.slices": _POS, "data.synthetic.canvas": _POS,
    "data.split.seed": _NONNEG, "data.split.val": _FRACTION, "data.split.test": _FRACTION,
    "data.split.folds": _NONNEG, "data.split.fold": _NONNEG,
    "data.patches.size": _NONNEG, "data.patches.stride": _NONNEG, "data.patches.neg_keep": _FRACTION,
    "data.extra.sharpen": _NONNEG,
    "schedule.stages.*.epochs": _POS, "schedule.stages.*.neg_fraction": _FRACTION,
    "schedule.stages.*.repeat_threshold": _FRACTION, "schedule.stages.*.hard_negatives": _FRACTION,
    "schedule.joint.neg_fraction": _FRACTION, "schedule.joint.repeat_threshold": _FRACTION,
    "schedule.joint.hard_negatives": _FRACTION,
    "schedule.cascade.target_sensitivity": _FRACTION, "schedule.cascade.threshold": _FRACTION,
    "schedule.cascade.neg_fraction": _FRACTION, "schedule.cascade.repeat_threshold": _FRACTION,
    "schedule.cascade.hard_negatives": _FRACTION, "schedule.cascade.cls_epochs": _NONNEG,
    "schedule.cascade.cls_neg_fraction": _FRACTION,
    "train.epochs": _POS, "train.lr": _POS, "train.momentum": _FRACTION, "train.weight_decay": _NONNEG,
    "train.lr_schedule.warmup_iters": _NONNEG, "train.lr_schedule.warmup_factor": (0, 1, True),
    "train.lr_schedule.min_lr_factor": _FRACTION, "train.lr_schedule.gamma": _POS,
    "train.grad_clip": _POS, "train.accum_steps": _POS, "train.ema.decay": _FRACTION, "train.ema.tau": _POS,
    "train.checkpoint_period": _NONNEG, "train.checkpoint_keep": _NONNEG, "train.eval_period": _NONNEG,
    "train.log_period": _NONNEG, "train.num_threads": _POS,
    "eval.batch_size": _POS, "eval.image_panels": _NONNEG, "eval.select.k": _POS, "eval.select.after_epoch": _NONNEG,
    "eval.sliding_window.size": _NONNEG, "eval.sliding_window.stride": _NONNEG,
    "eval.sliding_window.closing": _NONNEG, "eval.sliding_window.opening": _NONNEG,
}

# Dicts whose keys belong to another component and are not checked here.
FREE_FORM = {("data", "augment"), ("schedule", "stages", "*", "loss_weights"), ("model", "backbone", "kwargs")}

BASE_KEY = "_base_"


class ConfigError(ValueError):
    """A config file, key or value is wrong; the message names which and why."""


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> dict:
    """The resolved config of ``path`` with ``overrides`` (``"train.lr=0.01"``) applied and validated."""
    schema = config_schema()
    cfg = _load_file_tree(Path(path), schema, chain=())
    cfg = apply_overrides(cfg, overrides, schema)
    return resolve(cfg, schema)


def config_schema() -> dict:
    """``DEFAULTS`` with the model section taken from the models package when it exists."""
    schema = copy.deepcopy(DEFAULTS)
    try:
        from .models import MODEL_DEFAULTS  # noqa: PLC0415 (optional until the models package lands)
    except ImportError:
        MODEL_DEFAULTS = None
    if MODEL_DEFAULTS is not None:
        schema["model"] = copy.deepcopy(dict(MODEL_DEFAULTS))
    return schema


def _head_base(default: Mapping, spec: Mapping) -> Mapping:
    """The defaults a head section is filled from: those of its own ``type`` (a YOLO ``det`` must not
    inherit Mask R-CNN keys), else the default head of that name."""
    kind = spec.get("type", default.get("type"))
    if kind == default.get("type"):
        return default
    try:
        from .models import HEAD_DEFAULTS  # noqa: PLC0415
    except ImportError:
        return default
    return HEAD_DEFAULTS.get(kind, default)


def resolve(cfg: Mapping, schema: Mapping | None = None) -> dict:
    """Defaults filled in under ``cfg``, then the whole result validated."""
    schema = config_schema() if schema is None else schema
    user = copy.deepcopy(dict(cfg))
    user_heads = (user.get("model") or {}).pop("heads", None) if isinstance(user.get("model"), dict) else None
    defaults = copy.deepcopy(dict(schema))
    default_heads = defaults.get("model", {}).pop("heads", None)
    out = deep_merge(defaults, user)
    if default_heads is not None or user_heads is not None:
        heads = user_heads if user_heads is not None else default_heads
        out["model"]["heads"] = {
            name: deep_merge(copy.deepcopy(_head_base((default_heads or {}).get(name) or {}, spec or {})), spec or {})
            for name, spec in (heads or {}).items()
            if spec is not None
        }
    out["schedule"]["stages"] = [deep_merge(copy.deepcopy(STAGE_DEFAULTS), s) for s in out["schedule"]["stages"]]
    validate(out, schema, origin="resolved config")
    in_chans = (out.get("model", {}).get("backbone") or {}).get("in_chans")
    context = out["data"].get("context_slices", 0)
    if not isinstance(context, int) or isinstance(context, bool) or context < 0:
        raise ConfigError(f"data.context_slices={context!r}: expected an integer >= 0 (neighbour slices each side)")
    windows = len(out["data"]["windows"])
    if in_chans is not None and in_chans != windows * (2 * context + 1):
        raise ConfigError(
            f"model.backbone.in_chans={in_chans} but data.windows has {windows} window(s) "
            f"{out['data']['windows']} and data.context_slices={context}: the input has windows x (2 x "
            f"context_slices + 1) = {windows * (2 * context + 1)} channel(s)"
        )
    return _coerce_tree(out, schema)


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
        validate(nested, schema, origin=f"command-line override {text!r}")
        node = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = _coerce(value, _schema_at(schema, parts))
    return out


def save_config(cfg: Mapping, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically; reloading it gives the same dict."""
    path = Path(path)
    atomic_write_text(path, yaml.safe_dump(_plain(cfg), sort_keys=False, default_flow_style=None))
    return path


def validate(cfg: Mapping, schema: Mapping, origin: str) -> None:
    """Raise ConfigError for the first unknown key or wrongly typed value in ``cfg``."""
    _check(cfg, schema, (), origin)


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
    validate(data, schema, origin=f"config {path}")
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


def _schema_at(schema: Any, parts: list[str]) -> Any:
    node = schema
    for part in parts:
        if isinstance(node, list):
            node = STAGE_DEFAULTS
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _type_name(value: Any) -> str:
    return {dict: "mapping", list: "list", tuple: "list", str: "string", bool: "bool", int: "int",
            float: "float", type(None): "null"}.get(type(value), type(value).__name__)


def _coerce(value: Any, default: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string; accept it where a float is expected."""
    if isinstance(default, float) and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _coerce_tree(cfg: Any, schema: Any) -> Any:
    if isinstance(cfg, dict) and isinstance(schema, Mapping):
        for key, value in cfg.items():
            if key in schema:
                cfg[key] = _coerce_tree(value, schema[key])
        return cfg
    if isinstance(cfg, list) and isinstance(schema, list) and not schema:
        return [_coerce_tree(v, STAGE_DEFAULTS) if isinstance(v, dict) else v for v in cfg]
    return _coerce(cfg, schema)


def _type_ok(value: Any, default: Any) -> bool:
    if default is None or value is None:
        return True  # None defaults accept anything; None values mean "off / not set"
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool) or _is_float_text(value)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    if isinstance(default, Mapping):
        return isinstance(value, Mapping)
    return isinstance(value, type(default))


def _is_float_text(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def _free(path: tuple[str, ...]) -> bool:
    return any(len(f) == len(path) and all(a in ("*", b) for a, b in zip(f, path)) for f in FREE_FORM)


def _check(cfg: Any, schema: Any, path: tuple[str, ...], origin: str) -> None:
    if _free(path) or not isinstance(schema, Mapping) or not isinstance(cfg, Mapping):
        return
    heads_level = path == ("model", "heads")
    for key, value in cfg.items():
        key_path = path + (str(key),)
        dotted = ".".join(key_path)
        if key not in schema:
            if heads_level and (not schema or (isinstance(value, Mapping) and "type" in value)):
                continue  # any head name with an explicit type (e.g. `location`); the model validates it
            close = difflib.get_close_matches(str(key), [str(k) for k in schema], n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr('.'.join(path + (c,))) for c in close)}?" if close else ""
            known = "" if close else f"; known keys here: {', '.join(map(str, schema))}"
            raise ConfigError(f"{origin}: unknown config key {dotted!r}{hint}{known}")
        default = schema[key]
        if heads_level:
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(f"{origin}: {dotted} must be a mapping of head options (or null to drop it)")
            continue  # head options are free-form per head type; the model validates them
        if not _type_ok(value, default):
            raise ConfigError(
                f"{origin}: {dotted} must be {_type_name(default)}, got {_type_name(value)} ({value!r})"
            )
        _check_range(key_path, value, origin)
        if key_path == ("schedule", "stages") and value:
            for i, stage in enumerate(value):
                if not isinstance(stage, Mapping):
                    raise ConfigError(f"{origin}: schedule.stages[{i}] must be a mapping, got {stage!r}")
                _check(stage, STAGE_DEFAULTS, ("schedule", "stages", str(i)), origin)
        elif isinstance(default, Mapping) and isinstance(value, Mapping):
            _check(value, default, key_path, origin)


def _range_of(key_path: tuple[str, ...]) -> tuple | None:
    for pattern, bounds in RANGES.items():
        parts = pattern.split(".")
        if len(parts) == len(key_path) and all(p in ("*", k) for p, k in zip(parts, key_path)):
            return bounds
    return None


def _check_range(key_path: tuple[str, ...], value: Any, origin: str) -> None:
    bounds = _range_of(key_path)
    if bounds is None or value is None or isinstance(value, bool):
        return
    number = float(value) if _is_float_text(value) else value
    if not isinstance(number, (int, float)):
        return
    low, high, low_open = bounds
    bad_low = low is not None and (number <= low if low_open else number < low)
    bad_high = high is not None and number > high
    if bad_low or bad_high or number != number:
        want = {_POS: "> 0", _NONNEG: ">= 0", _FRACTION: "in [0, 1]"}.get(bounds, f"in ({low}, {high}]")
        raise ConfigError(f"{origin}: {'.'.join(key_path)}={value!r} is out of range: must be {want}")


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
