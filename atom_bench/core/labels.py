"""Block labels of a slice (pure functions; ``docs/PROTOCOL.md`` sections 3.3 and 3.4).

Two label families:

- **Partition labels** (the benchmark's target): the 3x3x3 coarse cell and the 9x9x9 fine cell
  holding the slice centre. ``high_label = 9 a0 + 3 a1 + a2`` with ``a0`` along array axis 0;
  ``low_label = 27 high_label + 9 b0 + 3 b1 + b2`` with ``b = f mod 3`` the fine cell inside the
  coarse one, so ``low_label // 27 == high_label``.
- **Paper labels**: the released ATOM generator's overlapping blocks, multi-hot, a block being
  positive when it contains all four slice corners.

All positions are cube voxel coordinates; ``size`` is the cube side ``S`` in voxels.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

N_HIGH = 27
N_LOW = 729

# Paper blocks in twentieths of the cube side: coarse [5a, 5a + 10), sub-block [5a + 2b, 5a + 2b + 6).
_PAPER_UNITS = 20
_PAPER_COARSE_START = np.array([0, 5, 10])
_PAPER_COARSE_WIDTH = 10
_PAPER_SUB_STEP = 2
_PAPER_SUB_WIDTH = 6


def _cells(center_vox: ArrayLike, size: int, divisions: int) -> NDArray[np.int64]:
    """Cell index per axis (``(..., 3)``) of a ``divisions``-per-axis grid; boundaries go up."""
    scaled = (np.asarray(center_vox, dtype=np.float64) + 0.5) * divisions
    thresholds = size * np.arange(1, divisions)
    return (scaled[..., None] >= thresholds).sum(axis=-1).astype(np.int64)


def _encode(cells: NDArray[np.int64]) -> NDArray[np.int64]:
    return 9 * cells[..., 0] + 3 * cells[..., 1] + cells[..., 2]


def _decode(index: ArrayLike) -> NDArray[np.int64]:
    index = np.asarray(index, dtype=np.int64)
    return np.stack([index // 9, (index // 3) % 3, index % 3], axis=-1)


def high_label(center_vox: ArrayLike, size: int) -> NDArray[np.int64]:
    """Coarse partition label (0..26) of slice centres ``(..., 3)`` in voxels."""
    return _encode(_cells(center_vox, size, 3))


def low_label(center_vox: ArrayLike, size: int) -> NDArray[np.int64]:
    """Fine partition label (0..728) of slice centres ``(..., 3)`` in voxels."""
    fine = _cells(center_vox, size, 9)
    return N_HIGH * _encode(fine // 3) + _encode(fine % 3)


def fine_cells(low: ArrayLike) -> NDArray[np.int64]:
    """Fine cell ``(f0, f1, f2)`` in 0..8 per axis of fine labels ``(...,)`` -> ``(..., 3)``."""
    low = np.asarray(low, dtype=np.int64)
    return 3 * _decode(low // N_HIGH) + _decode(low % N_HIGH)


def fine_block_centers_vox(size: int) -> NDArray[np.float64]:
    """Centres ``(729, 3)`` in voxels of the fine blocks, row ``k`` for ``low_label == k``."""
    return (fine_cells(np.arange(N_LOW)) + 0.5) * size / 9.0 - 0.5


def coarse_block_centers_vox(size: int) -> NDArray[np.float64]:
    """Centres ``(27, 3)`` in voxels of the coarse blocks, row ``k`` for ``high_label == k``."""
    return (_decode(np.arange(N_HIGH)) + 0.5) * size / 3.0 - 0.5


def coarse_boundaries_vox(size: int) -> NDArray[np.float64]:
    """The two coarse block boundaries along each axis, in voxels: ``k S / 3 - 0.5`` for k = 1, 2
    (a centre exactly on a boundary belongs to the upper block)."""
    return size * np.arange(1, 3) / 3.0 - 0.5


def fine_grid_to_label_order(grid):
    """Scores on the 9 x 9 x 9 fine grid (array axes 0, 1, 2 last: ``(..., 9, 9, 9)``) as
    ``(..., 729)`` in ``low_label`` order, for numpy arrays and torch tensors alike.

    Fine cell ``f = 3 a + b`` per axis (``a`` the coarse cell, ``b`` the sub-cell), so label
    ``27 (9 a0 + 3 a1 + a2) + 9 b0 + 3 b1 + b2``::

        >>> scores = np.arange(729.0).reshape(9, 9, 9)      # scores[f0, f1, f2]
        >>> low = fine_grid_to_label_order(scores)          # low[k] = score of fine label k
        >>> bool(low[low_label(np.array([10.0, 40.0, 60.0]), 64)] == scores[1, 5, 8])
        True
    """
    lead = tuple(grid.shape[:-3])
    if tuple(grid.shape[-3:]) != (9, 9, 9):
        raise ValueError(f"a fine grid has shape (..., 9, 9, 9); got {tuple(grid.shape)}")
    n = len(lead)
    x = grid.reshape(*lead, 3, 3, 3, 3, 3, 3)  # (..., a0, b0, a1, b1, a2, b2)
    order = (*range(n), n, n + 2, n + 4, n + 1, n + 3, n + 5)  # (..., a0, a1, a2, b0, b1, b2)
    x = x.permute(*order) if hasattr(x, "permute") else x.transpose(order)
    return x.reshape(*lead, N_LOW)


def paper_label_masks(corners_vox: ArrayLike, size: int) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Multi-hot paper labels from slice corners.

    Args:
        corners_vox: ``(B, K, 3)`` corner positions in voxels (``K = 4`` corners; already rounded
            when the track samples ``nearest``).
        size: cube side ``S``.

    Returns:
        ``high (B, 27)`` and ``low (B, 729)`` boolean masks; ``low[b, 27 h + s]`` is true when
        sub-block ``s`` of coarse block ``h`` contains every corner.
    """
    corners = np.asarray(corners_vox, dtype=np.float64)
    position = (corners + 0.5) * _PAPER_UNITS  # compared against block bounds times size

    def inside(start: NDArray, width: int) -> NDArray[np.bool_]:
        # (B, K, 3 axes, n boxes) -> all corners inside, per axis and box
        pos = position[..., None]
        hit = (pos >= start * size) & (pos < (start + width) * size)
        return hit.all(axis=1)

    coarse = inside(_PAPER_COARSE_START, _PAPER_COARSE_WIDTH)  # (B, 3 axes, 3 a)
    sub_start = (_PAPER_COARSE_START[:, None] + _PAPER_SUB_STEP * np.arange(3)[None, :]).reshape(-1)
    sub = inside(sub_start, _PAPER_SUB_WIDTH).reshape(-1, 3, 3, 3)  # (B, axes, a, b)

    high = coarse[:, 0, :, None, None] & coarse[:, 1, None, :, None] & coarse[:, 2, None, None, :]
    low = (
        sub[:, 0, :, None, None, :, None, None]
        & sub[:, 1, None, :, None, None, :, None]
        & sub[:, 2, None, None, :, None, None, :]
    )
    return high.reshape(-1, N_HIGH), low.reshape(-1, N_LOW)


def masks_to_lists(mask: NDArray[np.bool_]) -> list[list[int]]:
    """Sorted positive indices per row of a ``(B, C)`` boolean mask."""
    return [np.flatnonzero(row).tolist() for row in mask]
