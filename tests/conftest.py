"""Shared fixtures: real volumes from nibabel's own test data and the embedded atom-mini."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=60, deadline=None)
settings.load_profile("ci")

NIBABEL_DATA = Path(str(importlib.resources.files("nibabel") / "tests" / "data"))


@pytest.fixture(scope="session")
def nibabel_data() -> Path:
    return NIBABEL_DATA


@pytest.fixture(scope="session")
def real_cube() -> np.ndarray:
    """nibabel's real T1 crop (33x41x25, int16) min-max scaled and zero-padded into a 48^3 cube."""
    data = np.asarray(nib.load(NIBABEL_DATA / "anatomical.nii").dataobj, dtype=np.float32)
    data = (data - data.min()) / (data.max() - data.min())
    cube = np.zeros((48, 48, 48), dtype=np.float32)
    offset = [(48 - s) // 2 for s in data.shape]
    cube[offset[0]:offset[0] + data.shape[0], offset[1]:offset[1] + data.shape[1], offset[2]:offset[2] + data.shape[2]] = data
    return cube
