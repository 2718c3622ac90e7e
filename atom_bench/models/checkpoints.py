"""A training run's directory: its checkpoints, its resume state and its per-epoch log.

- ``best.safetensors``: the weights of the best epoch so far (highest validation top-1 coarse,
  then fine), with their metadata (track, seed, epoch, step, scores, toolkit version, dataset hash);
- ``last.safetensors``: the weights after the last epoch, same metadata;
- ``state.pt``: what an exact resume needs (weights, optimizer, RNG states, counters, settings).
  It is a plain ``torch.save`` of tensors, dicts and numbers, because the optimizer's state dict
  is a nested structure that safetensors (flat tensor maps) cannot hold; it is only ever read back
  with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects;
- ``log.csv``: one row per epoch (:data:`LOG_COLUMNS`).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atom_bench import __version__
from atom_bench._io import atomic_path
from atom_bench.data.benchmark import Benchmark
from atom_bench.errors import ModelError
from atom_bench.models.weights import save_weights

LOG_COLUMNS = ("epoch", "step", "train_loss", "val_top1_high", "val_top1_low", "seconds")


@dataclass
class RunProgress:
    """Where a run stands after its last finished epoch (what a resume restores).

    Attributes:
        epoch, step: epochs and optimisation steps done.
        best_key: ``(val_top1_high, val_top1_low)`` of the best epoch; ``(-1, -1)`` before any.
        seconds_before: wall time of the earlier calls of this run (resumes add to it).
        rows: the log's rows so far.
    """

    epoch: int = 0
    step: int = 0
    best_key: tuple[float, float] = (-1.0, -1.0)
    seconds_before: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)


def run_metadata(spec: str, track: str, seed: int, root: Any, extra: dict[str, Any]) -> dict[str, str]:
    """The safetensors metadata of a checkpoint: model, track, seed, toolkit, dataset hash and ``extra``."""
    meta = {"model": spec, "track": track, "seed": seed, "toolkit_version": __version__, "dataset_hash": Benchmark.open(root).hash}
    meta.update(extra)
    return {k: str(v) for k, v in meta.items()}


def write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write the per-epoch log atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def read_log(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a run's ``log.csv`` (values as text)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


class RunDirectory:
    """The files of one run in ``out``, for runs with settings ``config`` (never resumed under others)."""

    def __init__(self, out: Path, config: dict[str, Any]) -> None:
        self.out, self.config = out, config
        self.best, self.last = out / "best.safetensors", out / "last.safetensors"
        self.state, self.log = out / "state.pt", out / "log.csv"

    def resume(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> RunProgress | None:
        """Restore ``model``, ``optimizer`` and the RNG states from ``state.pt``; ``None`` if there is none.

        Raises:
            ModelError: the directory holds a run with other settings.
        """
        if not self.state.is_file():
            return None
        try:
            state = torch.load(self.state, weights_only=True)
            keys_missing = not isinstance(state, dict) or not {"config", "model", "optimizer", "epoch", "step"} <= set(state)
        except Exception as exc:  # torch raises many kinds for a damaged or foreign file
            raise ModelError(f"{self.state} is not a readable training state ({type(exc).__name__}); "
                             "delete it to start over, or train into another directory") from None  # fmt: skip
        if keys_missing:
            raise ModelError(f"{self.state} is not a training state written by atom-bench train; delete it or train into another directory")
        if state["config"] != self.config:
            raise ModelError(f"{self.out} holds a run with other settings {state['config']}; train into another directory or pass resume=False")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(("MT19937", state["numpy_rng"].numpy().astype(np.uint32), int(state["numpy_pos"]), 0, 0.0))
        rows = read_log(self.log)[: state["epoch"]] if self.log.is_file() else []
        return RunProgress(state["epoch"], state["step"], tuple(state["best_key"]), state["seconds"], rows)

    def save_epoch(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, progress: RunProgress, seconds: float,
        metadata: dict[str, str], improved: bool,
    ) -> None:  # fmt: skip
        """Write the epoch's checkpoints (``best`` only when ``improved``), resume state and log."""
        if improved:
            save_weights(model, self.best, metadata=metadata)
        save_weights(model, self.last, metadata=metadata)
        numpy_state = np.random.get_state()
        state = {
            "config": self.config,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": progress.epoch, "step": progress.step,
            "seconds": seconds, "best_key": list(progress.best_key), "torch_rng": torch.get_rng_state(),
            "numpy_rng": torch.from_numpy(numpy_state[1].astype(np.int64)), "numpy_pos": int(numpy_state[2]),
        }  # fmt: skip
        with atomic_path(self.state) as tmp:
            torch.save(state, tmp)
        write_log(self.log, progress.rows)
