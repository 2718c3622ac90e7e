"""Building blocks of the pose search (:mod:`baselines.search`): candidate orientations, batched
torch sampling, fine-block labels of window centres, the cached candidate windows of a volume, and
the row-wise similarities (NCC, correlation ratio) of the refinement."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from atom_bench.core import geometry
from atom_bench.core.labels import N_HIGH

_GOLDEN = math.pi * (3.0 - math.sqrt(5.0))


# ------------------------------------------------------------------------------------------
# The coarse stage's resolution


def coarse_reduction(size: int, shape: tuple[int, int], coarse_side: int, min_pixels: int) -> tuple[int, tuple[int, int]]:
    """Cube side and slice shape ``(rows, columns)`` of a family's coarse stage.

    A cube of side ``size`` (voxels) and slices of ``shape`` (pixels) are reduced by one factor,
    the largest that brings the cube to at most ``coarse_side`` voxels while the slice keeps at
    least ``min_pixels`` pixels a side, and never below 1 (no enlargement). The reduced cube side
    is at least 9 (one voxel per fine block) and each slice side at least 2. At ``size`` 64, 16 x 16
    slices and the defaults (40, 10): a 40^3 cube and 10 x 10 slices.
    """
    h, w = shape
    factor = max(1.0, min(size / coarse_side, min(h, w) / min_pixels))
    if factor == 1.0:
        return size, (h, w)
    return max(9, round(size / factor)), (max(2, round(h / factor)), max(2, round(w / factor)))


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
    """Output of one search: block maxima of the similarity (NCC or correlation ratio; the field
    names say NCC for history) and the best pose (full-resolution voxels)."""

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

    frame_ids: np.ndarray  # (Fc,) rows of PoseSearch.frames
    # (Fc * Lc, Lb, La) the volume resampled in each frame's planes: float32 intensities (NCC) or
    # their uint8 intensity bins (correlation ratio; 4x smaller in the cache)
    planes: Tensor
    dense: bool  # most windows are candidates: correlate whole planes with conv2d
    index: Tensor  # (M,) int32 flat window index, increasing
    std: Tensor  # (M,) window standard deviation (0 for a flat window); empty for the correlation ratio
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

    def numerators(self, weights: Tensor, planes: Tensor | None = None) -> Tensor:
        """Correlations ``(M, K)`` of every candidate window of ``planes`` (float, shaped as
        ``self.planes``; default ``self.planes``) with ``weights (K, hc, wc)``."""
        planes = self.planes if planes is None else planes
        k, hc, wc = weights.shape
        rows, cols = planes.shape[1] - hc + 1, planes.shape[2] - wc + 1
        index = self.index.long()
        if self.dense:
            # conv2d beats torch.fft here by 4-15x (16 x 16 or smaller kernels; BENCHMARKS.md); the
            # flat window index is (plane, row, column) order, so one gather from the channels-last
            # output replaces a three-way index (about 3x faster)
            out = F.conv2d(planes[:, None], weights[:, None])
            return out.permute(0, 2, 3, 1).reshape(-1, k)[index]
        plane, row, col = torch.unravel_index(index, (len(planes), rows, cols))
        windows = planes.unfold(1, hc, 1).unfold(2, wc, 1)  # (P, rows, cols, hc, wc), a view
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
    edges: Tensor | None = None  # the refinement's bin edges (intensity_bin_edges; correlation ratio), else None

    @property
    def nbytes(self) -> int:
        return sum(chunk.nbytes for family in self.families for chunk in family.chunks)


# ------------------------------------------------------------------------------------------
# Similarities of a slice with cuts of the volume, row by row (refinement)

#: Volume values at or below this are background (the cube's zero padding and zero-fill outside it).
BACKGROUND = 1e-3


#: ``"floor"``: voxels above ``BACKGROUND`` but below ``AIR_WIDTH`` are a noisy air when they are at
#: least ``AIR_MASS`` of all voxels above ``BACKGROUND`` (atom-mini's ROBEX T1, DWI and CT head:
#: 44-61 %; volumes whose air is exactly 0: 4-13 %, the dark end of the tissue and partial volume).
AIR_WIDTH, AIR_MASS = 0.05, 0.25


def otsu_level(volume: Tensor, bins: int = 256) -> float:
    """Otsu's threshold (intensity units, volumes in [0, 1]) of the voxels above ``BACKGROUND``:
    the level that best splits them into two classes (most between-class variance), computed on a
    ``bins``-bin histogram; ``BACKGROUND`` when there are none."""
    values = volume.reshape(-1).double()
    values = values[values > BACKGROUND]
    if len(values) == 0:
        return BACKGROUND
    hist = torch.histc(values, bins, 0.0, 1.0)
    centres = (torch.arange(bins, dtype=torch.float64) + 0.5) / bins
    below, mass = hist.cumsum(0), (hist * centres).cumsum(0)
    above = hist.sum() - below
    gap = mass / below.clamp(min=1) - (mass[-1] - mass) / above.clamp(min=1)
    return max(BACKGROUND, (int((below * above * gap * gap).argmax()) + 1) / bins)


def noise_floor_level(volume: Tensor) -> float:
    """The top of a noisy air (intensity units, volumes in [0, 1]): the 99th percentile of the
    voxels in ``(BACKGROUND, AIR_WIDTH)`` when those are at least ``AIR_MASS`` of the voxels above
    ``BACKGROUND``, else ``BACKGROUND``. Unlike :func:`otsu_level` it leaves a volume whose air is
    exactly 0 as ``"zero"`` has it, and it never reaches the tissue of atom-mini's volumes (their
    2nd tissue percentile is 0.22 or more)."""
    values = volume.reshape(-1)
    values = values[values > BACKGROUND]
    air = values[values < AIR_WIDTH].double()
    if len(values) == 0 or len(air) < AIR_MASS * len(values):
        return BACKGROUND
    step = max(1, len(air) >> 24)  # torch.quantile's input limit, as below
    return max(BACKGROUND, float(torch.quantile(air[::step], 0.99)))


#: The level of bin 0 for each ``background`` of :func:`intensity_bin_edges`.
BACKGROUND_LEVELS: dict[str, Callable[[Tensor], float]] = {
    "zero": lambda volume: BACKGROUND,
    "otsu": otsu_level,
    "floor": noise_floor_level,
}


def intensity_bin_edges(volume: Tensor, n_bins: int, background: str = "floor") -> Tensor:
    """Bin edges ``(n_bins - 1,)`` (volume intensity units) of the correlation ratio's bins:
    the background level, then the inner edges of the tissue bins.

    Bin 0 is the background: values at or below the level, which is ``BACKGROUND`` for
    ``background="zero"`` (the zero padding and empty voxels only) or :func:`otsu_level` for
    ``"otsu"`` (also the noise floor of a scan whose air is not exactly 0: in atom-mini's ROBEX T1
    and DWI four of the seven tissue bins of ``"zero"`` lie below 0.03, in the air; but also the
    dark tissue of a volume whose air is 0) or :func:`noise_floor_level` for ``"floor"`` (the
    noisy air only). Bins
    ``1 .. n_bins - 1`` split the voxels above the level at equal-count quantiles of the volume's
    own intensities, so every tissue bin holds about the same number of voxels whatever the
    contrast.
    """
    if n_bins < 2:
        raise ValueError(f"n_bins must be at least 2, got {n_bins}")
    if background not in BACKGROUND_LEVELS:
        raise ValueError(f"background must be one of {', '.join(BACKGROUND_LEVELS)}, got {background!r}")
    level = BACKGROUND_LEVELS[background](volume)
    tissue = volume.reshape(-1)
    tissue = tissue[tissue > level].double()
    if len(tissue) == 0 or n_bins == 2:
        return torch.tensor([level], dtype=torch.float32)
    probs = torch.arange(1, n_bins - 1, dtype=torch.float64) / (n_bins - 1)
    # torch.quantile refuses more than 2^24 values; a strided subsample keeps the edges to 1e-7 quantile
    step = max(1, len(tissue) >> 24)
    return torch.cat([torch.tensor([level], dtype=torch.float64), torch.quantile(tissue[::step], probs)]).float()


def bin_index(values: Tensor, edges: Tensor) -> Tensor:
    """Bin (uint8) of each volume intensity: 0 at or below the background level ``edges[0]``,
    else ``1 + #(inner edges <= value)``."""
    tissue = torch.bucketize(values, edges[1:], right=True).add_(1)
    return torch.where(values > edges[0], tissue, torch.zeros((), dtype=tissue.dtype)).to(torch.uint8)


def correlation_ratio_rows(bins: Tensor, templates: Tensor, template_sq: Tensor, n_bins: int) -> Tensor:
    """Correlation ratio ``eta^2(template | bin)`` of each row (float64, ``(N,)``).

    ``bins (N, P)`` are the bins of the volume's cut (:func:`bin_index`), ``templates (N, P)`` the
    zero-mean slices (float64) and ``template_sq (N,)`` their sums of squares. With ``S_k`` the
    sum of the template over the pixels of bin ``k`` and ``n_k`` their count,
    ``eta^2 = sum_k S_k^2 / n_k / sum(y^2)``: 1 when the slice is any function of the bin, 0 for a
    flat slice (``sum(y^2) = 0``) or a cut inside one bin.
    """
    n = bins.shape[0]
    flat = (torch.arange(n)[:, None] * n_bins + bins.long()).reshape(-1)
    sums = torch.zeros(n * n_bins, dtype=torch.float64).index_add_(0, flat, templates.reshape(-1)).reshape(n, n_bins)
    counts = torch.bincount(flat, minlength=n * n_bins).reshape(n, n_bins).double()
    between = (sums * sums / counts.clamp(min=1)).sum(dim=1)
    return torch.where(template_sq > 1e-12, between / template_sq.clamp(min=1e-12), torch.zeros((), dtype=torch.float64))


def ncc_rows_torch(cuts: Tensor, templates: Tensor, template_norms: Tensor) -> Tensor:
    """:func:`ncc_rows` in torch: NCC of each row of ``cuts (N, P)`` with the zero-mean
    ``templates (N, P)`` of norms ``template_norms (N,)``, float64, 0 for a flat row."""
    x = cuts - cuts.mean(dim=1, keepdim=True)
    denom = x.norm(dim=1) * template_norms
    return torch.where(denom > 1e-12, (x * templates).sum(dim=1) / denom.clamp(min=1e-12), torch.zeros((), dtype=torch.float64))


def build_chunk(volume: Tensor, chunk: Tensor, frame_ids: np.ndarray, shape: tuple[int, int], spacing: float, edges: Tensor | None) -> Chunk:
    """The candidate windows of ``volume (sc, sc, sc)`` (coarse voxels) in the frames ``chunk
    (Fc, 2, 3)`` (rows ``u, v``; ``frame_ids`` their rows of ``PoseSearch.frames``) for slices of
    ``shape = (hc, wc)`` coarse pixels spaced ``spacing`` coarse voxels: one plane per voxel
    along each normal, every window centred inside the cube, with its standard deviation (NCC)
    or the planes' intensity bins (``edges`` given: correlation ratio)."""
    sc = volume.shape[0]
    hc, wc = shape
    n_pix = hc * wc
    origin = float(np.floor((sc - 1) / 2))
    u, v = chunk[:, 0], chunk[:, 1]
    n = torch.linalg.cross(u, v)
    # half extents (voxels) of the cube's projection on u, v, n, plus half a slice in-plane
    half = 0.5 * sc + 0.5
    eu = float((half * u.abs().sum(1)).max()) + 0.5 * (wc - 1) * spacing
    ev = float((half * v.abs().sum(1)).max()) + 0.5 * (hc - 1) * spacing
    en = float((half * n.abs().sum(1)).max())
    ra, rb, rc = math.ceil(eu / spacing), math.ceil(ev / spacing), math.ceil(en)
    a = torch.arange(-ra, ra + 1, dtype=torch.float32) * spacing
    b = torch.arange(-rb, rb + 1, dtype=torch.float32) * spacing
    c = torch.arange(-rc, rc + 1, dtype=torch.float32)
    # sampling grid built directly in grid_sample's normalised (x, y, z) = (axis 2, 1, 0)
    scale = 2.0 / max(sc - 1, 1)
    un, vn, nn_ = (scale * x.flip(-1) for x in (u, v, n))
    grid = frame_lattice(origin * scale - 1.0, (c, b, a), (nn_, vn, un))  # (Fc, Lc, Lb, La, 3)
    planes = F.grid_sample(
        volume[None, None], grid.reshape(1, -1, len(b), len(a), 3), mode="bilinear", padding_mode="zeros", align_corners=True
    ).reshape(-1, len(b), len(a))
    # centres of the windows; the candidates are those inside the cube
    ca = a[: len(a) - wc + 1] + 0.5 * (wc - 1) * spacing
    cb = b[: len(b) - hc + 1] + 0.5 * (hc - 1) * spacing
    centers = frame_lattice(origin, (c, cb, ca), (n, v, u))  # (Fc, Lc, Hb, Wa, 3)
    inside = ((centers >= -0.5) & (centers < sc - 0.5)).all(-1)
    index = torch.nonzero(inside.reshape(-1)).reshape(-1)
    if edges is None:
        total = box_sum(planes, hc, wc).reshape(-1)[index]
        total_sq = box_sum(planes * planes, hc, wc).reshape(-1)[index]
        std = (total_sq - total * total / n_pix).clamp(min=0).sqrt()
    else:
        planes, std = bin_index(planes, edges), torch.zeros(0)
    counts = inside.reshape(len(chunk), -1).sum(1).numpy()
    return Chunk(
        frame_ids=frame_ids,
        planes=planes,
        dense=2 * len(index) > inside.numel(),
        index=index.to(torch.int32),
        std=std,
        labels=fine_labels(centers.reshape(-1, 3)[index], sc).to(torch.int16),
        frame_starts=np.concatenate([[0], np.cumsum(counts)]),
        origin=origin,
        c=c,
        cb=cb,
        ca=ca,
        u=u,
        v=v,
        n=n,
    )


def chunk_ncc(chunk: Chunk, weights: Tensor, t_norm: Tensor) -> Tensor:
    """NCC ``(M, K)`` of every candidate window of ``chunk`` with the slices whose zero-mean,
    unit-norm pixels are ``weights (K, hc, wc)`` (norms before scaling: ``t_norm (K,)``)."""
    inv_std = torch.where(chunk.std > 0, 1.0 / chunk.std, torch.zeros(()))
    ncc = chunk.numerators(weights).mul_(inv_std[:, None])  # (M, K)
    # the NCC is 0 where std * |t| <= 1e-6: beyond the flat windows (1 / std taken as 0),
    # only nearly flat ones, a subset of those below the threshold for the smallest |t|
    nearly_flat = ((chunk.std > 0) & (chunk.std * t_norm.min() <= 1e-6)).nonzero().reshape(-1)
    if len(nearly_flat):
        below = chunk.std[nearly_flat, None] * t_norm[None, :] <= 1e-6
        ncc[nearly_flat] = ncc[nearly_flat].masked_fill_(below, 0.0)
    return ncc


def chunk_cr(chunk: Chunk, t: Tensor, t_sq: Tensor, n_bins: int) -> Tensor:
    """Correlation ratio ``(M, K)`` of every candidate window of ``chunk`` (bins in
    ``chunk.planes``, ``n_bins`` bins) with the zero-mean slices ``t (K, hc, wc)`` of sums of squares ``t_sq (K,)``."""
    between = _dense_between(chunk, t, n_bins) if chunk.dense else _sparse_between(chunk, t, n_bins)
    return between.mul_(torch.where(t_sq > 0, 1.0 / t_sq.clamp(min=1e-30), torch.zeros(()))[None, :])


def _dense_between(chunk: Chunk, t: Tensor, n_bins: int) -> Tensor:
    """``sum_k S_k^2 / n_k`` ``(M, K)`` for a dense chunk: one correlation of whole planes per bin."""
    _, hc, wc = t.shape
    index = chunk.index.long()
    between = torch.zeros(len(index), len(t))
    rest_sum = torch.zeros(len(index), len(t))  # bin 0's S_0 = -(sum of the other S_k)
    rest_count = torch.full((len(index),), float(hc * wc))
    for b in range(1, n_bins):
        # one indicator plane at a time (float32, the chunk's size): never K copies in the cache
        indicator = (chunk.planes == b).float()
        count = box_sum(indicator, hc, wc).reshape(-1)[index]
        if not bool((count > 0).any()):
            continue
        sums = chunk.numerators(t, indicator)
        between.addcmul_(sums, sums / count.clamp(min=1)[:, None])
        rest_sum.sub_(sums)
        rest_count.sub_(count)
    return between.addcmul_(rest_sum, rest_sum * ((rest_count > 0) / rest_count.clamp(min=1))[:, None])


def _sparse_between(chunk: Chunk, t: Tensor, n_bins: int) -> Tensor:
    """``sum_k S_k^2 / n_k`` ``(M, K)`` for a sparse chunk: each candidate window's bins are gathered
    once and the slices' pixels are summed per (window, bin) with one scatter-add (the per-bin
    correlations of the dense path would gather every window ``n_bins - 1`` times)."""
    k, hc, wc = t.shape
    index = chunk.index.long()
    rows, cols = chunk.planes.shape[1] - hc + 1, chunk.planes.shape[2] - wc + 1
    plane, row, col = torch.unravel_index(index, (len(chunk.planes), rows, cols))
    windows = chunk.planes.unfold(1, hc, 1).unfold(2, wc, 1)  # (P, rows, cols, hc, wc) uint8, a view
    flat_t = t.reshape(k, -1).T  # (hc * wc, K)
    between = torch.empty(len(index), k)
    step = max(1, (1 << 22) // (hc * wc * k))  # at most 16 MB of gathered slice pixels at a time
    for s in range(0, len(index), step):
        e = min(len(index), s + step)
        m = e - s
        bins = windows[plane[s:e], row[s:e], col[s:e]].reshape(m, hc * wc).long()
        slot = (torch.arange(m)[:, None] * n_bins + bins).reshape(-1)  # (window, bin) of every pixel
        sums = torch.zeros(m * n_bins, k).index_add_(0, slot, flat_t.repeat(m, 1)).reshape(m, n_bins, k)
        counts = torch.bincount(slot, minlength=m * n_bins).reshape(m, n_bins).float()
        between[s:e] = (sums * sums / counts.clamp(min=1)[:, :, None]).sum(dim=1)
    return between
