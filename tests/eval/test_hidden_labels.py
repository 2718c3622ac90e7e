"""A maintainer's hidden test set: build with withheld labels, score with --labels."""

from __future__ import annotations

import pytest

from atom_bench.cli import main
from atom_bench.data.build import BuildConfig, SplitCounts, build_benchmark
from atom_bench.errors import AtomBenchError
from atom_bench.eval.predictions import dummy_prediction, write_predictions
from atom_bench.eval.scoring import score_file


@pytest.fixture(scope="module")
def builds(tmp_path_factory, nibabel_volumes):
    base = tmp_path_factory.mktemp("hidden")
    counts = SplitCounts(6, 3, 3, 4)
    build_benchmark(nibabel_volumes, base / "open", BuildConfig(name="b", tracks=("hard",), counts=counts))
    build_benchmark(nibabel_volumes, base / "pub", BuildConfig(name="b", tracks=("hard",), counts=counts, withhold_test_labels=True))
    return base


def test_scores_with_hidden_labels_equal_scores_on_the_open_build(builds, tmp_path):
    pred = tmp_path / "pred.parquet"
    write_predictions(dummy_prediction("hard", "test_unseen", root=builds / "pub", seed=3), pred)
    hidden = score_file(pred, root=builds / "pub", labels=builds / "pub-labels")
    open_pred = tmp_path / "open.parquet"
    write_predictions(dummy_prediction("hard", "test_unseen", root=builds / "open", seed=3), open_pred)
    opened = score_file(open_pred, root=builds / "open")
    assert hidden["metrics"]["top1_high"] == opened["metrics"]["top1_high"]
    assert hidden["metrics"]["dist_mm_median"] == opened["metrics"]["dist_mm_median"]


def test_public_test_split_cannot_be_scored_without_the_labels(builds, tmp_path):
    pred = tmp_path / "pred.parquet"
    write_predictions(dummy_prediction("hard", "test_unseen", root=builds / "pub"), pred)
    with pytest.raises(AtomBenchError):
        score_file(pred, root=builds / "pub")
    assert main(["score", str(pred), "--root", str(builds / "pub"), "--labels", str(builds / "pub-labels")]) == 0


def test_a_corrupt_labels_manifest_is_a_one_line_error(tmp_path):
    import pytest

    from atom_bench.data.labels_file import split_labels, write_labels
    from atom_bench.errors import DataError
    from atom_bench.eval.scoring import Evaluator

    (tmp_path / "easy").mkdir()
    write_labels(split_labels("easy", "test_unseen"), tmp_path / "easy" / "test_unseen-00000-of-00001.parquet", "easy", "test_unseen", None)
    for text in ("{not json", "[1, 2]"):
        (tmp_path / "labels-manifest.json").write_text(text)
        with pytest.raises(DataError, match="labels-manifest.json (is not valid JSON|must hold a JSON object)"):
            Evaluator.from_benchmark("easy", "test_unseen", labels=tmp_path)
