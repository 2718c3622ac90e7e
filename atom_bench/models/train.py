"""Train a learned baseline (or count the prior) on one track; select the checkpoint on validation.

    summary = train("cnn", "easy", out=Path("runs/cnn-easy"), epochs=20, steps_per_epoch=50)

- What can be trained is read from the model's registry entry (:class:`~atom_bench.models.registry.Capabilities`):
  a ``trainable`` model (or an unregistered user model meeting the trainable contract of
  :class:`~atom_bench.models.protocol.TrainableLocator`) is optimised; a ``needs_train_counts``
  one (the prior) is built from the training split's label counts; anything else has nothing
  to train.
- Data (:mod:`atom_bench.models.batches`): ``source="stream"`` draws fresh batches on the fly from
  the training volumes (the track's own pose sampler; ``volumes_per_batch`` volumes per batch,
  each under a random cube symmetry when ``augment``: with four training volumes, the symmetries
  are what stops a model from learning where slices usually are instead of reading the volume);
  ``source="split"`` cycles seeded permutations of the fixed ``train`` split; ``source="synthetic"``
  (:mod:`atom_bench.models.synthetic`) turns each training volume into endless new subjects (a
  random smooth warp of its intensity classes, random contrast, bias, blur and noise; on
  ``histology`` the slice gets its own contrast), meant to make a model match slice against volume.
  Validation (and so checkpoint choice) stays on the real ``validation`` volumes for every source.
- After each epoch the model is scored (top-1 coarse and fine) on the ``validation`` split by the
  evaluation loop (:func:`atom_bench.models.run.iter_predictions`); the best epoch (highest coarse
  top-1, then fine top-1) is kept as ``<out>/best.safetensors`` with its metadata.
- ``<out>/last.safetensors``, ``<out>/state.pt`` and ``<out>/log.csv`` are written every epoch
  (:mod:`atom_bench.models.checkpoints`), so a rerun with the same ``out`` resumes exactly where
  the last one stopped (the stream and the split replay the batches already seen; the synthetic
  source draws batch ``n`` directly from ``(seed, n)``). The log has one row per epoch: epoch,
  step, train_loss, val_top1_high, val_top1_low, seconds (wall time since the run first
  started, resumes included).
- Under ``torchrun --nproc_per_node=N`` (``WORLD_SIZE > 1``) training uses
  DistributedDataParallel with the gloo backend (CPU); rank ``r`` draws its own stream with
  seed ``seed + r`` (or its own shard of the split); rank 0 writes every file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atom_bench.core.labels import N_HIGH, N_LOW
from atom_bench.errors import ModelError
from atom_bench.models.batches import (
    Batch,
    cube_symmetry,
    skip,
    split_batches,
    stream_batches,
)
from atom_bench.models.checkpoints import (
    LOG_COLUMNS,
    RunDirectory,
    RunProgress,
    read_log,
    run_metadata,
    write_log,
)
from atom_bench.models.protocol import SliceLocator, is_trainable
from atom_bench.models.registry import ResolvedSpec, resolve_spec
from atom_bench.models.run import (
    SplitInputs,
    iter_predictions,
    track_kwargs,
    train_count_kwargs,
)
from atom_bench.models.sharding import Distributed, distributed
from atom_bench.models.synthetic import SynthSettings, synthetic_batches
from atom_bench.models.weights import (
    describe_training,
    load_weights,
    read_metadata,
    save_weights,
)

__all__ = [
    "CHANCE_HIGH", "CHANCE_LOW", "LOG_COLUMNS", "check_settings", "cube_symmetry", "read_log",
    "seed_everything", "train", "validate", "validation_hits",
]  # fmt: skip

CHANCE_HIGH, CHANCE_LOW = 1 / N_HIGH, 1 / N_LOW
SOURCES = ("stream", "split", "synthetic")
EVAL_BATCH_SIZE = 32  # validation batch size (recorded in every checkpoint's metadata)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@torch.no_grad()
def validation_hits(
    model: SliceLocator, track: str, root: Any = None, batch_size: int = EVAL_BATCH_SIZE, split: str = "validation"
) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice top-1 hits ``(coarse, fine)`` of ``model.predict`` on a split, boolean arrays in row order.

    The answers come from the evaluation loop (:func:`atom_bench.models.run.iter_predictions`);
    top-1 is the argmax of each score vector; the model is scored in eval mode.
    """
    from atom_bench.data.dataset import AtomSliceDataset

    data = AtomSliceDataset(track, split, root)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    high, low = np.zeros(len(data), dtype=bool), np.zeros(len(data), dtype=bool)
    try:
        for rows, prediction in iter_predictions(model, SplitInputs.of(data, track, root), batch_size):
            high[rows] = (prediction.high_label == data.high[rows]).numpy()
            low[rows] = (prediction.low_label == data.low[rows]).numpy()
    finally:
        if was_training:
            model.train()
    return high, low


def validate(model: SliceLocator, track: str, root: Any = None, batch_size: int = EVAL_BATCH_SIZE, split: str = "validation") -> dict[str, float]:
    """Top-1 coarse and fine accuracy of ``model.predict`` on a split (:func:`validation_hits`)."""
    high, low = validation_hits(model, track, root, batch_size, split)
    return {"val_top1_high": float(high.mean()), "val_top1_low": float(low.mean())}


# --------------------------------------------------------------------------------------------
# Settings


def _check_numbers(epochs: int, steps_per_epoch: int, batch_size: int, lr: float, max_minutes: float | None) -> None:
    for name, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelError(f"{name} must be a whole number of at least 1; got {value!r}", parameters=(name,))
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ModelError(f"lr must be a positive, finite learning rate; got {lr!r}", parameters=("lr",))
    if max_minutes is not None and not (isinstance(max_minutes, (int, float)) and math.isfinite(max_minutes) and max_minutes >= 0):
        # 0 is allowed: one step, then the epoch is scored and saved (a smoke test of a run directory)
        raise ModelError(f"max_minutes must be a number of minutes >= 0 (or None for no limit); got {max_minutes!r}", parameters=("max_minutes",))


def _checked(
    model_spec: str, source: str, loss: str, volumes_per_batch: int, *, epochs: int = 1, steps_per_epoch: int = 1,
    batch_size: int = 1, lr: float = 1e-3, max_minutes: float | None = None,
) -> ResolvedSpec:  # fmt: skip
    from atom_bench.models.losses import LOSSES

    _check_numbers(epochs, steps_per_epoch, batch_size, lr, max_minutes)
    resolved = resolve_spec(model_spec)
    capabilities = resolved.entry.capabilities if resolved.entry is not None else None
    if capabilities is not None and not (capabilities.trainable or capabilities.needs_train_counts):
        raise ModelError(f"model {model_spec!r} has nothing to train (it has no learned parameters or counts)")
    if source not in SOURCES:
        raise ModelError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}", parameters=("source",))
    if volumes_per_batch < 1:
        raise ModelError(f"volumes_per_batch must be at least 1; got {volumes_per_batch}", parameters=("volumes_per_batch",))
    if loss not in LOSSES:
        raise ModelError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    return resolved


def check_settings(model_spec: str, source: str = "stream", loss: str = "asl", volumes_per_batch: int = 4, **numbers: Any) -> str:
    """Raise :class:`ModelError` for settings :func:`train` cannot run; return the model's name.

    ``numbers``: ``epochs``, ``steps_per_epoch``, ``batch_size``, ``lr``, ``max_minutes`` as
    :func:`train` takes them. Cheap (no data, no weights), so a command line can check before it
    starts a progress bar."""
    return _checked(model_spec, source, loss, volumes_per_batch, **numbers).name


@dataclass(frozen=True)
class _Settings:
    """One call's training settings (see :func:`train`)."""

    model_spec: str
    track: str
    root: Any
    epochs: int
    steps_per_epoch: int
    batch_size: int
    lr: float
    seed: int
    source: str
    loss: str
    augment: bool
    volumes_per_batch: int
    synthetic: SynthSettings
    init: dict[str, str] | None = None  # the weights a warm start began from (see :func:`initial_weights`)

    def extra_settings(self) -> dict[str, Any]:
        """The synthetic settings and the warm start, for runs that have them (older run
        directories stay resumable)."""
        extra: dict[str, Any] = {"synthetic": self.synthetic.describe()} if self.source == "synthetic" else {}
        if self.init is not None:
            extra["init_from"] = self.init
        return extra

    def config(self, world: int) -> dict[str, Any]:
        """What a resumed run must share with the run it continues."""
        return {"model": self.model_spec, "track": self.track, "seed": self.seed, "source": self.source, "batch_size": self.batch_size,
                "world": world, "augment": self.augment, "volumes_per_batch": self.volumes_per_batch, "loss": self.loss, "lr": self.lr,
                **self.extra_settings()}  # fmt: skip

    def batches(self, rank: int, world: int, start: int) -> Iterator[Batch]:
        """The rank's batches from batch ``start`` on: exactly those an unbroken run would see there."""
        if self.source == "synthetic":  # batch n depends on (seed, n) only: jump there
            return synthetic_batches(self.track, self.root, self.batch_size, self.seed + rank, self.augment, self.volumes_per_batch,
                                     start=start, settings=self.synthetic)  # fmt: skip
        if self.source == "stream":
            stream = stream_batches(self.track, self.root, self.batch_size, self.seed + rank, self.augment, self.volumes_per_batch)
            return skip(stream, start)
        return skip(split_batches(self.track, self.root, self.batch_size, self.seed, rank, world), start)

    def metadata(self, progress: RunProgress, world: int, seconds: float, scores: dict[str, float]) -> dict[str, str]:
        extra = {key: json.dumps(value, sort_keys=True) for key, value in self.extra_settings().items()}
        return run_metadata(self.model_spec, self.track, self.seed, self.root, {
            "epoch": progress.epoch, "step": progress.step, "batch_size": self.batch_size, "world_size": world, "lr": self.lr,
            "loss": self.loss, "source": self.source, "augment": self.augment, "volumes_per_batch": self.volumes_per_batch,
            "eval_batch_size": EVAL_BATCH_SIZE, "seconds": f"{seconds:.1f}", **extra, **scores})  # fmt: skip


# --------------------------------------------------------------------------------------------
# Distributed set-up


# --------------------------------------------------------------------------------------------
# The loop


def _train_epoch(
    net: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Iterator[Batch], progress: RunProgress, until_step: int,
    loss: str, deadline: float, dist: Distributed, on_step: Callable[[int], None] | None,
) -> tuple[list[float], bool]:  # fmt: skip
    """Optimise up to step ``until_step`` or the deadline; returns the step losses and whether time ran out."""
    from atom_bench.models.losses import block_loss

    net.train()
    losses: list[float] = []
    while progress.step < until_step:
        volumes, slices, high, low = next(batches)
        logits = net(volumes, slices)
        value = block_loss(logits[0], logits[1], high, low, kind=loss)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        losses.append(float(value.detach()))
        progress.step += 1
        if on_step is not None:
            on_step(progress.step)
        if dist.any(time.monotonic() > deadline):
            return losses, True
    return losses, False


def _summary(run: RunDirectory, progress: RunProgress, epochs: int) -> dict[str, Any]:
    """The best epoch's scores and where its weights are (empty when no epoch ran)."""
    if not progress.rows:
        return {}
    best = max(progress.rows, key=lambda r: (float(r["val_top1_high"]), float(r["val_top1_low"])))
    return {
        "best": str(run.best), "epoch": int(best["epoch"]), "step": int(best["step"]),
        "val_top1_high": float(best["val_top1_high"]), "val_top1_low": float(best["val_top1_low"]),
        "epochs_done": progress.epoch, "steps_done": progress.step, "seconds": float(progress.rows[-1]["seconds"]),
        "finished": progress.epoch >= epochs,
    }  # fmt: skip


def _count_labels(resolved: ResolvedSpec, settings: _Settings, out: Path) -> dict[str, Any]:
    """'Train' a ``needs_train_counts`` model: build it from the training split's label counts."""
    start = time.monotonic()
    track, root = settings.track, settings.root
    counts = train_count_kwargs(track, root)
    model, _ = resolved.build(**track_kwargs(resolved, track, root), **counts)
    scores = validate(model, track, root)
    out.mkdir(parents=True, exist_ok=True)
    extra = {"epoch": 0, "step": 0, "n_train": int(counts["high_counts"].sum()), "eval_batch_size": EVAL_BATCH_SIZE, **scores}
    best = save_weights(model, out / "best.safetensors", metadata=run_metadata(settings.model_spec, track, settings.seed, root, extra))
    seconds = time.monotonic() - start
    write_log(out / "log.csv", [{"epoch": 0, "step": 0, "train_loss": "", **scores, "seconds": f"{seconds:.3f}"}])
    return {"best": str(best), "epoch": 0, "step": 0, **scores, "seconds": seconds}


def initial_weights(path: str | os.PathLike[str]) -> dict[str, str]:
    """The record of a warm start's weights file: its name, SHA-256 and what it was trained on
    (:func:`~atom_bench.models.weights.describe_training`, from its own metadata)."""
    path = Path(path)
    try:
        meta = read_metadata(path)
    except ModelError as error:
        raise ModelError(f"init_from: {error}", parameters=("init_from",)) from error
    return {
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "trained_on": describe_training(meta) or "unknown (the file records no training run)",
        "seconds": meta.get("seconds", ""),
    }


def _trainable_model(resolved: ResolvedSpec, track: str, root: Any) -> torch.nn.Module:
    model, _ = resolved.build(**track_kwargs(resolved, track, root))
    if not is_trainable(model):
        raise ModelError(f"model {resolved.spec!r} has nothing to train (no learnable parameters)")
    return model  # type: ignore[return-value]  # is_trainable: a torch.nn.Module


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
    synthetic: SynthSettings | None = None,
    init_from: str | os.PathLike[str] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train ``model_spec`` on ``track``; returns the best epoch's validation scores and paths.

    Args:
        model_spec: a trainable model (``regismcan``, ``cnn``, ``vit``, ``released``, any model
            whose ``forward`` returns :class:`~atom_bench.models.protocol.Logits`), or one built
            from label counts (``prior``: counts the training labels).
        out: run directory (``best.safetensors``, ``last.safetensors``, ``state.pt``, ``log.csv``).
        epochs / steps_per_epoch: optimisation steps per rank = ``epochs * steps_per_epoch``.
        source: ``"stream"`` (fresh on-the-fly samples), ``"split"`` (the fixed train split) or
            ``"synthetic"`` (new synthetic subjects from the training volumes).
        max_minutes: wall-time budget of this call; the epoch in progress is cut short, scored
            and saved when it runs out (a later call resumes).
        resume: continue from ``<out>/state.pt`` if present (otherwise start over).
        loss: ``"asl"`` (asymmetric loss, as the released RegisMCAN) or ``"ce"``.
        augment / volumes_per_batch: stream and synthetic, see the module docstring.
        synthetic: what a synthetic subject draws (``SynthSettings()`` when ``None``); recorded
            in the checkpoint metadata and the run's config.
        init_from: a safetensors file of the same model to start from instead of the seed's
            random weights (a warm start, e.g. histology from the hard weights); loaded strictly,
            and recorded (name, SHA-256, what it was trained on) in the run's config and every
            checkpoint's metadata, so a card can say the run's total training.
        on_step: called as ``on_step(step, total_steps)`` after each step (progress bars).

    Raises:
        ModelError: a model with nothing to train (chance, search) or without a ``forward``.
    """
    out = Path(out)
    resolved = _checked(
        model_spec, source, loss, volumes_per_batch, epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
        lr=lr, max_minutes=max_minutes,
    )  # fmt: skip
    init = initial_weights(init_from) if init_from is not None else None
    settings = _Settings(model_spec, track, root, epochs, steps_per_epoch, batch_size, lr, seed, source, loss, augment, volumes_per_batch,
                         synthetic if synthetic is not None else SynthSettings(), init)  # fmt: skip
    if resolved.entry is not None and resolved.entry.capabilities.needs_train_counts:
        return _count_labels(resolved, settings, out)

    with distributed() as dist:
        started = time.monotonic()
        seed_everything(seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
        model = _trainable_model(resolved, track, root)
        if init_from is not None:
            try:
                load_weights(model, init_from)
            except ModelError as error:
                raise ModelError(f"init_from {init_from} does not fit {model_spec}: {error}", parameters=("init_from",)) from error
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        run = RunDirectory(out, settings.config(dist.world))
        progress = run.resume(model, optimizer) if resume else None
        if progress is None:
            progress = RunProgress()
            if dist.rank == 0:
                out.mkdir(parents=True, exist_ok=True)
        net = dist.wrap(model)
        batches = settings.batches(dist.rank, dist.world, progress.step)  # exact resume: an unbroken run's batches
        deadline = started + 60 * max_minutes if max_minutes is not None else math.inf
        total = epochs * steps_per_epoch
        report = (lambda step: on_step(step, total)) if on_step is not None and dist.rank == 0 else None
        out_of_time = False
        while progress.epoch < epochs and not out_of_time:
            until = (progress.epoch + 1) * steps_per_epoch
            losses, out_of_time = _train_epoch(net, optimizer, batches, progress, until, loss, deadline, dist, report)
            scores = validate(model, track, root)
            progress.epoch += 1
            seconds = progress.seconds_before + time.monotonic() - started
            progress.rows.append({"epoch": progress.epoch, "step": progress.step, "train_loss": f"{np.mean(losses):.6f}" if losses else "",
                                  **scores, "seconds": f"{seconds:.3f}"})  # fmt: skip
            key = (scores["val_top1_high"], scores["val_top1_low"])
            improved = key > progress.best_key
            progress.best_key = max(progress.best_key, key)
            if dist.rank == 0:
                run.save_epoch(model, optimizer, progress, seconds, settings.metadata(progress, dist.world, seconds, scores), improved)
        return _summary(run, progress, epochs)
