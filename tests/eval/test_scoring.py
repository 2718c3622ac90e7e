"""The scorer: hand-computed cases, bootstrap intervals against brute-force resampling,
breakdowns, floors, alignment, hidden-label files and the ``score`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import atom_bench
from atom_bench.cli import main
from atom_bench.data.benchmark import Benchmark
from atom_bench.data.labels_file import split_labels, write_labels
from atom_bench.errors import DataError, PredictionError
from atom_bench.eval import intervals as _bootstrap
from atom_bench.eval import predictions as P
from atom_bench.eval.metrics import COMPUTED_METRICS
from atom_bench.eval.scoring import Evaluator, score_file
from tests.eval.fixtures import make_predictions, make_tables


@pytest.fixture(scope="module")
def tables():
    return make_tables(n=600, n_volumes=4, seed=11)


@pytest.fixture(scope="module")
def evaluator(tables) -> Evaluator:
    labels, volumes, counts = tables
    return Evaluator(labels, volumes, counts, track="easy", split="validation")


def test_hand_computed_scores() -> None:
    labels = pd.DataFrame({"sample_id": ["a", "b", "c", "d"], "high_label": [1, 2, 3, 4], "low_label": [27, 54, 81, 108]})
    ev = Evaluator(labels)
    pred = P.to_frame({"high": np.array([1, 2, 0, 0]), "low": np.array([27, 55, 0, 1])}, ["a", "b", "c", "d"])
    result = ev.evaluate(pred)
    assert result["metrics"]["top1_high"] == {"value": 0.5, "ci": [0.0, 1.0], "n": 4}  # Binomial(4, .5): 0 .. 4
    assert result["metrics"]["top1_low"]["value"] == 0.25
    assert set(result["metrics"]) == {"top1_high", "top1_low"}
    assert result["skipped"]["top5_high"] == "no high_top5 in the predictions"
    assert "prior" not in result["floors"] and "chance" in result["floors"]
    json.dumps(result, allow_nan=False)


def test_distance_and_angle_with_a_pose(tables) -> None:
    labels, volumes, counts = tables
    ev = Evaluator(labels, volumes, counts)
    arrays = P.frame_arrays(make_predictions(labels, accuracy=1.0))
    arrays["center_mm"] = np.stack(labels["center_mm"].tolist()) + np.array([3.0, 4.0, 0.0])  # 5 mm off
    arrays["normal_mm"] = -np.stack(labels["normal_mm"].tolist())  # same plane
    result = ev.evaluate(P.to_frame(arrays, arrays.pop("sample_id")), floors=False)
    m = result["metrics"]
    assert m["top1_high"]["value"] == m["top1_low"]["value"] == m["top5_low"]["value"] == 1.0
    assert m["dist_mm_mean"]["value"] == pytest.approx(5.0) and m["dist_mm_median"]["value"] == pytest.approx(5.0)
    assert m["within_10mm"]["value"] == 1.0
    assert m["angle_deg_mean"]["value"] == pytest.approx(0.0, abs=1e-5)


def test_block_centre_distance_matches_geometry(tables) -> None:
    labels, volumes, counts = tables
    ev = Evaluator(labels, volumes, counts)
    arrays = P.frame_arrays(make_predictions(labels, accuracy=1.0))
    values = ev.per_sample(arrays)
    # a right fine block is at most half a fine-block diagonal from the true centre
    spacing = np.array([np.linalg.norm(np.asarray(a).reshape(4, 4)[:3, 0]) for a in volumes["affine"]])
    size = volumes["size"].to_numpy()
    bound = (np.sqrt(3) / 2 * size / 9 * spacing)[ev.volume_index]
    assert np.all(values["dist_mm_mean"] <= bound + 1e-9)


def test_rows_are_aligned_by_id(evaluator, tables) -> None:
    labels = tables[0]
    pred = make_predictions(labels, accuracy=0.4)
    shuffled = pred.sample(frac=1.0, random_state=0).reset_index(drop=True)
    a = evaluator.evaluate(pred, floors=False)
    b = evaluator.evaluate(shuffled, floors=False)
    assert a["metrics"] == b["metrics"] and a["breakdowns"] == b["breakdowns"]


def test_breakdowns_equal_subsets(evaluator, tables) -> None:
    labels = tables[0]
    pred = make_predictions(labels, accuracy=0.4)
    result = evaluator.evaluate(pred, floors=False)
    hits = P.frame_arrays(pred)["high"] == labels["high_label"].to_numpy()
    for view in ("axial", "oblique"):
        rows = (labels["view"] == view).to_numpy()
        got = result["breakdowns"]["view"][view]["top1_high"]
        assert got["value"] == pytest.approx(hits[rows].mean()) and got["n"] == rows.sum()
    assert set(result["breakdowns"]) == {"modality", "view", "volume_id", "deg_noise"}
    assert sum(g["top1_high"]["n"] for g in result["breakdowns"]["deg_noise"].values()) == len(labels)
    assert "0" in result["breakdowns"]["deg_noise"]


def test_floors(evaluator, tables) -> None:
    labels, _, counts = tables
    floors = evaluator.floors()
    chance = floors["chance"]["metrics"]
    assert chance["top1_high"]["value"] == pytest.approx(1 / 27, abs=0.003)
    assert chance["top5_high"]["value"] == pytest.approx(5 / 27, abs=0.005)
    assert chance["top1_low"]["value"] == pytest.approx(1 / 729, abs=0.001)
    assert chance["angle_deg_mean"]["value"] == pytest.approx(np.degrees(1.0), abs=0.5)  # E[angle] of random planes = 1 rad
    prior = floors["prior"]["metrics"]
    top = int(np.argmax(counts["high"]))
    assert prior["top1_high"]["value"] == pytest.approx(np.mean(labels["high_label"].to_numpy() == top))
    assert prior["top1_high"]["n"] == len(labels)


def test_interval_contains_estimate_and_floors_do_not_depend_on_predictions(evaluator, tables) -> None:
    result = evaluator.evaluate(make_predictions(tables[0], accuracy=0.3))
    for name, cell in result["metrics"].items():
        assert cell["ci"][0] <= cell["value"] + 1e-12 <= cell["ci"][1] + 2e-12, name
    again = evaluator.evaluate(make_predictions(tables[0], seed=9, accuracy=0.7))
    assert again["floors"] == result["floors"]


def test_proportion_interval_matches_resampling() -> None:
    rng = np.random.default_rng(0)
    x = rng.random(150) < 0.3
    value, lo, hi, n = _bootstrap.grouped(x, np.zeros(150, dtype=np.int64), 1, "proportion")
    boot = x[rng.integers(0, 150, (40000, 150))].mean(axis=1)
    assert abs(lo[0] - np.quantile(boot, 0.025)) <= 1 / 150 + 1e-12
    assert abs(hi[0] - np.quantile(boot, 0.975)) <= 1 / 150 + 1e-12


def test_median_interval_matches_resampling() -> None:
    rng = np.random.default_rng(1)
    x = rng.exponential(10.0, 101)
    srt = np.sort(x)
    value, lo, hi, n = _bootstrap.grouped(x, np.zeros(101, dtype=np.int64), 1, "median")
    assert value[0] == np.median(x)
    boot = np.sort(x[rng.integers(0, 101, (40000, 101))], axis=1)[:, 50]
    for bound, q in ((lo[0], 0.025), (hi[0], 0.975)):
        rank, want = np.searchsorted(srt, bound), np.searchsorted(srt, np.quantile(boot, q, method="inverted_cdf"))
        assert abs(rank - want) <= 1


def test_mean_interval_small_and_large_groups() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(3.0, 2.0, 5000)
    codes = np.r_[np.zeros(50, dtype=np.int64), np.ones(4950, dtype=np.int64)]
    value, lo, hi, n = _bootstrap.grouped(x, codes, 2, "mean", seed=0, key="k")
    again = _bootstrap.grouped(x, codes, 2, "mean", seed=0, key="k")
    np.testing.assert_array_equal(lo, again[1])  # seeded Monte Carlo for the small group
    boot = x[:50][rng.integers(0, 50, (20000, 50))].mean(axis=1)
    assert lo[0] == pytest.approx(np.quantile(boot, 0.025), abs=0.05)
    half = 1.959964 * x[50:].std() / np.sqrt(4950)
    assert (lo[1], hi[1]) == pytest.approx((x[50:].mean() - half, x[50:].mean() + half))


def test_skipped_metrics_and_partial_predictions(evaluator, tables) -> None:
    pred = make_predictions(tables[0]).drop(columns=["high_top5"])
    result = evaluator.evaluate(pred, floors=False)
    assert "top5_high" not in result["metrics"] and "paper_acc1" not in result["metrics"]
    assert {"top5_low", "paper_acc_noleak", "paper_acck1"} <= set(result["metrics"])
    assert set(result["metrics"]) | set(result["skipped"]) == set(COMPUTED_METRICS)


def test_evaluate_validates(evaluator, tables) -> None:
    pred = make_predictions(tables[0]).iloc[:-1]
    with pytest.raises(PredictionError, match="1 missing sample ids"):
        evaluator.evaluate(pred)
    other = make_predictions(tables[0], meta=P.make_meta("hard", "validation", None))
    with pytest.raises(PredictionError, match="made for track 'hard'"):
        evaluator.evaluate(other)


def test_bad_label_tables(tables) -> None:
    labels, volumes, _ = tables
    with pytest.raises(DataError, match="lack column"):
        Evaluator(labels.drop(columns=["low_label"]))
    with pytest.raises(DataError, match="missing from the volumes table"):
        Evaluator(labels, volumes.iloc[:1])


def test_hidden_labels_file_gives_the_same_scores(tmp_path: Path) -> None:
    frame = atom_bench.dummy_prediction("hard", "test_seen", seed=3)
    pred = P.write_predictions(frame, tmp_path / "p.parquet")
    public = score_file(pred)
    manifest_sha256 = Benchmark.open().hash
    labels = split_labels("hard", "test_seen")
    path = write_labels(labels, tmp_path / "labels.parquet", "hard", "test_seen", manifest_sha256)
    hidden = score_file(pred, labels=path)
    assert hidden["metrics"] == public["metrics"] and hidden["breakdowns"] == public["breakdowns"]
    assert hidden["manifest_sha256"] == manifest_sha256 and hidden["predictions_sha256"]
    wrong = write_labels(labels, tmp_path / "wrong.parquet", "hard", "test_unseen", manifest_sha256)
    with pytest.raises(DataError, match="labels are for split"):
        score_file(pred, labels=wrong)


def test_score_command_writes_json(tmp_path: Path, capsys) -> None:
    pred = P.write_predictions(atom_bench.dummy_prediction("paper", "validation"), tmp_path / "p.csv")
    assert main(["score", str(pred)]) == 0
    result = json.loads((tmp_path / "p.scores.json").read_text())
    assert result["track"] == "paper" and "paper_acc1" in result["metrics"] and "prior" in result["floors"]
    assert "chance" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("nothing")
    assert main(["score", str(bad)]) == 2


def test_labels_directory_as_written_by_build(tmp_path: Path) -> None:
    labels = split_labels("easy", "test_unseen")
    (tmp_path / "easy").mkdir()
    write_labels(labels, tmp_path / "easy" / "test_unseen-00000-of-00001.parquet", "easy", "test_unseen", None)
    ev = Evaluator.from_benchmark("easy", "test_unseen", labels=tmp_path)
    assert ev.n == len(Benchmark.open().sample_ids("easy", "test_unseen"))
    (tmp_path / "labels-manifest.json").write_text(json.dumps({"manifest_sha256": "0" * 64}))
    with pytest.raises(DataError, match="labels are for manifest_sha256"):
        Evaluator.from_benchmark("easy", "test_unseen", labels=tmp_path)
    with pytest.raises(DataError, match="no labels for easy/test_seen"):
        Evaluator.from_benchmark("easy", "test_seen", labels=tmp_path)


def test_render_scores_prints_labels_from_the_data_as_plain_text(tables) -> None:
    import io

    from rich.console import Console

    from atom_bench.eval.scoring import render_scores

    labels, volumes, counts = tables
    labels = labels.copy()
    labels["modality"] = np.array(["[/]", "[link=https://evil.example]T1[/link]", "[bold red]CT"], dtype=object)[np.arange(len(labels)) % 3]
    ev = Evaluator(labels, volumes, counts, track="[/red]", split="[blink]validation")
    result = ev.evaluate(make_predictions(labels, accuracy=0.5))
    buffer = io.StringIO()
    Console(file=buffer, width=400, force_terminal=True).print(render_scores(result))  # MarkupError before
    out = buffer.getvalue()
    for text in ("modality=[/] (n=", "modality=[link=https://evil.example]T1[/link]", "modality=[bold red]CT", "[/red]/[blink]validation"):
        assert text in out, text
    assert "\x1b]8;" not in out  # no terminal hyperlink


def test_score_file_refuses_a_track_that_is_no_name(tmp_path: Path) -> None:
    frame = atom_bench.dummy_prediction("easy", "test_seen")
    for track in ("../easy", ["easy"], "x" * 10_000):
        meta = {**frame.attrs["atom_bench"], "track": track}
        path = P.write_predictions(frame, tmp_path / "p.parquet", meta=meta)
        with pytest.raises(PredictionError, match="not a track/split name|track must be text") as info:
            score_file(path)
        assert len(str(info.value)) < 300


def test_volume_level_intervals_are_reported_only_from_enough_volumes():
    labels, volumes, counts = make_tables(n=600, n_volumes=8, seed=3)
    ev = Evaluator(labels, volumes, counts, track="easy", split="test_unseen")
    result = ev.evaluate(make_predictions(labels, seed=1, accuracy=0.5))
    level = result["volume_level"]
    assert level["n_volumes"] == 8 and set(level["metrics"]) <= set(result["metrics"])
    lo, hi = level["metrics"]["top1_high"]["ci"]
    assert lo <= result["metrics"]["top1_high"]["value"] <= hi
    few_labels, few_volumes, few_counts = make_tables(n=200, n_volumes=3, seed=3)
    few = Evaluator(few_labels, few_volumes, few_counts, track="easy", split="test_unseen")
    assert few.evaluate(make_predictions(few_labels, seed=1))["volume_level"] == {
        "n_volumes": 3, "note": "not meaningful with 3 volume(s); needs at least 5"
    }
