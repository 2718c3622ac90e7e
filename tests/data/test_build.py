from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from atom_bench.core import geometry as geo
from atom_bench.core import labels
from atom_bench.core.tracks import SPLITS, TRACKS
from atom_bench.data.build import BuildConfig, SplitCounts, build_benchmark
from atom_bench.data.dataset import load_manifest, load_split, load_volume, verify_checksums
from atom_bench.data.sources import read_volume_sources
from atom_bench.errors import DataError, VolumeError


def _columns(dataset) -> dict[str, np.ndarray]:
    """Columns at full precision (the numpy formatter of `datasets` casts float64 to float32)."""
    return {k: np.asarray(v) for k, v in dataset.data.table.to_pydict().items() if k not in ("paper_high", "paper_low")} | {
        k: dataset[k] for k in ("paper_high", "paper_low") if k in dataset.column_names
    }


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_building_twice_gives_identical_bytes_whatever_the_worker_count(tmp_path, small_bench, small_config):
    from tests.conftest import _nibabel_volume_dir

    vols = _nibabel_volume_dir(tmp_path / "vols")
    groups = {"t1_crop": "train", "epi_frame0": "train", "t1_lps": "unseen"}
    srcs = [type(s)(**{**s.__dict__, "group": groups[s.volume_id]}) for s in read_volume_sources(vols, 7)]
    build_benchmark(srcs, tmp_path / "again", small_config, workers=2)
    assert _tree_bytes(tmp_path / "again") == _tree_bytes(small_bench)


def test_manifest_checksums_verify_and_detect_tampering(tmp_path, small_bench):
    assert verify_checksums(small_bench) == len(load_manifest(small_bench)["files"])
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(small_bench, copy)
    shard = next((copy / "easy").glob("train-*.parquet"))
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(DataError, match="checksum differs"):
        verify_checksums(copy)


def test_splits_are_by_volume(small_bench):
    groups = {v["volume_id"]: v["group"] for v in load_manifest(small_bench)["volumes"]}
    for track in TRACKS:
        ids = {split: set(load_split(track, split, small_bench)["volume_id"]) for split in SPLITS}
        train_volumes = {v for v, g in groups.items() if g == "train"}
        assert ids["train"] == train_volumes
        assert ids["test_seen"] <= train_volumes  # the same-volume protocol
        assert not ids["test_unseen"] & (ids["train"] | ids["validation"] | ids["test_seen"])
        assert all(groups[v] == "unseen" for v in ids["test_unseen"])


def test_sample_ids_are_unique_and_stable(small_bench):
    for track in TRACKS:
        all_ids = [i for split in SPLITS for i in load_split(track, split, small_bench)["sample_id"]]
        assert len(all_ids) == len(set(all_ids))
        assert all(i.startswith(f"{track}-") for i in all_ids)


@pytest.mark.parametrize("track", list(TRACKS))
def test_labels_agree_with_stored_pose_and_slice(small_bench, track):
    data = _columns(load_split(track, "train", small_bench))
    spec = TRACKS[track]
    centers = np.stack(data["center_vox"])
    np.testing.assert_array_equal(data["high_label"], labels.high_label(centers, spec.size))
    np.testing.assert_array_equal(data["low_label"], labels.low_label(centers, spec.size))
    assert np.all(data["low_label"] // 27 == data["high_label"])
    u, v, n = np.stack(data["u"]), np.stack(data["v"]), np.stack(data["normal"])
    np.testing.assert_allclose(np.cross(u, v), n, atol=1e-9)
    for row in range(len(centers)):
        volume = load_volume(str(data["volume_id"][row]), track, small_bench)
        np.testing.assert_allclose(data["center_mm"][row], geo.voxel_to_mm(volume.affine, centers[row]), atol=1e-6)
        if not spec.histology:
            from atom_bench.core.tracks import pixel_offsets

            rows, cols = pixel_offsets(spec)
            points = geo.slice_points(centers[row][None], u[row][None], v[row][None], rows, cols)
            resampled = geo.sample_points(volume.data, points, spec.sampling)[0]
            np.testing.assert_array_equal(resampled, data["slice"][row])
            corners = geo.corner_points(points)
            corners = np.rint(corners) if spec.sampling == "nearest" else corners
            high, low = labels.paper_label_masks(corners, spec.size)
            assert list(np.flatnonzero(high[0])) == list(data["paper_high"][row])
            assert list(np.flatnonzero(low[0])) == list(data["paper_low"][row])


@pytest.mark.parametrize("track", ["easy", "hard", "histology"])
def test_tissue_tracks_keep_slices_inside_the_cube_with_centres_in_tissue(small_bench, track):
    spec = TRACKS[track]
    for split in SPLITS:
        data = _columns(load_split(track, split, small_bench))
        centers, u, v = (np.stack(data[k]) for k in ("center_vox", "u", "v"))
        half = (spec.slice_shape[0] - 1) / 2
        signs = np.array([-1.0, 1.0])
        corners = centers[:, None, None, :] + signs[None, :, None, None] * half * v[:, None, None, :] \
            + signs[None, None, :, None] * half * u[:, None, None, :]
        assert corners.min() >= -1e-9 and corners.max() <= spec.size - 1 + 1e-9
        for row in range(len(centers)):
            volume = load_volume(str(data["volume_id"][row]), track, small_bench)
            assert volume.mask[tuple(np.rint(centers[row]).astype(int))]
        assert np.all((data["tissue_fraction"] > 0) & (data["tissue_fraction"] <= 1))


def test_views_match_the_track(small_bench):
    assert set(load_split("easy", "train", small_bench)["view"]) <= {"axial", "coronal", "sagittal"}
    assert set(load_split("hard", "train", small_bench)["view"]) == {"oblique"}


def test_histology_records_degradation_draws(small_bench):
    frame = load_split("histology", "train", small_bench).to_pandas()
    deg = frame[[c for c in frame.columns if c.startswith("deg_")]]
    assert (deg["deg_shrink"] > 0).all() and deg["deg_noise"].gt(0).any()
    clean = load_split("hard", "train", small_bench).to_pandas()
    assert (clean[[c for c in clean.columns if c.startswith("deg_")]] == 0).all().all()


def test_paper_test_poses_are_new_and_fixed(small_bench):
    train = load_split("paper", "train", small_bench).to_pandas()
    seen = load_split("paper", "test_seen", small_bench).to_pandas()
    key = lambda f: set(zip(f.volume_id, map(tuple, f.center_vox), map(lambda x: tuple(np.round(x, 6)), f.normal)))  # noqa: E731
    assert not key(train) & key(seen)
    normals = np.stack(train["normal"])
    assert np.all(normals >= -1e-12), "paper normals lie in the first octant"


def test_withheld_labels_go_to_a_separate_directory(tmp_path, nibabel_volumes):
    config = BuildConfig(name="hidden", tracks=("easy",), counts=SplitCounts(4, 2, 2, 2), withhold_test_labels=True)
    manifest = build_benchmark(nibabel_volumes, tmp_path / "pub", config)
    assert manifest["labels_withheld"]
    public = pq.read_table(next((tmp_path / "pub" / "easy").glob("test_unseen-*.parquet"))).column_names
    assert "high_label" not in public and "center_mm" not in public and "slice" in public
    assert "high_label" in pq.read_table(next((tmp_path / "pub" / "easy").glob("train-*.parquet"))).column_names
    hidden = pd.read_parquet(next((tmp_path / "pub-labels" / "easy").glob("test_unseen-*.parquet")))
    assert {"sample_id", "high_label", "low_label", "paper_high", "center_mm"} <= set(hidden.columns)
    assert json.loads((tmp_path / "pub-labels" / "labels-manifest.json").read_text())["files"]


def test_failed_build_leaves_nothing_behind(tmp_path, nibabel_volumes):
    vols = tmp_path / "vols"
    vols.mkdir()
    for p in nibabel_volumes.iterdir():
        (vols / p.name).write_bytes(p.read_bytes())
    (vols / "zz_broken.nii.gz").write_bytes((vols / "t1_crop.nii.gz").read_bytes()[:500])
    with pytest.raises(VolumeError, match="zz_broken"):
        build_benchmark(vols, tmp_path / "out", BuildConfig(tracks=("easy",), counts=SplitCounts(2, 1, 1, 1)))
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_csv_input_and_its_errors(tmp_path, nibabel_volumes):
    path = tmp_path / "vols.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "subject", "modality", "group"])
        w.writerow([str(nibabel_volumes / "t1_crop.nii.gz"), "s1", "T1", "train"])
        w.writerow([str(nibabel_volumes / "epi_frame0.nii.gz"), "s2", "EPI", "unseen"])
    sources = read_volume_sources(path)
    assert [(s.subject, s.modality, s.group) for s in sources] == [("s1", "T1", "train"), ("s2", "EPI", "unseen")]
    bad = tmp_path / "bad.csv"
    bad.write_text("path,subject\nx.nii,s1\n")
    with pytest.raises(DataError, match="modality"):
        read_volume_sources(bad)
    leak = tmp_path / "leak.csv"
    leak.write_text(f"path,subject,modality,group\n{nibabel_volumes / 't1_crop.nii.gz'},s1,T1,train\n{nibabel_volumes / 't1_lps.nii.gz'},s1,T1,unseen\n")
    with pytest.raises(DataError, match="two groups"):
        read_volume_sources(leak)


def test_automatic_groups_hold_out_whole_subjects(nibabel_volumes):
    sources = read_volume_sources(nibabel_volumes, seed=3)
    groups = [s.group for s in sources]
    assert groups.count("unseen") == 1 and "train" in groups


# -- outputs never delete what the build did not make ---------------------------------------------

TINY = BuildConfig(name="tiny", tracks=("paper",), counts=SplitCounts(2, 1, 1, 1))


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["same", "inside"])
def test_an_output_on_or_inside_the_input_folder_is_refused(tmp_path, nibabel_volumes, where):
    vols = tmp_path / "scans"
    vols.mkdir()
    for p in nibabel_volumes.iterdir():
        (vols / p.name).write_bytes(p.read_bytes())
    before = _snapshot(vols)
    out = vols if where == "same" else vols / "bench"
    with pytest.raises(DataError, match="holds the input|lies inside the input folder"):
        build_benchmark(vols, out, TINY)
    assert _snapshot(vols) == before


def test_an_existing_folder_is_kept_unless_it_is_an_earlier_build_and_overwrite_is_given(tmp_path, nibabel_volumes):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="not an earlier ATOM-Bench build"):
        build_benchmark(nibabel_volumes, keep, TINY)
    assert (keep / "thesis.tex").read_text() == "precious"
    out = tmp_path / "bench"
    build_benchmark(nibabel_volumes, out, TINY)
    with pytest.raises(DataError, match="holds an earlier build; pass overwrite=True") as caught:
        build_benchmark(nibabel_volumes, out, TINY)
    assert caught.value.parameters == ("out", "overwrite")
    assert build_benchmark(nibabel_volumes, out, TINY, overwrite=True)["name"] == "tiny"
    (tmp_path / "empty").mkdir()
    build_benchmark(nibabel_volumes, tmp_path / "empty", TINY)  # an empty folder loses nothing


def test_withheld_labels_may_not_overlap_the_public_output(tmp_path, nibabel_volumes):
    config = BuildConfig(name="pub", tracks=("paper",), counts=SplitCounts(2, 1, 1, 1), withhold_test_labels=True)
    for labels_out in (tmp_path / "pub", tmp_path / "pub" / "labels"):
        with pytest.raises(DataError, match="overlaps out"):
            build_benchmark(nibabel_volumes, tmp_path / "pub", config, labels_out=labels_out)
    assert not (tmp_path / "pub").exists()


def test_cli_build_refuses_overlaps_in_one_line(tmp_path, nibabel_volumes, capsys):
    from atom_bench.cli import main

    assert main(["build", "--volumes", str(nibabel_volumes), "--out", str(nibabel_volumes), "--track", "paper"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --out ") and "holds the input" in err and len(err.splitlines()) == 1
    out = tmp_path / "b"
    assert main(["build", "--volumes", str(nibabel_volumes), "--out", str(out), "--track", "paper", "--preset", "standard"]) == 0
    assert main(["build", "--volumes", str(nibabel_volumes), "--out", str(out), "--track", "paper"]) == 2
    assert "pass --overwrite to replace it" in capsys.readouterr().err


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.slow
def test_a_killed_build_leaves_no_workers_and_its_leftovers_go_at_the_next_build(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from atom_bench.data.benchmark import embedded_root

    sources = embedded_root().parent / "sources" / "sources.csv"
    out = tmp_path / "bench"
    proc = subprocess.Popen([sys.executable, "-m", "atom_bench.cli", "build", "--volumes", str(sources), "--out", str(out),
                             "--track", "easy", "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and not (len(workers) >= 2 and list(tmp_path.glob(".bench.*.tmp"))):
        time.sleep(0.2)
        workers = [k for k in _children(proc.pid) if b"multiprocessing" in Path(f"/proc/{k}/cmdline").read_bytes()] if proc.poll() is None else []
    assert proc.poll() is None and len(workers) >= 2, "the build ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
        time.sleep(0.1)
    assert not any(Path(f"/proc/{w}").exists() for w in workers), "workers outlived their build"
    assert list(tmp_path.glob(".bench.*.tmp")) and not out.exists()
    build_benchmark(sources, out, BuildConfig(name="again", tracks=("paper",), counts=SplitCounts(2, 1, 1, 1)))
    assert not list(tmp_path.glob(".bench.*.tmp")) and (out / "manifest.json").is_file()


def test_build_warns_about_empty_test_splits_and_validation_from_training(tmp_path, nibabel_data, capsys):
    from atom_bench.cli import main
    from atom_bench.data.build import build_warnings

    one = tmp_path / "one"
    one.mkdir()
    (one / "t1.nii").write_bytes((nibabel_data / "anatomical.nii").read_bytes())
    assert main(["build", "--volumes", str(one), "--out", str(tmp_path / "b"), "--track", "paper"]) == 0
    err = capsys.readouterr().err
    assert "warning: track paper: split(s) test_unseen are empty" in err and "validation poses come from the training volumes" in err
    manifest = load_manifest(tmp_path / "b")
    assert len(build_warnings(manifest)) == 2
