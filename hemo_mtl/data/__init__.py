"""The data layer: HU windowing, volume I/O, dataset sources -> manifest, splits, the torch Dataset.

Names load lazily (PEP 562), so the phantom and the converters do not pay for torch and
albumentations when they do not need them.
"""
from importlib import import_module

_EXPORTS = {
    "HemorrhageDataset": "dataset", "collate_samples": "dataset", "manifest_dir_dataset": "dataset",
    "DataError": "io", "DataWarning": "io", "Volume": "io", "load_dicom_series": "io", "load_display_image": "io",
    "load_nifti": "io", "list_slice_images": "io", "read_display_image": "io", "read_slice": "io",
    "write_dicom_series": "io", "RowError": "cells", "read_csv_rows": "cells",
    "MANIFEST_COLUMNS": "manifest", "read_manifest": "manifest", "write_manifest": "manifest",
    "SourceScan": "sources", "scan_source": "sources",
    "LeakageError": "splits", "check_leakage": "splits", "load_splits": "splits", "make_splits": "splits",
    "save_splits": "splits",
    "WINDOWS": "windowing", "stack_windows": "windowing", "window_hu": "windowing",
    "window_grid": "patches", "patch_view": "patches", "balanced_view": "sampling", "DatasetView": "views",
    "PhantomCase": "phantom", "make_phantom_case": "phantom", "write_phantom_dataset": "phantom",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
