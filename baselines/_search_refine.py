"""Full-resolution refinement of the pose search's coarse starts (``baselines.search``, step 2).

Every start (a candidate centre and frame) is refined in two moves: a dense 9 x 9 x 9 grid of
centres around it (step half a coarse voxel), then a pattern search over the centre (steps along
the three cube axes, in voxels) and the orientation (small rotations about ``u``, ``v`` and the
normal, in radians), halving a start's steps when no move improves its similarity. Vectors are in
the cube's voxel axis order ``(z, y, x)`` like :mod:`atom_bench.core.geometry`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from atom_bench.core import geometry
from baselines._search_tools import Start, bin_index, correlation_ratio_rows, ncc_rows_torch, rotate

REFINE_POINTS = 1 << 22  # pixel positions sampled per grid_sample call of the dense refinement grid


def refine_starts(
    volume: Tensor,
    images: Tensor,
    starts: list[Start],
    owner: np.ndarray,
    frames: np.ndarray,
    pixel_spacing: float,
    angle_step: float,
    max_iterations: int,
    edges: Tensor | None = None,
    n_bins: int = 8,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Refine ``starts`` in ``volume (S, S, S)``, start ``i`` against ``images[owner[i]]`` (the
    slices of one volume are refined together).

    ``frames (F, 2, 3)``: the candidate ``(u, v)`` frames the starts index; ``pixel_spacing``: of
    the slices [voxels]; ``angle_step``: the first rotation step [radians]; ``edges``: the
    volume's intensity bin edges (correlation ratio with ``n_bins`` bins; None: NCC). Returns
    centres ``(K, 3)`` [voxels], ``u``, ``v`` ``(K, 3)`` and the similarity ``(K,)`` per start.
    """
    flat = images.reshape(len(images), -1).double()
    templates = flat - flat.mean(dim=1, keepdim=True)
    template_norms = templates.norm(dim=1)
    template_sq = (templates * templates).sum(dim=1)
    centers = np.array([s[2] for s in starts], dtype=np.float64)
    us = np.array([frames[s[1], 0] for s in starts])
    vs = np.array([frames[s[1], 1] for s in starts])
    k = len(starts)

    rows = torch.from_numpy(geometry.centered_offsets(images.shape[1], pixel_spacing))
    cols = torch.from_numpy(geometry.centered_offsets(images.shape[2], pixel_spacing))
    scale = 2.0 / (torch.tensor(volume.shape[::-1], dtype=torch.float32) - 1).clamp(min=1)
    vol = volume[None, None]

    def score(cs: np.ndarray, u: np.ndarray, v: np.ndarray, who: np.ndarray) -> np.ndarray:
        # the pixel positions of geometry.slice_points (same float64 arithmetic, in grid_sample's
        # (x, y, z) order), cast to float32 and normalised as in sample_points_torch
        c_, u_, v_ = (torch.from_numpy(np.ascontiguousarray(x[:, ::-1])) for x in (cs, u, v))
        points = (c_[:, None, :] + rows[None, :, None] * v_[:, None, :])[:, :, None] + (cols[None, :, None] * u_[:, None, :])[:, None]
        grid = points.float().mul_(scale).sub_(1.0).reshape(1, -1, 1, 1, 3)
        cut = F.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=True).reshape(len(cs), -1)
        who_t = torch.from_numpy(who)
        if edges is None:
            return ncc_rows_torch(cut.double(), templates[who_t], template_norms[who_t]).numpy()
        return correlation_ratio_rows(bin_index(cut, edges), templates[who_t], template_sq[who_t], n_bins).numpy()

    # local dense search: a 9 x 9 x 9 grid of centres, step (coarse voxel) / 2, around every
    # start; several starts per grid_sample call (REFINE_POINTS pixels) cut the per-call overhead
    step_p = 0.5 * np.array([max(1.0, s[3]) for s in starts])
    steps = np.arange(-4, 5, dtype=np.float64)
    unit_offsets = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), axis=-1).reshape(-1, 3)
    m = len(unit_offsets)
    grid_values = np.empty((k, m))
    per_call = max(1, REFINE_POINTS // (m * images.shape[1] * images.shape[2]))
    for s in range(0, k, per_call):
        i = np.arange(s, min(k, s + per_call))
        grid_values[i] = score(
            (centers[i, None] + unit_offsets[None] * step_p[i, None, None]).reshape(-1, 3),
            np.repeat(us[i], m, axis=0), np.repeat(vs[i], m, axis=0), np.repeat(owner[i], m),
        ).reshape(len(i), m)  # fmt: skip
    centers = centers + unit_offsets[grid_values.argmax(axis=1)] * step_p[:, None]
    current = grid_values.max(axis=1)
    step_a = np.full(k, angle_step)
    eye = np.eye(3)
    for _ in range(max_iterations):
        active = np.flatnonzero((step_p > 0.05) | (step_a > math.radians(0.05)))
        if len(active) == 0:
            break
        # only the starts still moving are scored (the others never change again), and only their
        # 12 moves: a move is taken when it beats ``current`` by 1e-9, which re-scoring the pose
        # itself never does
        ca, ua, va, sp, sa = centers[active], us[active], vs[active], step_p[active], step_a[active]
        n = np.cross(ua, va)
        moves = [ca + sign * sp[:, None] * eye[axis] for axis in range(3) for sign in (1.0, -1.0)]
        cand_c = np.stack(moves + [ca] * 6)  # (12, A, 3)
        cand_u = np.stack([ua] * 6 + [rotate(ua, axes, sign * sa) for axes in (ua, va, n) for sign in (1.0, -1.0)])
        cand_v = np.stack([va] * 6 + [rotate(va, axes, sign * sa) for axes in (ua, va, n) for sign in (1.0, -1.0)])
        values = score(cand_c.reshape(-1, 3), cand_u.reshape(-1, 3), cand_v.reshape(-1, 3), np.tile(owner[active], len(cand_c)))
        values = values.reshape(len(cand_c), len(active))
        choice = values.argmax(axis=0)
        best = values[choice, np.arange(len(active))]
        better = best > current[active] + 1e-9
        moved, pick = active[better], choice[better]
        centers[moved] = cand_c[pick, better.nonzero()[0]]
        us[moved], vs[moved] = cand_u[pick, better.nonzero()[0]], cand_v[pick, better.nonzero()[0]]
        current[moved] = best[better]
        step_p[active[~better]] *= 0.5
        step_a[active[~better]] *= 0.5
        # keep the frames orthonormal
        us = us / np.linalg.norm(us, axis=1, keepdims=True)
        vs = vs - np.sum(vs * us, axis=1, keepdims=True) * us
        vs = vs / np.linalg.norm(vs, axis=1, keepdims=True)
    return centers, us, vs, current
