"""Paired comparisons of two prediction files on the same split (real submitted predictions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atom_bench.errors import PredictionError
from atom_bench.eval.compare import better, compare_arrays, compare_files
from atom_bench.eval.intervals import cluster_draws
from atom_bench.eval.scoring import Evaluator

REPO = Path(__file__).resolve().parents[2]
SEARCH = REPO / "submissions" / "easy" / "search-test_unseen" / "predictions.parquet"
CHANCE = REPO / "submissions" / "easy" / "chance-test_unseen" / "predictions.parquet"


def test_a_model_against_itself_shows_no_difference():
    result = compare_files(SEARCH, SEARCH, resamples=200)
    top1 = result["metrics"]["top1_high"]
    assert top1["difference"] == 0 and top1["slice"]["p"] == 1.0 and better(top1) == 0


def test_search_beats_chance_on_clean_slices_and_the_volume_interval_needs_volumes():
    result = compare_files(SEARCH, CHANCE, resamples=400)
    top1 = result["metrics"]["top1_high"]
    assert top1["difference"] > 0.5 and top1["slice"]["ci"][0] > 0 and top1["slice"]["p"] < 0.01 and better(top1) == 1
    assert result["n_volumes"] < 5 and "not meaningful" in top1["volume"]["note"]
    assert better(result["metrics"]["dist_mm_median"]) == 1  # lower error is better


def test_volume_level_intervals_are_wider_than_slice_level_ones():
    ev = Evaluator.from_benchmark("easy", "test_unseen")
    a, b = ev.read_aligned(SEARCH), ev.read_aligned(CHANCE)
    result = compare_arrays(ev, a, b, resamples=400, min_volumes=2)
    top1 = result["metrics"]["top1_high"]
    width = {level: top1[level]["ci"][1] - top1[level]["ci"][0] for level in ("slice", "volume")}
    assert width["volume"] > width["slice"]


def test_cluster_draws_take_whole_volumes_of_their_own_size():
    sizes = np.array([5, 3, 7])
    codes = np.repeat([0, 1, 2], sizes)
    for rows in cluster_draws(codes, np.random.default_rng(0), 50):
        counts = np.bincount(codes[rows], minlength=3)
        assert np.all(counts % sizes == 0)  # each drawn volume brings as many slices as it has
        assert (counts // sizes).sum() == 3  # as many volumes as there are


def test_files_of_different_splits_are_refused(tmp_path):
    other = REPO / "submissions" / "easy" / "search-test_seen" / "predictions.parquet"
    with pytest.raises(PredictionError, match="compare predictions of the same split"):
        compare_files(SEARCH, other)


def test_compare_command_by_submission_name(tmp_path, capsys):
    from atom_bench.cli import main

    out = tmp_path / "c.json"
    assert main(["compare", "easy/search-test_unseen", "easy/chance-test_unseen", "--submissions", str(REPO / "submissions"), "--out", str(out)]) == 0
    assert "A better" in capsys.readouterr().out and out.is_file()
    assert main(["compare", "no-such-entry", "easy/chance-test_unseen", "--submissions", str(REPO / "submissions")]) == 2
    assert "names no file and no submission" in capsys.readouterr().err
