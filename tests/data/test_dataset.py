from __future__ import annotations

import itertools

import datasets
import numpy as np
import pytest

import atom_bench
from atom_bench.data.benchmark import Benchmark, embedded_root
from atom_bench.data.dataset import (
    AtomSliceDataset,
    load_manifest,
    load_split,
    load_volume,
    stream_samples,
)
from atom_bench.errors import DataError


def test_embedded_default_is_used_without_arguments(monkeypatch):
    monkeypatch.delenv("ATOM_BENCH_DATA", raising=False)
    assert Benchmark.open().root == embedded_root()
    assert load_manifest()["name"] == "atom-mini"


def test_env_var_selects_another_benchmark(monkeypatch, small_bench):
    monkeypatch.setenv("ATOM_BENCH_DATA", str(small_bench))
    assert load_manifest()["name"] == "small"
    assert len(Benchmark.open().hash) == 64


def test_load_split_has_protocol_columns(small_bench):
    split = atom_bench.load_split("easy", "train", root=small_bench)
    assert isinstance(split, datasets.Dataset)
    for column in ("sample_id", "volume_id", "subject", "modality", "source", "view", "slice", "center_vox",
                   "center_mm", "normal", "u", "v", "high_label", "low_label", "paper_high", "paper_low",
                   "tissue_fraction", "seed", "deg_noise"):
        assert column in split.column_names
    assert split.features["slice"].shape == (16, 16)
    assert np.asarray(split.with_format("numpy")[0]["slice"]).shape == (16, 16)


def test_datasets_load_dataset_reads_the_card_configs(small_bench, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    via_card = datasets.load_dataset(str(small_bench), "hard", split="test_unseen", cache_dir=str(tmp_path / "cache"))
    assert via_card["sample_id"] == load_split("hard", "test_unseen", small_bench)["sample_id"]
    volumes = datasets.load_dataset(str(small_bench), "volumes_s64_linear", split="volumes", cache_dir=str(tmp_path / "cache"))
    assert volumes.features["voxels"].shape == (64, 64, 64)


def test_load_volume_returns_the_cube(small_bench):
    volume = load_volume("t1_crop", "easy", small_bench)
    assert volume.data.shape == (64, 64, 64) and volume.data.dtype == np.float32
    assert volume.mask.any() and 0 <= volume.data.min() and volume.data.max() <= 1
    assert load_volume("t1_crop", "paper", small_bench).data.shape == (20, 20, 20)
    with pytest.raises(DataError, match="unknown volume_id"):
        load_volume("nope", "easy", small_bench)


def test_unknown_track_split_and_root_are_clear_errors(small_bench, tmp_path):
    with pytest.raises(DataError, match="track 'medium'"):
        load_split("medium", "train", small_bench)
    with pytest.raises(DataError, match="unknown split"):
        load_split("easy", "test", small_bench)
    with pytest.raises(DataError, match="not a built benchmark"):
        load_split("easy", "train", tmp_path)


def test_torch_dataset_yields_volume_slice_and_labels(small_bench):
    import torch

    data = AtomSliceDataset("hard", "validation", small_bench)
    item = data[0]
    assert item["volume"].shape == (1, 64, 64, 64) and item["slice"].shape == (1, 16, 16)
    assert item["low_label"] // 27 == item["high_label"]
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))
    assert batch["volume"].shape == (4, 1, 64, 64, 64) and batch["slice"].shape == (4, 1, 16, 16)


def test_stream_is_seeded_and_draws_fresh_training_poses(small_bench):
    first = list(itertools.islice(stream_samples("hard", seed=5, batch_size=8, root=small_bench), 2))
    again = list(itertools.islice(stream_samples("hard", seed=5, batch_size=8, root=small_bench), 2))
    other = next(stream_samples("hard", seed=6, batch_size=8, root=small_bench))
    np.testing.assert_array_equal(np.stack(first[1]["slice"]), np.stack(again[1]["slice"]))
    assert not np.array_equal(np.stack(first[0]["slice"]), np.stack(other["slice"]))
    train_volumes = set(load_split("hard", "train", small_bench)["volume_id"])
    assert {b["volume_id"][0] for b in first} <= train_volumes
    assert all(np.all(np.asarray(b["low_label"]) // 27 == np.asarray(b["high_label"])) for b in first)


@pytest.mark.parametrize("text, message", [("{not json", "is not valid JSON"), ("{}", "is not an ATOM-Bench manifest"), ("[1]", "is not an ATOM-Bench manifest")])
def test_a_corrupt_manifest_is_a_one_line_error(tmp_path, text, message, capsys):
    from atom_bench.cli import main

    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(DataError, match=message):
        Benchmark.open(tmp_path)
    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and (tmp_path / "manifest.json").read_text() == text
