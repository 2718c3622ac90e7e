from __future__ import annotations

import numpy as np
import pytest
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


@given(st.integers(0, 2**31 - 1))
def test_softened_draw_at_zero_severity_leaves_the_tissue_untouched_and_at_one_is_the_draw(seed):
    slab = np.random.default_rng(seed).uniform(0.05, 1.0, size=(1, 16, 16))
    draw = d.draw_histology(np.random.default_rng([seed, 1]), seed)
    assert d.soften_histology(draw, 1.0) == draw
    off = d.soften_histology(draw, 0.0)
    assert d.slab_offsets(off.thickness).tolist() == [0.0]
    np.testing.assert_allclose(d.apply_histology(slab, off), slab[0], atol=1e-6)


@given(st.integers(0, 2**31 - 1), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_softening_moves_every_parameter_monotonically_towards_none(seed, a, b):
    low, high = sorted((a, b))
    draw = d.draw_histology(np.random.default_rng([seed, 1]), seed)
    weak, strong = d.soften_histology(draw, low), d.soften_histology(draw, high)
    distance = {  # how far each parameter is from its no-degradation value
        "thickness": lambda x: x.thickness, "gamma": lambda x: abs(np.log(x.gamma)), "wave_amp": lambda x: x.wave_amp,
        "bias": lambda x: x.bias, "warp": lambda x: x.warp, "shrink": lambda x: 1 - x.shrink, "tear": lambda x: x.tear,
        "holes": lambda x: x.holes, "crop": lambda x: 1 - x.crop, "noise": lambda x: x.noise,
    }  # fmt: skip
    for name, far in distance.items():
        assert far(weak) <= far(strong) + 1e-12 <= far(draw) + 2e-12, name
    assert (weak.wave_freq, weak.wave_phase, weak.seed) == (draw.wave_freq, draw.wave_phase, draw.seed)


@pytest.mark.parametrize("severity", [-0.1, 1.5])
def test_severity_outside_zero_to_one_is_refused(severity):
    with pytest.raises(ValueError, match=r"severity must lie in \[0, 1\]"):
        d.soften_histology(d.draw_histology(np.random.default_rng(0), 0), severity)
