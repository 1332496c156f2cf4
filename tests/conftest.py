"""Shared fixtures: the real sample data under HEMO_MTL_SHARED_DATA (default shared/data beside the
checkout; tests that need it skip with a reason when it is absent)."""
import os
from pathlib import Path

import pytest

import hemo_mtl  # noqa: F401  (hemo_mtl._env: environment defaults before any test imports a library)

REPO = Path(__file__).resolve().parents[1]
# tools/*.py and `python -m hemo_mtl.cli.*` started by tests import this checkout's hemo_mtl
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
SHARED_DATA = Path(os.environ.get("HEMO_MTL_SHARED_DATA", REPO.parent / "shared" / "data"))


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real sample data not found at {path} (set HEMO_MTL_SHARED_DATA to the folder holding the samples)")
    return path


@pytest.fixture(scope="session")
def ctich_jpg_dir() -> Path:
    """PhysioNet CT-ICH JPG release sample: 18 patients, slice labels, masks for patient 081."""
    return _shared("ct_ich_physionet_jpg")


@pytest.fixture(scope="session")
def kaggle_head_ct_dir() -> Path:
    """Kaggle head_ct sample: 140 PNGs + labels.csv (header `id, hemorrhage`)."""
    return _shared("head_ct_hemorrhage_kaggle")


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """A small synthetic dataset in the `nifti` layout (12 patients, 128x128x16), made once per session."""
    from hemo_mtl.data.phantom import write_phantom_dataset

    out = tmp_path_factory.mktemp("phantom")
    write_phantom_dataset(out, patients=12, seed=0, size=128, slices=16)
    return out
