"""MedMNIST3D ``.npz`` files as build input, on a small file in exactly MedMNIST's layout made from
real scans: crops of the embedded atom-mini sources, resampled to 28^3 and stored as uint8."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from atom_bench.cli import main
from atom_bench.core.tracks import SPLITS
from atom_bench.core.volumes import load_image, prepare_volume, to_cube
from atom_bench.data.benchmark import embedded_root
from atom_bench.data.build import PRESETS, BuildConfig, SplitCounts, build_benchmark
from atom_bench.data.dataset import load_manifest, load_split
from atom_bench.data.medmnist import describe, prepare_npz_volume
from atom_bench.data.schema import VolumeSource
from atom_bench.data.sources import read_volume_sources
from atom_bench.errors import DataError

SOURCES = embedded_root().parent / "sources"
#: (array, scan, crop) of each entry: three train, one val, two test volumes.
ENTRIES = [
    ("train", "promed_ct_head", None),
    ("train", "promed_ct_head", (slice(20, 110), slice(30, 130), slice(40, 108))),
    ("train", "example4d_epi", None),
    ("val", "aniso_dwi", None),
    ("test", "itk_t1", None),
    ("test", "ct_head_template", (slice(40, 160), slice(40, 160), slice(60, 179))),
]
TRAIN = [f"organmnist3d-train-{i:05d}" for i in range(3)]
VAL = ["organmnist3d-val-00000"]
TEST = [f"organmnist3d-test-{i:05d}" for i in range(2)]
COUNTS = SplitCounts(train=6, validation=4, test_seen=4, test_unseen=5)
CONFIG = BuildConfig(name="medmnist-small", tracks=("paper",), counts=COUNTS, seed=5)


def _entry(scan: str, crop, scratch: Path) -> np.ndarray:
    """A 28^3 uint8 volume, MedMNIST-style: a (cropped) real scan resampled and scaled to 0..255."""
    path = SOURCES / f"{scan}.nii.gz"
    if crop is not None:
        path = scratch / f"{scan}-crop.nii.gz"
        nib.save(nib.load(SOURCES / f"{scan}.nii.gz").slicer[crop], path)
    cube, _ = to_cube(load_image(path), size=28, order=1)
    return np.rint(255 * cube / cube.max()).astype(np.uint8)


@pytest.fixture(scope="module")
def arrays(tmp_path_factory) -> dict[str, np.ndarray]:
    scratch = tmp_path_factory.mktemp("crops")
    out = {}
    for split in ("train", "val", "test"):
        entries = [_entry(scan, crop, scratch) for s, scan, crop in ENTRIES if s == split]
        out[f"{split}_images"] = np.stack(entries)
        out[f"{split}_labels"] = np.arange(len(entries), dtype=np.uint8)[:, None]
    return out


@pytest.fixture(scope="module")
def npz(tmp_path_factory, arrays) -> Path:
    path = tmp_path_factory.mktemp("medmnist") / "organmnist3d.npz"
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture(scope="module")
def bench(tmp_path_factory, npz) -> Path:
    out = tmp_path_factory.mktemp("medmnist-bench") / "bench"
    build_benchmark(npz, out, CONFIG)
    return out


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_layout_is_medmnists(arrays):
    assert arrays["train_images"].shape == (3, 28, 28, 28) and arrays["train_images"].dtype == np.uint8
    assert arrays["val_images"].shape == (1, 28, 28, 28) and arrays["test_images"].shape == (2, 28, 28, 28)
    assert all(a.max() == 255 and a.min() == 0 for k, a in arrays.items() if k.endswith("_images"))


def test_sources_follow_the_files_own_split(npz):
    sources = read_volume_sources(npz)
    assert [s.volume_id for s in sources] == TRAIN + VAL + TEST
    assert [s.group for s in sources] == ["train"] * 3 + ["validation"] + ["unseen"] * 2
    assert [(s.array, s.frame) for s in sources] == [("train_images", 0), ("train_images", 1), ("train_images", 2),
                                                     ("val_images", 0), ("test_images", 0), ("test_images", 1)]  # fmt: skip
    assert all(s.subject == s.volume_id and s.path == str(npz.resolve()) for s in sources)
    assert {(s.modality, s.licence) for s in sources} == {("CT", "CC BY 4.0")}
    assert sources[4].source == "medmnist:organmnist3d.npz:test_images[0] (OrganMNIST3D; spacing unknown: 1 mm isotropic, RAS axes assumed)"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("organmnist3d_64.npz", ("OrganMNIST3D", "CT", "CC BY 4.0")),
        ("nodulemnist3d.npz", ("NoduleMNIST3D", "CT", "CC BY 4.0")),
        ("FractureMNIST3D_64.npz", ("FractureMNIST3D", "CT", "CC BY 4.0")),
        ("adrenalmnist3d.npz", ("AdrenalMNIST3D", "CT mask", "CC BY 4.0")),
        ("vesselmnist3d_64.npz", ("VesselMNIST3D", "MRA mask", "CC BY 4.0")),
        ("synapsemnist3d.npz", ("SynapseMNIST3D", "EM", "CC BY 4.0")),
        ("my scans.npz", ("my_scans", "unknown", "")),
    ],
)
def test_modality_and_licence_come_from_the_file_name(name, expected):
    assert describe(name) == expected


def test_the_build_keeps_the_files_groups_and_its_test_volumes_unseen(bench, npz):
    manifest = load_manifest(bench)
    assert {v["volume_id"]: v["group"] for v in manifest["volumes"]} == {
        **{v: "train" for v in TRAIN}, **{v: "validation" for v in VAL}, **{v: "unseen" for v in TEST}}  # fmt: skip
    assert not manifest["build"]["validation_from_train"]
    ids = {split: set(load_split("paper", split, bench)["volume_id"]) for split in SPLITS}
    assert ids == {"train": set(TRAIN), "validation": set(VAL), "test_seen": set(TRAIN), "test_unseen": set(TEST)}
    splits = manifest["tracks"]["paper"]["splits"]
    assert [splits[s]["num_samples"] for s in SPLITS] == [3 * 6, 1 * 4, 3 * 4, 2 * 5]
    assert load_split("paper", "test_unseen", bench)["sample_id"][0] == "paper-test_unseen-organmnist3d-test-00000-00000"


def test_the_manifest_records_the_entry_and_the_spacing_assumption(bench, npz):
    entry = load_manifest(bench)["volumes"][5]
    assert entry["path"] == "organmnist3d.npz" and entry["array"] == "test_images" and entry["frame"] == 1
    assert entry["sha256"] == hashlib.sha256(npz.read_bytes()).hexdigest()
    assert "1 mm isotropic, RAS axes assumed" in entry["source"]
    table = load_manifest(bench)["volume_tables"]
    assert list(table) == ["s20_cubic"]  # the paper track's 20^3 cube, cubic resampling


def test_two_builds_give_identical_bytes_whatever_the_worker_count(tmp_path, bench, npz):
    build_benchmark(npz, tmp_path / "again", CONFIG, workers=2)
    assert _tree_bytes(tmp_path / "again") == _tree_bytes(bench)


def test_an_entry_is_prepared_like_a_nifti_holding_it(tmp_path, npz, arrays):
    source = read_volume_sources(npz)[5]
    nifti = tmp_path / "entry.nii.gz"
    nib.save(nib.Nifti1Image(arrays["test_images"][1], np.eye(4)), nifti)
    for size, order in ((20, 3), (32, 1)):
        a, b = prepare_npz_volume(source, size, order), prepare_volume(nifti, size, order=order)
        assert np.array_equal(a.data, b.data) and np.array_equal(a.mask, b.mask) and np.array_equal(a.affine, b.affine)
    assert a.spacing_mm == pytest.approx(28 / 32)


def test_a_scan_source_keeps_the_manifest_entry_it_always_had():
    scan = VolumeSource(path="a.nii.gz", volume_id="a", subject="a", modality="T1", group="train")
    assert list(scan.record()) == ["path", "volume_id", "subject", "modality", "group", "source", "licence", "frame"]


def test_the_paper_medmnist_preset_builds_the_released_counts(tmp_path, npz, capsys):
    assert PRESETS["paper-medmnist"] == SplitCounts(train=152, validation=152, test_seen=168, test_unseen=168)
    out = tmp_path / "paper-medmnist"
    assert main(["build", "--volumes", str(npz), "--out", str(out), "--preset", "paper-medmnist", "--track", "paper"]) == 0
    splits = load_manifest(out)["tracks"]["paper"]["splits"]
    assert [splits[s]["num_samples"] for s in SPLITS] == [3 * 152, 1 * 152, 3 * 168, 2 * 168]
    assert load_manifest(out)["tracks"]["paper"]["size"] == 20


def _write(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _damaged(path: Path, arrays) -> Path:
    np.savez(path, **arrays)  # stored, not deflated: flip a voxel byte and the CRC no longer matches
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("val_images.npy")
    data[info.header_offset + 30 + len(info.filename) + 200] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p, a: (p.write_text("not a zip archive\n"), p)[1], "is not a readable .npz archive"),
        (lambda p, a: _write(p, train_images=a["train_images"], test_images=a["test_images"]), "lacks array(s) val_images"),
        (lambda p, a: _write(p, **{**a, "val_images": a["val_images"][:, 0]}), "val_images has shape (1, 28, 28)"),
        (lambda p, a: _write(p, **{**a, "test_images": a["test_images"][:, :5, :5, :5]}), "test_images has shape (2, 5, 5, 5)"),
        (lambda p, a: _write(p, **{**a, "train_images": a["train_images"][:0]}), "train_images holds no volume"),
        (lambda p, a: _write(p, **{**a, "train_images": a["train_images"].astype("U1")}), "has dtype <U1"),
        (_damaged, "fails its CRC check"),
    ],
    ids=["not-a-zip", "missing-array", "2d-entries", "too-small", "no-train", "text-dtype", "damaged"],
)
def test_bad_npz_files_are_one_line_data_errors(tmp_path, arrays, make, message):
    path = make(tmp_path / "organmnist3d.npz", arrays)
    with pytest.raises(DataError) as info:
        read_volume_sources(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_frame_is_refused_for_an_npz(npz):
    with pytest.raises(DataError, match="every entry of an .npz is its own volume"):
        read_volume_sources(npz, frame=0)


def test_the_command_line_reports_a_bad_npz_in_one_line(tmp_path, capsys):
    bad = tmp_path / "nodulemnist3d.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    assert main(["build", "--volumes", str(bad), "--out", str(tmp_path / "out"), "--track", "paper"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a readable .npz archive" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
