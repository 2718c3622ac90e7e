"""Two-stream convolutional comparator.

- Volume stream: a 3D conv stem pooled to the 9 x 9 x 9 fine-block grid (``VolumeEncoder``):
  one feature vector per fine block; coarse-block features are their 3 x 3 x 3 means.
- Slice stream: a 2D conv stem, global average and max pooling, a linear map: one embedding.
- Fusion by correlation: each block feature ``f`` is compared with the slice embedding ``s``
  through a small per-block MLP on ``[f * s, |f - s|, f]`` (a learned, weighted correlation),
  so every block score comes from that block's own features.

The parameter count does not depend on the cube side or on the slice size.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from atom_bench.models.protocol import Logits, ModelMeta, count_parameters
from atom_bench.models.registry import Capabilities, register_model
from baselines._blocks import LearnedLocator, SliceEncoder, VolumeEncoder, check_inputs, grid_to_label_order
from baselines._weights import shipped


class _Comparator(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3 * dim, dim), nn.GELU(), nn.Linear(dim, 1))

    def forward(self, blocks: Tensor, embedding: Tensor) -> Tensor:
        s = embedding.reshape(embedding.shape[0], *([1] * (blocks.ndim - 2)), -1).expand_as(blocks)
        return self.net(torch.cat([blocks * s, (blocks - s).abs(), blocks], dim=-1)).squeeze(-1)


class TwoStreamCNN(LearnedLocator):
    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.volume_encoder = VolumeEncoder(dim)
        self.slice_encoder = SliceEncoder(dim)
        self.slice_proj = nn.Linear(2 * dim, dim)
        self.volume_norm = nn.LayerNorm(dim)
        self.coarse = _Comparator(dim)
        self.fine = _Comparator(dim)

    def forward(self, volumes: Tensor, slices: Tensor) -> Logits:
        check_inputs(volumes, slices)
        fmap = self.slice_encoder.feature_map(slices)
        s = self.slice_proj(torch.cat([fmap.mean(dim=(2, 3)), fmap.amax(dim=(2, 3))], dim=1))
        blocks = self.volume_norm(grid_to_label_order(self.volume_encoder(volumes)))  # (B, 27, 27, d)
        high = self.coarse(blocks.mean(dim=2), s)  # (B, 27)
        low = high[:, :, None] + self.fine(blocks, s)  # (B, 27, 27)
        return Logits(high, low.reshape(low.shape[0], -1))


@register_model(
    "cnn",
    description="two-stream CNN: 3D and 2D conv streams fused per block by a learned correlation",
    capabilities=Capabilities(trainable=True, uses_volume=True),
    licence="MIT",
    weights=shipped("cnn"),
)
def create_model(volume_size: int | None = None, slice_shape: tuple[int, int] | None = None, dim: int = 64) -> tuple[TwoStreamCNN, ModelMeta]:
    """Factory: ``(model, meta)``; the architecture is the same for every cube and slice size."""
    model = TwoStreamCNN(dim)
    meta = ModelMeta(
        name="cnn",
        n_parameters=count_parameters(model),
        training_data="untrained",
        notes="3D + 2D conv streams fused by per-block learned correlation",
    )
    return model, meta
