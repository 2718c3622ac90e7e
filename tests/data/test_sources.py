"""The shipped atom-mini source volumes: checksums, sources.csv consistency, clean preparation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import atom_bench
from atom_bench._io import sha256_file
from atom_bench.core.volumes import prepare_volume
from atom_bench.errors import DataError

SOURCES = Path(atom_bench.__file__).parent / "data" / "sources"
COLUMNS = ["path", "volume_id", "subject", "modality", "group", "source", "licence"]
ROWS = list(csv.DictReader((SOURCES / "sources.csv").open(encoding="utf-8")))
PROVENANCE = json.loads((SOURCES / "PROVENANCE.json").read_text(encoding="utf-8"))["volumes"]
IDS = [row["volume_id"] for row in ROWS]


def test_csv_columns_and_files() -> None:
    with (SOURCES / "sources.csv").open(encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == COLUMNS
    assert len(IDS) == len(set(IDS)) >= 5
    for row in ROWS:
        assert (SOURCES / row["path"]).is_file(), row["path"]
        assert row["modality"] in {"T1", "CT", "EPI", "DWI"}
        assert row["group"] in {"train", "validation", "unseen"}
        assert row["source"].split(":", 1)[0] in {"debian", "pypi"} and row["licence"]


def test_csv_diversity_and_subject_groups() -> None:
    real = {r["subject"] for r in ROWS if PROVENANCE[r["volume_id"]]["kind"] == "real subject"}
    assert len(real) >= 3
    assert {"T1", "CT"} <= {r["modality"] for r in ROWS}
    assert {r["modality"] for r in ROWS if r["subject"] in real} >= {"T1", "CT"}
    groups: dict[str, set[str]] = {}
    for row in ROWS:
        groups.setdefault(row["subject"], set()).add(row["group"])
    assert all(len(g) == 1 for g in groups.values()), groups
    assert {r["group"] for r in ROWS} == {"train", "validation", "unseen"}


def test_provenance_matches_csv_and_files() -> None:
    assert set(PROVENANCE) == set(IDS)
    for row in ROWS:
        entry = PROVENANCE[row["volume_id"]]
        assert entry["shipped_file"] == row["path"]
        assert sha256_file(SOURCES / row["path"]) == entry["shipped_sha256"], row["path"]
        assert len(entry["original_sha256"]) == 64 and entry["conversion"] and entry["licence"]
        assert row["source"] == f"{entry['origin']}:{entry['package']}={entry['version']}:{entry['original_path']}"
        for key in ("subject", "modality", "group"):
            assert entry[key] == row[key]


def test_licences_listed_and_size_budget() -> None:
    text = (SOURCES / "LICENSES.md").read_text(encoding="utf-8")
    assert all(f"`{vid}`" in text for vid in IDS)
    total = sum(p.stat().st_size for p in SOURCES.iterdir() if p.is_file())
    assert total < 15_000_000


@pytest.mark.parametrize("volume_id", IDS)
def test_shipped_volume_is_canonical_and_compact(volume_id: str) -> None:
    img = nib.load(str(SOURCES / PROVENANCE[volume_id]["shipped_file"]))
    assert img.ndim == 3 and nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert img.get_data_dtype() in (np.uint8, np.int16)
    assert list(img.shape) == PROVENANCE[volume_id]["shipped_shape"]


@pytest.mark.parametrize("size", [64, 20])
@pytest.mark.parametrize("volume_id", IDS)
def test_shipped_volume_prepares(volume_id: str, size: int) -> None:
    vol = prepare_volume(SOURCES / f"{volume_id}.nii.gz", size=size, volume_id=volume_id)
    assert vol.data.shape == (size,) * 3 and vol.data.max() == 1.0
    assert 0.03 < vol.mask.mean() < 0.7  # a head-sized foreground, not noise or the whole cube


# -- reading a volumes CSV: every bad row is a one-line DataError ------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("path,subject,modality\na.nii.gz\n", "line 2 has 1 fields where the header has 3"),
        ("path,subject,modality\na.nii.gz,,T1\n", "line 2: empty subject"),
        ("path,subject,modality,volume_id\na.nii.gz,s1,T1,../../evil\n", "volume_id '../../evil' must be"),
        ("path,subject,modality,frame\na.nii.gz,s1,T1,abc\n", "frame 'abc' is not a non-negative integer"),
        ("path,subject,modality\na.nii.gz,s1,T1,extra\n", "line 2 has"),
    ],
)
def test_bad_volumes_csv_rows_are_refused(tmp_path, text, message):
    from atom_bench.data.sources import read_volume_sources

    (tmp_path / "v.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        read_volume_sources(tmp_path / "v.csv")


def test_a_volumes_csv_that_is_not_utf8_is_refused(tmp_path):
    from atom_bench.data.sources import read_volume_sources

    (tmp_path / "v.csv").write_bytes("path,subject,modality\na.nii.gz,Jürgen,T1\n".encode("latin-1"))
    with pytest.raises(DataError, match="is not UTF-8 text"):
        read_volume_sources(tmp_path / "v.csv")
