"""The dataset card's statements about the volumes configs, checked against the embedded atom-mini
and the ``datasets`` library itself."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

import atom_bench
from atom_bench.core.tracks import TRACK_NAMES
from atom_bench.core.volumes import QUANT_LEVELS
from atom_bench.data.benchmark import embedded_root
from atom_bench.data.card import volumes_config
from atom_bench.data.dataset import load_manifest

MANIFEST = load_manifest(embedded_root())
CARD = (embedded_root() / "README.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def volume_configs(tmp_path_factory) -> dict[str, datasets.Dataset]:
    cache = str(tmp_path_factory.mktemp("hf-cache"))
    names = {volumes_config(MANIFEST, track) for track in TRACK_NAMES}
    return {name: datasets.load_dataset(str(embedded_root()), name, split="volumes", cache_dir=cache) for name in names}


def test_the_card_names_the_volumes_config_each_track_joins():
    # derived from the build: the paper track samples the 20^3 cubic cubes, the others the 64^3 linear ones
    assert {t: volumes_config(MANIFEST, t) for t in TRACK_NAMES} == {
        "paper": "volumes_s20_cubic", "easy": "volumes_s64_linear", "hard": "volumes_s64_linear",
        "histology": "volumes_s64_linear"}  # fmt: skip
    rows = {line.split(" | ")[0].lstrip("| "): line for line in CARD.splitlines() if line.startswith("| ")}
    for track in TRACK_NAMES:
        assert f"| `{volumes_config(MANIFEST, track)}` |" in rows[track]
    assert "| `volumes_s20_cubic` | 20^3 | paper |" in CARD
    assert "| `volumes_s64_linear` | 64^3 | easy, hard, histology |" in CARD


def test_every_track_row_joins_a_cube_of_its_size_in_its_config(volume_configs):
    for track in TRACK_NAMES:
        table = volume_configs[volumes_config(MANIFEST, track)]
        ids = set(table["volume_id"])
        assert set(table["size"]) == {MANIFEST["tracks"][track]["size"]}
        for split in MANIFEST["tracks"][track]["splits"]:
            assert set(atom_bench.load_split(track, split)["volume_id"]) <= ids, (track, split)


def test_the_stored_voxels_are_what_the_card_says(volume_configs):
    assert "stored as\n`uint16` with values 0..65535" in CARD and "`mask` (`uint8`, 0 or 1)" in CARD
    assert 'With `set_format("numpy")` both `voxels` and `mask` come back as `int64` arrays' in CARD
    assert '`row["voxels"].astype(numpy.float32) / 65535`' in CARD
    for name, table in volume_configs.items():
        assert table.features["voxels"].dtype == "uint16" and table.features["mask"].dtype == "uint8"
        table = table.with_format("numpy")
        for index, volume_id in enumerate(table["volume_id"]):
            row = table[index]
            assert row["voxels"].dtype == np.int64 and row["mask"].dtype == np.int64  # as the card warns
            assert row["voxels"].min() >= 0 and row["voxels"].max() == QUANT_LEVELS
            assert set(np.unique(row["mask"])) == {0, 1}
            # the card's recipe gives exactly the float cube the toolkit loads
            track = next(t for t in TRACK_NAMES if volumes_config(MANIFEST, t) == name)
            volume = atom_bench.load_volume(volume_id, track)
            assert np.array_equal(row["voxels"].astype(np.float32) / QUANT_LEVELS, volume.data), (name, volume_id)
            assert np.array_equal(row["mask"].astype(bool), volume.mask)


def test_a_float_format_does_not_rescale_and_casts_the_affine(volume_configs):
    table = volume_configs["volumes_s20_cubic"].with_format("numpy", dtype="float32")
    row = table[0]
    assert row["voxels"].dtype == np.float32 and row["voxels"].max() == QUANT_LEVELS
    assert row["affine"].dtype == np.float32
