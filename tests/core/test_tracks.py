from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from atom_bench.core import geometry as geo
from atom_bench.core.tracks import TRACKS, get_track, pixel_offsets, render_samples, sample_poses
from atom_bench.data.dataset import load_split, load_volume
from atom_bench.errors import AtomBenchError


def test_paper_track_follows_the_released_generator():
    spec = TRACKS["paper"]
    assert spec.size == 20 and spec.slice_shape == (4, 4) and spec.sampling == "nearest"
    rows, cols = pixel_offsets(spec)
    np.testing.assert_array_equal(rows, [-2, -1, 0, 1])
    volume = load_volume("colin27_t1", "paper")
    poses = sample_poses(spec, volume, 500, np.random.default_rng(0))
    assert np.all((poses.centers >= 2) & (poses.centers <= 16)) and np.all(poses.centers == np.rint(poses.centers))
    normals = np.cross(poses.u, poses.v)
    assert np.all(normals >= -1e-12), "first octant"
    # the normal is an integer vector 0..9 per axis, normalised
    scaled = normals / np.abs(normals).max(axis=1, keepdims=True)
    ratios = [np.unique(np.round(row[row > 1e-9] * 9 / row.max(), 6)) for row in scaled]
    assert all(len(r) >= 1 for r in ratios)
    # minimal rotation: u stays in the plane spanned by e0 and the normal's tilt (no extra in-plane spin)
    for u, n in zip(poses.u, normals):
        rotation = geo.minimal_rotation(n)[0]
        np.testing.assert_allclose(u, rotation[:, 0], atol=1e-12)


def test_overrides_and_their_errors():
    assert get_track("hard", size=96, slice_size=32).slice_shape == (32, 32)
    with pytest.raises(AtomBenchError, match="out of range"):
        get_track("easy", size=300)
    with pytest.raises(AtomBenchError, match="slice_size 20 must be between"):
        get_track("easy", size=32, slice_size=20)
    with pytest.raises(AtomBenchError, match="unknown track"):
        get_track("oblique")


@given(st.integers(0, 2**31 - 1))
def test_hard_poses_keep_the_slice_inside_and_the_centre_in_tissue(seed):
    spec = TRACKS["hard"]
    volume = load_volume("itk_t1", "hard")
    poses = sample_poses(spec, volume, 8, np.random.default_rng(seed))
    rows, cols = pixel_offsets(spec)
    points = geo.slice_points(poses.centers, poses.u, poses.v, rows, cols)
    assert points.min() >= -1e-9 and points.max() <= spec.size - 1 + 1e-9
    assert all(volume.mask[tuple(np.rint(c).astype(int))] for c in poses.centers)


def test_sampling_is_a_pure_function_of_the_seed():
    volume = load_volume("promed_ct_head", "histology")
    spec = TRACKS["histology"]
    a = sample_poses(spec, volume, 6, np.random.default_rng(3))
    b = sample_poses(spec, volume, 6, np.random.default_rng(3))
    np.testing.assert_array_equal(a.centers, b.centers)
    seeds = np.arange(6)
    np.testing.assert_array_equal(np.stack(render_samples(spec, volume, a, seeds)["slice"]),
                                  np.stack(render_samples(spec, volume, b, seeds)["slice"]))


def test_stored_histology_slices_are_reproducible_from_their_row():
    row = load_split("histology", "test_unseen")[0]
    volume = load_volume(row["volume_id"], "histology")
    from atom_bench.core.tracks import Poses

    poses = Poses(np.array([row["center_vox"]]), np.array([row["u"]]), np.array([row["v"]]), ("oblique",))
    again = render_samples(TRACKS["histology"], volume, poses, np.array([row["seed"]]))
    np.testing.assert_array_equal(again["slice"][0], np.asarray(row["slice"], dtype=np.float32))
    assert again["deg_noise"][0] == row["deg_noise"]


def test_too_little_tissue_is_a_clear_error():
    volume = load_volume("itk_t1", "hard")
    empty = type(volume)(volume.volume_id, volume.data, np.zeros_like(volume.mask), volume.affine, volume.source_path)
    with pytest.raises(AtomBenchError, match="too little foreground"):
        sample_poses(TRACKS["hard"], empty, 4, np.random.default_rng(0), max_rounds=3)
