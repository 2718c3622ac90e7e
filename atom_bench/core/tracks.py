"""The four tracks: how poses are drawn and how a batch of samples is rendered from a volume.

``docs/PROTOCOL.md`` section 5 is the prose version of this module. A track is a frozen
:class:`TrackSpec`; :func:`sample_poses` draws poses for one volume from a seeded generator and
:func:`render_samples` turns them into sample columns (slice pixels, pose, labels, degradations).
The builder and the on-the-fly training stream both go through these two functions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from atom_bench.core import geometry as geo
from atom_bench.core import labels
from atom_bench.core.degrade import NO_DEGRADATION, apply_histology, draw_histology, slab_offsets, soften_histology
from atom_bench.core.volumes import Volume
from atom_bench.errors import AtomBenchError

PoseFamily = Literal["paper", "axis", "sphere"]
TRACK_NAMES: tuple[str, ...] = ("paper", "easy", "hard", "histology")
SPLITS: tuple[str, ...] = ("train", "validation", "test_seen", "test_unseen")


@dataclass(frozen=True)
class TrackSpec:
    """Everything that defines a track's samples."""

    name: str
    size: int  # cube side S [voxels]
    slice_shape: tuple[int, int]  # (h, w) [pixels]
    pixel_spacing: float  # [cube voxels]
    sampling: geo.Order  # slice interpolation
    volume_order: int  # spline order used to resample the source scan into the cube
    poses: PoseFamily
    histology: bool
    require_tissue: bool  # centre in the foreground mask and the whole slice inside the cube

    def describe(self) -> dict[str, object]:
        return {
            "size": self.size,
            "slice_shape": list(self.slice_shape),
            "pixel_spacing": self.pixel_spacing,
            "sampling": self.sampling,
            "volume_order": self.volume_order,
            "poses": self.poses,
            "histology": self.histology,
            "require_tissue": self.require_tissue,
        }


TRACKS: dict[str, TrackSpec] = {
    "paper": TrackSpec("paper", 20, (4, 4), 1.0, "nearest", 3, "paper", False, False),
    "easy": TrackSpec("easy", 64, (16, 16), 1.0, "linear", 1, "axis", False, True),
    "hard": TrackSpec("hard", 64, (16, 16), 1.0, "linear", 1, "sphere", False, True),
    "histology": TrackSpec("histology", 64, (16, 16), 1.0, "linear", 1, "sphere", True, True),
}


def get_track(name: str, size: int | None = None, slice_size: int | None = None) -> TrackSpec:
    """The spec of track ``name``, optionally with another cube side or (square) slice size."""
    if name not in TRACKS:
        raise AtomBenchError(f"unknown track {name!r}; choose one of {', '.join(TRACK_NAMES)}")
    spec = TRACKS[name]
    if size is not None:
        if not 16 <= size <= 256 and not (name == "paper" and size == 20):
            raise AtomBenchError(f"size {size} is out of range; use a cube side from 16 to 256", parameters=("size",))
        spec = replace(spec, size=size)
    if slice_size is not None:
        if not 2 <= slice_size <= spec.size // 2:
            raise AtomBenchError(
                f"slice_size {slice_size} must be between 2 and half the cube side ({spec.size // 2})", parameters=("slice_size",)
            )
        spec = replace(spec, slice_shape=(slice_size, slice_size))
    return spec


@dataclass(frozen=True)
class Poses:
    """A batch of poses in cube voxels: centres ``(B, 3)``, in-plane axes ``u, v`` ``(B, 3)``."""

    centers: NDArray[np.float64]
    u: NDArray[np.float64]
    v: NDArray[np.float64]
    views: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.centers)

    def take(self, index: NDArray[np.int64]) -> Poses:
        return Poses(self.centers[index], self.u[index], self.v[index], tuple(self.views[i] for i in index))


def pixel_offsets(spec: TrackSpec) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Row and column offsets (voxels); the paper track keeps the released ``-h//2 .. h-h//2-1``."""
    h, w = spec.slice_shape
    if spec.poses == "paper":
        return (np.arange(h) - h // 2) * spec.pixel_spacing, (np.arange(w) - w // 2) * spec.pixel_spacing
    return geo.centered_offsets(h, spec.pixel_spacing), geo.centered_offsets(w, spec.pixel_spacing)


def view_of(normals: NDArray[np.float64]) -> tuple[str, ...]:
    """``axial``/``coronal``/``sagittal`` for normals along array axis 2/1/0, else ``oblique``."""
    names = {2: "axial", 1: "coronal", 0: "sagittal"}
    axis = np.argmax(np.abs(normals), axis=1)
    aligned = np.abs(normals[np.arange(len(normals)), axis]) > 1 - 1e-9
    return tuple(names[int(a)] if ok else "oblique" for a, ok in zip(axis, aligned, strict=True))


def _paper_poses(spec: TrackSpec, count: int, rng: np.random.Generator) -> Poses:
    low, high = 2 * spec.size // 20, 16 * spec.size // 20  # the released range [2, 16] at S = 20
    centers = rng.integers(low, high + 1, size=(count, 3)).astype(np.float64)
    normals = rng.integers(0, 10, size=(count, 3)).astype(np.float64)  # randint(0, 9) per axis
    normals[~normals.any(axis=1)] = (0.0, 0.0, 1.0)  # the released code's epsilon patch is axial
    rotation = geo.minimal_rotation(normals)
    u, v = rotation[:, :, 0], rotation[:, :, 1]
    return Poses(centers, u, v, view_of(np.cross(u, v)))


def _axis_poses(spec: TrackSpec, count: int, rng: np.random.Generator) -> Poses:
    h, w = spec.slice_shape
    s = spec.size
    views = rng.integers(0, 3, size=count)
    centers, us, vs = np.zeros((count, 3)), np.zeros((count, 3)), np.zeros((count, 3))
    for index, view in enumerate(views):
        u, v = geo.view_frame(geo.VIEWS[view])
        span_u, span_v = (w - 1) * spec.pixel_spacing, (h - 1) * spec.pixel_spacing
        start_u = rng.integers(0, int(np.floor(s - 1 - span_u)) + 1)
        start_v = rng.integers(0, int(np.floor(s - 1 - span_v)) + 1)
        through = rng.integers(0, s)
        normal_axis = np.abs(np.cross(u, v))
        centers[index] = (start_u + span_u / 2) * u + (start_v + span_v / 2) * v + through * normal_axis
        us[index], vs[index] = u, v
    return Poses(centers, us, vs, tuple(geo.VIEWS[v] for v in views))


def _sphere_poses(spec: TrackSpec, count: int, rng: np.random.Generator) -> Poses:
    normals = geo.random_unit_vectors(rng, count)
    u, v = geo.frame_from_normal(normals, rng.uniform(0.0, 2 * np.pi, size=count))
    rows, cols = pixel_offsets(spec)
    extent = np.abs(v) * np.abs(rows).max() + np.abs(u) * np.abs(cols).max()  # (B, 3) half-extent
    room = np.maximum(spec.size - 1 - 2 * extent, 0.0)
    centers = extent + rng.uniform(size=(count, 3)) * room
    return Poses(centers, u, v, ("oblique",) * count)


_POSE_FAMILIES = {"paper": _paper_poses, "axis": _axis_poses, "sphere": _sphere_poses}


def sample_poses(
    spec: TrackSpec, volume: Volume, count: int, rng: np.random.Generator, max_rounds: int = 50
) -> Poses:
    """Draw ``count`` poses for ``volume``; tissue tracks keep only centres inside the mask.

    Candidates are drawn in batches and filtered in order, so the result depends only on the
    generator's state.
    """
    draw = _POSE_FAMILIES[spec.poses]
    if not spec.require_tissue:
        return draw(spec, count, rng)
    kept: list[Poses] = []
    have = 0
    for _ in range(max_rounds):
        candidates = draw(spec, max(2 * (count - have), 16), rng)
        inside = geo.sample_points(volume.mask.astype(np.float32), candidates.centers, "nearest") > 0.5
        accepted = candidates.take(np.flatnonzero(inside)[: count - have])
        kept.append(accepted)
        have += len(accepted)
        if have == count:
            return Poses(
                np.concatenate([p.centers for p in kept]),
                np.concatenate([p.u for p in kept]),
                np.concatenate([p.v for p in kept]),
                tuple(view for p in kept for view in p.views),
            )
    raise AtomBenchError(
        f"volume {volume.volume_id!r} has too little foreground for track {spec.name!r}; "
        "check its mask or leave it out of the build"
    )


def render_samples(
    spec: TrackSpec, volume: Volume, poses: Poses, seeds: NDArray[np.int64], severity: float = 1.0
) -> dict[str, list]:
    """Sample columns (PROTOCOL section 4) for ``poses`` in ``volume``, one row per pose.

    ``seeds`` (one per pose) drive the histology degradations and are stored in the ``seed``
    column, so every random draw of a sample is recorded in its row. ``severity`` < 1 softens
    them (:func:`~atom_bench.core.degrade.soften_histology`; training curricula only), and the
    ``deg_*`` columns hold the softened values that were applied.
    """
    rows, cols = pixel_offsets(spec)
    points = geo.slice_points(poses.centers, poses.u, poses.v, rows, cols)
    normals = np.cross(poses.u, poses.v)
    if spec.histology:
        slices, degradations = _render_histology(volume, points, normals, seeds, severity)
    else:
        slices = geo.sample_points(volume.data, points, spec.sampling)
        degradations = [NO_DEGRADATION] * len(poses)
    corners = geo.corner_points(points)
    if spec.sampling == "nearest":
        corners = np.rint(corners)
    paper_high, paper_low = labels.paper_label_masks(corners, spec.size)
    tissue = geo.sample_points(volume.mask.astype(np.float32), points, "nearest").mean(axis=(1, 2))
    columns: dict[str, list] = {
        "view": list(poses.views),
        "slice": list(slices.astype(np.float32)),
        "center_vox": poses.centers.tolist(),
        "center_mm": geo.voxel_to_mm(volume.affine, poses.centers).tolist(),
        "normal": normals.tolist(),
        "normal_mm": geo.direction_to_mm(volume.affine, normals).tolist(),
        "u": poses.u.tolist(),
        "v": poses.v.tolist(),
        "pixel_spacing": [spec.pixel_spacing] * len(poses),
        "high_label": labels.high_label(poses.centers, spec.size).tolist(),
        "low_label": labels.low_label(poses.centers, spec.size).tolist(),
        "paper_high": labels.masks_to_lists(paper_high),
        "paper_low": labels.masks_to_lists(paper_low),
        "tissue_fraction": tissue.astype(np.float64).tolist(),
        "seed": [int(s) for s in seeds],
    }
    for name in NO_DEGRADATION:
        columns[name] = [d[name] for d in degradations]
    return columns


def _render_histology(
    volume: Volume, points: NDArray, normals: NDArray, seeds: NDArray[np.int64], severity: float
) -> tuple[NDArray[np.float32], list[dict[str, float]]]:
    slices, degradations = [], []
    for sample_points, normal, seed in zip(points, normals, seeds, strict=True):
        draw = soften_histology(draw_histology(np.random.default_rng([int(seed), 1]), int(seed)), severity)
        offsets = slab_offsets(draw.thickness)
        slab_points = sample_points[None] + offsets[:, None, None, None] * normal
        slab = geo.sample_points(volume.data, slab_points, "linear")
        slices.append(apply_histology(slab, draw))
        degradations.append(draw.columns())
    return np.stack(slices), degradations
