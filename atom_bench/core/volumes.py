"""Volume pipeline (PROTOCOL section 2): read, reorient, resample, pad, normalise, quantise, mask.

Conventions used throughout:

* Array axes are canonical RAS+ after :func:`to_cube`: axis 0 points to +x (Right),
  axis 1 to +y (Anterior), axis 2 to +z (Superior) of the scanner world frame.
* Positions in *voxels* index array axes (voxel centres at integers); positions in
  *mm* are scanner-world RAS+ millimetres. An affine ``A`` maps ``(i, j, k, 1)`` voxels to mm.
* Every function is pure and deterministic: the same input gives the same bytes.
"""

from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.spatialimages import SpatialImage
from scipy import ndimage

from atom_bench.errors import VolumeError

MIN_AXIS_VOXELS = 9  # the fine block grid is 9 x 9 x 9
MIN_SIZE, MAX_SIZE = 16, 256
#: Largest 3D volume (or 4D frame) read, in voxels: 512^3, 512 MiB as float32. Checked against the
#: header before any voxel is read, so a small file cannot make the reader allocate gigabytes.
MAX_VOXELS = 512**3
_TRAILING_SLACK = 16 << 20  # MGH tags and the like may follow the voxel data
QUANT_LEVELS = 65535

__all__ = ["Volume", "foreground_mask", "image_from_array", "load_image", "normalise_intensity", "otsu_threshold",
           "prepare_image", "prepare_volume", "quantise", "to_cube"]


@dataclass(frozen=True)
class Volume:
    """A prepared cube: intensities, foreground mask and the cube-voxel -> mm affine."""

    volume_id: str
    data: np.ndarray  # float32 (S, S, S), multiples of 1/65535 in [0, 1], RAS axis order
    mask: np.ndarray  # bool (S, S, S), foreground
    affine: np.ndarray  # float64 (4, 4): cube voxel (i, j, k, 1) -> scanner-world mm (RAS+)
    source_path: str

    @property
    def size(self) -> int:
        """Cube side ``S`` in voxels."""
        return int(self.data.shape[0])

    @property
    def spacing_mm(self) -> float:
        """Isotropic cube voxel size in mm (norm of an affine column)."""
        return float(np.linalg.norm(self.affine[:3, 0]))


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text[:120]}"


def load_image(path: str | os.PathLike[str], frame: int | None = None) -> SpatialImage:
    """Read a volume with nibabel and validate it; return a 3D float32 ``Nifti1Image``.

    ``frame`` selects one volume of a 4D image (0-based). The affine and the voxel
    order are those of the file (not yet reoriented). Raises :class:`VolumeError`
    (one line naming the file) for every input PROTOCOL section 2 rejects.
    """
    name = str(path)
    if not Path(name).is_file():
        what = "is a directory" if Path(name).is_dir() else "file not found"
        raise VolumeError(f"{name}: {what}; pass the path of a volume file")
    try:
        img = nib.load(name)  # the header only: voxels are read below, after the checks
        shape = tuple(int(n) for n in img.shape)
        _check_declared_size(name, img, shape)
        extra = shape[3:]
        if len(shape) < 3:
            raise VolumeError(f"{name}: image is {len(shape)}D with shape {shape}; pass a 3D volume")
        if len(extra) > 1 and int(np.prod(extra)) > 1:
            raise VolumeError(f"{name}: image has shape {shape}; pass a 3D volume or a 4D series")
        n_frames = int(np.prod(extra)) if extra else 1
        hint = f"pass frame=N (0..{n_frames - 1})"
        if n_frames > 1 and frame is None:
            raise VolumeError(f"{name}: 4D image with {n_frames} frames; {hint}", parameters=("frame",))
        if frame is not None and not (0 <= int(frame) < n_frames):
            raise VolumeError(f"{name}: frame {frame} out of range; {hint}", parameters=("frame",))
        proxy = img.dataobj
        index = (slice(None),) * 3 + (int(frame or 0),) * len(extra)
        data = np.asarray(proxy[index] if extra else proxy, dtype=np.float32)
        affine = np.asarray(img.affine, dtype=np.float64)
    except VolumeError:
        raise
    except Exception as exc:  # nibabel raises many types for broken files
        raise VolumeError(
            f"{name}: cannot read as an image ({_short(exc)}); check that the file is a "
            "complete NIfTI-1/2, .nii.gz or MGH/MGZ volume"
        ) from exc
    return image_from_array(data, affine, name)


def image_from_array(data: np.ndarray, affine: np.ndarray, name: str) -> SpatialImage:
    """Validate an in-memory 3D volume as :func:`load_image` validates a file's; return a float32
    ``Nifti1Image``.

    ``affine`` maps voxels to scanner mm (``np.eye(4)``: 1 mm isotropic, array axes RAS);
    ``name`` starts every error message. This is the hook for volumes that are not files, such
    as the entries of a MedMNIST3D ``.npz`` (:mod:`atom_bench.data.medmnist`).
    """
    data = np.asarray(data, dtype=np.float32)
    affine = np.asarray(affine, dtype=np.float64)
    shape = tuple(int(n) for n in data.shape)
    if len(shape) != 3:
        raise VolumeError(f"{name}: array has shape {shape}; pass a 3D volume")
    if not np.isfinite(data).all():
        bad = int(data.size - np.isfinite(data).sum())
        raise VolumeError(f"{name}: {bad} NaN/Inf voxels; replace them (e.g. with 0) first")
    if data.min() == data.max():
        raise VolumeError(f"{name}: image is constant ({data.min():g}); pass a non-empty volume")
    if min(shape) < MIN_AXIS_VOXELS:
        raise VolumeError(
            f"{name}: shape {shape} has fewer than {MIN_AXIS_VOXELS} voxels along an axis; "
            "pass a larger volume"
        )
    if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise VolumeError(f"{name}: the affine is singular or not finite; fix the header")
    return nib.Nifti1Image(data, affine)


def _check_declared_size(name: str, img: SpatialImage, shape: tuple[int, ...]) -> None:
    """Refuse a header that declares more voxels than :data:`MAX_VOXELS` per frame, or more
    data than the file holds, before anything is allocated.

    For ``.gz`` / ``.mgz`` the stream is decompressed in 4 MiB pieces and counted (this also
    checks the gzip CRC), stopping as soon as it is longer than the header allows.
    """
    frame_voxels = int(np.prod(shape[:3], dtype=object))
    if frame_voxels > MAX_VOXELS:
        raise VolumeError(
            f"{name}: the header declares {' x '.join(map(str, shape[:3]))} = {frame_voxels:,} voxels per volume, "
            f"more than the limit of {MAX_VOXELS:,} (512^3); downsample the scan first"
        )
    proxy = img.dataobj
    needed = int(getattr(proxy, "offset", 0)) + int(np.prod(shape, dtype=object)) * np.dtype(proxy.dtype).itemsize
    if name.lower().endswith((".gz", ".mgz")):
        held = 0
        with gzip.open(name, "rb") as stream:
            while piece := stream.read(1 << 22):
                held += len(piece)
                if held > needed + _TRAILING_SLACK:
                    raise VolumeError(f"{name}: the file holds more data than its header declares ({needed:,} bytes); check the file")
    else:
        held = os.path.getsize(name)
    if held < needed:
        raise VolumeError(
            f"{name}: the header declares {needed:,} bytes of image data but the file holds {held:,}; "
            "the file is truncated or its header is wrong"
        )


def _check_size(size: int, where: str = "size") -> int:
    is_int = isinstance(size, (int, np.integer)) and not isinstance(size, bool)
    if not is_int or not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise VolumeError(f"{where}: size must be an integer in {MIN_SIZE}..{MAX_SIZE}, got {size!r}")
    return int(size)


def to_cube(image: SpatialImage, size: int = 64, order: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Reorient to RAS+, anti-alias, resample isotropically and zero-pad to ``size``^3.

    The cube voxel size is ``max(shape * zooms) / size`` mm, so the largest physical
    extent spans exactly ``size`` voxels; shorter axes span ``round(extent / spacing)``
    voxels, centred, with the extra padding voxel at the high end. Before resampling,
    intensities are shifted so that the image minimum is 0 (padding then equals the
    darkest value) and axes shrunk by ``factor > 1`` are Gaussian-filtered with sigma
    ``0.5 * (factor - 1)`` source voxels. ``order`` is the spline order (1 linear,
    3 cubic); cubic overshoot below 0 is clipped. Returns ``(cube, affine)``: the cube
    is float32, not normalised; the affine maps cube voxels to scanner mm exactly.
    """
    size = _check_size(size)
    if isinstance(order, bool) or order not in range(6):
        raise VolumeError(f"order: spline order must be an integer in 0..5 (1 linear, 3 cubic), got {order!r}")
    canon = nib.as_closest_canonical(image)
    data = np.asarray(canon.dataobj, dtype=np.float64)
    data = data - data.min()
    src_affine = np.asarray(canon.affine, dtype=np.float64)
    n_src = np.array(data.shape, dtype=np.float64)
    zooms = np.linalg.norm(src_affine[:3, :3], axis=0)  # mm per source voxel, per axis
    extent = n_src * zooms
    spacing = float(extent.max()) / size
    factor = spacing / zooms  # source voxels per cube voxel
    n_out = np.clip(np.rint(extent / spacing), 1, size).astype(int)
    n_out[int(np.argmax(extent))] = size
    sigma = np.where(factor > 1.0, 0.5 * (factor - 1.0), 0.0)
    if sigma.any():
        data = ndimage.gaussian_filter(data, sigma, mode="nearest")
    pad_lo = (size - n_out) // 2
    # cube index i -> source index x = c_src + (i - pad_lo - c_out) * factor (centres aligned)
    offset = (n_src - 1) / 2 - ((n_out - 1) / 2) * factor
    sub = ndimage.affine_transform(
        data, factor, offset=offset, output_shape=tuple(n_out), order=order, mode="nearest"
    )
    cube = np.zeros((size, size, size), dtype=np.float32)
    cube[tuple(slice(lo, lo + n) for lo, n in zip(pad_lo, n_out))] = np.maximum(sub, 0.0)
    to_src = np.eye(4)
    to_src[:3, :3] = np.diag(factor)
    to_src[:3, 3] = offset - pad_lo * factor
    return cube, src_affine @ to_src


def normalise_intensity(cube: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Clip to the ``low_pct``/``high_pct`` percentiles of the foreground and map to [0, 1].

    Foreground here is every voxel above the cube minimum (nonzero voxels of a
    :func:`to_cube` output, whose minimum is 0); voxels at the minimum (padding)
    map to 0. Returns float32.
    """
    cube = np.asarray(cube, dtype=np.float64)
    base = cube.min()
    fg = cube > base
    out = np.zeros(cube.shape, dtype=np.float64)
    if fg.any():
        lo, hi = np.percentile(cube[fg], [low_pct, high_pct])
        if hi > lo:
            out = np.clip((cube - lo) / (hi - lo), 0.0, 1.0)
        else:
            out = (cube >= hi).astype(np.float64)
        out[~fg] = 0.0
    return out.astype(np.float32)


def quantise(cube: np.ndarray) -> np.ndarray:
    """Round values in [0, 1] to multiples of 1/65535 (lossless as ``uint16``); float32."""
    levels = np.rint(np.clip(np.asarray(cube, dtype=np.float64), 0.0, 1.0) * QUANT_LEVELS)
    return levels.astype(np.uint16).astype(np.float32) / np.float32(QUANT_LEVELS)


def otsu_threshold(values: np.ndarray, nbins: int = 256) -> float:
    """Otsu's threshold: the histogram bin centre maximising between-class variance."""
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        return lo
    counts, edges = np.histogram(values, bins=nbins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)[:-1].astype(np.float64)
    w1 = np.cumsum(counts[::-1])[::-1][1:].astype(np.float64)
    m0 = np.cumsum(counts * centres)[:-1] / np.maximum(w0, 1)
    m1 = np.cumsum((counts * centres)[::-1])[::-1][1:] / np.maximum(w1, 1)
    return float(centres[int(np.argmax(w0 * w1 * (m0 - m1) ** 2))])


def foreground_mask(cube: np.ndarray, min_fraction: float = 1e-3) -> np.ndarray:
    """Voxels above the Otsu threshold, holes filled, specks removed; bool array.

    A speck is a 26-connected component smaller than ``min_fraction`` of the cube
    (the largest component is always kept).
    """
    cube = np.asarray(cube)
    if cube.min() == cube.max():
        return np.zeros(cube.shape, dtype=bool)
    mask = ndimage.binary_fill_holes(cube > otsu_threshold(cube))
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        keep = sizes >= max(1.0, min_fraction * cube.size)
        keep[int(np.argmax(sizes))] = True
        mask = np.concatenate([[False], keep])[labels]
    return np.asarray(mask, dtype=bool)


def _default_id(path: str) -> str:
    stem = re.sub(r"(\.nii\.gz|\.nii|\.mgz|\.mgh|\.gz)$", "", Path(path).name, flags=re.I)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "volume"


def prepare_volume(
    path: str | os.PathLike[str],
    size: int = 64,
    frame: int | None = None,
    order: int = 1,
    volume_id: str | None = None,
) -> Volume:
    """Run the whole PROTOCOL section 2 pipeline on one file and return a :class:`Volume`."""
    name = str(path)
    _check_size(size, name)
    return prepare_image(load_image(name, frame=frame), size, order=order, volume_id=volume_id or _default_id(name), source_path=name)


def prepare_image(image: SpatialImage, size: int, order: int, volume_id: str, source_path: str) -> Volume:
    """The pipeline of :func:`prepare_volume` from step 2 on, for an image already read and
    validated (:func:`load_image`, or :func:`image_from_array` for an in-memory volume)."""
    _check_size(size, source_path)
    cube, affine = to_cube(image, size=size, order=order)
    data = quantise(normalise_intensity(cube))
    return Volume(
        volume_id=volume_id,
        data=data,
        mask=foreground_mask(data),
        affine=affine,
        source_path=source_path,
    )
