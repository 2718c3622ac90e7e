"""Joint vision transformer over 2D slice patches and 3D volume patches.

- Volume tokens: the cube is resampled (area average when shrinking, trilinear when growing) to
  ``(9 p)^3`` voxels and cut into ``p^3``
  patches, **one token per fine block** (729 tokens, so the token count does not depend on ``S``).
- Slice tokens: the slice is resampled to ``(4 q) x (4 q)`` pixels and cut into ``q x q`` patches
  (16 tokens).
- A type embedding and fixed sinusoidal positions are added; one transformer (pre-norm,
  ``scaled_dot_product_attention``) runs over all 745 tokens jointly.
- Fine block scores are read from the 729 volume tokens, coarse scores from the means of each
  block's 27 tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atom_bench.models import ModelMeta, count_parameters
from baselines._blocks import FINE, N_HIGH, LearnedLocator, Logits, SABlock, _standardise, check_inputs, grid_to_label_order, sinusoidal_positions


class JointViT(LearnedLocator):
    def __init__(self, dim: int = 64, depth: int = 4, heads: int = 4, volume_patch: int = 4, slice_patch: int = 4) -> None:
        super().__init__()
        self.vp, self.sp = volume_patch, slice_patch
        self.volume_embed = nn.Conv3d(1, dim, kernel_size=volume_patch, stride=volume_patch)
        self.slice_embed = nn.Conv2d(1, dim, kernel_size=slice_patch, stride=slice_patch)
        self.type_embed = nn.Parameter(torch.zeros(2, dim))
        self.register_buffer("volume_pos", sinusoidal_positions(FINE, 3, dim), persistent=False)
        self.register_buffer("slice_pos", sinusoidal_positions(4, 2, dim), persistent=False)
        self.blocks = nn.ModuleList(SABlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.coarse_head, self.fine_head = nn.Linear(dim, 1), nn.Linear(dim, 1)
        nn.init.trunc_normal_(self.type_embed, std=0.02)

    def forward(self, volumes: Tensor, slices: Tensor) -> Logits:
        check_inputs(volumes, slices)
        side = FINE * self.vp
        vol = _standardise(volumes)
        if vol.shape[-1] > side:  # area average when shrinking (anti-aliasing), trilinear when growing
            vol = F.adaptive_avg_pool3d(vol, side)
        else:
            vol = F.interpolate(vol, size=(side,) * 3, mode="trilinear", align_corners=False)
        img = F.interpolate(_standardise(slices), size=(4 * self.sp,) * 2, mode="bilinear", align_corners=False)
        v = self.volume_embed(vol)  # (B, d, 9, 9, 9)
        grid_tokens = v.flatten(2).transpose(1, 2) + self.volume_pos + self.type_embed[0]
        s = self.slice_embed(img).flatten(2).transpose(1, 2) + self.slice_pos + self.type_embed[1]
        x = torch.cat([grid_tokens, s], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x[:, : FINE**3])  # volume tokens, grid order
        b, _, d = x.shape
        blocks = grid_to_label_order(x.transpose(1, 2).reshape(b, d, FINE, FINE, FINE))  # (B, 27, 27, d)
        high = self.coarse_head(blocks.mean(dim=2)).squeeze(-1)
        low = high[:, :, None] + self.fine_head(blocks).squeeze(-1)
        return Logits(high, low.reshape(b, N_HIGH * N_HIGH))


def create_model(
    volume_size: int | None = None,
    slice_shape: tuple[int, int] | None = None,
    dim: int = 64,
    depth: int = 4,
    heads: int = 4,
    volume_patch: int = 4,
    slice_patch: int = 4,
) -> tuple[JointViT, ModelMeta]:
    """Factory: ``(model, meta)``; the architecture is the same for every cube and slice size."""
    model = JointViT(dim, depth, heads, volume_patch, slice_patch)
    meta = ModelMeta(
        name="vit",
        n_parameters=count_parameters(model),
        training_data="untrained",
        uses_volume=True,
        notes=f"joint transformer, 729 volume tokens ({volume_patch}^3 patches of a {FINE * volume_patch}^3 resample) + 16 slice tokens",
    )
    return model, meta
