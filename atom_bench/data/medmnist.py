"""MedMNIST3D ``.npz`` files, the ATOM paper's data, as build input.

A MedMNIST3D file (``organmnist3d.npz`` at 28^3, ``organmnist3d_64.npz`` at 64^3, and likewise for
nodule, adrenal, fracture, vessel and synapse) holds the arrays ``train_images``, ``val_images``
and ``test_images``, each ``(N, X, Y, Z)`` (uint8, ``(N, 28, 28, 28)`` or ``(N, 64, 64, 64)``),
and ``*_labels`` (not used here). There is no affine and no patient id.

:func:`npz_sources` makes one :class:`~atom_bench.data.sources.VolumeSource` per array entry:

* ``path`` is the ``.npz``, ``array`` the key (``train_images``), ``frame`` the entry index;
* the group is the file's own split: ``train_images`` -> ``train``, ``val_images`` ->
  ``validation``, ``test_images`` -> ``unseen`` (so the official test volumes stay unseen);
* the volume id (also the subject: the files carry no patient id) is
  ``<file stem>-<train|val|test>-<index, 5 digits>``, e.g. ``organmnist3d_64-train-00012``;
* modality and licence come from the file name (:data:`MEDMNIST3D`);
* the voxel spacing is unknown: every entry is read as 1 mm isotropic with the array axes taken
  as RAS (identity affine). ``source`` says so for every volume, and the manifest records
  ``array`` and ``frame``.

:func:`prepare_npz_volume` then runs the same pipeline as for a NIfTI file
(:func:`atom_bench.core.volumes.prepare_image`): an entry gives the very cube that a NIfTI file
holding that entry with an identity affine gives.
"""

from __future__ import annotations

import functools
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from atom_bench.core.volumes import MAX_VOXELS, MIN_AXIS_VOXELS, Volume, image_from_array, prepare_image
from atom_bench.data.schema import VolumeSource
from atom_bench.errors import DataError, VolumeError

#: The arrays of a MedMNIST3D file, in the order read, with the group and id word of each.
SPLIT_ARRAYS: dict[str, tuple[str, str]] = {
    "train_images": ("train", "train"),
    "val_images": ("validation", "val"),
    "test_images": ("unseen", "test"),
}

#: What the file name tells (MedMNIST v3.0.2 ``medmnist/info.py``): the file stem's prefix ->
#: (dataset, modality, licence). The modality of a shape-mask set names the imaging the masks
#: were drawn on: AdrenalMNIST3D holds adrenal-gland masks annotated on abdominal CT,
#: VesselMNIST3D voxelised vessel meshes reconstructed from brain MR angiography (IntrA);
#: SynapseMNIST3D holds electron-microscopy intensities.
MEDMNIST3D: dict[str, tuple[str, str, str]] = {
    "organmnist3d": ("OrganMNIST3D", "CT", "CC BY 4.0"),
    "nodulemnist3d": ("NoduleMNIST3D", "CT", "CC BY 4.0"),
    "fracturemnist3d": ("FractureMNIST3D", "CT", "CC BY 4.0"),
    "adrenalmnist3d": ("AdrenalMNIST3D", "CT mask", "CC BY 4.0"),
    "vesselmnist3d": ("VesselMNIST3D", "MRA mask", "CC BY 4.0"),
    "synapsemnist3d": ("SynapseMNIST3D", "EM", "CC BY 4.0"),
}

SPACING_NOTE = "spacing unknown: 1 mm isotropic, RAS axes assumed"
_LAYOUT = "a MedMNIST3D .npz holds train_images, val_images and test_images of shape (N, 28, 28, 28) or (N, 64, 64, 64)"
_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def describe(path: str | os.PathLike[str]) -> tuple[str, str, str]:
    """``(dataset, modality, licence)`` of a MedMNIST3D file, from its name; unknown names give
    ``(<stem>, "unknown", "")``."""
    stem = _stem(Path(path))
    for prefix, info in MEDMNIST3D.items():
        if stem.lower().startswith(prefix):
            return info
    return stem, "unknown", ""


def _stem(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", path.name[: -len(".npz")] if path.name.lower().endswith(".npz") else path.stem)
    return stem.lstrip("_-")[:52] or "npz"  # ids stay within 64 characters and start with a letter or digit


def array_headers(path: str | os.PathLike[str]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of the three image arrays of ``path``, read from the ``.npy`` headers (no
    voxel is loaded), after checking every member's CRC.

    Raises:
        DataError: one line, when ``path`` is not an ``.npz``, is damaged, lacks an image array or
        holds one that is not a stack of 3D numeric volumes.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [key for key in SPLIT_ARRAYS if f"{key}.npy" not in names]
            if missing:
                have = ", ".join(sorted(n[:-4] for n in names if n.endswith(".npy"))) or "none"
                raise DataError(f"{path} lacks array(s) {', '.join(missing)} (it has: {have}); {_LAYOUT}")
            damaged = archive.testzip()
            if damaged is not None:
                raise DataError(f"{path} is damaged: member {damaged} fails its CRC check; download the file again")
            headers = {}
            for key in SPLIT_ARRAYS:
                with archive.open(f"{key}.npy") as member:
                    version = np.lib.format.read_magic(member)
                    if version not in _READERS:
                        raise DataError(f"{path}: {key} is a version {version[0]}.{version[1]} .npy; save it with numpy's np.savez")
                    shape, _, dtype = _READERS[version](member)
                headers[key] = (tuple(int(n) for n in shape), np.dtype(dtype))
    except DataError:
        raise
    except Exception as exc:  # zipfile, zlib and numpy raise many types for a broken archive
        raise DataError(f"{path} is not a readable .npz archive ({_short(exc)}); {_LAYOUT}") from None
    for key, (shape, dtype) in headers.items():
        if len(shape) != 4 or min(shape[1:]) < MIN_AXIS_VOXELS:
            raise DataError(f"{path}: {key} has shape {shape}; expected (N, X, Y, Z) volumes with X, Y, Z >= {MIN_AXIS_VOXELS}, e.g. (N, 28, 28, 28)")
        if int(np.prod(shape[1:], dtype=object)) > MAX_VOXELS:
            raise DataError(f"{path}: {key} has volumes of {' x '.join(map(str, shape[1:]))} voxels, more than the limit of 512^3")
        if dtype.kind not in "biuf":
            raise DataError(f"{path}: {key} has dtype {dtype}; expected numeric volumes (MedMNIST3D's are uint8)")
    return headers


def npz_sources(path: str | os.PathLike[str], frame: int | None = None) -> list[VolumeSource]:
    """One volume source per entry of the three image arrays of a MedMNIST3D ``.npz``, in file
    order (train, val, test), grouped by the file's split (see the module docstring).

    Raises:
        DataError: for a bad file (see :func:`array_headers`), an empty ``train_images``, or a
        ``frame`` (an ``.npz`` is not a 4D series: all its entries are used).
    """
    path = Path(path)
    if frame is not None:
        raise DataError(f"{path}: frame picks a volume of a 4D series; every entry of an .npz is its own volume, so leave frame out", parameters=("frame",))
    headers = array_headers(path)
    if headers["train_images"][0][0] == 0:
        raise DataError(f"{path}: train_images holds no volume; at least one training volume is needed")
    stem = _stem(path)
    dataset, modality, licence = describe(path)
    resolved = str(path.resolve())
    return [
        VolumeSource(
            path=resolved,
            volume_id=f"{stem}-{word}-{index:05d}",
            subject=f"{stem}-{word}-{index:05d}",
            modality=modality,
            group=group,
            source=f"medmnist:{path.name}:{key}[{index}] ({dataset}; {SPACING_NOTE})",
            licence=licence,
            frame=index,
            array=key,
        )
        for key, (group, word) in SPLIT_ARRAYS.items()
        for index in range(headers[key][0][0])
    ]


@functools.lru_cache(maxsize=1)
def _load_array(path: str, key: str, stamp: tuple[int, int]) -> np.ndarray:
    """The whole array ``key`` of ``path``, kept for the next entry: a build reads the entries of
    one array in order, and each read of an ``.npz`` member decompresses all of it."""
    with np.load(path, allow_pickle=False) as archive:
        return archive[key]


def npz_entry(path: str | os.PathLike[str], key: str, index: int) -> np.ndarray:
    """Entry ``index`` of array ``key`` of an ``.npz``: one 3D volume, as stored.

    Raises:
        VolumeError: one line, when the file cannot be read or has no such entry.
    """
    label = f"{path}::{key}[{index}]"
    try:
        status = os.stat(path)
        array = _load_array(str(path), key, (status.st_mtime_ns, status.st_size))
    except Exception as exc:
        raise VolumeError(f"{label}: cannot read the .npz ({_short(exc)}); download the file again") from None
    if not 0 <= index < array.shape[0]:
        raise VolumeError(f"{label}: {key} has {array.shape[0]} entries; the index is out of range (did the file change?)")
    return array[index]


def prepare_npz_volume(source: VolumeSource, size: int, order: int) -> Volume:
    """The prepared cube of an ``.npz`` entry (``source.array``, ``source.frame``), read as
    1 mm isotropic with RAS axes: the same pipeline as a NIfTI file's."""
    label = f"{source.path}::{source.array}[{source.frame}]"
    image = image_from_array(npz_entry(source.path, source.array, int(source.frame or 0)), np.eye(4), label)
    return prepare_image(image, size, order=order, volume_id=source.volume_id, source_path=label)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text[:120]}"
