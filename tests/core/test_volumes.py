"""Tests for atom_bench.core.volumes (PROTOCOL section 2), on real nibabel fixtures and synthetic grids."""

from __future__ import annotations

import gzip
import importlib.resources
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from atom_bench.core.volumes import (
    Volume,
    foreground_mask,
    load_image,
    normalise_intensity,
    otsu_threshold,
    prepare_volume,
    quantise,
    to_cube,
)
from atom_bench.errors import VolumeError

NIB_DATA = Path(str(importlib.resources.files("nibabel") / "tests" / "data"))
ANAT = NIB_DATA / "anatomical.nii"  # real T1, 33x41x25 @ 2 mm, LAS, big-endian int16
EX4D = NIB_DATA / "example4d.nii.gz"  # real EPI, 128x96x24x2, oblique affine
FUNC = NIB_DATA / "functional.nii"  # 17x21x3x20
STANDARD = NIB_DATA / "standard.nii.gz"  # 4x5x7


def _save(img: nib.spatialimages.SpatialImage, path: Path) -> Path:
    nib.save(img, str(path))
    return path


def _anat_with(tmp_path: Path, data: np.ndarray, name: str = "x.nii") -> Path:
    img = nib.load(str(ANAT))
    return _save(nib.Nifti1Image(data, img.affine), tmp_path / name)


def _raises_one_line(path: Path, match: str, **kwargs) -> str:
    with pytest.raises(VolumeError, match=match) as info:
        prepare_volume(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


# ---------------------------------------------------------------- real files, formats


def test_prepare_real_t1() -> None:
    vol = prepare_volume(ANAT, size=64)
    assert isinstance(vol, Volume) and vol.volume_id == "anatomical" and vol.size == 64
    assert vol.data.shape == vol.mask.shape == (64, 64, 64)
    assert vol.data.dtype == np.float32 and vol.mask.dtype == bool and vol.affine.dtype == np.float64
    assert 0.0 <= vol.data.min() and vol.data.max() == 1.0
    levels = np.rint(vol.data.astype(np.float64) * 65535).astype(np.uint16)
    assert np.array_equal(levels.astype(np.float32) / np.float32(65535), vol.data)  # lossless uint16
    assert vol.spacing_mm == pytest.approx(41 * 2.0 / 64)  # largest extent: 41 voxels x 2 mm
    assert 0.2 < vol.mask.mean() < 0.7
    assert np.all(np.diag(vol.affine)[:3] > 0)  # canonical RAS: LAS source flipped


def test_deterministic_bytes() -> None:
    a = prepare_volume(EX4D, size=48, frame=1, order=3)
    b = prepare_volume(EX4D, size=48, frame=1, order=3)
    assert a.data.tobytes() == b.data.tobytes() and a.mask.tobytes() == b.mask.tobytes()
    assert a.affine.tobytes() == b.affine.tobytes()


def test_frames_of_4d_gz_differ() -> None:
    f0 = prepare_volume(EX4D, size=32, frame=0)
    f1 = prepare_volume(EX4D, size=32, frame=1)
    assert not np.array_equal(f0.data, f1.data)
    assert np.array_equal(f0.affine, f1.affine)


@pytest.mark.parametrize("kind", ["nifti2", "mgz", "nii.gz"])
def test_other_formats_match_nifti1(tmp_path: Path, kind: str) -> None:
    img = nib.load(str(ANAT))
    data = np.asarray(img.dataobj).astype(np.int16)
    if kind == "nifti2":
        path = _save(nib.Nifti2Image(data, img.affine), tmp_path / "anat2.nii")
        assert isinstance(nib.load(str(path)), nib.Nifti2Image)
    elif kind == "mgz":
        path = _save(nib.MGHImage(data, img.affine), tmp_path / "anat.mgz")
        assert isinstance(nib.load(str(path)), nib.MGHImage)
    else:
        path = _save(nib.Nifti1Image(data, img.affine), tmp_path / "anat.nii.gz")
    ref = prepare_volume(ANAT, size=32)
    got = prepare_volume(path, size=32)
    assert got.volume_id == path.name.split(".")[0]
    np.testing.assert_allclose(got.affine, ref.affine, atol=1e-4)
    np.testing.assert_allclose(got.data, ref.data, atol=1e-4)


def test_single_frame_4d_is_3d(tmp_path: Path) -> None:
    img = nib.load(str(EX4D))
    one = np.asarray(img.dataobj[..., :1])
    path = _save(nib.Nifti1Image(one, img.affine), tmp_path / "one.nii.gz")
    assert nib.load(str(path)).shape == (128, 96, 24, 1)
    assert load_image(path).shape == (128, 96, 24)
    np.testing.assert_array_equal(prepare_volume(path, 32).data, prepare_volume(EX4D, 32, frame=0).data)


# ---------------------------------------------------------------- rejected inputs


def test_missing_file(tmp_path: Path) -> None:
    _raises_one_line(tmp_path / "nope.nii.gz", "file not found")


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.nii"
    path.write_text("this is not a volume\n" * 50)
    _raises_one_line(path, "cannot read")


@pytest.mark.parametrize("keep", [0.5, 0.9, 200])
def test_truncated_nii(tmp_path: Path, keep: float) -> None:
    raw = ANAT.read_bytes()
    cut = int(keep) if keep > 1 else int(len(raw) * keep)
    path = tmp_path / "cut.nii"
    path.write_bytes(raw[:cut])
    _raises_one_line(path, "cannot read|truncated")


def test_truncated_gz(tmp_path: Path) -> None:
    raw = EX4D.read_bytes()
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(raw[: len(raw) // 2])
    _raises_one_line(path, "cannot read", frame=0)


@pytest.mark.parametrize("where", [0.25, 0.75])
def test_corrupt_gz(tmp_path: Path, where: float) -> None:
    raw = bytearray(EX4D.read_bytes())
    at = int(len(raw) * where)
    raw[at : at + 64] = bytes(64)  # zero a run inside the deflate stream
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(bytes(raw))
    _raises_one_line(path, "cannot read", frame=0)


def test_gz_of_garbage(tmp_path: Path) -> None:
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(gzip.compress(b"\x00" * 1000, mtime=0))
    _raises_one_line(path, "cannot read")


def test_4d_needs_frame() -> None:
    msg = _raises_one_line(EX4D, "4D")
    assert "pass frame=N (0..1)" in msg


@pytest.mark.parametrize("frame", [2, -1, 99])
def test_frame_out_of_range(frame: int) -> None:
    _raises_one_line(EX4D, "out of range", frame=frame)


def test_frame_on_3d_out_of_range() -> None:
    _raises_one_line(ANAT, "out of range", frame=1)
    assert load_image(ANAT, frame=0).shape == (33, 41, 25)


def test_2d_image(tmp_path: Path) -> None:
    img = nib.load(str(ANAT))
    path = _save(nib.Nifti1Image(np.asarray(img.dataobj)[:, :, 12], img.affine), tmp_path / "s.nii")
    _raises_one_line(path, "2D")


def test_5d_image(tmp_path: Path) -> None:
    img = nib.load(str(EX4D))
    data = np.stack([np.asarray(img.dataobj)] * 2, axis=-1)
    _raises_one_line(_save(nib.Nifti1Image(data, img.affine), tmp_path / "5d.nii.gz"), "3D volume")


def test_too_few_voxels_real() -> None:
    _raises_one_line(FUNC, "fewer than 9", frame=0)  # only 3 slices
    _raises_one_line(STANDARD, "fewer than 9")  # 4x5x7


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite(tmp_path: Path, bad: float) -> None:
    data = np.asarray(nib.load(str(ANAT)).dataobj).astype(np.float32)
    data[16, 20, 12] = bad
    _raises_one_line(_anat_with(tmp_path, data), "NaN/Inf")


@pytest.mark.parametrize("value", [0, 7])
def test_constant(tmp_path: Path, value: int) -> None:
    data = np.full((33, 41, 25), value, dtype=np.int16)
    _raises_one_line(_anat_with(tmp_path, data), "constant")


@pytest.mark.parametrize("size", [15, 257, 0, 64.0, True, "64"])
def test_bad_size(size: object) -> None:
    _raises_one_line(ANAT, "size", size=size)


@pytest.mark.parametrize("order", [-1, 6, 1.5, True])
def test_bad_order(order: object) -> None:
    with pytest.raises(VolumeError, match="order"):
        prepare_volume(ANAT, size=16, order=order)


# ---------------------------------------------------------------- geometry


def _oblique_affine(zooms: tuple[float, float, float]) -> np.ndarray:
    """Permuted, flipped and slightly rotated voxel axes (an LPI-ish oblique scan)."""
    c, s = np.cos(0.2), np.sin(0.2)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    perm = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ perm @ np.diag(zooms)
    aff[:3, 3] = [12.0, -30.0, 7.5]
    return aff


@pytest.mark.parametrize("size", [16, 33, 64, 100])
def test_bright_blob_maps_back_to_its_mm(size: int) -> None:
    shape, zooms = (40, 30, 22), (1.5, 2.0, 3.0)
    aff = _oblique_affine(zooms)
    data = np.zeros(shape, dtype=np.float32)
    centre_vox = np.array([27.0, 9.0, 14.0])
    data[26:29, 8:11, 13:16] = 1000.0  # 3x3x3 blob centred on centre_vox
    target_mm = aff[:3, :3] @ centre_vox + aff[:3, 3]
    cube, cube_aff = to_cube(nib.Nifti1Image(data, aff), size=size)
    com = np.array(ndimage.center_of_mass(cube * (cube > 0.25 * cube.max())))
    got_mm = cube_aff[:3, :3] @ com + cube_aff[:3, 3]
    spacing = np.linalg.norm(cube_aff[:3, 0])
    assert spacing == pytest.approx(max(np.array(shape) * zooms) / size)
    assert np.linalg.norm(got_mm - target_mm) < 0.5 * spacing


def test_identity_resample_is_exact_copy() -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(1, 1000, size=(20, 30, 40)).astype(np.float32)
    cube, aff = to_cube(nib.Nifti1Image(data, np.eye(4)), size=40)
    inner = cube[10:30, 5:35, :]
    np.testing.assert_array_equal(inner, data - data.min())
    assert not cube[:10].any() and not cube[30:].any() and not cube[:, :5].any() and not cube[:, 35:].any()
    np.testing.assert_allclose(aff[:3, 3], [-10.0, -5.0, 0.0])  # cube voxel (10,5,0) is source voxel 0
    np.testing.assert_allclose(aff[:3, :3], np.eye(3))


def test_real_centre_of_mass_maps_back() -> None:
    img = load_image(ANAT)
    data = np.asarray(img.dataobj, dtype=np.float64)
    data -= data.min()
    com_vox = np.array(ndimage.center_of_mass(data))
    com_mm = img.affine[:3, :3] @ com_vox + img.affine[:3, 3]
    for size in (20, 64):
        cube, cube_aff = to_cube(img, size=size)
        cube_com = np.array(ndimage.center_of_mass(cube.astype(np.float64)))
        got = cube_aff[:3, :3] @ cube_com + cube_aff[:3, 3]
        assert np.linalg.norm(got - com_mm) < 0.5 * np.linalg.norm(cube_aff[:3, 0])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.tuples(*[st.integers(9, 24)] * 3),
    zooms=st.tuples(*[st.floats(0.5, 3.0)] * 3),
    size=st.integers(16, 48),
    order=st.sampled_from([1, 3]),
    seed=st.integers(0, 2**16),
)
def test_cube_properties(shape, zooms, size, order, seed) -> None:
    rng = np.random.default_rng(seed)
    data = rng.normal(100.0, 30.0, size=shape).astype(np.float32)
    aff = _oblique_affine(zooms)
    img = nib.Nifti1Image(data, aff)
    cube, cube_aff = to_cube(img, size=size, order=order)
    vol = quantise(normalise_intensity(cube))
    assert cube.shape == vol.shape == (size, size, size) and vol.dtype == np.float32
    assert vol.min() >= 0.0 and vol.max() <= 1.0 and cube.min() >= 0.0
    # cube voxels outside the source field of view are padding and stay exactly 0
    canon = nib.as_closest_canonical(img)
    to_src = np.linalg.inv(canon.affine) @ cube_aff
    ijk = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), -1).reshape(-1, 3)
    src = ijk @ to_src[:3, :3].T + to_src[:3, 3]
    outside = np.any((src < -0.5 - 1e-6) | (src > np.array(canon.shape) - 0.5 + 1e-6), axis=1)
    assert not vol.reshape(-1)[outside].any()
    # the cube centre lies inside the original field of view, and the voxel is isotropic
    centre = np.linalg.inv(aff) @ cube_aff @ np.array([(size - 1) / 2] * 3 + [1.0])
    assert np.all(centre[:3] >= -0.5) and np.all(centre[:3] <= np.array(shape) - 0.5)
    spacing = max(np.array(shape) * np.array(zooms)) / size
    np.testing.assert_allclose(np.linalg.norm(cube_aff[:3, :3], axis=0), spacing, rtol=1e-9)


# ---------------------------------------------------------------- intensity and mask


def test_normalise_robust_and_padding_zero() -> None:
    cube = np.zeros((20, 20, 20), dtype=np.float32)
    cube[5:15, 5:15, 5:15] = np.linspace(1.0, 100.0, 1000).reshape(10, 10, 10)
    cube[6, 6, 6] = 1e6  # outlier clipped by the 99.5th percentile
    out = normalise_intensity(cube)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    assert not out[:5].any() and not out[15:].any()
    assert (out[5:15, 5:15, 5:15] == 1.0).sum() >= 5
    assert normalise_intensity(np.zeros((4, 4, 4))).max() == 0.0


def test_quantise_levels() -> None:
    x = np.array([-0.2, 0.0, 0.5, 1.0 / 3.0, 1.0, 1.7])
    q = quantise(x)
    assert q.dtype == np.float32
    np.testing.assert_array_equal(q, np.array([0, 0, 32768, 21845, 65535, 65535], np.float32) / np.float32(65535))


def test_otsu_and_mask() -> None:
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(0.1, 0.02, 5000), rng.normal(0.7, 0.05, 5000)])
    threshold = otsu_threshold(values)
    assert 0.15 < threshold < 0.55 and abs(int((values > threshold).sum()) - 5000) <= 2
    cube = np.zeros((32, 32, 32), dtype=np.float32)
    zz, yy, xx = np.mgrid[:32, :32, :32]
    cube[(zz - 16) ** 2 + (yy - 16) ** 2 + (xx - 16) ** 2 < 100] = 0.8
    cube[14:18, 14:18, 14:18] = 0.0  # hole, filled
    cube[1, 1, 1] = 0.9  # speck, removed
    mask = foreground_mask(cube)
    assert mask.dtype == bool and mask[16, 16, 16] and not mask[1, 1, 1]
    assert mask.sum() == ((zz - 16) ** 2 + (yy - 16) ** 2 + (xx - 16) ** 2 < 100).sum()
    assert not foreground_mask(np.zeros((8, 8, 8))).any()


def _header_lies(path, shape):
    """A real header whose shape is edited to declare ``shape`` while the file keeps 8^3 voxels."""
    img = nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32), np.eye(4))
    img.header.set_data_shape(shape)
    raw = img.header.binaryblock + b"\0" * 4 + np.zeros(8**3, dtype=np.float32).tobytes()
    if str(path).endswith(".gz"):
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def test_a_header_declaring_too_many_voxels_is_refused_before_reading(tmp_path):
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(VolumeError, match=r"800 x 800 x 800 = 512,000,000 voxels per volume, more than the limit"):
        load_image(_header_lies(tmp_path / "bomb.nii.gz", (800, 800, 800)))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # kB: nothing near 2 GB was allocated


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_header_declaring_more_data_than_the_file_holds_is_refused(tmp_path, suffix):
    with pytest.raises(VolumeError, match="the header declares .* bytes of image data but the file holds"):
        load_image(_header_lies(tmp_path / f"short{suffix}", (64, 64, 64)))
