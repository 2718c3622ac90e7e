"""`show` pictures: which planes are drawn as footprints, and the picture itself on real data."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from atom_bench.viz import near_in_plane, plane_footprint, plane_trace, render_sample

E = np.eye(3)


def test_axis_aligned_planes_are_footprints_only_on_their_own_cut():
    u, v = E[0], E[1]  # an axial slice: normal along axis 2
    assert near_in_plane(u, v, 2) and not near_in_plane(u, v, 0) and not near_in_plane(u, v, 1)


@given(st.floats(0.0, 89.0))
def test_footprint_threshold_follows_the_tilt(tilt):
    t = np.radians(tilt)
    u, v = E[0], np.array([0.0, np.cos(t), np.sin(t)])  # normal tilted by `tilt` from axis 2
    assert near_in_plane(u, v, 2) == (tilt <= 30.0)


def test_footprint_is_a_closed_rectangle_and_the_trace_lies_in_the_cut():
    centre, u, v = np.array([10.0, 20.0, 30.0]), E[0], np.array([0.0, 0.6, 0.8])
    outline = plane_footprint(centre, u, v, (7.5, 7.5))
    assert outline.shape == (5, 3) and np.allclose(outline[0], outline[-1])
    trace = plane_trace(centre, u, v, (7.5, 7.5), 2)
    assert np.allclose(trace[:, 2], 30.0)


def test_the_picture_of_a_real_sample(tmp_path):
    out = render_sample("easy-train-colin27_t1-00003", tmp_path / "s.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
