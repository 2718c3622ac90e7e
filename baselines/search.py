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
   batched ``grid_sample``: a stack of planes spanned by the in-plane axes ``u, v`` at the
   slice's pixel spacing, one plane per voxel along the normal), and the NCC of the slice
   against every window of every plane is computed at once (a 2D correlation for the numerator,
   integral images for the local variance). Every window whose centre is inside the cube is a
   candidate pose.
2. **Refine.** The best ``top_k`` orientations of each family (their best window each) are refined at full
   resolution: first a dense 9 x 9 x 9 grid of centres around the start (step half a coarse
   voxel), then a pattern search over the centre (steps along the three axes) and the
   orientation (small rotations about ``u``, ``v`` and ``n``), halving the steps when no move
   improves the NCC. Pixel positions come from the reference ``atom_bench.geometry.slice_points``
   and are read trilinearly with ``grid_sample`` (the same values as the reference
   ``geometry.sample_points(..., "linear")`` to float precision, about 20x faster), so an exact
   pose reproduces the slice.
3. **Scores.** For every fine block, the best NCC over all candidate poses whose centre lies in
   it (coarse candidates and refined poses); coarse blocks take the best of their fine blocks;
   scores are ``softmax(best_ncc / temperature)``. The pose is the best refined pose.

The slice's pixel spacing (in cube voxels) must be known: ``pixel_spacing`` (default 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atom_bench import geometry
from atom_bench.models import ModelMeta, Prediction
from baselines._blocks import N_HIGH, N_LOW, check_inputs

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


def _fine_labels(centers: Tensor, size: int) -> Tensor:
    """Protocol ``low_label`` (0..728) of centres ``(..., 3)`` in voxels of a cube of side ``size``."""
    f = ((centers + 0.5) * (9.0 / size)).floor_().clamp_(0, 8).to(torch.int32)
    a = torch.div(f, 3, rounding_mode="floor")
    b = f - 3 * a
    weights = torch.tensor([243, 81, 27], dtype=torch.int32)
    return ((a * weights).sum(-1) + (b * (weights // 27)).sum(-1)).long()


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


def _box_sum(x: Tensor, h: int, w: int) -> Tensor:
    """Sums over every ``h x w`` window (valid positions) of ``x (N, H, W)``, by integral images."""
    c = F.pad(x.double().cumsum(1).cumsum(2), (1, 0, 1, 0))
    return (c[:, h:, w:] - c[:, :-h, w:] - c[:, h:, :-w] + c[:, :-h, :-w]).float()


def _ncc_rows(slices: np.ndarray, template: np.ndarray) -> np.ndarray:
    """NCC of each row of ``slices (N, P)`` with ``template (P,)`` (0 for flat rows)."""
    t = template - template.mean()
    t_norm = np.sqrt((t * t).sum())
    x = slices - slices.mean(axis=1, keepdims=True)
    x_norm = np.sqrt((x * x).sum(axis=1))
    denom = x_norm * t_norm
    return np.where(denom > 1e-12, (x @ t) / np.maximum(denom, 1e-12), 0.0)


def _rotate(vectors: np.ndarray, axes: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rodrigues rotation of ``vectors (K, 3)`` about unit ``axes (K, 3)`` by ``angles (K,)``."""
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
    dot = np.sum(vectors * axes, axis=1, keepdims=True)
    return vectors * c + np.cross(axes, vectors) * s + axes * dot * (1 - c)


class NCCSearch(nn.Module):
    """The NCC pose search behind the common ``predict`` interface (no parameters)."""

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

    # -- coarse stage ------------------------------------------------------------------------
    def _coarse(self, volume: Tensor, image: Tensor, frame_ids: np.ndarray, coarse_side: int) -> tuple[Tensor, list[tuple[float, int, np.ndarray, float]]]:
        """Dense NCC of one family of frames at cube side <= ``coarse_side``: the block maxima
        and the ``top_k`` best frames ``(ncc, frame index, centre in full voxels, factor)``."""
        size = volume.shape[0]
        h, w = image.shape
        factor = max(1.0, min(size / coarse_side, min(h, w) / self.min_coarse_pixels))
        if factor > 1.0:
            side = max(9, round(size / factor))
            hc, wc = max(2, round(h / factor)), max(2, round(w / factor))
            volume = F.adaptive_avg_pool3d(volume[None, None], side)[0, 0]
            image = F.adaptive_avg_pool2d(image[None, None], (hc, wc))[0, 0]
            factor = size / side
        sc = volume.shape[0]
        hc, wc = image.shape
        spacing = self.pixel_spacing * (h / hc) / factor  # slice pixel spacing in coarse voxels
        t = image - image.mean()
        t_norm = t.norm()
        n_pix = hc * wc
        origin = float(np.floor((sc - 1) / 2))
        block_ncc = torch.full((N_LOW,), -1.0)
        best: list[tuple[float, int, np.ndarray, float]] = []
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
            grid = (
                (origin * scale - 1.0)
                + c[None, :, None, None, None] * nn_[:, None, None, None, :]
                + b[None, None, :, None, None] * vn[:, None, None, None, :]
                + a[None, None, None, :, None] * un[:, None, None, None, :]
            )  # (Fc, Lc, Lb, La, 3)
            planes = F.grid_sample(
                volume[None, None], grid.reshape(1, -1, len(b), len(a), 3), mode="bilinear", padding_mode="zeros", align_corners=True
            ).reshape(-1, 1, len(b), len(a))
            numerator = F.conv2d(planes, t[None, None]).squeeze(1)
            total = _box_sum(planes[:, 0], hc, wc)
            total_sq = _box_sum(planes[:, 0] * planes[:, 0], hc, wc)
            std = (total_sq - total * total / n_pix).clamp(min=0).sqrt()
            ncc = torch.where(std * t_norm > 1e-6, numerator / (std * t_norm).clamp(min=1e-12), torch.zeros_like(std))
            ncc = ncc.reshape(len(chunk), len(c), ncc.shape[-2], ncc.shape[-1])
            # centres of the windows
            ca = a[: ncc.shape[-1]] + 0.5 * (wc - 1) * spacing
            cb = b[: ncc.shape[-2]] + 0.5 * (hc - 1) * spacing
            centers = (
                origin
                + c[None, :, None, None, None] * n[:, None, None, None, :]
                + cb[None, None, :, None, None] * v[:, None, None, None, :]
                + ca[None, None, None, :, None] * u[:, None, None, None, :]
            )
            inside = ((centers >= -0.5) & (centers < sc - 0.5)).all(-1)
            ncc = torch.where(inside, ncc, torch.tensor(-2.0))
            block_ncc.scatter_reduce_(0, _fine_labels(centers[inside], sc), ncc[inside], reduce="amax")
            flat = ncc.reshape(len(chunk), -1)
            values, index = flat.max(dim=1)
            for i in range(len(chunk)):
                if values[i] > -2:
                    center = centers[i].reshape(-1, 3)[index[i]].double().numpy()
                    best.append((float(values[i]), int(frame_ids[start + i]), (center + 0.5) * factor - 0.5, factor))
        best.sort(key=lambda item: -item[0])
        return block_ncc, best[: self.top_k]

    # -- refinement --------------------------------------------------------------------------
    def _refine(self, volume: np.ndarray, image: np.ndarray, starts: list[tuple[float, int, np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        shape = image.shape
        template = image.reshape(-1).astype(np.float64)
        centers = np.array([s[2] for s in starts], dtype=np.float64)
        us = np.array([self.frames[s[1], 0] for s in starts])
        vs = np.array([self.frames[s[1], 1] for s in starts])
        k = len(starts)

        rows = geometry.centered_offsets(shape[0], self.pixel_spacing)
        cols = geometry.centered_offsets(shape[1], self.pixel_spacing)
        vol = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))

        def score(cs: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
            # the reference pose -> pixel positions (geometry.slice_points), sampled with torch
            points = torch.from_numpy(geometry.slice_points(cs, u, v, rows, cols))
            cut = sample_points_torch(vol, points).numpy()
            return _ncc_rows(cut.reshape(len(cs), -1).astype(np.float64), template)

        # local dense search: a 9 x 9 x 9 grid of centres, step (coarse voxel) / 2, around every start
        step_p = 0.5 * np.array([max(1.0, s[3]) for s in starts])
        steps = np.arange(-4, 5, dtype=np.float64)
        unit_offsets = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), axis=-1).reshape(-1, 3)
        offsets = unit_offsets[None] * step_p[:, None, None]  # (k, m, 3)
        m = len(unit_offsets)
        grid_values = score(
            (centers[:, None, :] + offsets).reshape(-1, 3), np.repeat(us, m, axis=0), np.repeat(vs, m, axis=0)
        ).reshape(k, m)
        centers = centers + offsets[np.arange(k), grid_values.argmax(axis=1)]
        current = grid_values.max(axis=1)
        step_a = np.full(k, self.angle_step)
        eye = np.eye(3)
        for _ in range(self.max_iterations):
            active = (step_p > 0.05) | (step_a > math.radians(0.05))
            if not active.any():
                break
            cand_c, cand_u, cand_v = [centers], [us], [vs]
            for axis in range(3):
                for sign in (1.0, -1.0):
                    cand_c.append(centers + sign * step_p[:, None] * eye[axis])
                    cand_u.append(us)
                    cand_v.append(vs)
            n = np.cross(us, vs)
            for rot_axes in (us, vs, n):
                for sign in (1.0, -1.0):
                    cand_c.append(centers)
                    cand_u.append(_rotate(us, rot_axes, sign * step_a))
                    cand_v.append(_rotate(vs, rot_axes, sign * step_a))
            m = len(cand_c)
            values = score(np.concatenate(cand_c), np.concatenate(cand_u), np.concatenate(cand_v)).reshape(m, k)
            choice = values.argmax(axis=0)
            improved = values[choice, np.arange(k)] > current + 1e-9
            for i in range(k):
                if improved[i] and active[i]:
                    centers[i], us[i], vs[i] = cand_c[choice[i]][i], cand_u[choice[i]][i], cand_v[choice[i]][i]
                    current[i] = values[choice[i], i]
                else:
                    step_p[i] *= 0.5
                    step_a[i] *= 0.5
            # keep the frames orthonormal
            us = us / np.linalg.norm(us, axis=1, keepdims=True)
            vs = vs - np.sum(vs * us, axis=1, keepdims=True) * us
            vs = vs / np.linalg.norm(vs, axis=1, keepdims=True)
        return centers, us, vs, current

    def search(self, volume: Tensor, image: Tensor) -> SearchResult:
        """Search one ``volume (S, S, S)`` for one ``image (h, w)``."""
        volume = volume.detach().float().cpu()
        image = image.detach().float().cpu()
        size = volume.shape[0]
        block_ncc = torch.full((N_LOW,), -1.0)
        starts: list[tuple[float, int, np.ndarray, float]] = []
        for frame_ids, side in self.families:
            family_blocks, family_starts = self._coarse(volume, image, frame_ids, side)
            block_ncc = torch.maximum(block_ncc, family_blocks)
            starts += family_starts
        if not starts:  # no candidate (cannot happen with a non-empty cube)
            centre = np.full(3, (size - 1) / 2)
            return SearchResult(block_ncc, centre, np.eye(3)[0], np.eye(3)[1], -1.0)
        centers, us, vs, values = self._refine(volume.numpy(), image.numpy(), starts)
        inside = np.all((centers >= -0.5) & (centers < size - 0.5), axis=1)
        values = np.where(inside, values, -2.0)
        labels = _fine_labels(torch.as_tensor(centers), size)
        for label, value in zip(labels.tolist(), values.tolist()):
            if value > -2:
                block_ncc[label] = max(float(block_ncc[label]), value)
        best = int(np.argmax(values))
        return SearchResult(block_ncc, centers[best], us[best], vs[best], float(values[best]))

    def predict(self, volumes: Tensor, slices: Tensor) -> Prediction:
        check_inputs(volumes, slices)
        results = [self.search(volumes[i, 0], slices[i, 0]) for i in range(volumes.shape[0])]
        block = torch.stack([r.block_ncc for r in results])  # (B, 729)
        high_ncc = block.reshape(-1, N_HIGH, N_HIGH).amax(dim=2)
        return Prediction(
            high_scores=torch.softmax(high_ncc / self.temperature, dim=1),
            low_scores=torch.softmax(block / self.temperature, dim=1),
            center_vox=torch.as_tensor(np.stack([r.center for r in results]), dtype=torch.float32),
            normal=torch.as_tensor(np.stack([r.normal for r in results]), dtype=torch.float32),
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
        uses_volume=True,
        notes=(
            f"NCC search: {len(model.frames)} orientations x dense positions (axis views at cube side <= {axis_side},"
            f" oblique at <= {coarse_side}), refinement of the top {top_k} per family; pixel spacing {pixel_spacing} voxels"
        ),
    )
    return model, meta
