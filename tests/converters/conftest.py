"""Fixtures for the converter tests (inputs built in converter_cases.py)."""
from __future__ import annotations

import numpy as np
import pytest
from converter_cases import hard_cases_volume


@pytest.fixture
def volume() -> np.ndarray:
    return hard_cases_volume()
