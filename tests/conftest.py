"""Shared fixtures: real volumes from nibabel's own test data and the embedded atom-mini."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import settings

# Tests run two at a time on two cores: one torch thread each avoids OpenMP oversubscription.
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

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


def _nibabel_volume_dir(target: Path) -> Path:
    """Three real scans from nibabel's test data: a T1 crop, an EPI frame, the T1 flipped to LPS."""
    target.mkdir(parents=True, exist_ok=True)
    anat = nib.load(NIBABEL_DATA / "anatomical.nii")
    nib.save(anat, target / "t1_crop.nii.gz")
    nib.save(nib.load(NIBABEL_DATA / "example4d.nii.gz").slicer[..., 0], target / "epi_frame0.nii.gz")
    flipped = nib.Nifti1Image(np.asarray(anat.dataobj)[::-1, ::-1], anat.affine @ np.diag([-1, -1, 1, 1]) @ np.array(
        [[1, 0, 0, anat.shape[0] - 1], [0, 1, 0, anat.shape[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]]))
    nib.save(flipped, target / "t1_lps.nii.gz")
    return target


@pytest.fixture(scope="session")
def nibabel_volumes(tmp_path_factory) -> Path:
    return _nibabel_volume_dir(tmp_path_factory.mktemp("volumes"))


@pytest.fixture(scope="session")
def small_config():
    from atom_bench.data.build import BuildConfig, SplitCounts

    return BuildConfig(name="small", counts=SplitCounts(train=12, validation=6, test_seen=6, test_unseen=6), seed=7)


@pytest.fixture(scope="session")
def small_bench(tmp_path_factory, nibabel_volumes, small_config) -> Path:
    """A real benchmark built from nibabel's scans (all four tracks)."""
    from atom_bench.data.build import build_benchmark
    from atom_bench.data.sources import read_volume_sources

    sources = read_volume_sources(nibabel_volumes, small_config.seed)
    # pin groups so that every split is populated: two training subjects, one unseen
    groups = {"t1_crop": "train", "epi_frame0": "train", "t1_lps": "unseen"}
    sources = [type(s)(**{**s.__dict__, "group": groups[s.volume_id]}) for s in sources]
    out = tmp_path_factory.mktemp("bench") / "small"
    build_benchmark(sources, out, small_config)
    return out
