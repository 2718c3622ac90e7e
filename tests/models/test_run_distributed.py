"""Evaluation under torchrun (sharded by volume, gathered on rank 0), on a device, and resumed from its cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from atom_bench.cli import main
from atom_bench.errors import ModelError
from atom_bench.models.run import build_model, evaluate_model, load_inputs, predict
from atom_bench.models.sharding import (
    BatchCache,
    cache_parts,
    model_source_sha256,
    reassemble,
    resolve_device,
    shard_indices,
)


def test_shards_are_whole_volumes_balanced_and_deterministic():
    ids = ["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["d"] * 2 + ["a"]  # a volume's rows need not be contiguous
    for world in (1, 2, 3, 4):
        shares = [shard_indices(ids, r, world) for r in range(world)]
        assert sorted(np.concatenate(shares).tolist()) == list(range(len(ids)))
        assert all(len({ids[i] for i in s} & {ids[i] for i in t}) == 0 for k, s in enumerate(shares) for t in shares[k + 1 :])
        assert all(np.array_equal(s, shard_indices(list(ids), r, world)) for r, s in enumerate(shares))
    # largest first to the lightest rank: a (6) -> 0, b (3) -> 1, c (3) -> 1, d (2) -> 0
    assert [sorted({ids[i] for i in shard_indices(ids, r, 2)}) for r in range(2)] == [["a", "d"], ["b", "c"]]
    few = [shard_indices(["a"] * 5, r, 2) for r in range(2)]  # fewer volumes than ranks: contiguous chunks
    assert few[0].tolist() == [0, 1, 2] and few[1].tolist() == [3, 4]


def test_reassemble_puts_shares_back_in_split_order_and_refuses_gaps():
    arrays = {"high": np.arange(6) * 10, "low_top5": np.arange(30).reshape(6, 5)}
    parts = [(idx, {k: v[idx] for k, v in arrays.items()}) for idx in (np.array([1, 4]), np.array([0, 2, 3, 5]))]
    back = reassemble(parts, 6)
    assert all(np.array_equal(back[k], arrays[k]) for k in arrays)
    assert np.array_equal(reassemble([*parts, (np.array([], dtype=np.int64), None)], 6)["high"], arrays["high"])
    with pytest.raises(ModelError, match="exactly once"):
        reassemble(parts[:1], 6)


def _frame(path):
    return pd.read_parquet(path).reset_index(drop=True)


@pytest.mark.slow
def test_torchrun_two_processes_predict_exactly_what_one_does(small_bench, tmp_path):
    checkout = str(Path(__file__).resolve().parents[2])  # tests.models.matcher from the checkout, run from tmp_path
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [checkout, os.environ.get("PYTHONPATH")]))}
    common = ["evaluate", "--model", "tests.models.matcher", "--track", "easy", "--split", "test_seen", "--root", str(small_bench),
              "--batch-size", "4"]  # fmt: skip
    single = subprocess.run([sys.executable, "-m", "atom_bench.cli", *common, "--out", str(tmp_path / "one.parquet")],
                            check=False, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert single.returncode == 0, single.stderr[-2000:]
    cmd = [  # `python -m torch.distributed.run` is torchrun, without needing the venv's bin on PATH
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "atom_bench.cli",
        *common, "--out", str(tmp_path / "two.parquet"),
    ]  # fmt: skip
    double = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert double.returncode == 0, double.stderr[-2000:]
    one, two = _frame(tmp_path / "one.parquet"), _frame(tmp_path / "two.parquet")
    assert len(one) == len(two) > 4 and list(one.columns) == list(two.columns)
    for column in one.columns:
        assert one[column].map(repr).tolist() == two[column].map(repr).tolist(), column
    # rank 0 alone reports: the scores and the diagnostic's lines once, and the same as one process's
    report = [line for line in double.stdout.splitlines() if line.startswith(("volume ", "wrote"))]
    assert len(report) == 3 and report[:2] == [line for line in single.stdout.splitlines() if line.startswith("volume ")]
    assert not (tmp_path / "runs" / ".cache").exists() or not any((tmp_path / "runs" / ".cache").iterdir())


class Interrupted(Exception):
    pass


class Counting:
    """Wraps a model and counts its predict calls."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def predict(self, volumes, slices):
        self.calls += 1
        return self.model.predict(volumes, slices)


def _stop_after(batches: int):
    seen = []

    def on_batch(n):
        seen.append(n)
        if len(seen) == batches:
            raise Interrupted

    return on_batch


def _parts(mode="own"):
    return cache_parts("tests.models.matcher", "x", None, "m", "easy", "test_seen", mode, 4, "cpu")


def test_an_interrupted_prediction_resumes_from_its_finished_batches(small_bench, tmp_path):
    inputs = load_inputs("easy", "test_seen", small_bench)
    model, _ = build_model("tests.models.matcher", "easy", None, small_bench)
    n, size = len(inputs.sample_ids), 4
    n_batches = -(-n // size)
    assert n_batches >= 3
    reference = predict(model, inputs, size, "own")
    cache = BatchCache.under(tmp_path, _parts(), n, size)
    first = Counting(model)
    with pytest.raises(Interrupted):
        predict(first, inputs, size, "own", _stop_after(2), cache=cache)
    assert first.calls == 2 and not cache.complete()
    assert sorted(p.name for p in cache.directory.iterdir()) == ["batch-00000.npz", "batch-00001.npz", "meta.json"]
    meta = json.loads((cache.directory / "meta.json").read_text())
    assert meta["n_batches"] == n_batches and meta["parts"]["mode"] == "own" and meta["parts"]["batch_size"] == size
    second = Counting(model)
    progress = []
    resumed = predict(second, inputs, size, "own", progress.append, cache=BatchCache.under(tmp_path, _parts(), n, size))
    assert second.calls == n_batches - 2 and sum(progress) == n
    assert resumed.keys() == reference.keys() and all(np.array_equal(resumed[k], reference[k]) for k in reference)
    assert cache.complete()


def test_a_damaged_or_foreign_cache_is_predicted_again(small_bench, tmp_path):
    inputs = load_inputs("easy", "test_seen", small_bench)
    model, _ = build_model("tests.models.matcher", "easy", None, small_bench)
    n = len(inputs.sample_ids)
    reference = predict(model, inputs, 4, "own")
    cache = BatchCache.under(tmp_path, _parts(), n, 4)
    predict(model, inputs, 4, "own", cache=cache)
    (cache.directory / "batch-00001.npz").write_bytes(b"garbage")  # a torn write from another tool
    with open(cache.directory / "batch-00002.npz", "wb") as handle:  # the wrong number of rows
        np.savez(handle, high_top5=np.zeros((1, 5), dtype=np.int64), low_top5=np.zeros((1, 5), dtype=np.int64))
    assert not cache.complete()
    counting = Counting(model)
    again = predict(counting, inputs, 4, "own", cache=BatchCache.under(tmp_path, _parts(), n, 4))
    assert counting.calls == 2 and all(np.array_equal(again[k], reference[k]) for k in reference)
    # a meta.json of something else in the directory: everything is predicted afresh
    meta = json.loads((cache.directory / "meta.json").read_text())
    (cache.directory / "meta.json").write_text(json.dumps({**meta, "n_rows": n + 1}))
    counting = Counting(model)
    predict(counting, inputs, 4, "own", cache=BatchCache.under(tmp_path, _parts(), n, 4))
    assert counting.calls == -(-n // 4)


def test_cache_keys_follow_mode_batch_size_weights_and_model_source(tmp_path):
    base = BatchCache.under(tmp_path, _parts(), 10, 4).directory
    assert base == BatchCache.under(tmp_path, _parts(), 10, 4).directory
    assert base != BatchCache.under(tmp_path, _parts("blank"), 10, 4).directory
    assert base != BatchCache.under(tmp_path, cache_parts("tests.models.matcher", "x", None, "m", "easy", "test_seen", "own", 8, "cpu"), 10, 8).directory  # fmt: skip
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"one")
    with_weights = cache_parts("m", "x", weights, "m", "easy", "test_seen", "own", 4, "cpu")
    weights.write_bytes(b"two")
    assert with_weights != cache_parts("m", "x", weights, "m", "easy", "test_seen", "own", 4, "cpu")
    source = tmp_path / "user_model.py"
    source.write_text("def create_model(volume_size=None, slice_shape=None):\n    return None\n")
    from atom_bench.models.registry import resolve_spec

    factory = resolve_spec(str(source)).factory
    before = model_source_sha256(factory)
    source.write_text("def create_model(volume_size=None, slice_shape=None):\n    return 1\n")
    assert before != model_source_sha256(factory) != "none"


def test_evaluate_model_resumes_and_removes_its_cache_when_done(small_bench, tmp_path, monkeypatch):
    from tests.models import matcher

    args = ("tests.models.matcher", "easy", "test_seen")
    kwargs = {"root": small_bench, "batch_size": 4, "cache_dir": tmp_path / "cache"}
    reference, _ = evaluate_model(*args, **kwargs, out=tmp_path / "ref.parquet", cache=False)
    assert not (tmp_path / "cache").exists()
    calls = []
    original = matcher.AxisMatcher.predict
    monkeypatch.setattr(matcher.AxisMatcher, "predict", lambda self, v, s: (calls.append(1), original(self, v, s))[1])
    with pytest.raises(Interrupted):
        evaluate_model(*args, **kwargs, out=tmp_path / "p.parquet", on_batch=_stop_after(5))
    assert len(calls) == 5 and not (tmp_path / "p.parquet").exists()  # never scored from a partial cache
    calls.clear()
    scores, path = evaluate_model(*args, **kwargs, out=tmp_path / "p.parquet")
    n_batches = 3 * -(-len(load_inputs("easy", "test_seen", small_bench).sample_ids) // 4)
    assert len(calls) == n_batches - 5
    assert scores["metrics"] == reference["metrics"] and scores["volume_reliance"] == reference["volume_reliance"]
    one, two = _frame(tmp_path / "ref.parquet"), _frame(path)
    assert all(one[c].map(repr).tolist() == two[c].map(repr).tolist() for c in one.columns)
    assert not any((tmp_path / "cache").iterdir())  # a finished run leaves no cache behind


def test_an_unavailable_or_unknown_device_is_a_one_line_error(capsys):
    assert main(["evaluate", "--model", "chance", "--track", "easy", "--device", "nonsense"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown --device 'nonsense'" in err and len(err.splitlines()) == 1
    if not torch.cuda.is_available():
        assert main(["evaluate", "--model", "chance", "--track", "easy", "--device", "cuda"]) == 2
        err = capsys.readouterr().err.strip()
        assert "--device 'cuda' is not available" in err and len(err.splitlines()) == 1
    assert resolve_device("cpu") == torch.device("cpu")


DEVICE_MODEL = """
import torch
from atom_bench.models.protocol import Prediction

class Ranked(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.high = torch.nn.Parameter(torch.arange(27.0))
        self.low = torch.nn.Parameter(torch.arange(729.0).flip(0))

    def predict(self, volumes, slices):
        with open(__file__ + ".seen", "a") as handle:  # where the batch and the weights were
            handle.write(f"{volumes.device.type} {slices.device.type} {self.high.device.type}\\n")
        shift = (slices.flatten(1).sum(1, keepdim=True) > 0).float()  # reads the batch, on its device
        return Prediction(self.high[None] + shift, self.low[None] + shift)

def create_model(volume_size=None, slice_shape=None):
    return Ranked()
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_moves_model_and_batches_and_predicts_what_the_cpu_does(small_bench, tmp_path):
    source = tmp_path / "ranked.py"
    source.write_text(DEVICE_MODEL)
    kwargs = {"root": small_bench, "batch_size": 4, "cache": False, "diagnostic": False}
    evaluate_model(str(source), "easy", "test_seen", **kwargs, out=tmp_path / "cpu.parquet")
    evaluate_model(str(source), "easy", "test_seen", **kwargs, out=tmp_path / "gpu.parquet", device="cuda")
    one, two = _frame(tmp_path / "cpu.parquet"), _frame(tmp_path / "gpu.parquet")
    assert all(one[c].map(repr).tolist() == two[c].map(repr).tolist() for c in one.columns)
    seen = set((tmp_path / "ranked.py.seen").read_text().splitlines())
    assert seen == {"cpu cpu cpu", "cuda cuda cuda"}
