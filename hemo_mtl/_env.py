"""Environment defaults read when a library is imported or first used, so set before any of them loads.

Imported first by ``hemo_mtl/__init__.py``; ``setdefault``: a value the user set stays.
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULTS = {
    # albumentations asks PyPI for a newer release at import: nothing may reach the network
    "NO_ALBUMENTATIONS_UPDATE": "1",
    # ultralytics (yolo extra) checks for updates and fetches fonts/assets unless offline
    "YOLO_OFFLINE": "1",
    # ultralytics writes settings.json at import; keep it in our cache, not in the user's config folder
    "YOLO_CONFIG_DIR": str(Path.home() / ".cache" / "hemo_mtl" / "ultralytics"),
    # cuBLAS is reproducible (train.deterministic) only with a fixed workspace, read at its first use
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
}


def apply_defaults() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)


apply_defaults()
