"""The released RegisMCAN, reproduced with its defects (``original-atom-spec.md`` section 4).

Three nets, exactly as released (at ``S = 20`` and 4 x 4 slices: 784 / 11,112,027 / 537,435
parameters, total 11,650,246):

1. ``slice_net`` (``vit_2d_sa.py``): Conv2d patch embedding to 2 x 2 tokens plus a cls token,
   embed 4, **3** blocks (``depth=12`` ignored), 4 heads of dimension 1, pre-LN (eps 1e-6),
   broken residual ``x = attn(norm1(x)); x = x + x``; returns the last block's keys and values.
2. ``high_net`` (``vit_3d_ga1.py``): Conv3d(1 -> P^3, kernel P, stride P/2) with ``P = S/2`` gives
   27 tokens (one per coarse block) plus a cls token; the slice keys/values go through a shared
   ``match_kv = Linear(5, 28 * P^3/4)`` into 28 pseudo-tokens per head; one guided-attention block
   (queries from the volume tokens, keys/values from the slice) with the same broken residual;
   **the logits are read from the cls token only**.
3. ``low_net`` (``vit_3d_ga2.py``): the same on the ``P^3`` crop of a coarse block, with
   Conv3d(1 -> K^3, kernel K, stride T), ``T = round(S/10)``, ``K = P - 2T`` (6 and 2 at S=20).

Because the cls query is a learned constant and nothing mixes volume tokens into it, **both
logit vectors are exactly independent of the volume** (the diagnostic shows a difference of 0).

Generalisation beyond the released ``S = 20``, 4 x 4 (our choice, documented): the patch grows
with the cube (``P = S/2``, stride ``S/4``: still 27 overlapping blocks, the paper blocks of
PROTOCOL 3.4) so ``embed_dim = P^3`` and the parameter count grows as ``S^6`` (about 705 M at
S = 40); the slice patch is ``(h/2, w/2)`` so the slice still gives 4 tokens + cls = 5 keys
(``match_kv`` keeps its 5 inputs). Requires ``S % 4 == 0`` and even ``h, w``.

Inference (``forward``): ``high`` from ``high_net``; ``low[27 a + b] = high[a] + sub_a[b]``,
where ``sub_a`` are ``low_net``'s logits on the crop of block ``a``, computed for all 27 crops
(so no ground truth is used to choose a block).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atom_bench.core.labels import N_HIGH, N_LOW
from atom_bench.errors import ModelError
from atom_bench.models.protocol import Logits, ModelMeta, count_parameters
from atom_bench.models.registry import Capabilities, register_model
from baselines._blocks import LearnedLocator, check_inputs
from baselines._weights import shipped

HEADS = 4
N_PSEUDO = 28  # 27 block tokens + cls


def _init_linear_and_norm(module: nn.Module) -> None:
    """The released ``_init_vit_weights``: Linear trunc_normal(0.01), Conv2d kaiming fan_out,
    LayerNorm (1, 0); Conv3d keeps PyTorch's default."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.01)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _mlp(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))


class _SelfAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, HEADS, d // HEADS).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d)), k, v


class _SliceBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), _SelfAttention(dim)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), _mlp(dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x, k, v = self.attn(self.norm1(x))
        x = x + x  # released defect: the block input is discarded
        return x + self.mlp(self.norm2(x)), k, v


class SliceNet(nn.Module):
    """``vit_2d_sa``: returns the last block's keys and values ``(B, 4, 5, 1)`` each."""

    def __init__(self, slice_shape: tuple[int, int] = (4, 4), dim: int = 4, depth: int = 3) -> None:
        super().__init__()
        h, w = slice_shape
        self.patch = nn.Conv2d(1, dim, kernel_size=(h // 2, w // 2), stride=(h // 2, w // 2))
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, 5, dim))
        self.blocks = nn.ModuleList(_SliceBlock(dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)  # released: defined, never used
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)
        self.apply(_init_linear_and_norm)

    def forward(self, slices: Tensor) -> tuple[Tensor, Tensor]:
        x = self.patch(slices).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        k = v = x
        for block in self.blocks:
            x, k, v = block(x)
        return k, v


class _GuidedAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, n, d = x.shape
        q = self.q(x).reshape(b, n, HEADS, d // HEADS).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class VolumeNet(nn.Module):
    """``vit_3d_ga1`` / ``vit_3d_ga2``: 27 patch tokens + cls, one guided block, cls readout."""

    def __init__(self, patch: int, stride: int) -> None:
        super().__init__()
        dim = patch**3
        self.dim = dim
        self.patch = nn.Conv3d(1, dim, kernel_size=patch, stride=stride)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, N_PSEUDO, dim))
        self.match_kv = nn.Linear(5, N_PSEUDO * dim // HEADS)
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), _GuidedAttention(dim)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), _mlp(dim)
        self.norm, self.head = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, N_HIGH)
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)
        self.apply(_init_linear_and_norm)

    def forward(self, volumes: Tensor, k: Tensor, v: Tensor) -> Tensor:
        x = self.patch(volumes).flatten(2).transpose(1, 2)
        if x.shape[1] != N_HIGH:
            raise ModelError(f"released volume net expects 27 patch tokens, got {x.shape[1]}")
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        b = k.shape[0]
        k = self.match_kv(k.squeeze(-1)).reshape(b, HEADS, N_PSEUDO, self.dim // HEADS)
        v = self.match_kv(v.squeeze(-1)).reshape(b, HEADS, N_PSEUDO, self.dim // HEADS)
        if x.shape[0] != b:  # one slice for several crops
            k = k.repeat_interleave(x.shape[0] // b, dim=0)
            v = v.repeat_interleave(x.shape[0] // b, dim=0)
        x = self.attn(self.norm1(x), k, v)
        x = x + x  # released defect
        x = x + self.mlp(self.norm2(x))
        return self.head(self.norm(x)[:, 0])  # released defect: cls readout


def geometry(volume_size: int, slice_shape: tuple[int, int]) -> dict[str, int]:
    """Patch sizes of the three nets for a cube side and slice shape (see the module doc)."""
    h, w = slice_shape
    if volume_size % 4 or volume_size < 8:
        raise ModelError(f"the released variant needs a cube side divisible by 4 (>= 8); got {volume_size}")
    if h % 2 or w % 2:
        raise ModelError(f"the released variant needs even slice sides; got {h}x{w}")
    patch = volume_size // 2
    sub_stride = max(1, round(volume_size / 10))
    return {"patch": patch, "stride": volume_size // 4, "sub_patch": patch - 2 * sub_stride, "sub_stride": sub_stride}


class ReleasedRegisMCAN(LearnedLocator):
    """The three released nets behind the common interface."""

    def __init__(self, volume_size: int = 20, slice_shape: tuple[int, int] = (4, 4)) -> None:
        super().__init__()
        g = geometry(volume_size, slice_shape)
        self.volume_size, self.slice_shape, self.stride, self.patch = volume_size, tuple(slice_shape), g["stride"], g["patch"]
        self.slice_net = SliceNet(slice_shape)
        self.high_net = VolumeNet(g["patch"], g["stride"])
        self.low_net = VolumeNet(g["sub_patch"], g["sub_stride"])

    def crops(self, volumes: Tensor) -> Tensor:
        """The 27 coarse-block crops ``(B * 27, 1, P, P, P)`` in label order."""
        p, t = self.patch, self.stride
        x = volumes.unfold(2, p, t).unfold(3, p, t).unfold(4, p, t)  # (B, 1, 3, 3, 3, P, P, P)
        return x.reshape(-1, 1, p, p, p)

    def forward(self, volumes: Tensor, slices: Tensor) -> Logits:
        check_inputs(volumes, slices)
        if volumes.shape[-1] != self.volume_size or tuple(slices.shape[-2:]) != self.slice_shape:
            raise ModelError(
                f"this released model was built for S={self.volume_size}, slices {self.slice_shape};"
                f" got S={volumes.shape[-1]}, slices {tuple(slices.shape[-2:])}"
            )
        k, v = self.slice_net(slices)
        high = self.high_net(volumes, k, v)
        sub = self.low_net(self.crops(volumes), k, v).reshape(-1, N_HIGH, N_HIGH)
        low = (high[:, :, None] + sub).reshape(-1, N_LOW)
        return Logits(high, low)


def parameter_counts(volume_size: int = 20, slice_shape: tuple[int, int] = (4, 4)) -> dict[str, int]:
    """Exact parameter counts per net, built on the ``meta`` device (no memory is allocated)."""
    with torch.device("meta"):
        model = ReleasedRegisMCAN(volume_size, slice_shape)
    counts = {name: count_parameters(getattr(model, name)) for name in ("slice_net", "high_net", "low_net")}
    counts["total"] = sum(counts.values())
    return counts


def training_memory_estimate(volume_size: int, slice_shape: tuple[int, int], batch: int) -> float:
    """Rough bytes for one AdamW training step: 16 bytes per parameter (weight, gradient, two
    moments) plus activations (about 12 token-width tensors of 28 x P^3 floats per sample for
    the high net and 27 x as many for the crops' low net)."""
    counts = parameter_counts(volume_size, slice_shape)
    g = geometry(volume_size, slice_shape)
    activations = 12 * N_PSEUDO * 4 * (g["patch"] ** 3 + N_HIGH * g["sub_patch"] ** 3) * batch * 4
    return 16.0 * counts["total"] + activations + 4.0 * batch * (volume_size**3) * (1 + N_HIGH * 0.125)


@register_model(
    "released",
    description="the released RegisMCAN code with its defects; its logits ignore the volume",
    # its embedding is (S/2)^3 wide: 705 M parameters at S = 40, 12.5 billion at S = 64
    capabilities=Capabilities(trainable=True, uses_volume=False, max_volume_size=40),
    licence="unknown (released code has no licence file)",
    code_url="https://github.com/haizailache999/Image-Registration",
    reference="Wang et al. 2024, arXiv 2406.04105",
    weights=shipped("released", ("paper",)),
)
def create_model(volume_size: int = 20, slice_shape: tuple[int, int] = (4, 4)) -> tuple[ReleasedRegisMCAN, ModelMeta]:
    """Factory: ``(model, meta)`` for the released architecture at a cube side and slice shape."""
    model = ReleasedRegisMCAN(volume_size, tuple(slice_shape))
    meta = ModelMeta(
        name="released",
        n_parameters=count_parameters(model),
        training_data="untrained",
        notes="faithful released architecture incl. defects: cls readout, x = x + x, match_kv Linear(5, 28*d)",
    )
    return model, meta


__all__ = ["ReleasedRegisMCAN", "create_model", "parameter_counts", "training_memory_estimate", "geometry"]
