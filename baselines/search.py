"""Training-free classical baselines: a dense pose search scored by normalised cross-correlation
(NCC, ``search``) or by the correlation ratio (``search-cr``).

One engine, :class:`PoseSearch`, with ``similarity="ncc"`` or ``"cr"``. NCC is invariant to
affine intensity remaps of the slice only. The correlation ratio of the slice ``y`` given the
binned volume intensity, ``eta^2 = 1 - E[Var(y | bin)] / Var(y) = sum_k S_k^2 / n_k / sum(y^2)``
(``y`` zero-mean, ``S_k`` the sum of ``y`` over the window pixels whose volume value falls in bin
``k``, ``n_k`` their count), is 1 at the true pose whenever the slice is *any* function of the
volume's bin (monotone or not: the histology track's contrast remaps). Bins
(:func:`~baselines._search_tools.intensity_bin_edges`): bin 0 is the background (values
``<= 1e-3``: the cube's zero padding and everything outside the cube; ``background="otsu"``: at
or below the volume's Otsu level, which also takes in a noisy air and the darkest tissue;
``"floor"``: at or below the top of a noisy air, found from the share of near-zero voxels), bins ``1 .. n_bins - 1``
(default 8 bins in all) split the volume's voxels above it at equal-count quantiles, so each
tissue bin holds about the same number of voxels whatever the modality; the same edges bin the
reduced cube of the coarse stage and the full-resolution cuts of the refinement. A flat slice
scores 0 under both similarities.

For each (volume, slice) pair, coarse to fine (``method-anchors.md`` sections 3 and 6):

1. **Coarse, dense in position.** Two families of orientations: the 3 axis-aligned views in all
   8 right-handed frames of their plane (4 in-plane quarter turns, either normal sign), and
   ``n_normals`` Fibonacci-hemisphere normals, each with ``n_rotations`` in-plane rotations and
   both normal signs (NCC: 32 x 12, the correlation ratio: 16 x 6; ``ORIENTATION_GRIDS``). For each family the volume (and the slice, by the same factor) is reduced
   so that the cube side is at most ``axis_side`` (axis views: 64 for NCC, so a 64^3 cube is
   not reduced and every integer axis-aligned pose is a candidate window whose NCC is exactly
   that of the slice: at 48 the reduced windows blur the two sides of a near-symmetric head and
   the mirror pose won the coarse stage for about 1 in 10 `easy` slices; 48 for the correlation
   ratio, whose ``n_bins - 1`` correlations per window cost more) or
   ``coarse_side`` (oblique: 40) voxels, while the slice keeps at least ``min_coarse_pixels``
   (10) pixels per side: a 64^3 cube with 16 x 16 slices is reduced by 1.6 to 40^3 with 10 x 10
   slices. (The first defaults, 20 voxels and 6 pixels, reduced it by 2.7 to 24^3 and 6 x 6: on
   clean `hard` slices the true pose's window then ranked too low to be refined, and every
   slice the NCC search missed ended at a wrong pose of NCC 0.93 or so, below the true pose's
   1.0; see ``docs/PROTOCOL.md`` section 9.) For every orientation, the volume is resampled into the slice frame (one
   batched ``grid_sample`` per chunk of ``frame_chunk`` frames: a stack of planes spanned by the
   in-plane axes ``u, v`` at the slice's pixel spacing, one plane per voxel along the normal).
   Every slice-sized window of every plane whose centre is inside the cube is a candidate pose;
   its standard deviation comes from integral images. All of this depends on the volume and the
   slice shape only, so it is computed once per volume (see *Batching and cache*); the NCC of a
   slice against every candidate window is then one correlation: a ``conv2d`` of the planes
   with the zero-mean slices stacked as output channels where most windows are candidates (axis
   views), a matrix product of the candidate windows' pixels with the same stacked slices where
   few are (oblique chunks: about 20% of the windows of their planes, the rest centred outside
   the cube). For the correlation ratio the cache keeps the planes' uint8 bin indices instead
   of their intensities; per chunk, each bin's indicator plane is built on the fly and
   correlated the same way (``S_k``) and box-summed (``n_k``); the last bin's sums follow from
   the others (``sum_k S_k = sum(y) = 0``, ``sum_k n_k`` = the window's pixel count), so
   ``n_bins - 1`` correlations per chunk.
2. **Refine.** The best ``top_k`` (16) orientations of each family (their best window each) are refined at full
   resolution: first a dense 9 x 9 x 9 grid of centres around the start (step half a coarse
   voxel), then a pattern search over the centre (steps along the three axes) and the
   orientation (small rotations about ``u``, ``v`` and ``n``), halving the steps when no move
   improves the similarity (a start whose steps are all below 0.05 voxel and 0.05 degree is done and
   no longer scored). The correlation ratio is computed directly on each cut: its sampled
   intensities are binned and the slice is summed per (cut, bin) with one scatter. Pixel positions are those of the reference ``atom_bench.core.geometry.slice_points``
   and are read trilinearly with ``grid_sample`` (the same values as the reference
   ``geometry.sample_points(..., "linear")`` to float precision, about 20x faster), so an exact
   pose reproduces the slice.
3. **Scores.** For every fine block, the best NCC over all candidate poses whose centre lies in
   it (coarse candidates and refined poses); coarse blocks take the best of their fine blocks;
   scores are ``softmax(best / temperature)`` (0.02 for NCC, 0.01 for the correlation ratio,
   whose values at wrong poses sit closer to the true one's). The pose is the best refined pose.

**Batching and cache.** ``predict`` groups its pairs by volume content (a BLAKE2b hash of the
voxels), so the coarse stage resamples each distinct volume once per batch and scores all of its
slices together, and the refinement of those slices runs as one pattern search over all their
starts (each start scored against its own slice). The resampled planes and window statistics of
the last volumes are kept in a least-recently-used cache keyed by (volume hash, slice shape), so
consecutive batches on the same volumes (the evaluator's batches in split order, the
volume-swap diagnostic) do not resample again. The cache holds at most ``cache_volumes`` entries
and ``cache_bytes`` bytes (defaults 8 and 4 GiB; one 64^3 volume with 16 x 16 slices takes about
1.6 GiB with NCC's 792 orientations, mostly the oblique family's float planes, and 190 MiB with
the correlation ratio's 216, whose planes are uint8 bins: 2 or 8 such volumes; building an NCC
entry takes about 30 s on one core, as long as searching 10 slices, so the cache matters). An all-zero volume (the
diagnostic's blank) is not searched: every NCC against it is exactly 0, so the scores are
uniform and the pose is the cube centre with the axial normal.

The results are those of a plain per-pair search (same candidates, same starts, same refined
poses) up to float rounding. The slice's pixel spacing (in cube voxels) must be known:
``pixel_spacing`` (default 1).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atom_bench.core import geometry
from atom_bench.core.labels import N_HIGH, N_LOW
from atom_bench.errors import ModelError
from atom_bench.models.protocol import ModelMeta, Prediction
from atom_bench.models.registry import Capabilities, register_model
from baselines._blocks import check_inputs
from baselines._search_refine import refine_starts
from baselines._search_tools import (  # noqa: F401  (fibonacci_hemisphere, candidate_frames, sample_points_torch: public here too)
    BACKGROUND_LEVELS,
    Family,
    SearchResult,
    Start,
    VolumeWindows,
    build_chunk,
    candidate_frames,
    chunk_cr,
    chunk_ncc,
    coarse_reduction,
    fibonacci_hemisphere,
    fine_labels,
    intensity_bin_edges,
    sample_points_torch,
    volume_key,
)

SLICE_BATCH = 32  # slices of one volume searched together
SIMILARITIES = ("ncc", "cr")
TEMPERATURES = {"ncc": 0.02, "cr": 0.01}
AXIS_SIDE = 64  # default cube side of the axis views' coarse stage: S = 64 cubes unreduced, so integer poses exact
# the correlation ratio costs n_bins - 1 correlations per window: its axis views stay at 48 (2x
# cheaper); the poses that need them exact (the easy track) are NCC's
CR_AXIS_SIDE = 48
# the oblique family's coarse stage: 16 x 16 slices of a 64^3 cube are searched at 10 x 10 in a
# 40^3 cube; at 6 x 6 in 24^3 (the first defaults) the true pose's window ranked too low to be
# refined (hard validation, NCC: 55.9 -> 76.2 %; PROTOCOL section 9)
COARSE_SIDE = 40
MIN_COARSE_PIXELS = 10
TOP_K = 16  # orientations refined per family (was 8: +3 points on the same slices, 25 % slower)
# (normals, in-plane rotations) of the oblique family. NCC: 32 x 12 (30 degrees in-plane, about 25
# between normals) found 85.9 % of 64 hard validation slices against 73.4 % with 16 x 6, whose
# misses were search failures (best NCC 0.94 < 1; PROTOCOL section 9). The correlation ratio
# keeps 16 x 6: its evaluation costs 3 times NCC's per slice, and on histology its misses are
# failures of the similarity, not of the search.
ORIENTATION_GRIDS = {"ncc": (32, 12), "cr": (16, 6)}


class PoseSearch(nn.Module):
    """The pose search behind the common ``predict`` interface (no parameters).

    ``n_normals`` x ``n_rotations``: the oblique family's orientation grid (default: the
    similarity's, ``ORIENTATION_GRIDS``). ``similarity``: ``"ncc"`` or ``"cr"`` (correlation ratio with ``n_bins`` intensity bins, see
    the module docstring; ``coarse_bins``, default ``n_bins``, in the coarse stage, whose reduced
    slices have fewer pixels to fill the bins; ``background``: ``"zero"``, ``"otsu"`` or ``"floor"``,
    the level of bin 0, :func:`~baselines._search_tools.intensity_bin_edges`). Sizes are in voxels
    (``coarse_side``, ``axis_side``: cube sides; ``pixel_spacing``: of the slices) or pixels (``min_coarse_pixels``). ``temperature`` defaults
    to the similarity's (``TEMPERATURES``). ``cache_volumes`` and ``cache_bytes`` bound the cache
    of resampled volumes (see the module docstring).
    """

    def __init__(
        self,
        pixel_spacing: float = 1.0,
        n_normals: int | None = None,
        n_rotations: int | None = None,
        coarse_side: int = COARSE_SIDE,
        axis_side: int = AXIS_SIDE,
        min_coarse_pixels: int = MIN_COARSE_PIXELS,
        top_k: int = TOP_K,
        temperature: float | None = None,
        max_iterations: int = 60,
        frame_chunk: int = 8,
        cache_volumes: int = 8,
        cache_bytes: int = 4 << 30,
        similarity: str = "ncc",
        n_bins: int = 8,
        coarse_bins: int | None = None,
        background: str = "floor",
    ) -> None:
        super().__init__()
        if similarity not in SIMILARITIES:
            raise ModelError(f"unknown similarity {similarity!r}: use one of {', '.join(SIMILARITIES)}", parameters=("similarity",))
        for name, value in (("n_bins", n_bins), ("coarse_bins", n_bins if coarse_bins is None else coarse_bins)):
            if not 2 <= int(value) <= 255:
                raise ModelError(f"{name} must be between 2 and 255, got {value}", parameters=(name,))
        self.similarity, self.n_bins = similarity, int(n_bins)
        self.coarse_bins = int(n_bins if coarse_bins is None else coarse_bins)
        if background not in BACKGROUND_LEVELS:
            raise ModelError(f"background must be one of {', '.join(BACKGROUND_LEVELS)}, got {background!r}", parameters=("background",))
        self.background = background
        self.pixel_spacing = float(pixel_spacing)
        grid_normals, grid_rotations = ORIENTATION_GRIDS[similarity]
        n_normals = grid_normals if n_normals is None else int(n_normals)
        n_rotations = grid_rotations if n_rotations is None else int(n_rotations)
        self.n_normals, self.n_rotations = n_normals, n_rotations
        self.frames = candidate_frames(n_normals, n_rotations)
        # batch frames of similar bounding boxes together (cheaper coarse resampling)
        box = np.abs(self.frames).sum(axis=2).prod(axis=1) * np.abs(np.cross(self.frames[:, 0], self.frames[:, 1])).sum(axis=1)
        n_axis = 24  # candidate_frames puts the axis-view frames first
        self.families = [(np.arange(n_axis), axis_side)]
        if len(self.frames) > n_axis:
            oblique = np.arange(n_axis, len(self.frames))
            self.families.append((oblique[np.argsort(box[oblique], kind="stable")], coarse_side))
        self.coarse_side, self.axis_side, self.min_coarse_pixels = coarse_side, axis_side, min_coarse_pixels
        self.top_k = top_k
        self.temperature = TEMPERATURES[similarity] if temperature is None else float(temperature)
        self.max_iterations, self.frame_chunk = max_iterations, frame_chunk
        # angular spacing of the normal grid (hemisphere area 2 pi / n), for the first refine step
        self.angle_step = min(math.sqrt(2 * math.pi / max(n_normals, 1)) / 2, math.radians(20))
        self.cache_volumes, self.cache_bytes = cache_volumes, cache_bytes
        self._cache: OrderedDict[tuple, VolumeWindows] = OrderedDict()

    # -- coarse stage: what depends on the volume only (cached) ------------------------------
    def _windows(self, volume: Tensor, shape: tuple[int, int], key: tuple) -> VolumeWindows:
        """The candidate windows of ``volume (S, S, S)`` for slices of ``shape``, from the cache if there."""
        cache_key = (key, tuple(shape))
        if cache_key in self._cache:
            self._cache.move_to_end(cache_key)
            return self._cache[cache_key]
        edges = coarse_edges = None
        if self.similarity == "cr":
            edges = intensity_bin_edges(volume, self.n_bins, self.background)
            coarse_edges = edges if self.coarse_bins == self.n_bins else intensity_bin_edges(volume, self.coarse_bins, self.background)
        windows = VolumeWindows([self._family_windows(volume, shape, ids, side, coarse_edges) for ids, side in self.families], edges)
        self._cache[cache_key] = windows
        while self._cache and (len(self._cache) > self.cache_volumes or sum(w.nbytes for w in self._cache.values()) > self.cache_bytes):
            self._cache.popitem(last=False)
        return windows

    def _family_windows(self, volume: Tensor, shape: tuple[int, int], frame_ids: np.ndarray, coarse_side: int, edges: Tensor | None = None) -> Family:
        """Resample the volume (reduced to cube side <= ``coarse_side``) in the planes of every
        frame of a family and keep the windows centred inside the cube, with their statistics
        (NCC) or their intensity bins (``edges`` given: correlation ratio)."""
        size = volume.shape[0]
        h, w = shape
        side, (hc, wc) = coarse_reduction(size, shape, coarse_side, self.min_coarse_pixels)
        if side < size:
            volume = F.adaptive_avg_pool3d(volume[None, None], side)[0, 0]
        factor = size / side
        spacing = self.pixel_spacing * (h / hc) / factor  # slice pixel spacing in coarse voxels
        chunks = []
        frames = torch.as_tensor(self.frames[frame_ids], dtype=torch.float32)
        for start in range(0, len(frames), self.frame_chunk):
            chunk_ids = np.asarray(frame_ids[start : start + self.frame_chunk])
            chunks.append(build_chunk(volume, frames[start : start + self.frame_chunk], chunk_ids, (hc, wc), spacing, edges))
        return Family(factor, (hc, wc), chunks)

    # -- coarse stage: the slices -----------------------------------------------------------
    def _coarse(self, family: Family, images: Tensor) -> tuple[Tensor, list[list[Start]]]:
        """Dense similarity of ``images (K, h, w)`` against one family's candidate windows: the
        block maxima ``(K, 729)`` and, per slice, the ``top_k`` best frames (best window each)."""
        hc, wc = family.shape
        k = len(images)
        if images.shape[1:] != (hc, wc):
            images = F.adaptive_avg_pool2d(images[:, None], (hc, wc))[:, 0]
        t = torch.stack([image - image.mean() for image in images])
        t_norm = torch.stack([x.norm() for x in t])
        weights = t / torch.where(t_norm > 0, t_norm, 1.0)[:, None, None]  # NCC = (window . weights) / std
        t_sq = (t * t).sum(dim=(1, 2))
        block = torch.full((N_LOW, k), -1.0)
        values, frames, centers = [], [], []  # per frame with candidates: best value and window, per slice
        for chunk in family.chunks:
            if len(chunk.index) == 0:
                continue
            if self.similarity == "ncc":
                sim = chunk_ncc(chunk, weights, t_norm)
            else:
                sim = chunk_cr(chunk, t, t_sq, self.coarse_bins)
            block.scatter_reduce_(0, chunk.labels.long()[:, None].expand(-1, k), sim, reduce="amax")
            for f in range(len(chunk.frame_ids)):
                s, e = chunk.frame_starts[f], chunk.frame_starts[f + 1]
                if s == e:
                    continue
                best, where = sim[s:e].max(dim=0)
                values.append(best)
                frames.append(int(chunk.frame_ids[f]))
                centers.append(chunk.centers(chunk.index[s + where].long()))
        starts: list[list[Start]] = [[] for _ in range(k)]
        if values:
            all_values = torch.stack(values).double().numpy()  # (n_frames, K)
            all_centers = (torch.stack(centers).double().numpy() + 0.5) * family.factor - 0.5  # (n_frames, K, 3)
            for i in range(k):
                order = np.argsort(-all_values[:, i], kind="stable")[: self.top_k]
                starts[i] = [(float(all_values[j, i]), frames[j], all_centers[j, i], family.factor) for j in order]
        return block.T.contiguous(), starts

    # -- refinement --------------------------------------------------------------------------
    def _refine(
        self, volume: Tensor, images: Tensor, starts: list[Start], owner: np.ndarray, edges: Tensor | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:func:`~baselines._search_refine.refine_starts` with this search's settings."""
        return refine_starts(volume, images, starts, owner, self.frames, self.pixel_spacing, self.angle_step,
                             self.max_iterations, edges, self.n_bins)  # fmt: skip

    # -- search -----------------------------------------------------------------------------
    def _search_group(self, volume: Tensor, images: Tensor, key: tuple | None = None) -> list[SearchResult]:
        """Search one ``volume (S, S, S)`` for every slice of ``images (K, h, w)``.

        ``key`` identifies the volume's content for the cache (``volume_key``; computed if None).
        """
        volume = volume.detach().float().cpu().contiguous()
        images = images.detach().float().cpu()
        size = volume.shape[0]
        if not bool(volume.any()):
            # All zero (the diagnostic's blank volume): every resampled window and every slice cut is
            # flat, so every NCC is exactly 0 and the search would only break ties among zeros. The
            # exact answer: all blocks 0 (uniform scores), pose the cube centre with the axial normal.
            # (A constant non-zero volume is searched: its zero padding makes windows at the border
            # non-flat.)
            u, v = geometry.view_frame("axial")
            centre = np.full(3, (size - 1) / 2)
            return [SearchResult(torch.zeros(N_LOW), centre.copy(), u.copy(), v.copy(), 0.0) for _ in range(len(images))]
        windows = self._windows(volume, tuple(images.shape[1:]), volume_key(volume) if key is None else key)
        # at most SLICE_BATCH slices at a time bounds the temporary memory (the coarse correlations
        # of a 64^3 volume take about 8 MB per slice)
        return [r for s in range(0, len(images), SLICE_BATCH) for r in self._search_slices(volume, windows, images[s : s + SLICE_BATCH])]

    def _search_slices(self, volume: Tensor, windows: VolumeWindows, images: Tensor) -> list[SearchResult]:
        """Coarse stage and refinement of ``images (K, h, w)`` in one volume, its windows given."""
        size = volume.shape[0]
        block = torch.full((len(images), N_LOW), -1.0)
        starts: list[list[Start]] = [[] for _ in range(len(images))]
        for family in windows.families:
            family_blocks, family_starts = self._coarse(family, images)
            block = torch.maximum(block, family_blocks)
            starts = [a + b for a, b in zip(starts, family_starts)]
        owner = np.repeat(np.arange(len(images)), [len(s) for s in starts])
        if len(owner):
            refined = self._refine(volume, images, [s for image_starts in starts for s in image_starts], owner, windows.edges)
        results = []
        for i, block_ncc in enumerate(block):
            if not starts[i]:  # no candidate (cannot happen with a non-empty cube)
                centre = np.full(3, (size - 1) / 2)
                results.append(SearchResult(block_ncc, centre, np.eye(3)[0], np.eye(3)[1], -1.0))
                continue
            centers, us, vs, values = (x[owner == i] for x in refined)
            inside = np.all((centers >= -0.5) & (centers < size - 0.5), axis=1)
            values = np.where(inside, values, -2.0)
            labels = fine_labels(torch.as_tensor(centers), size)
            for label, value in zip(labels.tolist(), values.tolist()):
                if value > -2:
                    block_ncc[label] = max(float(block_ncc[label]), value)
            best = int(np.argmax(values))
            results.append(SearchResult(block_ncc, centers[best], us[best], vs[best], float(values[best])))
        return results

    def search(self, volume: Tensor, image: Tensor) -> SearchResult:
        """Search one ``volume (S, S, S)`` for one ``image (h, w)``."""
        return self._search_group(volume, image[None])[0]

    def predict(self, volumes: Tensor, slices: Tensor) -> Prediction:
        check_inputs(volumes, slices)
        volumes = volumes[:, 0].detach().float().cpu()
        images = slices[:, 0].detach().float().cpu()
        groups: dict[tuple, list[int]] = {}  # pairs sharing a volume (by content) are searched together
        for i in range(len(volumes)):
            groups.setdefault(volume_key(volumes[i]), []).append(i)
        results: list[SearchResult] = [None] * len(volumes)  # type: ignore[list-item]
        for key, members in groups.items():
            for i, result in zip(members, self._search_group(volumes[members[0]], images[members], key)):
                results[i] = result
        block = torch.stack([r.block_ncc for r in results])  # (B, 729)
        high_ncc = block.reshape(-1, N_HIGH, N_HIGH).amax(dim=2)
        return Prediction(
            high_scores=torch.softmax(high_ncc / self.temperature, dim=1),
            low_scores=torch.softmax(block / self.temperature, dim=1),
            center_vox=torch.as_tensor(np.stack([r.center for r in results]), dtype=torch.float32),
            normal=torch.as_tensor(np.stack([r.normal for r in results]), dtype=torch.float32),
        )


BACKGROUND_WORDS = {"zero": "1e-3", "otsu": "the Otsu level", "floor": "the top of a noisy air"}


def _factory(similarity: str, name: str, **kwargs) -> tuple[PoseSearch, ModelMeta]:
    model = PoseSearch(similarity=similarity, **kwargs)
    if similarity == "ncc":
        measure = "NCC search"
    else:
        measure = (
            f"correlation-ratio search (eta^2 of the slice given {model.n_bins} bins of volume intensity:"
            f" bin 0 background <= {BACKGROUND_WORDS[model.background]},"
            f" {model.n_bins - 1} equal-count quantile bins of the volume's voxels above it)"
        )
    meta = ModelMeta(
        name=name,
        training_data="none (training-free)",
        notes=(
            f"{measure}: {len(model.frames)} orientations (oblique: {model.n_normals} normals x {model.n_rotations}"
            f" in-plane rotations x 2 normal signs) x dense positions (axis views at cube side <= {model.axis_side},"
            f" oblique at <= {model.coarse_side}, slices kept at >= {model.min_coarse_pixels} pixels a side), refinement of the"
            f" top {model.top_k} per family; softmax temperature"
            f" {model.temperature}; pixel spacing {model.pixel_spacing} voxels"
        ),
    )
    return model, meta


@register_model(
    "search",
    description="training-free NCC pose search: dense over orientations and positions, then refined",
    capabilities=Capabilities(trainable=False, uses_volume=True),
    licence="MIT",
)
def create_model(
    volume_size: int | None = None,
    slice_shape: tuple[int, int] | None = None,
    pixel_spacing: float = 1.0,
    n_normals: int | None = None,
    n_rotations: int | None = None,
    coarse_side: int = COARSE_SIDE,
    axis_side: int = AXIS_SIDE,
    top_k: int = TOP_K,
    temperature: float | None = None,
) -> tuple[PoseSearch, ModelMeta]:
    """Factory: ``(model, meta)``. ``volume_size`` and ``slice_shape`` are accepted and ignored."""
    return _factory("ncc", "search", pixel_spacing=pixel_spacing, n_normals=n_normals, n_rotations=n_rotations,
                    coarse_side=coarse_side, axis_side=axis_side, top_k=top_k, temperature=temperature)  # fmt: skip


@register_model(
    "search-cr",
    description="training-free correlation-ratio pose search (invariant to any remap of the slice's contrast), refined",
    capabilities=Capabilities(trainable=False, uses_volume=True),
    licence="MIT",
)
def create_cr(
    volume_size: int | None = None,
    slice_shape: tuple[int, int] | None = None,
    pixel_spacing: float = 1.0,
    n_normals: int | None = None,
    n_rotations: int | None = None,
    coarse_side: int = COARSE_SIDE,
    axis_side: int = CR_AXIS_SIDE,
    top_k: int = TOP_K,
    temperature: float | None = None,
    n_bins: int = 8,
    background: str = "floor",
) -> tuple[PoseSearch, ModelMeta]:
    """Factory of the correlation-ratio search: ``(model, meta)``; ``volume_size`` and
    ``slice_shape`` are accepted and ignored."""
    return _factory("cr", "search-cr", pixel_spacing=pixel_spacing, n_normals=n_normals, n_rotations=n_rotations,
                    coarse_side=coarse_side, axis_side=axis_side, top_k=top_k, temperature=temperature, n_bins=n_bins,
                    background=background)  # fmt: skip
