"""Joint vision transformer over 2D slice patches and 3D volume patches, coarse then fine.

- Volume patches: the cube is resampled (area average when shrinking, trilinear when growing)
  to ``(9 p)^3`` voxels and cut into ``p^3`` patches, **one patch per fine block** (729 patch
  embeddings whatever ``S``).
- Slice patches: the slice is resampled to ``(4 q) x (4 q)`` pixels and cut into ``q x q``
  patches (16 tokens).
- **Coarse stage**: each coarse block's 27 patch embeddings are averaged into one token; the 27
  block tokens and the 16 slice tokens (type embedding + fixed sinusoidal positions) go through
  one transformer *jointly* (pre-norm, ``scaled_dot_product_attention``); coarse scores are read
  from the 27 block tokens.
- **Fine stage**: inside each coarse block, its 27 patch tokens (plus that block's coarse-stage
  output) and the 16 slice tokens of the coarse stage go through a second joint transformer;
  ``low[27 * high + sub] = high_logit[high] + sub_logit[high, sub]``.

Attending jointly over 43 tokens per sequence (instead of all 745 at once) keeps a training step
about ten times cheaper at the same width; the parameter count does not depend on ``S``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atom_bench.core.labels import N_HIGH, N_LOW
from atom_bench.models.protocol import Logits, ModelMeta, count_parameters
from atom_bench.models.registry import Capabilities, register_model
from baselines._blocks import FINE, LearnedLocator, SABlock, _standardise, check_inputs, grid_to_label_order, sinusoidal_positions
from baselines._weights import shipped

N_SLICE_TOKENS = 16


class JointViT(LearnedLocator):
    def __init__(self, dim: int = 64, depth: int = 3, fine_depth: int = 1, heads: int = 4, volume_patch: int = 4, slice_patch: int = 4) -> None:
        super().__init__()
        self.vp, self.sp = volume_patch, slice_patch
        self.volume_embed = nn.Conv3d(1, dim, kernel_size=volume_patch, stride=volume_patch)
        self.slice_embed = nn.Conv2d(1, dim, kernel_size=slice_patch, stride=slice_patch)
        self.type_embed = nn.Parameter(torch.zeros(2, dim))
        self.register_buffer("coarse_pos", sinusoidal_positions(3, 3, dim), persistent=False)
        self.register_buffer("sub_pos", sinusoidal_positions(3, 3, dim), persistent=False)
        self.register_buffer("slice_pos", sinusoidal_positions(4, 2, dim), persistent=False)
        self.blocks = nn.ModuleList(SABlock(dim, heads) for _ in range(depth))
        self.context = nn.Linear(dim, dim)  # coarse-stage block token -> its fine tokens
        self.fine_blocks = nn.ModuleList(SABlock(dim, heads) for _ in range(fine_depth))
        self.norm, self.fine_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.coarse_head, self.fine_head = nn.Linear(dim, 1), nn.Linear(dim, 1)
        nn.init.trunc_normal_(self.type_embed, std=0.02)

    def forward(self, volumes: Tensor, slices: Tensor) -> Logits:
        check_inputs(volumes, slices)
        b = volumes.shape[0]
        side = FINE * self.vp
        vol = _standardise(volumes)
        if vol.shape[-1] > side:  # area average when shrinking (anti-aliasing), trilinear when growing
            vol = F.adaptive_avg_pool3d(vol, side)
        else:
            vol = F.interpolate(vol, size=(side,) * 3, mode="trilinear", align_corners=False)
        img = F.interpolate(_standardise(slices), size=(4 * self.sp,) * 2, mode="bilinear", align_corners=False)
        patches = grid_to_label_order(self.volume_embed(vol)) + self.type_embed[0]  # (B, 27, 27, d)
        s = self.slice_embed(img).flatten(2).transpose(1, 2) + self.slice_pos + self.type_embed[1]  # (B, 16, d)

        x = torch.cat([patches.mean(dim=2) + self.coarse_pos, s], dim=1)  # (B, 27 + 16, d)
        for block in self.blocks:
            x = block(x)
        coarse, s = x[:, :N_HIGH], x[:, N_HIGH:]
        high = self.coarse_head(self.norm(coarse)).squeeze(-1)  # (B, 27)

        d = patches.shape[-1]
        fine = (patches + self.sub_pos + self.context(coarse)[:, :, None, :]).reshape(b * N_HIGH, N_HIGH, d)
        y = torch.cat([fine, s.repeat_interleave(N_HIGH, dim=0)], dim=1)  # (B * 27, 27 + 16, d)
        for block in self.fine_blocks:
            y = block(y)
        sub = self.fine_head(self.fine_norm(y[:, :N_HIGH])).reshape(b, N_HIGH, N_HIGH)
        return Logits(high, (high[:, :, None] + sub).reshape(b, N_LOW))


@register_model(
    "vit",
    description="joint transformer over coarse-block tokens and slice patches, then over each block's fine tokens",
    capabilities=Capabilities(trainable=True, uses_volume=True),
    licence="MIT",
    weights=shipped("vit"),
)
def create_model(
    volume_size: int | None = None,
    slice_shape: tuple[int, int] | None = None,
    dim: int = 64,
    depth: int = 3,
    fine_depth: int = 1,
    heads: int = 4,
    volume_patch: int = 4,
    slice_patch: int = 4,
) -> tuple[JointViT, ModelMeta]:
    """Factory: ``(model, meta)``; the architecture is the same for every cube and slice size."""
    model = JointViT(dim, depth, fine_depth, heads, volume_patch, slice_patch)
    meta = ModelMeta(
        name="vit",
        n_parameters=count_parameters(model),
        training_data="untrained",
        notes=(
            f"joint transformer over 27 block tokens ({volume_patch}^3 patches of a {FINE * volume_patch}^3 resample) "
            "+ 16 slice tokens, then per block over its 27 patch tokens + the slice tokens"
        ),
    )
    return model, meta
