"""Chance floor: pseudo-random block scores (expected top-1: 1/27 and 1/729).

The scores of a slice are drawn from a generator seeded with a crc32 of the seed and the
slice's bytes: they are reproducible, do not depend on the batch a slice comes in, and do not depend
on the volume (the volume-swap diagnostic reports exactly 0 for this model). The fine scores are
``rank(high[a]) + sub`` with ``sub`` uniform in [0, 1), so the top fine block always lies inside
the top coarse block.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import Tensor, nn

from atom_bench.core.labels import N_HIGH, N_LOW
from atom_bench.models.protocol import ModelMeta, Prediction
from atom_bench.models.registry import Capabilities, register_model
from baselines._blocks import check_inputs


class Chance(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = int(seed)

    def _draw(self, image: Tensor) -> tuple[Tensor, Tensor]:
        # torch's CPU generator keeps 32 bits of a seed: mix the seed into the crc's start value
        key = zlib.crc32(np.ascontiguousarray(image.detach().cpu().float().numpy()).tobytes(), zlib.crc32(str(self.seed).encode()))
        generator = torch.Generator().manual_seed(key)
        return torch.rand(N_HIGH, generator=generator), torch.rand(N_HIGH, N_HIGH, generator=generator)

    def predict(self, volumes: Tensor, slices: Tensor) -> Prediction:
        check_inputs(volumes, slices)
        draws = [self._draw(slices[i]) for i in range(slices.shape[0])]
        high = torch.stack([d[0] for d in draws])
        sub = torch.stack([d[1] for d in draws])
        rank = high.argsort(dim=1).argsort(dim=1).to(high.dtype)
        low = (rank[:, :, None] + sub).reshape(-1, N_LOW)
        return Prediction(high_scores=high, low_scores=low)


@register_model(
    "chance",
    description="pseudo-random scores per slice, reproducible and independent of the volume (the chance floor)",
    capabilities=Capabilities(trainable=False, uses_volume=False),
    licence="MIT",
)
def create_model(volume_size: int | None = None, slice_shape: tuple[int, int] | None = None, seed: int = 0) -> tuple[Chance, ModelMeta]:
    """Factory: ``(model, meta)``."""
    meta = ModelMeta(name="chance", training_data="none", notes=f"pseudo-random scores per slice, seed {seed}")
    return Chance(seed), meta
