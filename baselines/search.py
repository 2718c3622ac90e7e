"""Training-free classical baseline: normalised cross-correlation (NCC) pose search.

For each (volume, slice) pair, coarse to fine (``method-anchors.md`` sections 3 and 6):

1. **Coarse, dense in position.** Two families of orientations: the 3 axis-aligned views in all
   8 right-handed frames of their plane (4 in-plane quarter turns, either normal sign), and
   ``n_normals`` Fibonacci-hemisphere normals, each with ``n_rotations`` in-plane rotations and
   both normal signs. For each family the volume (and the slice, by the same factor) is reduced
   so that the cube side is at most ``axis_side`` (axis views: 48, cheap because their
   resampled box has no waste, and exact on the voxel grid when not reduced) or
   ``coarse_side`` (oblique: 20) voxels, while the slice keeps at least ``min_coarse_pixels``
   pixels per side. For every orientation, the volume is resampled into the slice frame (one
   batched ``grid_sample`` per chunk of ``frame_chunk`` frames: a stack of planes spanned by the
   in-plane axes ``u, v`` at the slice's pixel spacing, one plane per voxel along the normal).
   Every slice-sized window of every plane whose centre is inside the cube is a candidate pose;
   its standard deviation comes from integral images. All of this depends on the volume and the
   slice shape only, so it is computed once per volume (see *Batching and cache*); the NCC of a
   slice against every candidate window is then one correlation: a ``conv2d`` of the planes
   with the zero-mean slices stacked as output channels where most windows are candidates (axis
   views), a matrix product of the candidate windows' pixels with the same stacked slices where
   few are (oblique chunks: about 20% of the windows of their planes, the rest centred outside
   the cube).
2. **Refine.** The best ``top_k`` orientations of each family (their best window each) are refined at full
   resolution: first a dense 9 x 9 x 9 grid of centres around the start (step half a coarse
   voxel), then a pattern search over the centre (steps along the three axes) and the
   orientation (small rotations about ``u``, ``v`` and ``n``), halving the steps when no move
   improves the NCC (a start whose steps are all below 0.05 voxel and 0.05 degree is done and
   no longer scored). Pixel positions are those of the reference ``atom_bench.core.geometry.slice_points``
   and are read trilinearly with ``grid_sample`` (the same values as the reference
   ``geometry.sample_points(..., "linear")`` to float precision, about 20x faster), so an exact
   pose reproduces the slice.
3. **Scores.** For every fine block, the best NCC over all candidate poses whose centre lies in
   it (coarse candidates and refined poses); coarse blocks take the best of their fine blocks;
   scores are ``softmax(best_ncc / temperature)``. The pose is the best refined pose.

**Batching and cache.** ``predict`` groups its pairs by volume content (a BLAKE2b hash of the
voxels), so the coarse stage resamples each distinct volume once per batch and scores all of its
slices together, and the refinement of those slices runs as one pattern search over all their
starts (each start scored against its own slice). The resampled planes and window statistics of
the last volumes are kept in a least-recently-used cache keyed by (volume hash, slice shape), so
consecutive batches on the same volumes (the evaluator's batches in split order, the
volume-swap diagnostic) do not resample again. The cache holds at most ``cache_volumes`` entries
and ``cache_bytes`` bytes (defaults 8 and 1 GiB; one 64^3 volume with 16 x 16 slices takes about
140 MB, mostly the resampled planes, so about 7 such volumes). An all-zero volume (the
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
from atom_bench.models.protocol import ModelMeta, Prediction
from atom_bench.models.registry import Capabilities, register_model
from baselines._blocks import check_inputs
from baselines._search_tools import (  # noqa: F401  (fibonacci_hemisphere, candidate_frames, sample_points_torch: public here too)
    Chunk,
    Family,
    SearchResult,
    Start,
    VolumeWindows,
    box_sum,
    candidate_frames,
    fibonacci_hemisphere,
    fine_labels,
    frame_lattice,
    ncc_rows,
    rotate,
    sample_points_torch,
    volume_key,
)

SLICE_BATCH = 32  # slices of one volume searched together


class NCCSearch(nn.Module):
    """The NCC pose search behind the common ``predict`` interface (no parameters).

    Sizes are in voxels (``coarse_side``, ``axis_side``: cube sides; ``pixel_spacing``: of the
    slices) or pixels (``min_coarse_pixels``). ``cache_volumes`` and ``cache_bytes`` bound the cache
    of resampled volumes (see the module docstring).
    """

    def __init__(
        self,
        pixel_spacing: float = 1.0,
        n_normals: int = 16,
        n_rotations: int = 6,
        coarse_side: int = 20,
        axis_side: int = 48,
        min_coarse_pixels: int = 6,
        top_k: int = 8,
        temperature: float = 0.02,
        max_iterations: int = 60,
        frame_chunk: int = 8,
        cache_volumes: int = 8,
        cache_bytes: int = 1 << 30,
    ) -> None:
        super().__init__()
        self.pixel_spacing = float(pixel_spacing)
        self.frames = candidate_frames(n_normals, n_rotations)
        # batch frames of similar bounding boxes together (cheaper coarse resampling)
        box = np.abs(self.frames).sum(axis=2).prod(axis=1) * np.abs(np.cross(self.frames[:, 0], self.frames[:, 1])).sum(axis=1)
        n_axis = 24  # candidate_frames puts the axis-view frames first
        self.families = [(np.arange(n_axis), axis_side)]
        if len(self.frames) > n_axis:
            oblique = np.arange(n_axis, len(self.frames))
            self.families.append((oblique[np.argsort(box[oblique], kind="stable")], coarse_side))
        self.coarse_side, self.axis_side, self.min_coarse_pixels = coarse_side, axis_side, min_coarse_pixels
        self.top_k, self.temperature = top_k, temperature
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
        windows = VolumeWindows([self._family_windows(volume, shape, ids, side) for ids, side in self.families])
        self._cache[cache_key] = windows
        while self._cache and (len(self._cache) > self.cache_volumes or sum(w.nbytes for w in self._cache.values()) > self.cache_bytes):
            self._cache.popitem(last=False)
        return windows

    def _family_windows(self, volume: Tensor, shape: tuple[int, int], frame_ids: np.ndarray, coarse_side: int) -> Family:
        """Resample the volume (reduced to cube side <= ``coarse_side``) in the planes of every
        frame of a family and keep the windows centred inside the cube, with their statistics."""
        size = volume.shape[0]
        h, w = shape
        hc, wc = h, w
        factor = max(1.0, min(size / coarse_side, min(h, w) / self.min_coarse_pixels))
        if factor > 1.0:
            side = max(9, round(size / factor))
            hc, wc = max(2, round(h / factor)), max(2, round(w / factor))
            volume = F.adaptive_avg_pool3d(volume[None, None], side)[0, 0]
            factor = size / side
        sc = volume.shape[0]
        spacing = self.pixel_spacing * (h / hc) / factor  # slice pixel spacing in coarse voxels
        n_pix = hc * wc
        origin = float(np.floor((sc - 1) / 2))
        chunks = []
        frames = torch.as_tensor(self.frames[frame_ids], dtype=torch.float32)
        for start in range(0, len(frames), self.frame_chunk):
            chunk = frames[start : start + self.frame_chunk]
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
            total = box_sum(planes, hc, wc).reshape(-1)[index]
            total_sq = box_sum(planes * planes, hc, wc).reshape(-1)[index]
            std = (total_sq - total * total / n_pix).clamp(min=0).sqrt()
            counts = inside.reshape(len(chunk), -1).sum(1).numpy()
            chunks.append(
                Chunk(
                    frame_ids=np.asarray(frame_ids[start : start + len(chunk)]),
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
            )
        return Family(factor, (hc, wc), chunks)

    # -- coarse stage: the slices -----------------------------------------------------------
    def _coarse(self, family: Family, images: Tensor) -> tuple[Tensor, list[list[Start]]]:
        """Dense NCC of ``images (K, h, w)`` against one family's candidate windows: the block
        maxima ``(K, 729)`` and, per slice, the ``top_k`` best frames (best window each)."""
        hc, wc = family.shape
        k = len(images)
        if images.shape[1:] != (hc, wc):
            images = F.adaptive_avg_pool2d(images[:, None], (hc, wc))[:, 0]
        t = torch.stack([image - image.mean() for image in images])
        t_norm = torch.stack([x.norm() for x in t])
        weights = t / torch.where(t_norm > 0, t_norm, 1.0)[:, None, None]  # NCC = (window . weights) / std
        block = torch.full((N_LOW, k), -1.0)
        values, frames, centers = [], [], []  # per frame with candidates: best NCC and window, per slice
        for chunk in family.chunks:
            if len(chunk.index) == 0:
                continue
            inv_std = torch.where(chunk.std > 0, 1.0 / chunk.std, torch.zeros(()))
            ncc = chunk.numerators(weights).mul_(inv_std[:, None])  # (M, K)
            # the NCC is 0 where std * |t| <= 1e-6: beyond the flat windows (1 / std taken as 0),
            # only nearly flat ones, a subset of those below the threshold for the smallest |t|
            nearly_flat = ((chunk.std > 0) & (chunk.std * t_norm.min() <= 1e-6)).nonzero().reshape(-1)
            if len(nearly_flat):
                below = chunk.std[nearly_flat, None] * t_norm[None, :] <= 1e-6
                ncc[nearly_flat] = ncc[nearly_flat].masked_fill_(below, 0.0)
            block.scatter_reduce_(0, chunk.labels.long()[:, None].expand(-1, k), ncc, reduce="amax")
            for f in range(len(chunk.frame_ids)):
                s, e = chunk.frame_starts[f], chunk.frame_starts[f + 1]
                if s == e:
                    continue
                best, where = ncc[s:e].max(dim=0)
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
    def _refine(self, volume: Tensor, images: Tensor, starts: list[Start], owner: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Refine ``starts`` at full resolution, start ``i`` against ``images[owner[i]]`` (the
        slices of one group are refined together): centres, ``u``, ``v`` and NCC per start."""
        flat = images.reshape(len(images), -1).double().numpy()
        templates = flat - flat.mean(axis=1, keepdims=True)
        template_norms = np.sqrt((templates * templates).sum(axis=1))
        centers = np.array([s[2] for s in starts], dtype=np.float64)
        us = np.array([self.frames[s[1], 0] for s in starts])
        vs = np.array([self.frames[s[1], 1] for s in starts])
        k = len(starts)

        rows = torch.from_numpy(geometry.centered_offsets(images.shape[1], self.pixel_spacing))
        cols = torch.from_numpy(geometry.centered_offsets(images.shape[2], self.pixel_spacing))
        scale = 2.0 / (torch.tensor(volume.shape[::-1], dtype=torch.float32) - 1).clamp(min=1)
        vol = volume[None, None]

        def score(cs: np.ndarray, u: np.ndarray, v: np.ndarray, who: np.ndarray) -> np.ndarray:
            # the pixel positions of geometry.slice_points (same float64 arithmetic, in grid_sample's
            # (x, y, z) order), cast to float32 and normalised as in sample_points_torch
            c_, u_, v_ = (torch.from_numpy(np.ascontiguousarray(x[:, ::-1])) for x in (cs, u, v))
            points = (c_[:, None, :] + rows[None, :, None] * v_[:, None, :])[:, :, None] + (cols[None, :, None] * u_[:, None, :])[:, None]
            grid = points.float().mul_(scale).sub_(1.0).reshape(1, -1, 1, 1, 3)
            cut = F.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            return ncc_rows(cut.reshape(len(cs), -1).numpy().astype(np.float64), templates[who], template_norms[who])

        # local dense search: a 9 x 9 x 9 grid of centres, step (coarse voxel) / 2, around every start
        step_p = 0.5 * np.array([max(1.0, s[3]) for s in starts])
        steps = np.arange(-4, 5, dtype=np.float64)
        unit_offsets = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), axis=-1).reshape(-1, 3)
        m = len(unit_offsets)
        grid_values = np.empty((k, m))
        for i in range(k):  # one start at a time: 729 slices
            grid_values[i] = score(centers[i] + unit_offsets * step_p[i], np.repeat(us[i : i + 1], m, axis=0), np.repeat(vs[i : i + 1], m, axis=0), np.full(m, owner[i]))
        centers = centers + unit_offsets[grid_values.argmax(axis=1)] * step_p[:, None]
        current = grid_values.max(axis=1)
        step_a = np.full(k, self.angle_step)
        eye = np.eye(3)
        for _ in range(self.max_iterations):
            active = np.flatnonzero((step_p > 0.05) | (step_a > math.radians(0.05)))
            if len(active) == 0:
                break
            # only the starts still moving are scored (the others never change again), and only their
            # 12 moves: a move is taken when it beats ``current`` by 1e-9, which re-scoring the pose
            # itself never does
            ca, ua, va, sp, sa = centers[active], us[active], vs[active], step_p[active], step_a[active]
            cand_c: list[np.ndarray] = []
            cand_u: list[np.ndarray] = []
            cand_v: list[np.ndarray] = []
            for axis in range(3):
                for sign in (1.0, -1.0):
                    cand_c.append(ca + sign * sp[:, None] * eye[axis])
                    cand_u.append(ua)
                    cand_v.append(va)
            n = np.cross(ua, va)
            for rot_axes in (ua, va, n):
                for sign in (1.0, -1.0):
                    cand_c.append(ca)
                    cand_u.append(rotate(ua, rot_axes, sign * sa))
                    cand_v.append(rotate(va, rot_axes, sign * sa))
            m = len(cand_c)
            values = score(np.concatenate(cand_c), np.concatenate(cand_u), np.concatenate(cand_v), np.tile(owner[active], m))
            values = values.reshape(m, len(active))
            choice = values.argmax(axis=0)
            for j, i in enumerate(active):
                if values[choice[j], j] > current[i] + 1e-9:
                    centers[i], us[i], vs[i] = cand_c[choice[j]][j], cand_u[choice[j]][j], cand_v[choice[j]][j]
                    current[i] = values[choice[j], j]
                else:
                    step_p[i] *= 0.5
                    step_a[i] *= 0.5
            # keep the frames orthonormal
            us = us / np.linalg.norm(us, axis=1, keepdims=True)
            vs = vs - np.sum(vs * us, axis=1, keepdims=True) * us
            vs = vs / np.linalg.norm(vs, axis=1, keepdims=True)
        return centers, us, vs, current

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
            refined = self._refine(volume, images, [s for image_starts in starts for s in image_starts], owner)
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
    n_normals: int = 16,
    n_rotations: int = 6,
    coarse_side: int = 20,
    axis_side: int = 48,
    top_k: int = 8,
    temperature: float = 0.02,
) -> tuple[NCCSearch, ModelMeta]:
    """Factory: ``(model, meta)``. ``volume_size`` and ``slice_shape`` are accepted and ignored."""
    model = NCCSearch(pixel_spacing, n_normals, n_rotations, coarse_side, axis_side, top_k=top_k, temperature=temperature)
    meta = ModelMeta(
        name="search",
        training_data="none (training-free)",
        notes=(
            f"NCC search: {len(model.frames)} orientations x dense positions (axis views at cube side <= {axis_side},"
            f" oblique at <= {coarse_side}), refinement of the top {top_k} per family; pixel spacing {pixel_spacing} voxels"
        ),
    )
    return model, meta
