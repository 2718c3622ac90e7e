"""Slice poses and batched slice sampling (pure functions over numpy arrays).

Conventions (``docs/PROTOCOL.md`` section 3):

- Voxel coordinates ``(i, j, k)`` index array axes 0, 1, 2 of a cube volume; voxel centres sit
  at integer coordinates, so a cube of side ``S`` spans ``[-0.5, S - 0.5]`` per axis.
- A pose is a centre ``c`` (voxels) and orthonormal in-plane axes ``u`` (slice columns) and
  ``v`` (slice rows); the normal is ``n = u x v``.
- Pixel ``(r, q)`` samples ``c + row_offsets[r] * v + col_offsets[q] * u`` (voxels).
- Millimetres are scanner-world RAS+ coordinates given by the cube affine.

Every function is vectorised over a leading batch axis ``B``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

Order = Literal["nearest", "linear"]
VIEWS: tuple[str, ...] = ("axial", "coronal", "sagittal")

_EYE = np.eye(3)
# (u, v) per axis-aligned view; normal = u x v (coronal's normal is -e1).
_VIEW_FRAMES: dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]] = {
    "axial": (_EYE[0], _EYE[1]),
    "coronal": (_EYE[0], _EYE[2]),
    "sagittal": (_EYE[1], _EYE[2]),
}


def view_frame(view: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """In-plane axes ``(u, v)`` (unit voxel vectors) of an axis-aligned view."""
    if view not in _VIEW_FRAMES:
        raise ValueError(f"unknown view {view!r}; expected one of {', '.join(VIEWS)}")
    u, v = _VIEW_FRAMES[view]
    return u.copy(), v.copy()


def unit(vectors: ArrayLike) -> NDArray[np.float64]:
    """Normalise vectors along the last axis (raises on zero-length vectors)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("cannot normalise a zero-length vector")
    return vectors / norms


def frame_from_normal(
    normals: ArrayLike, angles: ArrayLike | float = 0.0
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Right-handed in-plane axes ``(u, v)`` for plane normals, rotated by ``angles`` (radians).

    The reference axis ``u0`` is the component of the array axis least aligned with ``n``,
    made orthogonal to ``n``; ``u, v`` are ``u0, n x u0`` rotated about ``n`` by ``angles``,
    so that ``u x v == n`` for every angle.

    Args:
        normals: ``(B, 3)`` or ``(3,)`` plane normals in voxel space (any length).
        angles: in-plane rotation per pose, radians, scalar or ``(B,)``.
    """
    n = unit(normals)
    single = n.ndim == 1
    n = np.atleast_2d(n)
    reference = _EYE[np.argmin(np.abs(n), axis=1)]
    u0 = unit(reference - np.sum(reference * n, axis=1, keepdims=True) * n)
    v0 = np.cross(n, u0)
    angles = np.broadcast_to(np.asarray(angles, dtype=np.float64), (n.shape[0],))[:, None]
    u = np.cos(angles) * u0 + np.sin(angles) * v0
    v = np.cross(n, u)
    return (u[0], v[0]) if single else (u, v)


def minimal_rotation(normals: ArrayLike) -> NDArray[np.float64]:
    """Rotation matrices ``(B, 3, 3)`` taking the array axis ``e2`` onto each unit normal.

    This is the released ATOM generator's pose: the Rodrigues rotation about ``e2 x n`` by
    the angle between them, with no further in-plane rotation. A normal parallel to ``e2``
    gives the identity; one anti-parallel gives a half turn about ``e0``.
    """
    n = np.atleast_2d(unit(normals))
    z = _EYE[2]
    axis = np.cross(z, n)
    sin = np.linalg.norm(axis, axis=1)
    cos = n @ z
    k = np.zeros_like(axis)
    nonzero = sin > 1e-12
    k[nonzero] = axis[nonzero] / sin[nonzero, None]
    k[~nonzero & (cos < 0)] = _EYE[0]
    sin = np.where(nonzero, sin, 0.0)
    cross = np.zeros((n.shape[0], 3, 3))
    cross[:, 0, 1], cross[:, 0, 2], cross[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    cross -= cross.transpose(0, 2, 1)
    eye = np.broadcast_to(_EYE, cross.shape)
    return eye + sin[:, None, None] * cross + (1 - cos)[:, None, None] * (cross @ cross)


def centered_offsets(length: int, spacing: float = 1.0) -> NDArray[np.float64]:
    """Symmetric pixel offsets ``(r - (length - 1) / 2) * spacing`` in voxels."""
    return (np.arange(length, dtype=np.float64) - (length - 1) / 2.0) * spacing


def slice_points(
    centers: ArrayLike,
    u: ArrayLike,
    v: ArrayLike,
    row_offsets: ArrayLike,
    col_offsets: ArrayLike,
) -> NDArray[np.float64]:
    """Voxel positions ``(B, h, w, 3)`` of every pixel of ``B`` slices.

    Args:
        centers, u, v: ``(B, 3)`` slice centres and in-plane unit axes, in voxels.
        row_offsets: ``(h,)`` offsets along ``v`` in voxels; ``col_offsets``: ``(w,)`` along ``u``.
    """
    c = np.atleast_2d(np.asarray(centers, dtype=np.float64))
    u = np.atleast_2d(np.asarray(u, dtype=np.float64))
    v = np.atleast_2d(np.asarray(v, dtype=np.float64))
    rows = np.asarray(row_offsets, dtype=np.float64)
    cols = np.asarray(col_offsets, dtype=np.float64)
    return (
        c[:, None, None, :]
        + rows[None, :, None, None] * v[:, None, None, :]
        + cols[None, None, :, None] * u[:, None, None, :]
    )


_THREADS = max(1, min(8, os.cpu_count() or 1))
_PIXELS_PER_CHUNK = 16_384


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="atom-slices")


def _padded(volume: NDArray) -> tuple[NDArray[np.float32], tuple[int, int], tuple[int, int, int]]:
    """Flattened volume with one voxel of zeros below and two above each axis, and its strides.

    Positions clamped to ``[-1, S]`` then never need a bounds check: the border reads 0.
    """
    vol = np.asarray(volume, dtype=np.float32)
    padded = np.pad(vol, ((1, 2),) * 3).reshape(-1)
    return padded, ((vol.shape[1] + 3) * (vol.shape[2] + 3), vol.shape[2] + 3), vol.shape


def _sample_axes(padded_volume: tuple, x: NDArray, y: NDArray, z: NDArray, order: Order) -> NDArray[np.float32]:
    """Core of :func:`sample_points` on separate coordinate arrays along axes 0, 1, 2 (voxels)."""
    if order not in ("nearest", "linear"):
        raise ValueError(f"unknown sampling order {order!r}; expected 'nearest' or 'linear'")
    padded, (s0, s1), shape = padded_volume
    x, y, z = (np.clip(c, -1.0, float(n)) for c, n in zip((x, y, z), shape, strict=True))
    origin = s0 + s1 + 1  # flat index of voxel (0, 0, 0) in the padded volume
    if order == "nearest":
        index = np.rint(x).astype(np.intp) * s0 + np.rint(y).astype(np.intp) * s1 + np.rint(z).astype(np.intp) + origin
        return padded[index]
    bx, by, bz = np.floor(x), np.floor(y), np.floor(z)
    fx, fy, fz = ((c - b).astype(np.float32) for c, b in ((x, bx), (y, by), (z, bz)))
    flat = bx.astype(np.intp) * s0 + by.astype(np.intp) * s1 + bz.astype(np.intp) + origin

    def along_z(offset: int) -> NDArray[np.float32]:
        return padded[flat + offset] * (1 - fz) + padded[flat + (offset + 1)] * fz

    c0 = along_z(0) * (1 - fy) + along_z(s1) * fy
    c1 = along_z(s0) * (1 - fy) + along_z(s0 + s1) * fy
    return c0 * (1 - fx) + c1 * fx


def sample_points(volume: NDArray, points: ArrayLike, order: Order = "linear") -> NDArray[np.float32]:
    """Read a 3D volume at continuous voxel positions, zero outside.

    ``nearest`` rounds half to even and reads 0 for positions outside ``[0, S-1]``.
    ``linear`` interpolates trilinearly over the volume extended with zeros, so a position on a
    voxel centre returns that voxel's value exactly.

    Args:
        volume: ``(S0, S1, S2)`` array.
        points: ``(..., 3)`` voxel coordinates along axes 0, 1, 2.

    Returns:
        ``points.shape[:-1]`` float32 values.
    """
    pts = np.asarray(points, dtype=np.float64)
    return _sample_axes(_padded(volume), pts[..., 0], pts[..., 1], pts[..., 2], order)


def sample_slices(
    volume: NDArray,
    centers: ArrayLike,
    u: ArrayLike,
    v: ArrayLike,
    shape: tuple[int, int],
    spacing: float = 1.0,
    order: Order = "linear",
) -> NDArray[np.float32]:
    """Cut ``B`` slices of ``shape = (h, w)`` pixels from a volume in one vectorised call.

    Args:
        volume: ``(S0, S1, S2)`` array.
        centers, u, v: ``(B, 3)`` (or ``(3,)``) poses in voxel coordinates.
        shape: ``(h, w)``, rows along ``v`` and columns along ``u``.
        spacing: pixel spacing in voxels.
        order: ``"nearest"`` or ``"linear"``.

    Returns:
        ``(B, h, w)`` float32 slices.
    """
    h, w = shape
    c, u, v = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in (centers, u, v))
    rows = centered_offsets(h, spacing)[None, :, None]
    cols = centered_offsets(w, spacing)[None, None, :]
    padded = _padded(volume)

    def chunk(part: slice) -> NDArray[np.float32]:
        # one contiguous (B, h, w) array per axis: cheaper than interleaved (B, h, w, 3) points
        axes = [c[part, k, None, None] + rows * v[part, k, None, None] + cols * u[part, k, None, None] for k in range(3)]
        return _sample_axes(padded, *axes, order)

    # cache-sized chunks of slices; numpy releases the GIL, so threads use every core
    per_chunk = max(1, _PIXELS_PER_CHUNK // (h * w))
    parts = [slice(a, a + per_chunk) for a in range(0, len(c), per_chunk)]
    if len(parts) == 1:
        return chunk(parts[0])
    return np.concatenate(list(_pool().map(chunk, parts)))


def corner_points(points: NDArray) -> NDArray:
    """The four corner pixel positions ``(B, 4, 3)`` of slice point grids ``(B, h, w, 3)``.

    Order: ``(0, 0)``, ``(h-1, 0)``, ``(0, w-1)``, ``(h-1, w-1)``.
    """
    return points[:, [0, -1, 0, -1], [0, 0, -1, -1], :]


def voxel_to_mm(affine: ArrayLike, points: ArrayLike) -> NDArray[np.float64]:
    """Map voxel coordinates ``(..., 3)`` to millimetres with a 4x4 affine."""
    a = np.asarray(affine, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    return p @ a[:3, :3].T + a[:3, 3]


def mm_to_voxel(affine: ArrayLike, points_mm: ArrayLike) -> NDArray[np.float64]:
    """Map millimetre coordinates ``(..., 3)`` to voxel coordinates (inverse of ``voxel_to_mm``)."""
    inverse = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    return voxel_to_mm(inverse, points_mm)


def direction_to_mm(affine: ArrayLike, directions: ArrayLike) -> NDArray[np.float64]:
    """Map voxel-space directions ``(..., 3)`` to unit directions in millimetre space."""
    a = np.asarray(affine, dtype=np.float64)
    return unit(np.asarray(directions, dtype=np.float64) @ a[:3, :3].T)


def random_unit_vectors(rng: np.random.Generator, count: int) -> NDArray[np.float64]:
    """``count`` directions drawn uniformly on the unit sphere (normalised Gaussians)."""
    while True:
        draws = rng.standard_normal((count, 3))
        norms = np.linalg.norm(draws, axis=1)
        if np.all(norms > 1e-9):
            return draws / norms[:, None]


def angle_between_planes_deg(n1: ArrayLike, n2: ArrayLike) -> NDArray[np.float64]:
    """Angle in degrees between planes with normals ``n1`` and ``n2`` (sign-invariant, 0..90)."""
    cos = np.abs(np.sum(unit(n1) * unit(n2), axis=-1))
    return np.degrees(np.arccos(np.clip(cos, 0.0, 1.0)))
