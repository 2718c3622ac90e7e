"""The legacy VTK reader of scripts/fetch_atom_mini_sources.py (the mayavi heart CT): axis order,
spacing and origin in the affine, and the shipped volume reproduced from a VTK file."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
SOURCES = REPO / "atom_bench" / "data" / "sources"
PROVENANCE = json.loads((SOURCES / "PROVENANCE.json").read_text(encoding="utf-8"))["volumes"]


def _load_script():
    spec = importlib.util.spec_from_file_location("fetch_atom_mini_sources", REPO / "scripts" / "fetch_atom_mini_sources.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


fetch = _load_script()


def write_vtk(path: Path, data: np.ndarray, spacing, origin, title: str = "test volume") -> None:
    """A legacy ASCII VTK STRUCTURED_POINTS file laid out as mayavi's heart.vtk (x fastest)."""
    nx, ny, nz = data.shape
    values = data.transpose(2, 1, 0).ravel()
    body = "\n".join(" ".join(f"{v:5g}" for v in values[i : i + 16]) for i in range(0, values.size, 16))
    path.write_text(
        f"# vtk DataFile Version 2.0\n{title}\nASCII\n\nDATASET STRUCTURED_POINTS\n"
        f"DIMENSIONS {nx} {ny} {nz}\nORIGIN {origin[0]:.3f} {origin[1]:.3f} {origin[2]:.3f}\n"
        f"SPACING {spacing[0]:.3f} {spacing[1]:.3f} {spacing[2]:.3f}\n\nPOINT_DATA {values.size}\n"
        f"SCALARS scalars float\nLOOKUP_TABLE default\n{body}\n",
        encoding="ascii",
    )


def test_the_shipped_heart_is_reproduced_from_its_vtk_layout(tmp_path):
    entry = PROVENANCE["mayavi_heart_ct"]
    shipped = nib.load(str(SOURCES / entry["shipped_file"]))
    data = np.asarray(shipped.dataobj)
    assert data.shape == (32, 32, 12) and entry["shipped_zooms_mm"] == [1.0, 1.0, 4.0]
    write_vtk(tmp_path / "heart.vtk", data, (1, 1, 4), (0, 0, 0), "CT scan data of human heart")
    img = fetch.read_vtk_structured_points(tmp_path / "heart.vtk")
    assert np.array_equal(np.asarray(img.dataobj), data)
    assert np.array_equal(img.affine, np.diag([1.0, 1.0, 4.0, 1.0]))
    source = next(s for s in fetch.SOURCES if s.volume_id == "mayavi_heart_ct")
    payload, steps = fetch.convert(source, tmp_path / "heart.vtk")
    assert fetch.sha256_bytes(payload) == entry["shipped_sha256"]  # the committed bytes, from the VTK values
    assert steps == entry["conversion"]


@given(
    shape=st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5)),
    spacing=st.tuples(*[st.sampled_from([0.5, 1.0, 1.5, 4.0])] * 3),
    origin=st.tuples(*[st.integers(-50, 50)] * 3),
    seed=st.integers(0, 2**16),
)
def test_vtk_points_run_x_fastest_and_the_affine_holds_spacing_and_origin(tmp_path_factory, shape, spacing, origin, seed):
    data = np.random.default_rng(seed).integers(0, 256, size=shape).astype(np.float64)
    path = tmp_path_factory.mktemp("vtk") / "v.vtk"
    write_vtk(path, data, spacing, origin)
    img = fetch.read_vtk_structured_points(path)
    assert np.array_equal(np.asarray(img.dataobj), data)
    # voxel (i, j, k) sits at origin + (i, j, k) * spacing mm, axes taken as RAS
    corner = np.array([shape[0] - 1, shape[1] - 1, shape[2] - 1, 1.0])
    assert np.allclose(img.affine @ corner, [*(np.array(origin) + (corner[:3] * spacing)), 1.0])
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("ASCII", "BINARY"), "not a legacy ASCII VTK file"),
        (lambda t: t.replace("STRUCTURED_POINTS", "POLYDATA"), "expected STRUCTURED_POINTS"),
        (lambda t: t.replace("SCALARS scalars float", "SCALARS scalars float 3"), "one scalar per point"),
        (lambda t: t.replace("DIMENSIONS 3 3 3", "DIMENSIONS 3 3 4"), "27 values for DIMENSIONS"),
    ],
)
def test_vtk_files_the_reader_does_not_handle_are_refused(tmp_path, edit, message):
    path = tmp_path / "v.vtk"
    write_vtk(path, np.arange(27, dtype=np.float64).reshape(3, 3, 3), (1, 1, 1), (0, 0, 0))
    path.write_text(edit(path.read_text(encoding="ascii")), encoding="ascii")
    with pytest.raises(SystemExit, match=message):
        fetch.read_vtk_structured_points(path)
