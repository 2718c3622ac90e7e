"""Training: a short run learns, checkpoints resume exactly, the prior counts, shipped weights reproduce."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from atom_bench.core.volumes import Volume
from atom_bench.data.benchmark import Benchmark
from atom_bench.errors import ModelError
from atom_bench.models.batches import cube_symmetry
from atom_bench.models.batches import stream_batches as _batches_stream
from atom_bench.models.registry import resolve_model
from atom_bench.models.train import CHANCE_HIGH, LOG_COLUMNS, read_log, train, validate
from atom_bench.models.weights import read_safetensors

WEIGHTS = Path(__file__).resolve().parents[2] / "baselines" / "weights"
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
    assert meta["track"] == "paper" and meta["seed"] == "0" and meta["dataset_hash"] == Benchmark.open().hash
    assert float(meta["val_top1_high"]) == summary["val_top1_high"]
    # the best checkpoint reproduces its recorded validation score
    model, _ = resolve_model("cnn", weights=out / "best.safetensors", volume_size=20, slice_shape=(4, 4))
    assert validate(model, "paper")["val_top1_high"] == pytest.approx(summary["val_top1_high"], abs=1e-6)


@pytest.fixture(scope="module")
def t1_validation_bench(tmp_path_factory) -> Path:
    """A small real build (easy track, S = 32, 8 x 8 slices) of the atom-mini sources whose
    validation split is 256 slices of an unseen T1 (the shipped validation volume, a DWI, is a
    harder and noisier target for a test)."""
    import dataclasses

    from atom_bench.data.benchmark import embedded_root
    from atom_bench.data.build import BuildConfig, SplitCounts, build_benchmark
    from atom_bench.data.sources import read_volume_sources

    sources = read_volume_sources(embedded_root().parent / "sources" / "sources.csv")
    groups = {"itk_t1": "validation", "aniso_dwi": "unseen"}
    sources = [dataclasses.replace(s, group=groups.get(s.volume_id, s.group)) for s in sources if s.volume_id not in {"ct_head_template", "robex_t1", "mayavi_heart_ct"}]
    out = tmp_path_factory.mktemp("t1val") / "bench"
    counts = SplitCounts(train=32, validation=256, test_seen=8, test_unseen=8)
    build_benchmark(sources, out, BuildConfig(name="t1val", tracks=("easy",), size=32, slice_size=8, counts=counts, seed=1))
    return out


@pytest.mark.slow
def test_short_run_on_a_small_build_beats_the_prior_floor(t1_validation_bench, tmp_path):
    prior = train("prior", "easy", root=t1_validation_bench, out=tmp_path / "prior")
    summary = train("cnn", "easy", root=t1_validation_bench, out=tmp_path / "cnn", epochs=4, steps_per_epoch=50, loss="ce", seed=0)
    # 200 steps of 32 slices (about 25 s on one core); the prior floor is about 0.24 coarse here
    assert summary["val_top1_high"] > prior["val_top1_high"] + 0.04
    assert summary["val_top1_low"] > prior["val_top1_low"]


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
    for changed in ({"seed": 1}, {"loss": "ce"}, {"lr": 1e-4}):  # never resume a run under other settings
        with pytest.raises(ModelError, match="other settings"):
            train("cnn", "paper", out=tmp_path, **{**FAST, **changed})


def test_split_source_and_time_budget(tmp_path):
    summary = train("cnn", "paper", out=tmp_path, source="split", epochs=3, steps_per_epoch=50, max_minutes=0.0)
    assert summary["epochs_done"] == 1 and summary["steps_done"] == 1 and not summary["finished"]


@settings(max_examples=30, deadline=None)
@given(permutation=st.permutations([0, 1, 2]), flips=st.lists(st.integers(0, 1), min_size=3, max_size=3),
       voxel=st.lists(st.integers(0, 5), min_size=3, max_size=3))  # fmt: skip
def test_cube_symmetry_keeps_every_voxel_at_its_scanner_position(permutation, flips, voxel):
    rng = np.random.default_rng(0)
    data = rng.random((6, 6, 6)).astype(np.float32)
    affine = np.array([[0.0, -2, 0, 10], [1.5, 0, 0, -3], [0, 0, 2.5, 7], [0, 0, 0, 1]])
    volume = Volume("v", data, data > 0.5, affine, "")
    moved = cube_symmetry(volume, np.array(permutation), np.array(flips))
    old = [5 - voxel[a] if flips[a] else voxel[a] for a in range(3)]  # new index -> old, per new axis
    source = [0, 0, 0]
    for new_axis, old_axis in enumerate(permutation):
        source[old_axis] = old[new_axis]
    assert moved.data[tuple(voxel)] == data[tuple(source)] and moved.mask[tuple(voxel)] == volume.mask[tuple(source)]
    np.testing.assert_allclose(moved.affine @ [*voxel, 1], affine @ [*source, 1])
    assert moved.data.flags.c_contiguous


def test_stream_batches_mix_volumes_under_symmetries():
    volumes, slices, high, low = next(_batches_stream("easy", None, 8, seed=0, augment=True, volumes_per_batch=4))
    assert volumes.shape == (8, 1, 64, 64, 64) and slices.shape == (8, 1, 16, 16)
    assert len({volumes[i].sum().item() for i in range(0, 8, 2)}) > 1  # groups of two from different draws
    assert torch.equal(low // 27, high)
    again = next(_batches_stream("easy", None, 8, seed=0, augment=True, volumes_per_batch=4))
    assert all(torch.equal(x, y) for x, y in zip((volumes, slices, high, low), again))  # seeded


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
    assert meta["track"] == track and meta["dataset_hash"] == Benchmark.open().hash
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


@pytest.mark.parametrize("content", [b"garbage", b""])
def test_a_corrupt_training_state_is_a_one_line_error_and_is_kept(tmp_path, content, capsys):
    from atom_bench.cli import main

    (tmp_path / "state.pt").write_bytes(content)
    args = ["train", "--model", "cnn", "--track", "paper", "--out", str(tmp_path), "--epochs", "1", "--steps-per-epoch", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a readable training state" in err and len(err.splitlines()) == 1
    assert (tmp_path / "state.pt").read_bytes() == content


@pytest.mark.parametrize("option, value", [("--epochs", "0"), ("--lr", "-1"), ("--steps-per-epoch", "-1"), ("--max-minutes", "-1"), ("--batch-size", "0"),
                                           ("--slice-contrast", "stain"), ("--severity-ramp", "-1")])
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, option, value, capsys):
    from atom_bench.cli import main

    out = tmp_path / "run"
    assert main(["train", "--model", "cnn", "--track", "paper", "--out", str(out), option, value]) == 2
    assert capsys.readouterr().err.startswith(f"error: {option} ") and not out.exists()


def test_a_warm_start_begins_at_its_weights_and_says_so(full_run, tmp_path):
    from atom_bench.models.weights import describe_training

    start = full_run[0] / "best.safetensors"
    out = tmp_path / "warm"
    # lr 1e-12: one step moves no weight by more than about 1e-12, so the warm run ends where it began
    summary = train("cnn", "paper", out=out, init_from=start, **{**FAST, "epochs": 1, "steps_per_epoch": 1}, lr=1e-12)
    a, b = read_safetensors(start), read_safetensors(out / "last.safetensors")
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-9, rtol=0) for k in a)
    assert summary["val_top1_high"] == pytest.approx(float(_metadata(start)["val_top1_high"]), abs=1e-6)
    meta = _metadata(out / "best.safetensors")
    assert '"sha256": "' in meta["init_from"] and start.name in meta["init_from"]
    assert describe_training(meta).endswith(f"initialised from weights trained on {describe_training(_metadata(start))}")
    # a resumed run must start from the same weights
    from atom_bench.models.weights import save_weights

    model, _ = resolve_model("cnn", volume_size=20, slice_shape=(4, 4))
    save_weights(model, tmp_path / "other.safetensors")
    with pytest.raises(ModelError, match="other settings"):
        train("cnn", "paper", out=out, init_from=tmp_path / "other.safetensors", **{**FAST, "epochs": 2, "steps_per_epoch": 1}, lr=1e-12)


def test_a_warm_start_that_does_not_fit_is_a_one_line_error(tmp_path, capsys):
    from atom_bench.cli import main

    out = tmp_path / "run"
    base = ["train", "--model", "cnn", "--track", "paper", "--out", str(out), "--epochs", "1", "--steps-per-epoch", "1"]
    assert main([*base, "--init-from", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --init-from") and "does not exist" in err and len(err.splitlines()) == 1
    assert main([*base, "--init-from", str(WEIGHTS / "vit-paper.safetensors")]) == 2  # another model's weights
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --init-from") and "does not fit cnn" in err and len(err.splitlines()) == 1
    assert not out.exists()
