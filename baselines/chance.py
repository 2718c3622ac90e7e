"""Chance floor: random block scores from a seeded generator (expected top-1: 1/27, 1/729).

Scores are i.i.d. uniform per sample and block, drawn from a ``torch.Generator`` seeded at
construction, so two runs with the same seed and the same batches give the same predictions.
The fine scores are ``rank(high[a]) + sub`` with ``sub`` uniform in [0, 1), so the top fine
block always lies inside the top coarse block. The volume and the slice are ignored.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from atom_bench.models import ModelMeta, Prediction
from baselines._blocks import N_HIGH, N_LOW, check_inputs


class Chance(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def reset(self) -> None:
        """Restart the random stream (same seed)."""
        self.generator.manual_seed(self.seed)

    def predict(self, volumes: Tensor, slices: Tensor) -> Prediction:
        check_inputs(volumes, slices)
        b = slices.shape[0]
        high = torch.rand(b, N_HIGH, generator=self.generator)
        sub = torch.rand(b, N_HIGH, N_HIGH, generator=self.generator)
        rank = high.argsort(dim=1).argsort(dim=1).to(high.dtype)
        low = (rank[:, :, None] + sub).reshape(b, N_LOW)
        return Prediction(high_scores=high, low_scores=low)


def create_model(volume_size: int | None = None, slice_shape: tuple[int, int] | None = None, seed: int = 0) -> tuple[Chance, ModelMeta]:
    """Factory: ``(model, meta)``."""
    meta = ModelMeta(name="chance", training_data="none", uses_volume=False, notes=f"uniform random scores, seed {seed}")
    return Chance(seed), meta
