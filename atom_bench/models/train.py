"""Train a learned baseline (or count the prior) on one track; select the checkpoint on validation.

    summary = train("cnn", "easy", out=Path("runs/cnn-easy"), epochs=20, steps_per_epoch=50)

- Data: ``source="stream"`` draws fresh batches on the fly from the training volumes (the
  track's own pose sampler; ``volumes_per_batch`` volumes per batch, each under a random cube
  symmetry when ``augment``: with four training volumes, the symmetries are what stops a model
  from learning where slices usually are instead of reading the volume); ``source="split"``
  cycles seeded permutations of the fixed ``train`` split.
- After each epoch the model is scored (top-1 coarse and fine) on the ``validation`` split; the
  best epoch (highest coarse top-1, then fine top-1) is kept as ``<out>/best.safetensors`` with
  its metadata (track, seed, epoch, step, scores, toolkit version, dataset hash).
- ``<out>/last.safetensors`` (weights) and ``<out>/state.pt`` (optimizer, RNG states, counters)
  are written every epoch, so a rerun with the same ``out`` resumes where the last one stopped.
  ``state.pt`` is a plain ``torch.save`` of tensors, dicts and numbers: the optimizer's state
  dict is a nested structure that safetensors (flat tensor maps) cannot hold. It is only ever
  read back with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.
- ``<out>/log.csv`` has one row per epoch: epoch, step, train_loss, val_top1_high,
  val_top1_low, seconds (wall time since the run first started, resumes included).
- Under ``torchrun --nproc_per_node=N`` (``WORLD_SIZE > 1``) training uses
  DistributedDataParallel with the gloo backend (CPU); rank ``r`` draws its own stream with
  seed ``seed + r`` (or its own shard of the split); rank 0 writes every file.
"""

from __future__ import annotations

import csv
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from atom_bench import __version__
from atom_bench._io import atomic_path
from atom_bench.data.benchmark import Benchmark
from atom_bench.errors import ModelError
from atom_bench.models.registry import resolve_factory, resolve_model, save_weights
from atom_bench.core.volumes import Volume

LOG_COLUMNS = ("epoch", "step", "train_loss", "val_top1_high", "val_top1_low", "seconds")
NOTHING_TO_TRAIN = ("chance", "search")
CHANCE_HIGH, CHANCE_LOW = 1 / 27, 1 / 729


# --------------------------------------------------------------------------------------------
# Helpers


def _dist() -> tuple[int, int, bool]:
    """``(rank, world_size, owned)``: initialises gloo from the torchrun environment when no
    process group exists yet (``owned``: this call created it, and training destroys it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist

    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), owned


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _track_shape(track: str, root: Any) -> tuple[int, tuple[int, int]]:
    spec = Benchmark.open(root).spec(track)
    return spec.size, spec.slice_shape


def _batches_split(track: str, root: Any, batch_size: int, seed: int, rank: int, world: int) -> Iterator[tuple[Tensor, ...]]:
    """Endless batches from the train split: seeded permutations, each rank its own shard."""
    from atom_bench.data.dataset import AtomSliceDataset

    data = AtomSliceDataset(track, "train", root)
    n = len(data)
    vols = data.volumes
    epoch = 0
    while True:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))[rank::world]
        for start in range(0, len(perm) - batch_size + 1, batch_size):
            idx = perm[start:start + batch_size].tolist()
            volumes = torch.stack([vols[data.volume_ids[i]] for i in idx])[:, None]
            yield volumes, data.slices[idx][:, None], data.high[idx], data.low[idx]
        epoch += 1


def cube_symmetry(volume: Volume, permutation: Sequence[int], flips: Sequence[int]) -> Volume:
    """``volume`` with its voxel axes permuted then flipped (one of the cube's 48 symmetries).

    New axis ``a`` is old axis ``permutation[a]``, reversed where ``flips[a]``. The affine is
    updated so that every voxel keeps its scanner position: the anatomy is unchanged, only its
    place in the cube (and so every block label) moves. Used to augment training volumes: a
    model can no longer learn where slices usually are in 4 volumes, only where they are in this
    one.
    """
    from dataclasses import replace

    size = volume.size
    data, mask = np.transpose(volume.data, permutation), np.transpose(volume.mask, permutation)
    axes = tuple(int(a) for a in np.flatnonzero(flips))
    if axes:
        data, mask = np.flip(data, axes), np.flip(mask, axes)
    to_old = np.zeros((4, 4))  # new voxel index (homogeneous) -> old voxel index
    to_old[3, 3] = 1.0
    for new_axis, old_axis in enumerate(permutation):
        sign = -1.0 if flips[new_axis] else 1.0
        to_old[old_axis, new_axis] = sign
        to_old[old_axis, 3] = size - 1.0 if flips[new_axis] else 0.0
    return replace(volume, data=np.ascontiguousarray(data), mask=np.ascontiguousarray(mask), affine=volume.affine @ to_old)


def _batches_stream(
    track: str, root: Any, batch_size: int, seed: int, augment: bool = True, volumes_per_batch: int = 4
) -> Iterator[tuple[Tensor, ...]]:
    """Endless fresh batches rendered on the fly from the training volumes.

    Each batch holds ``volumes_per_batch`` groups of slices, each group from one training volume
    (drawn at random) under a random cube symmetry when ``augment``; poses come from the track's
    own sampler (:func:`atom_bench.core.tracks.sample_poses`), so no pose is ever seen twice.
    """
    from atom_bench.data.dataset import stream_sources
    from atom_bench.core.tracks import TRACK_NAMES, render_samples, sample_poses

    spec, volumes = stream_sources(track, root, "train")
    ids = sorted(volumes)
    rng = np.random.default_rng([seed, TRACK_NAMES.index(track), 1])
    groups = max(1, min(volumes_per_batch, batch_size))
    sizes = [batch_size // groups + (i < batch_size % groups) for i in range(groups)]
    while True:
        vols, slices, high, low = [], [], [], []
        for count in sizes:
            volume = volumes[ids[rng.integers(len(ids))]]
            if augment:
                volume = cube_symmetry(volume, rng.permutation(3), rng.integers(0, 2, size=3))
            poses = sample_poses(spec, volume, count, rng)
            columns = render_samples(spec, volume, poses, rng.integers(0, 2**31 - 1, size=count))
            vols.append(torch.from_numpy(volume.data)[None, None].expand(count, 1, *volume.data.shape))
            slices.append(torch.as_tensor(np.stack(columns["slice"]), dtype=torch.float32)[:, None])
            high.append(torch.as_tensor(columns["high_label"], dtype=torch.long))
            low.append(torch.as_tensor(columns["low_label"], dtype=torch.long))
        yield torch.cat(vols), torch.cat(slices), torch.cat(high), torch.cat(low)


def _skip(it: Iterator[Any], n: int) -> Iterator[Any]:
    for _ in range(n):
        next(it)
    return it


@torch.no_grad()
def validate(model: Any, track: str, root: Any = None, batch_size: int = 32, split: str = "validation") -> dict[str, float]:
    """Top-1 coarse and fine accuracy of ``model.predict`` on a split (eval mode, in order)."""
    from atom_bench.data.dataset import AtomSliceDataset

    data = AtomSliceDataset(track, split, root)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    hits_high = hits_low = 0
    for start in range(0, len(data), batch_size):
        idx = list(range(start, min(start + batch_size, len(data))))
        volumes = torch.stack([data.volumes[data.volume_ids[i]] for i in idx])[:, None]
        pred = model.predict(volumes, data.slices[idx][:, None])
        hits_high += int((pred.high_label == data.high[idx]).sum())
        hits_low += int((pred.low_label == data.low[idx]).sum())
    if was_training:
        model.train()
    return {"val_top1_high": hits_high / len(data), "val_top1_low": hits_low / len(data)}


def _metadata(spec: str, track: str, seed: int, root: Any, extra: dict[str, Any]) -> dict[str, str]:
    meta = {"model": spec, "track": track, "seed": seed, "toolkit_version": __version__, "dataset_hash": Benchmark.open(root).hash}
    meta.update(extra)
    return {k: str(v) for k, v in meta.items()}


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def read_log(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def export_weights(
    model_spec: str,
    track: str,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    dtype: str = "float16",
    root: str | os.PathLike[str] | None = None,
) -> dict[str, float]:
    """Copy a checkpoint to a shipped weights file stored in ``dtype`` (half the size in float16).

    The weights are rounded to ``dtype``, the validation scores are recomputed with the rounded
    weights (loaded back into the float32 model, as ``resolve_model(weights=...)`` does) and
    written to the metadata; the run's own scores stay as ``run_val_top1_*``.
    """
    from atom_bench.models.registry import read_safetensors

    size, shape = _track_shape(track, root)
    model, _ = resolve_model(model_spec, volume_size=size, slice_shape=shape)
    cast = getattr(torch, dtype)
    state = {k: v.to(cast) if v.is_floating_point() else v for k, v in read_safetensors(src).items()}
    model.load_state_dict(state, strict=True)
    scores = validate(model, track, root)
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), "pt") as fh:
        meta = dict(fh.metadata() or {})
    for key in ("val_top1_high", "val_top1_low"):
        meta[f"run_{key}"] = meta.get(key, "")
    meta.update({k: str(v) for k, v in scores.items()}, weights_dtype=dtype)
    with atomic_path(Path(dst)) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=meta)
    return scores


# --------------------------------------------------------------------------------------------
# Prior: "training" is counting labels


def _train_prior(spec: str, track: str, root: Any, seed: int, out: Path) -> dict[str, Any]:
    from atom_bench.data.dataset import AtomSliceDataset

    start = time.monotonic()
    data = AtomSliceDataset(track, "train", root)
    size, shape = _track_shape(track, root)
    model, _ = resolve_model(spec, volume_size=size, slice_shape=shape)
    model.set_counts(torch.bincount(data.high, minlength=27), torch.bincount(data.low, minlength=729))
    scores = validate(model, track, root)
    out.mkdir(parents=True, exist_ok=True)
    meta = _metadata(spec, track, seed, root, {"epoch": 0, "step": 0, "n_train": len(data), "eval_batch_size": 32, **scores})
    best = save_weights(model, out / "best.safetensors", metadata=meta)
    seconds = time.monotonic() - start
    _write_log(out / "log.csv", [{"epoch": 0, "step": 0, "train_loss": "", **scores, "seconds": f"{seconds:.3f}"}])
    return {"best": str(best), "epoch": 0, "step": 0, **scores, "seconds": seconds}


# --------------------------------------------------------------------------------------------
# Training


def check_settings(model_spec: str, source: str = "stream", loss: str = "asl", volumes_per_batch: int = 4) -> str:
    """Raise :class:`ModelError` for settings :func:`train` cannot run; return the model's name.

    Cheap (no data, no weights), so a command line can check before it starts a progress bar."""
    from atom_bench.models.losses import LOSSES

    name = resolve_factory(model_spec)[1]
    if name in NOTHING_TO_TRAIN:
        raise ModelError(f"model {model_spec!r} has nothing to train (it has no learned parameters or counts)")
    if source not in ("stream", "split"):
        raise ModelError(f"unknown source {source!r}; choose 'stream' or 'split'")
    if volumes_per_batch < 1:
        raise ModelError(f"--volumes-per-batch must be at least 1; got {volumes_per_batch}")
    if loss not in LOSSES:
        raise ModelError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    return name


def train(
    model_spec: str,
    track: str,
    *,
    out: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    epochs: int = 20,
    steps_per_epoch: int = 100,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    source: str = "stream",
    max_minutes: float | None = None,
    resume: bool = True,
    loss: str = "asl",
    augment: bool = True,
    volumes_per_batch: int = 4,
    on_step: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train ``model_spec`` on ``track``; returns the best epoch's validation scores and paths.

    Args:
        model_spec: a learned baseline (``regismcan``, ``cnn``, ``vit``, ``released``), any model
            whose ``forward`` returns ``(high, low)`` logits, or ``prior`` (counts labels).
        out: run directory (``best.safetensors``, ``last.safetensors``, ``state.pt``, ``log.csv``).
        epochs / steps_per_epoch: optimisation steps per rank = ``epochs * steps_per_epoch``.
        source: ``"stream"`` (fresh on-the-fly samples) or ``"split"`` (the fixed train split).
        max_minutes: wall-time budget of this call; the epoch in progress is cut short, scored
            and saved when it runs out (a later call resumes).
        resume: continue from ``<out>/state.pt`` if present (otherwise start over).
        loss: ``"asl"`` (asymmetric loss, as the released RegisMCAN) or ``"ce"``.
        augment / volumes_per_batch: stream only, see the module docstring.
        on_step: called as ``on_step(step, total_steps)`` after each step (progress bars).

    Raises:
        ModelError: a model with nothing to train (chance, search) or without a ``forward``.
    """
    from atom_bench.models.losses import block_loss

    out = Path(out)
    name = check_settings(model_spec, source, loss, volumes_per_batch)
    if name == "prior":
        return _train_prior(model_spec, track, root, seed, out)

    rank, world, owned = _dist()
    started = time.monotonic()
    seed_everything(seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    size, shape = _track_shape(track, root)
    model, _ = resolve_model(model_spec, volume_size=size, slice_shape=shape)
    if not isinstance(model, torch.nn.Module) or not any(p.requires_grad for p in model.parameters()):
        raise ModelError(f"model {model_spec!r} has nothing to train (no learnable parameters)")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)

    state_path, log_path = out / "state.pt", out / "log.csv"
    config = {"model": model_spec, "track": track, "seed": seed, "source": source, "batch_size": batch_size, "world": world,
              "augment": augment, "volumes_per_batch": volumes_per_batch, "loss": loss, "lr": lr}  # fmt: skip
    epoch, step, best_key, seconds_before, rows = 0, 0, (-1.0, -1.0), 0.0, []
    if resume and state_path.is_file():
        state = torch.load(state_path, weights_only=True)
        if state["config"] != config:
            raise ModelError(f"{out} holds a run with other settings {state['config']}; use another --out or resume=False")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        epoch, step, seconds_before = state["epoch"], state["step"], state["seconds"]
        best_key = tuple(state["best_key"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(("MT19937", state["numpy_rng"].numpy().astype(np.uint32), int(state["numpy_pos"]), 0, 0.0))
        rows = read_log(log_path) if log_path.is_file() else []
        rows = rows[:epoch]
    elif rank == 0:
        out.mkdir(parents=True, exist_ok=True)

    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net: torch.nn.Module = DistributedDataParallel(model)
    else:
        net = model
    batches = (
        _batches_stream(track, root, batch_size, seed + rank, augment, volumes_per_batch)
        if source == "stream"
        else _batches_split(track, root, batch_size, seed, rank, world)
    )
    batches = _skip(batches, step)  # deterministic resume: the same batches as an unbroken run
    total = epochs * steps_per_epoch
    deadline = started + 60 * max_minutes if max_minutes is not None else math.inf
    summary: dict[str, Any] = {}
    out_of_time = False

    while epoch < epochs and not out_of_time:
        model.train()
        losses = []
        while step < (epoch + 1) * steps_per_epoch:
            volumes, slices, high, low = next(batches)
            logits = net(volumes, slices)
            value = block_loss(logits[0], logits[1], high, low, kind=loss)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            losses.append(float(value.detach()))
            step += 1
            if on_step is not None and rank == 0:
                on_step(step, total)
            out_of_time = time.monotonic() > deadline
            if world > 1:
                import torch.distributed as dist

                flag = torch.tensor([float(out_of_time)])
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                out_of_time = bool(flag.item())
            if out_of_time:
                break
        scores = validate(model, track, root)
        epoch += 1
        seconds = seconds_before + time.monotonic() - started
        rows.append({"epoch": epoch, "step": step, "train_loss": f"{np.mean(losses):.6f}" if losses else "",
                     **scores, "seconds": f"{seconds:.3f}"})  # fmt: skip
        key = (scores["val_top1_high"], scores["val_top1_low"])
        meta = _metadata(model_spec, track, seed, root, {
            "epoch": epoch, "step": step, "batch_size": batch_size, "world_size": world, "lr": lr, "loss": loss,
            "source": source, "augment": augment, "volumes_per_batch": volumes_per_batch, "eval_batch_size": 32, "seconds": f"{seconds:.1f}", **scores})  # fmt: skip
        if rank == 0:
            if key > best_key:
                best_key = key
                save_weights(model, out / "best.safetensors", metadata=meta)
            save_weights(model, out / "last.safetensors", metadata=meta)
            state = {
                "config": config,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step,
                "seconds": seconds, "best_key": list(best_key), "torch_rng": torch.get_rng_state(),
                "numpy_rng": torch.from_numpy(np.random.get_state()[1].astype(np.int64)), "numpy_pos": int(np.random.get_state()[2]),
            }  # fmt: skip
            with atomic_path(state_path) as tmp:
                torch.save(state, tmp)
            _write_log(log_path, rows)
        best_key = max(best_key, key)

    if rows:
        best_row = max(rows, key=lambda r: (float(r["val_top1_high"]), float(r["val_top1_low"])))
        summary = {
            "best": str(out / "best.safetensors"), "epoch": int(best_row["epoch"]), "step": int(best_row["step"]),
            "val_top1_high": float(best_row["val_top1_high"]), "val_top1_low": float(best_row["val_top1_low"]),
            "epochs_done": epoch, "steps_done": step, "seconds": float(rows[-1]["seconds"]), "finished": epoch >= epochs,
        }  # fmt: skip
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        if owned:
            dist.destroy_process_group()
    return summary
