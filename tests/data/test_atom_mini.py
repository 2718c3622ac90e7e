"""The embedded default benchmark: real volumes, reproducible bytes, the issue's requirements."""

from __future__ import annotations

from pathlib import Path

from atom_bench.core.tracks import SPLITS, TRACK_NAMES
from atom_bench.data.benchmark import embedded_root
from atom_bench.data.build import DATASET_VERSION, PRESETS, BuildConfig, build_benchmark
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


#: The grouping of dataset version 1.2 (docs/PROTOCOL.md section 5.3).
GROUPS = {
    "train": {"colin27_t1", "promed_ct_head", "mni152_t1", "example4d_epi"},
    "validation": {"aniso_dwi", "robex_t1"},
    "unseen": {"itk_t1", "ct_head_template", "mayavi_heart_ct"},
}


def test_atom_mini_groups_and_per_volume_counts():
    manifest = load_manifest(embedded_root())
    assert manifest["version"] == DATASET_VERSION == "1.2"
    by_group = {g: {v["volume_id"] for v in manifest["volumes"] if v["group"] == g} for g in GROUPS}
    assert by_group == GROUPS
    # test_unseen holds T1 MRI and CT, brain (itk_t1, ct_head_template) and non-brain (the heart)
    unseen = {(v["modality"], v["volume_id"]) for v in manifest["volumes"] if v["group"] == "unseen"}
    assert unseen == {("T1", "itk_t1"), ("CT", "ct_head_template"), ("CT", "mayavi_heart_ct")}
    counts = PRESETS["atom-mini"]
    expected = {"train": (GROUPS["train"], counts.train), "validation": (GROUPS["validation"], counts.validation),
                "test_seen": (GROUPS["train"], counts.test_seen), "test_unseen": (GROUPS["unseen"], counts.test_unseen)}  # fmt: skip
    for track in TRACK_NAMES:
        for split, (volumes, per_volume) in expected.items():
            rows = load_split(track, split)
            assert set(manifest["tracks"][track]["splits"][split]["volumes"]) == volumes
            assert sorted(rows["volume_id"]) == sorted(v for v in volumes for _ in range(per_volume)), (track, split)


def test_committed_data_stays_small():
    data = embedded_root().parent
    total = sum(p.stat().st_size for p in Path(data).rglob("*") if p.is_file())
    assert total < 30 * 2**20
