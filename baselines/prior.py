"""Prior floor: class frequencies of a training split, the same scores for every slice.

``high_scores = log((count_high + alpha) / (N + 27 alpha))`` and likewise for the 729 fine
blocks (Laplace smoothing ``alpha``, default 1). Counts come from the constructor, from labels
(:meth:`Prior.from_labels`) or from a safetensors file with tensors ``high_counts (27,)`` and
``low_counts (729,)`` (``resolve_model("prior", weights=path)``; write one with :func:`save_counts`).
The volume and the slice are ignored: this is the best a model can do from positions alone.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from atom_bench.core.labels import N_HIGH, N_LOW
from atom_bench.errors import ModelError
from atom_bench.models.protocol import ModelMeta, Prediction
from atom_bench.models.registry import Capabilities, register_model
from atom_bench.models.weights import read_safetensors, save_weights
from baselines._blocks import check_inputs
from baselines._weights import shipped


class Prior(nn.Module):
    def __init__(self, high_counts: Tensor | None = None, low_counts: Tensor | None = None, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha
        self.register_buffer("high_counts", torch.zeros(N_HIGH, dtype=torch.float64))
        self.register_buffer("low_counts", torch.zeros(N_LOW, dtype=torch.float64))
        if high_counts is not None or low_counts is not None:
            self.set_counts(high_counts, low_counts)

    def set_counts(self, high_counts: Tensor | None, low_counts: Tensor | None) -> None:
        high = torch.as_tensor(high_counts if high_counts is not None else torch.zeros(N_HIGH), dtype=torch.float64)
        low = torch.as_tensor(low_counts if low_counts is not None else torch.zeros(N_LOW), dtype=torch.float64)
        if tuple(high.shape) != (N_HIGH,) or tuple(low.shape) != (N_LOW,):
            raise ModelError(f"prior counts must have shapes ({N_HIGH},) and ({N_LOW},); got {tuple(high.shape)}, {tuple(low.shape)}")
        if bool((high < 0).any()) or bool((low < 0).any()):
            raise ModelError("prior counts must be non-negative")
        self.high_counts.copy_(high)
        self.low_counts.copy_(low)

    @classmethod
    def from_labels(cls, high_labels: Tensor, low_labels: Tensor, alpha: float = 1.0) -> Prior:
        high = torch.bincount(torch.as_tensor(high_labels).long().reshape(-1), minlength=N_HIGH)
        low = torch.bincount(torch.as_tensor(low_labels).long().reshape(-1), minlength=N_LOW)
        return cls(high, low, alpha)

    def load_weights(self, path: str | Path) -> None:
        state = read_safetensors(path)
        missing = {"high_counts", "low_counts"} - set(state)
        if missing:
            raise ModelError(f"prior counts file {path} lacks {sorted(missing)} (has {sorted(state)})")
        self.set_counts(state["high_counts"], state["low_counts"])

    @staticmethod
    def _log_freq(counts: Tensor, alpha: float) -> Tensor:
        return torch.log((counts + alpha) / (counts.sum() + alpha * counts.numel())).float()

    def predict(self, volumes: Tensor, slices: Tensor) -> Prediction:
        check_inputs(volumes, slices)
        b = slices.shape[0]
        high = self._log_freq(self.high_counts, self.alpha)
        low = self._log_freq(self.low_counts, self.alpha)
        return Prediction(high_scores=high.expand(b, -1).clone(), low_scores=low.expand(b, -1).clone())


def save_counts(path: str | Path, high_counts: Tensor, low_counts: Tensor) -> Path:
    """Write a prior counts file (safetensors) usable as the prior's weights."""
    return save_weights(Prior(high_counts, low_counts), path, metadata={"model": "prior"})


@register_model(
    "prior",
    description="log class frequencies of the training split's labels, the same for every slice (the prior floor)",
    capabilities=Capabilities(trainable=False, needs_train_counts=True, uses_volume=False),
    licence="MIT",
    weights=shipped("prior"),
)
def create_model(
    volume_size: int | None = None,
    slice_shape: tuple[int, int] | None = None,
    high_counts: Tensor | None = None,
    low_counts: Tensor | None = None,
    alpha: float = 1.0,
) -> tuple[Prior, ModelMeta]:
    """Factory: ``(model, meta)``; without counts the prior is uniform until weights are loaded."""
    meta = ModelMeta(
        name="prior",
        training_data="label counts of a training split" if high_counts is not None else "none (uniform until counts load)",
        notes=f"log class frequency, Laplace alpha {alpha}",
    )
    return Prior(high_counts, low_counts, alpha), meta
