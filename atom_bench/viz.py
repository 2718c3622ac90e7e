"""Pictures of samples: the slice beside three orthogonal cuts of its volume with the plane drawn in.

Each cut is labelled with its RAS orientation letters (array axis ``a`` runs from ``LPI[a]`` to
``RAS[a]``, PROTOCOL section 2) and shows the coarse block grid the labels refer to. Where the
slice plane crosses a cut steeply, the intersection line is drawn; where it lies within
:data:`FOOTPRINT_DEGREES` of the cut, that line would be long and misleading, so the slice
rectangle's footprint (its projection onto the cut) is drawn instead, dashed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from atom_bench._io import atomic_path
from atom_bench.core.labels import coarse_boundaries_vox
from atom_bench.core.tracks import SPLITS, TRACK_NAMES
from atom_bench.data.dataset import load_split, load_volume
from atom_bench.errors import DataError

# (fixed array axis, horizontal axis, vertical axis) of each orthogonal cut
_CUTS = (("axial", 2, 0, 1), ("coronal", 1, 0, 2), ("sagittal", 0, 1, 2))
_LOW_END, _HIGH_END = "LPI", "RAS"  # the letter at each end of array axes 0, 1, 2 (RAS+ cubes)
FOOTPRINT_DEGREES = 30.0  # a plane closer than this to a cut is drawn as its footprint
LITTLE_TISSUE = 0.1  # below this tissue fraction the picture says the slice is outside tissue


def parse_sample_id(sample_id: str) -> tuple[str, str]:
    """``(track, split)`` encoded in a sample id ``<track>-<split>-<volume_id>-<n>``."""
    parts = sample_id.split("-")
    if len(parts) < 4 or parts[0] not in TRACK_NAMES or parts[1] not in SPLITS:
        raise DataError(f"{sample_id!r} is not a sample id; expected <track>-<split>-<volume_id>-<n>, e.g. easy-train-colin27_t1-00000")
    return parts[0], parts[1]


def plane_trace(center: np.ndarray, u: np.ndarray, v: np.ndarray, half: tuple[float, float], axis: int) -> np.ndarray:
    """Points ``(N, 3)`` of the slice rectangle lying in the plane ``x[axis] == center[axis]``.

    When the slice is parallel to that plane the whole outline is returned instead.
    """
    half_v, half_u = half
    direction = u[axis] * v - v[axis] * u
    if np.linalg.norm(direction) < 1e-9:
        corners = [(-1, -1), (-1, 1), (1, 1), (1, -1), (-1, -1)]
        return np.array([center + a * half_v * v + b * half_u * u for a, b in corners])
    direction = direction / np.linalg.norm(direction)
    reach = np.hypot(half_v, half_u)
    points = center + np.linspace(-reach, reach, 201)[:, None] * direction
    rel = points - center
    inside = (np.abs(rel @ v) <= half_v + 1e-9) & (np.abs(rel @ u) <= half_u + 1e-9)
    return points[inside]


def plane_footprint(center: np.ndarray, u: np.ndarray, v: np.ndarray, half: tuple[float, float]) -> np.ndarray:
    """The slice rectangle's closed outline ``(5, 3)`` in voxels (drop an axis to project it)."""
    half_v, half_u = half
    corners = [(-1, -1), (-1, 1), (1, 1), (1, -1), (-1, -1)]
    return np.array([center + a * half_v * v + b * half_u * u for a, b in corners])


def near_in_plane(u: np.ndarray, v: np.ndarray, axis: int, degrees: float = FOOTPRINT_DEGREES) -> bool:
    """Whether the slice plane lies within ``degrees`` of the cut perpendicular to ``axis``."""
    normal = np.cross(u, v)
    return abs(normal[axis]) / np.linalg.norm(normal) >= np.cos(np.radians(degrees))


def _orientation_letters(ax, x_axis: int, y_axis: int) -> None:
    style = {"color": "yellow", "fontsize": 9, "fontweight": "bold", "transform": ax.transAxes}
    ax.text(0.02, 0.5, _LOW_END[x_axis], ha="left", va="center", **style)
    ax.text(0.98, 0.5, _HIGH_END[x_axis], ha="right", va="center", **style)
    ax.text(0.5, 0.02, _LOW_END[y_axis], ha="center", va="bottom", **style)
    ax.text(0.5, 0.98, _HIGH_END[y_axis], ha="center", va="top", **style)


def render_sample(sample_id: str, out: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Path:
    """Write a PNG of a sample: its slice and three cuts of its volume through the slice centre."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    track, split = parse_sample_id(sample_id)
    data = load_split(track, split, root)
    ids = data["sample_id"]
    if sample_id not in ids:
        raise DataError(f"sample {sample_id!r} is not in {track}/{split}; list ids with load_split({track!r}, {split!r})['sample_id']")
    row = data.with_format("numpy")[ids.index(sample_id)]
    if "center_vox" not in row:
        raise DataError(f"the labels of {track}/{split} are withheld, so the pose of {sample_id!r} cannot be drawn")
    volume = load_volume(str(row["volume_id"]), track, root)
    center, u, v = (np.asarray(row[k], dtype=float) for k in ("center_vox", "u", "v"))
    h, w = np.asarray(row["slice"]).shape
    half = ((h - 1) / 2 * float(row["pixel_spacing"]), (w - 1) / 2 * float(row["pixel_spacing"]))
    fixed = np.clip(np.rint(center).astype(int), 0, volume.size - 1)

    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6), constrained_layout=True)
    axes[0].imshow(np.asarray(row["slice"]), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"slice {h}x{w} ({row['view']})")
    tissue = float(row["tissue_fraction"])
    if tissue < LITTLE_TISSUE:
        axes[0].set_title(f"slice {h}x{w} ({row['view']}): outside tissue ({100 * tissue:.0f}% tissue)", color="tab:red", fontsize=9)
    else:
        axes[0].set_title(f"slice {h}x{w} ({row['view']}), {100 * tissue:.0f}% tissue", fontsize=9)
    for ax, (name, axis, x_axis, y_axis) in zip(axes[1:], _CUTS, strict=True):
        cut = np.take(volume.data, fixed[axis], axis=axis)
        ax.imshow(cut.T, cmap="gray", origin="lower", vmin=0, vmax=1)
        for edge in coarse_boundaries_vox(volume.size):
            ax.axvline(edge, color="tab:cyan", lw=0.6, alpha=0.7)
            ax.axhline(edge, color="tab:cyan", lw=0.6, alpha=0.7)
        if near_in_plane(u, v, axis):
            outline = plane_footprint(center, u, v, half)
            ax.plot(outline[:, x_axis], outline[:, y_axis], color="tab:orange", lw=1.5, ls="--")
            label = "footprint"
        else:
            trace = plane_trace(center, u, v, half, axis)
            ax.plot(trace[:, x_axis], trace[:, y_axis], color="tab:orange", lw=2)
            label = "intersection"
        ax.plot(center[x_axis], center[y_axis], "+", color="tab:red", ms=10)
        _orientation_letters(ax, x_axis, y_axis)
        ax.set_title(f"{name} cut at {'ijk'[axis]}={fixed[axis]} (plane: {label})", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"{sample_id}  volume {row['volume_id']} ({row['modality']})  high {row['high_label']}  low {row['low_label']}  "
        f"(cyan: coarse block grid)  "
        "centre (" + ", ".join(f"{x:.1f}" for x in np.asarray(row["center_mm"])) + ") mm",
        fontsize=9,
    )
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out


def render_synthetic_subjects(
    out: str | os.PathLike[str], track: str = "hard", source_id: str | None = None, count: int = 4, seed: int = 0,
    root: str | os.PathLike[str] | None = None,
) -> Path:  # fmt: skip
    """Write a PNG of ``count`` synthetic subjects beside the training volume they come from.

    One row per volume (the real one first), central cuts in three views (RAS letters as in
    :func:`render_sample`), and a last column with a second, independent contrast of the same
    subject (what a histology slice is cut from). Subject ``k`` is drawn with seed
    ``seed * 1000 + k`` (:func:`atom_bench.models.synthetic.synthesize`), without cube symmetry,
    so the deformation can be compared with the source.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from atom_bench.models.synthetic import SyntheticSource, synthesize

    source = SyntheticSource(track, root, seed=seed, batch_size=1, augment=False)
    source_id = source_id if source_id is not None else next(iter(source.volumes))
    if source_id not in source.volumes:
        raise DataError(f"{source_id!r} is not a training volume of {track}; choose one of {', '.join(source.volumes)}")
    real = source.volumes[source_id]
    rows = [(f"real {source_id}", real.data, None)]
    for k in range(count):
        images, _ = synthesize(source.labels[source_id], seed * 1000 + k, source.settings, contrasts=2)
        rows.append((f"synthetic, seed {seed * 1000 + k}", images[0], images[1]))
    middle = real.size // 2
    fig, axes = plt.subplots(len(rows), 4, figsize=(9, 2.3 * len(rows)), constrained_layout=True)
    for (title, data, second), row_axes in zip(rows, axes, strict=True):
        for ax, (name, axis, x_axis, y_axis) in zip(row_axes, _CUTS, strict=False):
            ax.imshow(np.take(data, middle, axis=axis).T, cmap="gray", origin="lower", vmin=0, vmax=1)
            _orientation_letters(ax, x_axis, y_axis)
            ax.set_title(f"{title}: {name}" if name == "axial" else name, fontsize=8)
        if second is not None:
            row_axes[3].imshow(np.take(second, middle, axis=2).T, cmap="gray", origin="lower", vmin=0, vmax=1)
            row_axes[3].set_title("axial, 2nd contrast (histology slice)", fontsize=8)
        for ax in row_axes:
            ax.set_xticks([])
            ax.set_yticks([])
        if second is None:
            row_axes[3].axis("off")
    fig.suptitle(f"{track}: synthetic training subjects from {source_id} (central cuts, S = {real.size})", fontsize=10)
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out
