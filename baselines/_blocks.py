"""Building blocks shared by the learned baselines (regismcan, cnn, vit).

Every learned baseline is a :class:`LearnedLocator`: an ``nn.Module`` whose ``forward`` maps
``volumes (B, 1, S, S, S)`` and ``slices (B, 1, h, w)`` to
:class:`~atom_bench.models.protocol.Logits` (27 coarse and 729 fine logits, fine logits in label
order ``27 * high + sub``: the trainable contract), and whose ``predict`` wraps ``forward`` for
inference.

Token grids are tied to the block partition of ``docs/PROTOCOL.md`` section 3.3: the volume is
encoded to a 9 x 9 x 9 grid of features (one per fine block) whatever the cube side ``S``, so the
transformer cost and the parameter count do not grow with ``S``; only the convolutional stem
sees every voxel, and its cost is linear in ``S^3``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atom_bench.core.labels import N_HIGH
from atom_bench.models.protocol import Logits, Prediction

FINE = 9  # fine cells per axis


def grid_to_label_order(grid: Tensor) -> Tensor:
    """Reorder a fine grid ``(B, C, 9, 9, 9)`` to ``(B, 27, 27, C)``: ``[:, high, sub]``.

    Fine cell ``f = 3 a + b`` per axis (``a`` coarse cell, ``b`` sub-cell), so the flattened
    ``(high, sub)`` index is exactly the protocol's ``low_label = 27 * high + sub``.
    """
    b, c = grid.shape[:2]
    x = grid.reshape(b, c, 3, 3, 3, 3, 3, 3)  # (B, C, a0, b0, a1, b1, a2, b2)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # (B, a0, a1, a2, b0, b1, b2, C)
    return x.reshape(b, N_HIGH, N_HIGH, c)


def sinusoidal_positions(n_per_axis: int, dims: int, channels: int) -> Tensor:
    """Fixed sin/cos position codes ``(n_per_axis ** dims, channels)`` on a regular grid."""
    axes = torch.meshgrid(*[torch.arange(n_per_axis, dtype=torch.float32)] * dims, indexing="ij")
    coords = torch.stack([a.reshape(-1) for a in axes], dim=1) / max(n_per_axis - 1, 1)
    n_freq = max(1, channels // (2 * dims))
    freqs = torch.pi * (2.0 ** torch.arange(n_freq, dtype=torch.float32))
    angles = coords[:, :, None] * freqs  # (N, dims, n_freq)
    codes = torch.cat([angles.sin(), angles.cos()], dim=-1).reshape(coords.shape[0], -1)
    return F.pad(codes, (0, channels - codes.shape[1]))[:, :channels]


class Attention(nn.Module):
    """Multi-head attention via ``scaled_dot_product_attention`` (no N x N matrix kept in Python)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        b, n, d = x.shape
        h = self.heads
        q = self.q(x).reshape(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(context).reshape(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


def mlp(dim: int, ratio: int = 4) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, ratio * dim), nn.GELU(), nn.Linear(ratio * dim, dim))


class SABlock(nn.Module):
    """Pre-norm transformer block: self-attention and MLP, each with a residual."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), mlp(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SGABlock(nn.Module):
    """MCAN's self-guided-attention block: self-attention on ``x``, ``x`` attends to ``y``, MLP.

    Every sub-layer has a residual and a LayerNorm (pre-norm), unlike the released code.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.self_attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.norm_y, self.guided = nn.LayerNorm(dim), nn.LayerNorm(dim), Attention(dim, heads)
        self.norm3, self.mlp = nn.LayerNorm(dim), mlp(dim)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        x = x + self.self_attn(self.norm1(x))
        x = x + self.guided(self.norm2(x), self.norm_y(y))
        return x + self.mlp(self.norm3(x))


class SliceEncoder(nn.Module):
    """2D conv stem, then adaptive pooling to a fixed ``grid x grid`` of tokens ``(B, grid^2, dim)``.

    Parameters do not depend on the slice size: a 4x4 slice and a 16x16 slice give the same
    number of tokens (small slices are upsampled by the pooling).
    """

    def __init__(self, dim: int, grid: int = 4, width: int = 32) -> None:
        super().__init__()
        self.grid = grid
        self.stem = nn.Sequential(
            nn.Conv2d(1, width // 2, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width // 2, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, dim, 1),
        )
        self.register_buffer("pos", sinusoidal_positions(grid, 2, dim), persistent=False)

    def feature_map(self, slices: Tensor) -> Tensor:
        return self.stem(_standardise(slices))

    def forward(self, slices: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(self.feature_map(slices), self.grid)
        return x.flatten(2).transpose(1, 2) + self.pos


class VolumeEncoder(nn.Module):
    """3D conv stem, then adaptive pooling to the 9 x 9 x 9 fine-block grid ``(B, dim, 9, 9, 9)``.

    Each of the two 3x3x3 convs downsamples by 2 when its output keeps at least ``min_side``
    (16) voxels per axis (about 2 per fine block), so small cubes keep full resolution (S = 20
    stays 20; S = 32 becomes 16, S = 128 becomes 32) and the cost is linear in ``S^3``; the
    weights are the same for every ``S``.
    """

    def __init__(self, dim: int, width: int = 32, min_side: int = 16) -> None:
        super().__init__()
        self.min_side = min_side
        self.conv1 = nn.Conv3d(1, width // 2, 3, padding=1)
        self.conv2 = nn.Conv3d(width // 2, width, 3, padding=1)
        self.conv3 = nn.Conv3d(width, dim, 1)

    def _conv(self, conv: nn.Conv3d, x: Tensor) -> Tensor:
        stride = 2 if min(x.shape[-3:]) >= 2 * self.min_side else 1
        return F.conv3d(x, conv.weight, conv.bias, stride=stride, padding=1)

    def forward(self, volumes: Tensor) -> Tensor:
        first, inverse = consecutive_runs(volumes)
        x = F.gelu(self._conv(self.conv1, _standardise(volumes[first])))
        x = F.gelu(self._conv(self.conv2, x))
        return F.adaptive_avg_pool3d(self.conv3(x), FINE)[inverse]


def consecutive_runs(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(first, inverse)`` for runs of identical consecutive items of ``x (B, ...)``:
    ``x[first][inverse]`` equals ``x``.

    Training and evaluation batches hold many slices of one volume in a row; encoding each
    distinct volume once (and indexing) makes the 3D stem's cost per volume, not per slice.
    Exact: items are compared element by element; equal but non-adjacent items are simply
    encoded twice.
    """
    if x.shape[0] < 2:
        return torch.arange(x.shape[0]), torch.arange(x.shape[0])
    new = torch.ones(x.shape[0], dtype=torch.bool)
    new[1:] = (x[1:] != x[:-1]).flatten(1).any(dim=1)
    return torch.nonzero(new).flatten(), torch.cumsum(new, 0) - 1


def _standardise(x: Tensor) -> Tensor:
    """Per-sample zero mean, unit variance (intensities are only known up to scale)."""
    dims = tuple(range(1, x.ndim))
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True, unbiased=False)
    return (x - mean) / (std + 1e-5)


class LearnedLocator(nn.Module):
    """Base class: ``forward`` returns :class:`Logits`; ``predict`` runs it without gradients."""

    def forward(self, volumes: Tensor, slices: Tensor) -> Logits:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, volumes: Tensor, slices: Tensor) -> Prediction:
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                logits = self(volumes.float(), slices.float())
        finally:
            self.train(was_training)
        return Prediction(high_scores=logits.high, low_scores=logits.low)


def check_inputs(volumes: Tensor, slices: Tensor) -> None:
    """Raise ``ValueError`` unless ``volumes (B,1,S,S,S)`` and ``slices (B,1,h,w)`` agree."""
    if volumes.ndim != 5 or volumes.shape[1] != 1 or len(set(volumes.shape[2:])) != 1:
        raise ValueError(f"volumes must be (B, 1, S, S, S); got {tuple(volumes.shape)}")
    if slices.ndim != 4 or slices.shape[1] != 1:
        raise ValueError(f"slices must be (B, 1, h, w); got {tuple(slices.shape)}")
    if volumes.shape[0] != slices.shape[0]:
        raise ValueError(f"batch sizes differ: {volumes.shape[0]} volumes, {slices.shape[0]} slices")
