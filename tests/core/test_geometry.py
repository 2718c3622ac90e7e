from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from atom_bench.core import geometry as g

finite = st.floats(-1.0, 1.0, allow_nan=False)
vectors = st.tuples(finite, finite, finite).filter(lambda v: np.linalg.norm(v) > 1e-3)


@pytest.mark.parametrize("view", g.VIEWS)
@pytest.mark.parametrize("order", ["nearest", "linear"])
def test_axis_aligned_pose_reproduces_array_slice_exactly(real_cube, view, order):
    h, w = 16, 12
    i0, j0, k0, fixed = 5, 9, 13, 20
    u, v = g.view_frame(view)
    expected = {
        "axial": real_cube[i0:i0 + w, j0:j0 + h, fixed].T,
        "coronal": real_cube[i0:i0 + w, fixed, k0:k0 + h].T,
        "sagittal": real_cube[fixed, j0:j0 + w, k0:k0 + h].T,
    }[view]
    # in-plane centre at the middle of the pixel block (half-integers for even sizes)
    start_u = {"axial": i0, "coronal": i0, "sagittal": j0}[view]
    start_v = {"axial": j0, "coronal": k0, "sagittal": k0}[view]
    center = fixed * np.cross(u, v) ** 2 + (start_u + (w - 1) / 2) * u + (start_v + (h - 1) / 2) * v
    got = g.sample_slices(real_cube, center[None], u[None], v[None], (h, w), order=order)[0]
    np.testing.assert_array_equal(got, expected)


@given(vectors, st.floats(-np.pi, np.pi))
def test_frame_from_normal_is_right_handed_orthonormal(normal, angle):
    u, v = g.frame_from_normal(np.array(normal), angle)
    n = g.unit(np.array(normal))
    assert np.allclose([u @ u, v @ v], 1.0) and abs(u @ v) < 1e-9
    assert np.allclose(np.cross(u, v), n, atol=1e-9)


@given(vectors)
def test_minimal_rotation_maps_e2_to_normal_and_is_a_rotation(normal):
    r = g.minimal_rotation(np.array(normal))[0]
    assert np.allclose(r @ r.T, np.eye(3), atol=1e-9)
    assert np.isclose(np.linalg.det(r), 1.0)
    assert np.allclose(r @ np.array([0.0, 0.0, 1.0]), g.unit(np.array(normal)), atol=1e-9)


def test_minimal_rotation_antiparallel_normal():
    r = g.minimal_rotation([0.0, 0.0, -1.0])[0]
    assert np.allclose(r @ [0, 0, 1], [0, 0, -1])


@given(st.lists(st.floats(1.0, 46.0), min_size=3, max_size=3), vectors, st.floats(0, 2 * np.pi))
def test_linear_equals_nearest_on_voxel_centres_and_is_bounded(real_cube, center, normal, angle):
    u, v = g.frame_from_normal(np.array(normal), angle)
    slices = g.sample_slices(real_cube, np.array([center]), u[None], v[None], (8, 8), order="linear")
    assert slices.shape == (1, 8, 8)
    assert slices.min() >= 0.0 and slices.max() <= 1.0 + 1e-6
    # on integer points both orders agree
    pts = np.rint(g.slice_points(np.array([center]), u[None], v[None], g.centered_offsets(8), g.centered_offsets(8)))
    np.testing.assert_array_equal(g.sample_points(real_cube, pts, "linear"), g.sample_points(real_cube, pts, "nearest"))


@given(st.floats(0.0, 46.0), st.floats(0.0, 46.0), st.floats(0.0, 46.0))
def test_linear_sampling_matches_scipy_map_coordinates(real_cube, x, y, z):
    from scipy.ndimage import map_coordinates

    expected = map_coordinates(real_cube, np.array([[x], [y], [z]]), order=1, mode="constant", cval=0.0)
    got = g.sample_points(real_cube, np.array([[x, y, z]]), "linear")
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_points_outside_read_zero(real_cube):
    pts = np.array([[-1.0, 5, 5], [5, 48.0, 5], [5, 5, -3.2], [100, 100, 100]])
    for order in ("nearest", "linear"):
        assert np.all(g.sample_points(real_cube, pts, order) == 0)


@given(st.lists(st.floats(-50, 50), min_size=3, max_size=3))
def test_voxel_mm_round_trip(point):
    affine = np.array([[0.9, 0.1, 0, -90], [0, 1.1, 0.2, -120], [0.05, 0, 1.5, -70], [0, 0, 0, 1]])
    back = g.mm_to_voxel(affine, g.voxel_to_mm(affine, np.array(point)))
    np.testing.assert_allclose(back, point, atol=1e-9)


def test_random_unit_vectors_are_uniform_on_sphere():
    rng = np.random.default_rng(0)
    vecs = g.random_unit_vectors(rng, 20000)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1)
    assert np.all(np.abs(vecs.mean(axis=0)) < 0.03)
    # uniform on the sphere: |z| is uniform on [0, 1]
    assert abs(np.mean(np.abs(vecs[:, 2])) - 0.5) < 0.01


def test_plane_angle_is_sign_invariant():
    assert np.isclose(g.angle_between_planes_deg([0, 0, 1], [0, 0, -1]), 0)
    assert np.isclose(g.angle_between_planes_deg([0, 0, 1], [1, 0, 0]), 90)
