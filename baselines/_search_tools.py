"""Building blocks of the NCC search (:mod:`baselines.search`): candidate orientations, batched
torch sampling, fine-block labels of window centres, and the cached candidate windows of a volume."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from atom_bench.core import geometry
from atom_bench.core.labels import N_HIGH

_GOLDEN = math.pi * (3.0 - math.sqrt(5.0))


# ------------------------------------------------------------------------------------------
# Candidate orientations


def fibonacci_hemisphere(n: int) -> np.ndarray:
    """``n`` near-uniform unit normals with ``z > 0`` (a Fibonacci lattice on the hemisphere)."""
    i = np.arange(n, dtype=np.float64)
    z = 1.0 - (i + 0.5) / n
    r = np.sqrt(1.0 - z * z)
    phi = i * _GOLDEN
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def candidate_frames(n_normals: int = 24, n_rotations: int = 6) -> np.ndarray:
    """Candidate slice frames ``(F, 2, 3)``: rows ``u`` and ``v`` (voxel axes), ``u x v = n``.

    Both normal signs are covered by also using ``(v, u)`` (the mirrored frame, normal ``-n``).
    """
    frames = []
    for view in geometry.VIEWS:
        u, v = geometry.view_frame(view)
        n = np.cross(u, v)
        for quarter in range(4):
            uq = np.cos(quarter * np.pi / 2) * u + np.sin(quarter * np.pi / 2) * v
            uq = np.round(uq)
            vq = np.cross(n, uq)
            frames += [(uq, vq), (vq, uq)]
    if n_normals > 0 and n_rotations > 0:
        normals = np.repeat(fibonacci_hemisphere(n_normals), n_rotations, axis=0)
        angles = np.tile(np.arange(n_rotations) * 2 * np.pi / n_rotations, n_normals)
        us, vs = geometry.frame_from_normal(normals, angles)
        frames += [(u, v) for u, v in zip(us, vs)] + [(v, u) for u, v in zip(us, vs)]
    return np.asarray(frames, dtype=np.float64)


# ------------------------------------------------------------------------------------------
# Torch sampling (batched planes through one volume)


def sample_points_torch(volume: Tensor, points: Tensor) -> Tensor:
    """Trilinear samples of ``volume (S0, S1, S2)`` at voxel positions ``points (..., 3)``,
    zero outside: the same values as ``geometry.sample_points(..., 'linear')``.

    ``grid_sample`` takes ``(x, y, z) = (axis 2, axis 1, axis 0)`` normalised with
    ``align_corners=True`` (``-1`` and ``1`` are the centres of the first and last voxels).
    """
    scale = 2.0 / (torch.tensor(volume.shape[::-1], dtype=volume.dtype) - 1).clamp(min=1)
    grid = points.to(volume.dtype).flip(-1).mul_(scale).sub_(1.0).reshape(1, -1, 1, 1, 3)
    out = F.grid_sample(volume[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.reshape(points.shape[:-1])


# label terms per axis of fine cell f = 3 a + b (a: coarse cell, b: sub-cell), for axes 0, 1, 2:
# low_label = 27 * high + sub with high = 9 a0 + 3 a1 + a2 and sub = 9 b0 + 3 b1 + b2
_LABEL_TERMS = torch.tensor([[w * N_HIGH * (f // 3) + w * (f % 3) for f in range(9)] for w in (9, 3, 1)])


def fine_labels(centers: Tensor, size: int) -> Tensor:
    """Protocol ``low_label`` (0..728) of centres ``(..., 3)`` in voxels of a cube of side ``size``."""
    f = ((centers + 0.5) * (9.0 / size)).floor_().clamp_(0, 8).long().movedim(-1, 0)
    return _LABEL_TERMS[0][f[0]] + _LABEL_TERMS[1][f[1]] + _LABEL_TERMS[2][f[2]]


@dataclass
class SearchResult:
    """Output of one search: block maxima of the NCC and the best pose (full-resolution voxels)."""

    block_ncc: Tensor  # (729,)
    center: np.ndarray  # (3,)
    u: np.ndarray
    v: np.ndarray
    ncc: float

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.u, self.v)


def box_sum(x: Tensor, h: int, w: int) -> Tensor:
    """Sums over every ``h x w`` window (valid positions) of ``x (N, H, W)``, by integral images."""
    c = F.pad(x.double().cumsum(1).cumsum(2), (1, 0, 1, 0))
    return (c[:, h:, w:] - c[:, :-h, w:] - c[:, h:, :-w] + c[:, :-h, :-w]).float()


def frame_lattice(origin: float, steps: tuple[Tensor, Tensor, Tensor], axes: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """``origin + c n + b v + a u`` (summed in this order) for every frame (``axes``: ``n, v, u``,
    each ``(Fc, 3)``) and every ``c, b, a`` of ``steps``: ``(Fc, Lc, Lb, La, 3)``."""
    (c, b, a), (n, v, u) = steps, axes
    x = origin + c[None, :, None] * n[:, None, :]  # (Fc, Lc, 3)
    x = x[:, :, None] + b[None, None, :, None] * v[:, None, None, :]  # (Fc, Lc, Lb, 3)
    return x[:, :, :, None] + (a[None, :, None] * u[:, None, :])[:, None, None]


def ncc_rows(slices: np.ndarray, templates: np.ndarray, template_norms: np.ndarray) -> np.ndarray:
    """NCC of each row of ``slices (N, P)`` with the matching row of the zero-mean
    ``templates (N, P)`` of norms ``template_norms (N,)`` (0 for flat rows)."""
    x = slices - slices.mean(axis=1, keepdims=True)
    x_norm = np.sqrt((x * x).sum(axis=1))
    denom = x_norm * template_norms
    return np.where(denom > 1e-12, np.einsum("np,np->n", x, templates) / np.maximum(denom, 1e-12), 0.0)


def rotate(vectors: np.ndarray, axes: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rodrigues rotation of ``vectors (K, 3)`` about unit ``axes (K, 3)`` by ``angles (K,)``."""
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
    dot = np.sum(vectors * axes, axis=1, keepdims=True)
    return vectors * c + np.cross(axes, vectors) * s + axes * dot * (1 - c)


Start = tuple[float, int, np.ndarray, float]  # (coarse NCC, frame index, centre in full voxels, factor)


def volume_key(volume: Tensor) -> tuple:
    """Content key of a volume: its shape and a BLAKE2b hash of its float32 voxels."""
    data = np.ascontiguousarray(volume.detach().float().cpu().numpy())
    return tuple(data.shape), hashlib.blake2b(data.tobytes(), digest_size=16).hexdigest()


@dataclass
class Chunk:
    """The candidate windows of one chunk of frames (one volume, one slice shape), coarse voxels.

    Windows are numbered flat over ``(frame, plane along n, row, column)``; only those whose
    centre is inside the cube are kept, in that order.
    """

    frame_ids: np.ndarray  # (Fc,) rows of NCCSearch.frames
    planes: Tensor  # (Fc * Lc, Lb, La) the volume resampled in each frame's planes
    dense: bool  # most windows are candidates: correlate whole planes with conv2d
    index: Tensor  # (M,) int32 flat window index, increasing
    std: Tensor  # (M,) window standard deviation (0 for a flat window)
    labels: Tensor  # (M,) int16 fine block of the window centre (coarse cube)
    frame_starts: np.ndarray  # (Fc + 1,) each frame's range in ``index``
    origin: float  # centre voxel of the coarse cube (on the grid)
    c: Tensor  # (Lc,) plane offsets along n
    cb: Tensor  # (Hb,) window-centre offsets along v
    ca: Tensor  # (Wa,) window-centre offsets along u
    u: Tensor  # (Fc, 3) float32
    v: Tensor
    n: Tensor

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.planes, self.index, self.std, self.labels))

    def centers(self, flat: Tensor) -> Tensor:
        """Window centres ``(..., 3)`` (coarse voxels) of flat window indices, computed as when built."""
        f, ci, bi, ai = torch.unravel_index(flat, (len(self.u), len(self.c), len(self.cb), len(self.ca)))
        return self.origin + self.c[ci, None] * self.n[f] + self.cb[bi, None] * self.v[f] + self.ca[ai, None] * self.u[f]

    def numerators(self, weights: Tensor) -> Tensor:
        """Correlations ``(M, K)`` of every candidate window with ``weights (K, hc, wc)``."""
        k, hc, wc = weights.shape
        rows, cols = self.planes.shape[1] - hc + 1, self.planes.shape[2] - wc + 1
        index = self.index.long()
        plane, row, col = torch.unravel_index(index, (len(self.planes), rows, cols))
        if self.dense:
            return F.conv2d(self.planes[:, None], weights[:, None])[plane, :, row, col]
        windows = self.planes.unfold(1, hc, 1).unfold(2, wc, 1)  # (P, rows, cols, hc, wc), a view
        flat_weights = weights.reshape(k, -1).T
        out = torch.empty(len(index), k)
        step = max(1, (1 << 22) // (hc * wc))  # at most 16 MB of gathered pixels at a time
        for s in range(0, len(index), step):
            e = s + step
            out[s:e] = windows[plane[s:e], row[s:e], col[s:e]].reshape(-1, hc * wc) @ flat_weights
        return out


@dataclass
class Family:
    """The candidate windows of one family of frames at its coarse resolution."""

    factor: float  # full voxels per coarse voxel
    shape: tuple[int, int]  # coarse slice shape (hc, wc)
    chunks: list[Chunk]


@dataclass
class VolumeWindows:
    """Everything the coarse stage needs from one volume, for one slice shape (cached)."""

    families: list[Family]

    @property
    def nbytes(self) -> int:
        return sum(chunk.nbytes for family in self.families for chunk in family.chunks)
