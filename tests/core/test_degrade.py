from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from atom_bench.core import degrade as d


@given(st.integers(0, 2**31 - 1))
def test_histology_output_is_a_valid_slice_and_deterministic(seed):
    rng = np.random.default_rng(seed)
    slab = rng.uniform(0.2, 1.0, size=(3, 16, 16)).astype(np.float32)
    draw = d.draw_histology(np.random.default_rng([seed, 1]), seed)
    out = d.apply_histology(slab, draw)
    assert out.shape == (16, 16) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(out, d.apply_histology(slab, draw))
    assert set(draw.columns()) == set(d.DEGRADATION_COLUMNS)


def test_remap_is_non_monotonic():
    x = np.linspace(0, 1, 200)
    y = d.remap_intensity(x, 1.0, 0.4, 2.0, 0.0)
    assert np.any(np.diff(y) < 0) and np.any(np.diff(y) > 0)
    assert y.min() >= 0 and y.max() <= 1


def test_slab_offsets_span_the_thickness():
    np.testing.assert_array_equal(d.slab_offsets(0.0), [0.0])
    offsets = d.slab_offsets(2.5)
    assert offsets[0] == -1.25 and offsets[-1] == 1.25 and len(offsets) == 4


def test_shrink_pulls_tissue_inwards_and_crop_keeps_the_requested_area():
    image = np.ones((32, 32))
    shrunk = d.warp_and_shrink(image, 0.0, 0.8, np.random.default_rng(0))
    assert shrunk[0, 0] == 0 and shrunk[16, 16] == 1
    assert abs((shrunk > 0.5).mean() - 0.8**2) < 0.08
    cropped = d.crop_partial(image, 0.5, np.random.default_rng(1))
    assert abs(cropped.mean() - 0.5) < 0.1


def test_holes_and_tears_remove_tissue():
    image = np.ones((32, 32))
    assert d.punch_holes(image, 3, np.random.default_rng(2)).mean() < 1
    assert (d.tear(image, np.random.default_rng(3)) == 0).any()


def test_bias_field_peak_matches_strength():
    field = d.bias_field((32, 32), 0.3, np.random.default_rng(4))
    assert np.isclose(np.abs(np.log(field)).max(), 0.3)
