from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from atom_bench.core import labels as L

sizes = st.integers(16, 256)


@given(sizes, st.data())
def test_low_label_refines_high_label(size, data):
    center = np.array(data.draw(st.lists(st.floats(-0.5, size - 0.5 - 1e-9), min_size=3, max_size=3)))
    high, low = L.high_label(center, size), L.low_label(center, size)
    assert 0 <= high < 27 and 0 <= low < 729
    assert low // 27 == high


@given(sizes)
def test_block_centres_carry_their_own_label(size):
    centres = L.fine_block_centers_vox(size)
    np.testing.assert_array_equal(L.low_label(centres, size), np.arange(729))
    np.testing.assert_array_equal(L.high_label(L.coarse_block_centers_vox(size), size), np.arange(27))


def test_partition_is_uniform_over_voxels():
    size = 27  # divisible by 9: every fine cell holds 3^3 voxels
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    assert np.all(np.bincount(L.low_label(grid, size), minlength=729) == 27)
    assert np.all(np.bincount(L.high_label(grid, size), minlength=27) == 729)


def test_axis0_varies_slowest():
    size = 9
    assert L.high_label([8, 0, 0], size) == 18
    assert L.high_label([0, 8, 0], size) == 6
    assert L.high_label([0, 0, 8], size) == 2
    assert L.low_label([1, 0, 0], size) == 9 and L.low_label([0, 0, 1], size) == 1


def _brute_force_paper(corners: np.ndarray, size: int) -> tuple[set[int], set[int]]:
    """Independent check: the released generator's integer boxes at S = 20, scaled to S."""
    high, low = set(), set()
    t = (corners + 0.5) / size  # normalised coordinates
    for a in itertools.product(range(3), repeat=3):
        lo = np.array(a) * 0.25
        if np.all((t >= lo - 1e-12) & (t < lo + 0.5 - 1e-12)):
            h = 9 * a[0] + 3 * a[1] + a[2]
            high.add(h)
            for b in itertools.product(range(3), repeat=3):
                slo = lo + 0.1 * np.array(b)
                if np.all((t >= slo - 1e-12) & (t < slo + 0.3 - 1e-12)):
                    low.add(27 * h + 9 * b[0] + 3 * b[1] + b[2])
    return high, low


def test_paper_labels_match_released_integer_boxes_at_size_20():
    rng = np.random.default_rng(1)
    corners = rng.integers(-2, 22, size=(400, 4, 3)).astype(float)
    high, low = L.paper_label_masks(corners, 20)
    for row in range(len(corners)):
        c = corners[row].astype(int)
        exp_high = {
            9 * a0 + 3 * a1 + a2
            for a0, a1, a2 in itertools.product(range(3), repeat=3)
            if np.all((c >= 5 * np.array([a0, a1, a2])) & (c <= 5 * np.array([a0, a1, a2]) + 9))
        }
        assert set(np.flatnonzero(high[row])) == exp_high
        exp_low = {
            27 * (9 * a[0] + 3 * a[1] + a[2]) + 9 * b[0] + 3 * b[1] + b[2]
            for a in itertools.product(range(3), repeat=3)
            for b in itertools.product(range(3), repeat=3)
            if np.all((c >= 5 * np.array(a) + 2 * np.array(b)) & (c <= 5 * np.array(a) + 2 * np.array(b) + 5))
        }
        assert set(np.flatnonzero(low[row])) == exp_low


@given(sizes, st.data())
def test_paper_labels_match_brute_force_for_any_size(size, data):
    corners = np.array(
        data.draw(st.lists(st.lists(st.floats(-2.0, size + 1.0), min_size=3, max_size=3), min_size=4, max_size=4))
    )
    high, low = L.paper_label_masks(corners[None], size)
    exp_high, exp_low = _brute_force_paper(corners, size)
    assert set(np.flatnonzero(high[0])) == exp_high
    assert set(np.flatnonzero(low[0])) == exp_low
    assert all(v // 27 in exp_high for v in exp_low)


def test_paper_labels_empty_outside_cube():
    corners = np.array([[[-1.0, 5, 5], [5, 5, 5], [5, 5, 5], [5, 5, 5]]])
    high, low = L.paper_label_masks(corners, 20)
    assert not high.any() and not low.any()


@given(
    center=st.tuples(*[st.floats(-0.5, 63.49, allow_nan=False)] * 3),
    size=st.sampled_from([16, 20, 64, 100]),
)
def test_fine_grid_to_label_order_puts_each_cell_at_its_label(center, size):
    import torch

    from atom_bench.core.labels import fine_cells, fine_grid_to_label_order

    c = np.asarray(center) * (size / 64.0)
    grid = np.random.default_rng(0).random((2, 9, 9, 9))
    cell = tuple(int(x) for x in np.clip(((c + 0.5) * 9 // size).astype(int), 0, 8))
    label = int(L.low_label(c, size))
    assert tuple(fine_cells(label)) == cell
    for scores in (grid, torch.from_numpy(grid)):
        assert float(fine_grid_to_label_order(scores)[1, label]) == grid[1][cell]


def test_coarse_boundaries_separate_the_blocks():
    from atom_bench.core.labels import coarse_boundaries_vox

    for size in (20, 64):
        lo, hi = coarse_boundaries_vox(size)
        assert L.high_label(np.array([lo - 1e-9, 0, 0]), size) == 0 and L.high_label(np.array([lo, 0, 0]), size) == 9
        assert L.high_label(np.array([hi, 0, 0]), size) == 18
