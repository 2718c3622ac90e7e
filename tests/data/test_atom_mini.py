"""The embedded default benchmark: real volumes, reproducible bytes, the issue's requirements."""

from __future__ import annotations

from pathlib import Path

from atom_bench.core.tracks import SPLITS, TRACK_NAMES
from atom_bench.data.benchmark import embedded_root
from atom_bench.data.build import PRESETS, BuildConfig, build_benchmark
from atom_bench.data.dataset import load_manifest, load_split, verify_checksums

SOURCES = embedded_root().parent / "sources" / "sources.csv"


def test_committed_atom_mini_is_exactly_what_the_builder_makes(tmp_path):
    config = BuildConfig(name="atom-mini", counts=PRESETS["atom-mini"])
    build_benchmark(SOURCES, tmp_path / "atom-mini", config, workers=2)
    committed = embedded_root()
    fresh = {p.relative_to(tmp_path / "atom-mini"): p.read_bytes() for p in (tmp_path / "atom-mini").rglob("*") if p.is_file()}
    assert fresh == {p.relative_to(committed): p.read_bytes() for p in committed.rglob("*") if p.is_file()}


def test_atom_mini_checksums_and_coverage():
    verify_checksums(embedded_root())
    manifest = load_manifest(embedded_root())
    volumes = manifest["volumes"]
    assert len({v["subject"] for v in volumes}) >= 3
    assert {"T1", "CT"} <= {v["modality"] for v in volumes}
    assert set(manifest["tracks"]) == set(TRACK_NAMES)
    for track in TRACK_NAMES:
        for split in SPLITS:
            assert manifest["tracks"][track]["splits"][split]["num_samples"] > 0, (track, split)
    unseen = {v["volume_id"] for v in volumes if v["group"] == "unseen"}
    assert {v["modality"] for v in volumes if v["group"] == "unseen"} >= {"T1", "CT"}
    for track in TRACK_NAMES:
        assert set(load_split(track, "test_unseen")["volume_id"]) == unseen
        assert not set(load_split(track, "train")["volume_id"]) & unseen


def test_committed_data_stays_small():
    data = embedded_root().parent
    total = sum(p.stat().st_size for p in Path(data).rglob("*") if p.is_file())
    assert total < 30 * 2**20
