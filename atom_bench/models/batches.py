"""Training batches: endless ``(volumes, slices, high, low)`` batches for :func:`atom_bench.models.train.train`.

- :func:`stream_batches`: fresh batches rendered on the fly from the training volumes (the track's
  own pose sampler), each group of a batch from one volume under a random cube symmetry
  (:func:`cube_symmetry`) when augmenting;
- :func:`split_batches`: seeded permutations of the fixed ``train`` split, one shard per rank;
- the third source, synthetic subjects generated from the training volumes (domain
  randomisation), lives in :mod:`atom_bench.models.synthetic` and reuses :func:`cube_symmetry`.

All are fixed by their seed. A resumed run skips (:func:`skip`) the stream or split batches it
has seen and continues with exactly those an unbroken run would have drawn; a synthetic batch
depends only on ``(seed, batch index)``, so a resumed run draws batch ``n`` directly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from atom_bench.core.volumes import Volume

Batch = tuple[Tensor, Tensor, Tensor, Tensor]  # volumes (B,1,S,S,S), slices (B,1,h,w), high (B,), low (B,)
T = TypeVar("T")


def split_batches(track: str, root: Any, batch_size: int, seed: int, rank: int, world: int) -> Iterator[Batch]:
    """Endless batches from the train split: seeded permutations, each rank its own shard."""
    from atom_bench.data.dataset import AtomSliceDataset

    data = AtomSliceDataset(track, "train", root)
    n = len(data)
    vols = data.volumes
    epoch = 0
    while True:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))[rank::world]
        for start in range(0, len(perm) - batch_size + 1, batch_size):
            idx = perm[start:start + batch_size].tolist()
            volumes = torch.stack([vols[data.volume_ids[i]] for i in idx])[:, None]
            yield volumes, data.slices[idx][:, None], data.high[idx], data.low[idx]
        epoch += 1


def cube_symmetry(volume: Volume, permutation: Sequence[int], flips: Sequence[int]) -> Volume:
    """``volume`` with its voxel axes permuted then flipped (one of the cube's 48 symmetries).

    New axis ``a`` is old axis ``permutation[a]``, reversed where ``flips[a]``. The affine is
    updated so that every voxel keeps its scanner position: the anatomy is unchanged, only its
    place in the cube (and so every block label) moves. Used to augment training volumes: a
    model can no longer learn where slices usually are in 4 volumes, only where they are in this
    one.
    """
    size = volume.size
    data, mask = np.transpose(volume.data, permutation), np.transpose(volume.mask, permutation)
    axes = tuple(int(a) for a in np.flatnonzero(flips))
    if axes:
        data, mask = np.flip(data, axes), np.flip(mask, axes)
    to_old = np.zeros((4, 4))  # new voxel index (homogeneous) -> old voxel index
    to_old[3, 3] = 1.0
    for new_axis, old_axis in enumerate(permutation):
        sign = -1.0 if flips[new_axis] else 1.0
        to_old[old_axis, new_axis] = sign
        to_old[old_axis, 3] = size - 1.0 if flips[new_axis] else 0.0
    return replace(volume, data=np.ascontiguousarray(data), mask=np.ascontiguousarray(mask), affine=volume.affine @ to_old)


def stream_batches(
    track: str, root: Any, batch_size: int, seed: int, augment: bool = True, volumes_per_batch: int = 4
) -> Iterator[Batch]:
    """Endless fresh batches rendered on the fly from the training volumes.

    Each batch holds ``volumes_per_batch`` groups of slices, each group from one training volume
    (drawn at random) under a random cube symmetry when ``augment``; poses come from the track's
    own sampler (:func:`atom_bench.core.tracks.sample_poses`), so no pose is ever seen twice.
    """
    from atom_bench.core.tracks import TRACK_NAMES, render_samples, sample_poses
    from atom_bench.data.dataset import stream_sources

    spec, volumes = stream_sources(track, root, "train")
    ids = sorted(volumes)
    rng = np.random.default_rng([seed, TRACK_NAMES.index(track), 1])
    groups = max(1, min(volumes_per_batch, batch_size))
    sizes = [batch_size // groups + (i < batch_size % groups) for i in range(groups)]
    while True:
        groups = []
        for count in sizes:
            volume = volumes[ids[rng.integers(len(ids))]]
            if augment:
                volume = cube_symmetry(volume, rng.permutation(3), rng.integers(0, 2, size=3))
            poses = sample_poses(spec, volume, count, rng)
            groups.append((volume, render_samples(spec, volume, poses, rng.integers(0, 2**31 - 1, size=count))))
        yield batch_of_groups(groups)


def batch_of_groups(groups: Sequence[tuple[Volume, dict[str, list]]]) -> Batch:
    """One batch from groups of rendered samples, each ``(the volume the model is given, its
    render_samples columns)``: every slice of a group is paired with its group's volume."""
    vols, slices, high, low = [], [], [], []
    for volume, columns in groups:
        count = len(columns["slice"])
        vols.append(torch.from_numpy(volume.data)[None, None].expand(count, 1, *volume.data.shape))
        slices.append(torch.as_tensor(np.stack(columns["slice"]), dtype=torch.float32)[:, None])
        high.append(torch.as_tensor(columns["high_label"], dtype=torch.long))
        low.append(torch.as_tensor(columns["low_label"], dtype=torch.long))
    return torch.cat(vols), torch.cat(slices), torch.cat(high), torch.cat(low)


def skip(batches: Iterator[T], n: int) -> Iterator[T]:
    """``batches`` after its first ``n`` items (drawn and dropped: the stream's state moves on)."""
    for _ in range(n):
        next(batches)
    return batches
