"""Training: a short run learns, checkpoints resume exactly, the prior counts, shipped weights reproduce."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from atom_bench.dataset import dataset_hash
from atom_bench.errors import ModelError
from atom_bench.models import read_safetensors, resolve_model
from atom_bench.train import CHANCE_HIGH, LOG_COLUMNS, read_log, train, validate

WEIGHTS = Path(__file__).resolve().parent.parent / "baselines" / "weights"
CARDS = WEIGHTS / "MODEL_CARDS.md"
SHAPES = {"paper": (20, (4, 4))}  # atom-mini: every other track is S=64, 16x16 slices

# the paper track (S=20, 4x4 slices) is the cheapest to train on: about half a second per step
FAST = dict(epochs=2, steps_per_epoch=3, batch_size=32, seed=0)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("run") / "cnn-paper"
    return out, train("cnn", "paper", out=out, **FAST)


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as fh:
        return dict(fh.metadata() or {})


def test_short_run_beats_chance_and_writes_files(full_run):
    out, summary = full_run
    assert summary["finished"] and summary["steps_done"] == 6
    assert summary["val_top1_high"] > CHANCE_HIGH + 0.03
    for name in ("best.safetensors", "last.safetensors", "state.pt", "log.csv"):
        assert (out / name).is_file()
    rows = read_log(out / "log.csv")
    assert [list(r) for r in rows] == [list(LOG_COLUMNS)] * 2
    assert [int(r["epoch"]) for r in rows] == [1, 2] and [int(r["step"]) for r in rows] == [3, 6]
    meta = _metadata(out / "best.safetensors")
    assert meta["track"] == "paper" and meta["seed"] == "0" and meta["dataset_hash"] == dataset_hash()
    assert float(meta["val_top1_high"]) == summary["val_top1_high"]
    # the best checkpoint reproduces its recorded validation score
    model, _ = resolve_model("cnn", weights=out / "best.safetensors", volume_size=20, slice_shape=(4, 4))
    assert validate(model, "paper")["val_top1_high"] == pytest.approx(summary["val_top1_high"], abs=1e-6)


def test_resume_continues_exactly(full_run, tmp_path):
    out, _ = full_run
    first = train("cnn", "paper", out=tmp_path, **{**FAST, "epochs": 1})  # "interrupted" after epoch 1
    assert first["epochs_done"] == 1
    prefix = read_log(tmp_path / "log.csv")
    resumed = train("cnn", "paper", out=tmp_path, **FAST)
    assert resumed["epochs_done"] == 2 and resumed["steps_done"] == 6
    rows = read_log(tmp_path / "log.csv")
    assert rows[:1] == prefix
    drop = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert [drop(r) for r in rows] == [drop(r) for r in read_log(out / "log.csv")]  # same as an unbroken run
    a, b = read_safetensors(tmp_path / "last.safetensors"), read_safetensors(out / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a finished run resumed again does nothing more
    assert train("cnn", "paper", out=tmp_path, **FAST)["steps_done"] == 6
    with pytest.raises(ModelError, match="other settings"):
        train("cnn", "paper", out=tmp_path, **{**FAST, "seed": 1})


def test_split_source_and_time_budget(tmp_path):
    summary = train("cnn", "paper", out=tmp_path, source="split", epochs=3, steps_per_epoch=50, max_minutes=0.0)
    assert summary["epochs_done"] == 1 and summary["steps_done"] == 1 and not summary["finished"]


def test_prior_counts_and_untrainable_models(tmp_path, small_bench):
    summary = train("prior", "easy", root=small_bench, out=tmp_path / "prior")
    state = read_safetensors(tmp_path / "prior" / "best.safetensors")
    assert state["high_counts"].sum() == state["low_counts"].sum() > 0
    model, _ = resolve_model("prior", weights=tmp_path / "prior" / "best.safetensors")
    assert validate(model, "easy", small_bench)["val_top1_high"] == summary["val_top1_high"]
    for name in ("chance", "search"):
        with pytest.raises(ModelError, match="nothing to train"):
            train(name, "paper", out=tmp_path / name)


def _shipped() -> list[Path]:
    return sorted(WEIGHTS.glob("*.safetensors"))


@pytest.mark.parametrize("path", _shipped(), ids=lambda p: p.stem)
def test_shipped_weights_reproduce_their_card(path):
    model_name, track = path.stem.rsplit("-", 1)
    meta = _metadata(path)
    assert meta["track"] == track and meta["dataset_hash"] == dataset_hash()
    size, shape = SHAPES.get(track, (64, (16, 16)))
    model, _ = resolve_model(model_name, weights=path, volume_size=size, slice_shape=shape)
    scores = validate(model, track)
    assert scores["val_top1_high"] == pytest.approx(float(meta["val_top1_high"]), abs=1e-6)
    assert scores["val_top1_low"] == pytest.approx(float(meta["val_top1_low"]), abs=1e-6)
    card = CARDS.read_text(encoding="utf-8")
    section = card.split(f"## {path.name}", 1)[1].split("\n## ", 1)[0]
    assert f"{float(meta['val_top1_high']):.4f}" in section and f"{float(meta['val_top1_low']):.4f}" in section


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [  # `python -m torch.distributed.run` is torchrun, without needing the venv's bin on PATH
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "atom_bench.cli", "train",
        "--model", "cnn", "--track", "paper", "--epochs", "1", "--steps-per-epoch", "2", "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "validation top-1" in done.stdout
    rows = read_log(tmp_path / "log.csv")
    assert len(rows) == 1 and rows[0]["step"] == "2"
    assert _metadata(tmp_path / "best.safetensors")["world_size"] == "2"
