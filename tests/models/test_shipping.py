"""Shipping a checkpoint: the paired rule and what it leaves on disk (real shipped weights, atom-mini)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from atom_bench.models.shipping import Comparison, compare_weights, ship
from atom_bench.models.weights import read_metadata

WEIGHTS = Path(__file__).resolve().parents[2] / "baselines" / "weights"


@pytest.mark.parametrize("gained, lost, replaces", [(10, 2, True), (3, 1, False), (0, 0, False), (2, 10, False), (5, 0, True)])
def test_a_candidate_replaces_only_when_it_wins_by_more_than_one_sign_test_deviation(gained, lost, replaces):
    comparison = Comparison(gained=gained, lost=lost, n=256)
    assert comparison.replaces is replaces
    assert str(comparison).startswith("replaces" if replaces else "keeps") and f"+{gained} / -{lost} of 256" in str(comparison)


def test_a_first_file_is_written_and_scored(tmp_path):
    dst = tmp_path / "matcher-easy.safetensors"
    assert ship("matcher", "easy", WEIGHTS / "matcher-easy.safetensors", dst) is None
    assert read_metadata(dst)["val_top1_high"] == read_metadata(WEIGHTS / "matcher-easy.safetensors")["val_top1_high"]


def test_an_equal_candidate_keeps_the_shipped_file_byte_for_byte(tmp_path):
    dst = tmp_path / "matcher-easy.safetensors"
    shutil.copy(WEIGHTS / "matcher-easy.safetensors", dst)
    before = dst.read_bytes()
    comparison = ship("matcher", "easy", WEIGHTS / "matcher-easy.safetensors", dst)
    assert (comparison.gained, comparison.lost, comparison.replaces) == (0, 0, False)
    assert dst.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [dst.name]


def test_a_clearly_better_candidate_replaces_a_worse_file(tmp_path):
    dst = tmp_path / "matcher-easy.safetensors"
    shutil.copy(WEIGHTS / "matcher-histology.safetensors", dst)  # trained for another contrast: worse on easy
    expected = compare_weights("matcher", "easy", WEIGHTS / "matcher-easy.safetensors", dst)
    assert expected.replaces
    assert ship("matcher", "easy", WEIGHTS / "matcher-easy.safetensors", dst) == expected
    assert read_metadata(dst)["val_top1_high"] == read_metadata(WEIGHTS / "matcher-easy.safetensors")["val_top1_high"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [dst.name]
