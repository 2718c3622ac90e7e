"""Dense descriptor matcher: every block score is a comparison of the slice with the volume.

Architecture (``localisation-notes.md`` section 5, "Dense descriptor matching"):

- **Volume features.** A small fully convolutional 3D network gives a ``C``-dim descriptor at
  every candidate centre of a regular grid: ``G = S / 2`` positions per axis when ``S >= 36``
  (a 32^3 grid at S = 64: a 2x2x2 stem of stride 2, lossless space-to-depth plus mixing),
  ``G = S`` otherwise (the paper track's 20^3 cube, whose fine blocks are only 2.2 voxels wide:
  the same stem at stride 1 over the cube plus one replicated voxel). The body has a fine branch
  at ``G`` and a coarse one at ``G / 2`` (receptive field about 26 voxels at S = 64, the ball
  that a 16-pixel slice through the position spans in any orientation), summed through 1x1x1
  heads, then L2-normalised. Every 3D conv pads by replication, so a constant cube gives the
  same descriptor everywhere. Computed once per run of identical consecutive volumes in the
  batch (``consecutive_runs``, as ``VolumeEncoder``): a training batch of 4 volumes x 16 slices
  runs the 3D network 4 times, not 64.
- **Slice embedding.** A 2D conv network on two channels (the slice standardised by its
  volume's mean and spread, which keeps its brightness relative to the volume, and by its own,
  which survives contrast changes), global mean and max pooling, averaged over the slice's 8
  in-plane rotations and flips (4 for a non-square slice), then an MLP and L2 normalisation:
  slices come at any in-plane rotation, and the average makes the embedding invariant to the
  multiples of 90 degrees at 8 times the cost of a network that is already tiny in 2D.
- **Scores.** Position score = cosine of slice embedding and position descriptor times a learned
  temperature. Fine logit of block ``k`` = log-mean-exp of the scores of the positions whose
  centre (cube voxels, ``stride * i + 0.5`` per axis) lies in block ``k`` by the
  protocol's rule (``docs/PROTOCOL.md`` section 3.3, via ``atom_bench.core.labels.low_label``);
  coarse logit = log-mean-exp over the coarse block's positions. The mean (log-sum-exp minus
  the log of the block's position count) rather than the sum because at G = 32 a fine block
  holds 27 to 64 positions: with the sum, block size alone would be a prior.

Why it reads the volume: there is no learned term that depends on the position alone (no
position bias, no position code; replicate padding makes the cube's edge look like more of the
same), so a block's score can differ from another's only through the volume's content. A blank
(or any constant) volume gives the same descriptor everywhere and so exactly uniform scores;
another volume gives other scores. Without a prior it starts at chance, not at the prior floor.

Option ``volume_prior``: adds a slice-independent score per position, linear in its descriptor
(where slices are cut in a volume like this one); still uniform on a constant volume. Off by
default, so that every score is a comparison.

Cost: 94,793 parameters (the same for every ``S`` and slice size). A training step (forward and
backward, batch 64 = 4 volumes x 16 slices, S = 64, one thread, median of 5) took 1.41 s beside
0.75 s for ``cnn`` and 2.63 s for ``regismcan`` in the same process on a shared 2-core machine
(load about 4): 1.9 times ``cnn``, 0.54 times ``regismcan``. The descriptor grid at S = 64 is
32^3 x C floats per distinct volume; the score matrix is ``B x G^3``.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn

from atom_bench.core.labels import N_HIGH, N_LOW, low_label
from atom_bench.models.protocol import Logits, ModelMeta, count_parameters
from atom_bench.models.registry import Capabilities, register_model
from baselines._blocks import LearnedLocator, check_inputs, consecutive_runs
from baselines._weights import shipped

TRACKS = ("easy", "hard", "histology")  # the tracks it is meant to ship weights for
POOL_FROM = 36  # cube sides from which the descriptor grid is half the cube's resolution
_EPS = 1e-2  # spread floor (volumes are in [0, 1]): a near-constant volume must not blow up its slices


def grid_stride(size: int) -> int:
    """Voxels (per axis) between neighbouring candidate positions of a cube of side ``size``."""
    return 2 if size >= POOL_FROM else 1


def position_centres_vox(size: int) -> NDArray[np.float64]:
    """Centres ``(G^3, 3)`` in cube voxels (array axes 0, 1, 2) of the candidate positions.

    Position ``i`` per axis starts at voxel ``stride * i`` and its 2-voxel stem covers voxels
    ``stride * i`` and ``stride * i + 1``, so its centre is ``stride * i + 0.5``; rows run in C
    order over ``(i0, i1, i2)``.
    """
    stride = grid_stride(size)
    axis = stride * np.arange(size // stride) + 0.5
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)
    return grid.reshape(-1, 3)


@functools.lru_cache(maxsize=8)
def block_index(size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The fixed position -> block maps of a cube of side ``size`` (voxels).

    Returns ``(members, log_low, coarse_members, log_high)``: ``members (729, K)`` lists the
    positions (rows of :func:`position_centres_vox`) of each fine block, padded with ``G^3`` (an
    index past the last position, for a ``-inf`` score); ``log_low (729,)`` is the log of each
    fine block's position count; ``coarse_members`` and ``log_high`` the same for the 27 coarse
    blocks.

    Raises:
        ValueError: a block holds no position (``size`` below 9).
    """
    low = low_label(position_centres_vox(size), size)
    n = low.shape[0]

    def members(labels: NDArray[np.int64], n_blocks: int) -> tuple[Tensor, Tensor]:
        counts = np.bincount(labels, minlength=n_blocks)
        if counts.min() == 0:
            raise ValueError(f"a cube of side {size} leaves a block without a candidate position")
        order = np.argsort(labels, kind="stable")
        rank = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)  # slot inside its block
        table = np.full((n_blocks, counts.max()), n, dtype=np.int64)
        table[labels[order], rank] = order
        return torch.from_numpy(table), torch.from_numpy(np.log(counts)).float()

    fine, log_low = members(low, N_LOW)
    coarse, log_high = members(low // N_HIGH, N_HIGH)
    return fine, log_low, coarse, log_high


def block_logits(scores: Tensor, size: int) -> Logits:
    """Block logits from position scores ``(B, G^3)`` of a cube of side ``size``: the log-mean-exp
    of each block's position scores (``high (B, 27)``, ``low (B, 729)`` in label order)."""
    fine, log_low, coarse, log_high = (t.to(scores.device) for t in block_index(size))
    padded = torch.cat([scores, scores.new_full((scores.shape[0], 1), -math.inf)], dim=1)
    low = torch.logsumexp(padded[:, fine], dim=-1) - log_low
    high = torch.logsumexp(padded[:, coarse], dim=-1) - log_high
    return Logits(high, low)


def _conv3d(c_in: int, c_out: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1, padding_mode="replicate")


class VolumeFeatures(nn.Module):
    """Descriptors ``(V, C, G, G, G)`` (unit length) of standardised cubes ``(V, 1, S, S, S)``."""

    def __init__(self, dim: int, width: int = 16) -> None:
        super().__init__()
        # a 2x2x2 stem: at S = 64 it is lossless space-to-depth plus mixing, five times cheaper
        # than a full-resolution 3x3x3 conv, and the same weights serve stride 1 (S = 20)
        self.stem = nn.Conv3d(1, width // 2, 2)
        self.fine = _conv3d(width // 2, width)
        self.down = _conv3d(width, 2 * width, stride=2)
        self.coarse = nn.Sequential(_conv3d(2 * width, 2 * width), nn.GELU(), _conv3d(2 * width, 2 * width))
        self.head_fine = nn.Conv3d(width, dim, 1)
        self.head_coarse = nn.Conv3d(2 * width, dim, 1)

    def forward(self, cubes: Tensor) -> Tensor:
        stride = grid_stride(cubes.shape[-1])
        if stride == 1:  # one more voxel (replicated) after the last, so G = S
            cubes = F.pad(cubes, (0, 1, 0, 1, 0, 1), mode="replicate")
        x = F.gelu(F.conv3d(cubes, self.stem.weight, self.stem.bias, stride=stride))
        fine = F.gelu(self.fine(x))
        coarse = F.gelu(self.coarse(F.gelu(self.down(fine))))
        # nearest, not trilinear: seven times cheaper, and the fine branch restores the detail
        coarse = F.interpolate(self.head_coarse(coarse), size=fine.shape[-3:], mode="nearest")
        return F.normalize(self.head_fine(fine) + coarse, dim=1, eps=1e-6)


def dihedral_views(slices: Tensor) -> Tensor:
    """``(n, B, ...)``: the slices ``(B, c, h, w)`` under their in-plane symmetries (8 for a square
    slice: 4 rotations by 90 degrees, each with and without a flip; 4 otherwise)."""
    flips = (slices, slices.flip(-1))
    if slices.shape[-1] != slices.shape[-2]:
        return torch.stack([v for f in flips for v in (f, f.flip(-2))])
    return torch.stack([torch.rot90(f, k, dims=(-2, -1)) for f in flips for k in range(4)])


RING_EDGES = (0.65, 0.92)  # ring radii (fractions of the map's half-side) giving about equal thirds of a square map


def ring_masks(h: int, w: int, edges: tuple[float, ...] = RING_EDGES) -> Tensor:
    """Averaging weights ``(len(edges) + 1, h * w)`` of concentric rings about a map's centre.

    Pixel ``(r, c)`` lies at distance ``d`` from the centre ``((h - 1) / 2, (w - 1) / 2)``, each
    axis measured in units of its half-side (``h / 2``, ``w / 2``); ring ``j`` holds the pixels with
    ``edges[j - 1] <= d < edges[j]`` (the last ring: everything beyond the last edge, the map's
    corners). With the default edges each ring covers about a third of a square map. Rows sum to
    1; a ring with no pixel (maps of 2 x 2 and smaller) has all-zero weights. The rings map onto
    themselves under the 8 symmetries of a square map.
    """
    rows = (torch.arange(h, dtype=torch.float32) - (h - 1) / 2) / max(h / 2, 1)
    cols = (torch.arange(w, dtype=torch.float32) - (w - 1) / 2) / max(w / 2, 1)
    d = torch.sqrt(rows[:, None] ** 2 + cols[None, :] ** 2).flatten()
    bounds = (0.0, *edges, math.inf)
    masks = torch.stack([((d >= lo) & (d < hi)).float() for lo, hi in itertools.pairwise(bounds)])
    return masks / masks.sum(dim=1, keepdim=True).clamp(min=1.0)


class SliceEmbedding(nn.Module):
    """Unit embeddings ``(B, C)`` of two-channel slices ``(B, 2, h, w)``, invariant to their
    in-plane symmetries (averaged over :func:`dihedral_views`).

    The feature map is pooled globally (mean and max) and, with ``rings``, also averaged over
    concentric rings about the slice centre (:func:`ring_masks`): global pooling keeps which
    patterns the slice shows but not where; ring means keep how far from the centre (the pose's
    position) they are, and are still invariant to in-plane rotation.
    """

    def __init__(self, dim: int, width: int = 32, rings: bool = False) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(2, width // 2, 3, padding=1), nn.GELU(),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(),
        )  # fmt: skip
        self.rings = bool(rings)
        pooled = (2 + (len(RING_EDGES) + 1 if self.rings else 0)) * width
        self.mlp = nn.Sequential(nn.Linear(pooled, 2 * width), nn.GELU(), nn.Linear(2 * width, dim))

    def forward(self, slices: Tensor) -> Tensor:
        views = dihedral_views(slices)
        n, b = views.shape[:2]
        x = self.convs(views.flatten(0, 1))
        parts = [x.mean(dim=(2, 3)), x.amax(dim=(2, 3))]
        if self.rings:
            masks = ring_masks(*x.shape[-2:]).to(x)
            parts.append((x.flatten(2) @ masks.T).flatten(1))  # (N, width * rings), channel-major
        pooled = torch.cat(parts, dim=1).reshape(n, b, -1).mean(dim=0)
        return F.normalize(self.mlp(pooled), dim=1, eps=1e-6)


class DescriptorMatcher(LearnedLocator):
    """Scores each candidate position by the cosine of its volume descriptor and the slice embedding."""

    def __init__(
        self, dim: int = 32, volume_width: int = 16, slice_width: int = 32, temperature: float = 10.0, volume_prior: bool = False,
        rings: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.volume_features = VolumeFeatures(dim, volume_width)
        self.slice_embedding = SliceEmbedding(dim, slice_width, rings)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
        # optional: a slice-independent score read from each position's descriptor ("slices are
        # cut here in volumes like this"); still constant on a constant volume, but not a comparison
        self.prior = nn.Linear(dim, 1, bias=False) if volume_prior else None

    def position_scores(self, volumes: Tensor, slices: Tensor) -> Tensor:
        """Scores ``(B, G^3)`` of every candidate position (rows of :func:`position_centres_vox`)."""
        check_inputs(volumes, slices)
        first, inverse = consecutive_runs(volumes)
        cubes = volumes[first]  # one 3D pass per distinct consecutive volume
        mean = cubes.mean(dim=(1, 2, 3, 4))
        spread = cubes.std(dim=(1, 2, 3, 4), unbiased=False) + _EPS
        feats = self.volume_features((cubes - mean[:, None, None, None, None]) / spread[:, None, None, None, None]).flatten(2)
        by_volume = (slices - mean[inverse, None, None, None]) / spread[inverse, None, None, None]
        own_mean = slices.mean(dim=(1, 2, 3), keepdim=True)
        own = (slices - own_mean) / (slices.std(dim=(1, 2, 3), keepdim=True, unbiased=False) + _EPS)
        emb = self.slice_embedding(torch.cat([by_volume.clamp(-10, 10), own], dim=1))  # (B, C)
        ends = [*first[1:].tolist(), volumes.shape[0]]
        pieces = [emb[start:end] @ feats[run] for run, (start, end) in enumerate(zip(first.tolist(), ends))]
        scores = self.log_temperature.exp() * torch.cat(pieces)
        if self.prior is not None:
            scores = scores + (self.prior.weight @ feats).squeeze(1)[inverse]
        return scores

    def forward(self, volumes: Tensor, slices: Tensor) -> Logits:
        return block_logits(self.position_scores(volumes, slices), volumes.shape[-1])


@register_model(
    "matcher",
    description="dense descriptor matcher: 3D conv descriptors per position vs a rotation-pooled slice embedding",
    capabilities=Capabilities(trainable=True, uses_volume=True),
    licence="MIT",
    reference="localisation-notes.md section 5 (dense descriptor matching)",
    weights=shipped("matcher", TRACKS),
)
def create_model(
    volume_size: int | None = None,
    slice_shape: tuple[int, int] | None = None,
    dim: int = 32,
    volume_width: int = 16,
    slice_width: int = 32,
    temperature: float = 10.0,
    volume_prior: bool = False,
    rings: bool = False,
) -> tuple[DescriptorMatcher, ModelMeta]:
    """Factory: ``(model, meta)``; the weights are the same for every cube and slice size.
    ``volume_prior`` adds a slice-independent score per position read from the volume (off: every
    score is then a comparison of slice and volume); ``rings`` adds ring means to the slice
    embedding (:class:`SliceEmbedding`; the experiment :func:`create_rings`)."""
    model = DescriptorMatcher(dim, volume_width, slice_width, temperature, volume_prior, rings)
    meta = ModelMeta(
        name="matcher",
        n_parameters=count_parameters(model),
        training_data="untrained",
        notes="cosine of per-position 3D descriptors and a D4-pooled slice embedding; log-mean-exp per block",
    )
    return model, meta


def create_rings(
    volume_size: int | None = None, slice_shape: tuple[int, int] | None = None, **options: Any
) -> tuple[DescriptorMatcher, ModelMeta]:
    """Factory: ``(model, meta)`` of the matcher whose slice embedding adds ring means
    (:func:`ring_masks`) to its global mean and max (``options``: those of :func:`create_model`).
    Warm-started from a trained matcher by :func:`widen_to_rings`, it starts as exactly that matcher.

    An experiment, not a registered baseline (name it ``baselines.matcher:create_rings``): 30
    minutes on the ``hard`` synthetic stream from the shipped ``hard`` matcher did not beat that
    matcher on validation in a paired comparison (``docs/PROTOCOL.md`` section 9, *matcher*).
    """
    model, meta = create_model(volume_size, slice_shape, rings=True, **options)
    notes = "the matcher, with the slice features also averaged over 3 concentric rings (rotation invariant, keeps distance from the centre)"
    return model, replace(meta, name="matcher-rings", notes=notes)


def widen_to_rings(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A ``matcher`` state dict as a ``matcher-rings`` one that computes the same function.

    Every tensor is copied; the first layer of the slice MLP gains zero columns for the ring
    means, so the rings contribute nothing until training moves them.

    Raises:
        ValueError: the state is not a plain matcher's (e.g. already widened).
    """
    key = "slice_embedding.mlp.0.weight"
    width = state["slice_embedding.convs.2.weight"].shape[0]  # the slice network's width
    old = state[key]
    if old.shape[1] != 2 * width:
        raise ValueError(f"{key} has {old.shape[1]} inputs; a matcher of slice width {width} has {2 * width}")
    extra = old.new_zeros(old.shape[0], (len(RING_EDGES) + 1) * width)
    return {**state, key: torch.cat([old, extra], dim=1)}
