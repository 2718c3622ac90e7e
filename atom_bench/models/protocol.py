"""The model contract: what a model takes, what it returns, and what makes it trainable.

Every model, a shipped baseline or a user's own, implements :class:`SliceLocator`::

    prediction = model.predict(volumes, slices)   # (B,1,S,S,S), (B,1,h,w) float tensors

returning a :class:`Prediction`: scores over the 27 coarse and 729 fine blocks of
``docs/PROTOCOL.md`` section 3.3 (higher = more likely; fine index ``27 * high + sub``) and,
optionally, a pose (centre in cube voxels, unit plane normal in voxel axes).

A model is **trainable** by :func:`atom_bench.models.train.train` when it is also a
:class:`TrainableLocator`: a ``torch.nn.Module`` with learnable parameters whose
``forward(volumes, slices)`` returns :class:`Logits` (raw coarse and fine logits, in label order).

:class:`ModelMeta` is what is recorded beside every result (evaluation report, leaderboard row).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

from atom_bench.core.labels import N_HIGH, N_LOW
from atom_bench.errors import ModelError


@dataclass
class Prediction:
    """What a model says about a batch of ``B`` slices.

    Attributes:
        high_scores: ``(B, 27)`` float, one score per coarse block (``high_label`` order).
        low_scores: ``(B, 729)`` float, one score per fine block (``low_label = 27 * high + sub``).
        center_vox: optional ``(B, 3)`` predicted slice centre, cube voxel coordinates.
        normal: optional ``(B, 3)`` predicted unit plane normal, voxel axes (sign is irrelevant).

    Scores are any monotone confidence (logits, log-probabilities, probabilities).
    """

    high_scores: Tensor
    low_scores: Tensor
    center_vox: Tensor | None = None
    normal: Tensor | None = None

    def __post_init__(self) -> None:
        b = self.high_scores.shape[0] if self.high_scores.ndim == 2 else -1
        if self.high_scores.ndim != 2 or self.high_scores.shape[1] != N_HIGH:
            raise ModelError(f"high_scores must be (B, {N_HIGH}); got {tuple(self.high_scores.shape)}")
        if tuple(self.low_scores.shape) != (b, N_LOW):
            raise ModelError(f"low_scores must be ({b}, {N_LOW}); got {tuple(self.low_scores.shape)}")
        for name in ("center_vox", "normal"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (b, 3):
                raise ModelError(f"{name} must be ({b}, 3) or None; got {tuple(value.shape)}")

    @property
    def high_label(self) -> Tensor:
        """Top-1 coarse block per slice ``(B,)``."""
        return self.high_scores.argmax(dim=1)

    @property
    def low_label(self) -> Tensor:
        """Top-1 fine block per slice ``(B,)``."""
        return self.low_scores.argmax(dim=1)


@runtime_checkable
class SliceLocator(Protocol):
    """Anything with ``predict(volumes (B,1,S,S,S), slices (B,1,h,w)) -> Prediction``."""

    def predict(self, volumes: Tensor, slices: Tensor) -> Prediction: ...


class Logits(NamedTuple):
    """Raw outputs of a trainable model: ``high (B, 27)`` and ``low (B, 729)`` (label order)."""

    high: Tensor
    low: Tensor


@runtime_checkable
class TrainableLocator(SliceLocator, Protocol):
    """The trainable contract: a ``torch.nn.Module`` whose ``forward`` returns :class:`Logits`.

    ``train()`` optimises ``block_loss(*model(volumes, slices), high, low)``; ``predict`` (the
    :class:`SliceLocator` half) is what validation and evaluation call.
    """

    def forward(self, volumes: Tensor, slices: Tensor) -> Logits: ...


def is_trainable(model: Any) -> bool:
    """Whether ``model`` can be handed to ``train()``: a module with at least one learnable parameter."""
    return isinstance(model, torch.nn.Module) and any(p.requires_grad for p in model.parameters())


@dataclass(frozen=True)
class ModelMeta:
    """Metadata recorded beside every result (leaderboard row, evaluation report).

    ``uses_volume`` is what the author claims (``None``: unknown); the volume-swap diagnostic
    (:func:`atom_bench.models.diagnostics.volume_swap_diagnostic`) measures it. For a registered
    model, ``name``, ``licence``, ``code_url``, ``reference`` and ``uses_volume`` come from its
    registry entry (:class:`atom_bench.models.registry.ModelEntry`).
    """

    name: str
    n_parameters: int = 0
    training_data: str = "none"
    weights_file: str | None = None
    licence: str = "MIT"
    code_url: str = ""
    reference: str = ""
    uses_volume: bool | None = None
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def count_parameters(model: Any) -> int:
    """Number of parameters of a ``torch.nn.Module`` (0 for anything else)."""
    if isinstance(model, torch.nn.Module):
        return sum(p.numel() for p in model.parameters())
    return 0
