"""Is the correlation-ratio search's histology score a bias of its block maxima? (PROTOCOL section 9)

The search scores a fine block by the best similarity among the candidate windows centred in it,
so a block with many textured tissue windows scores high whatever the slice. This runs only the
coarse stage of ``search-cr`` on ``--slices`` seeded samples of a split and compares, per
volume, coarse top-1 of several aggregations of the same block maxima ``B (slices, 729)``:

- ``max``: the search's own (best fine block of each coarse block);
- ``mean of fine maxima``: the mean over the coarse block's 27 fine blocks;
- ``z, max`` / ``z, mean`` / ``z, top-3 mean``: each fine block's maximum as a z-score against
  the same block's maxima for the *other* slices of the same volume (leave one out), then the
  coarse block's max, mean or mean of its 3 best;
- ``rank, mean``: the share of the other slices whose maximum this slice's exceeds, averaged.

If the slice carried its position and only the aggregation hid it, a calibrated row would be far
above ``max``.

    .venv/bin/python scripts/diagnose_block_calibration.py [--track histology] [--split validation] [--slices 256] [--seed 0]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch
from compare_search_settings import seeded_samples_by_volume
from rich.progress import track as progress

from atom_bench.core.labels import N_HIGH, N_LOW
from atom_bench.data.dataset import load_split, load_volumes
from baselines._search_tools import volume_key
from baselines.search import PoseSearch


def coarse_block_maxima(search: PoseSearch, volume: torch.Tensor, images: torch.Tensor) -> np.ndarray:
    """``(K, 729)``: each fine block's best coarse-stage similarity (-1: no candidate in it)."""
    windows = search._windows(volume, tuple(images.shape[1:]), volume_key(volume))
    block = torch.full((len(images), N_LOW), -1.0)
    for family in windows.families:
        block = torch.maximum(block, search._coarse(family, images)[0])
    return block.double().numpy()


def aggregations(block: np.ndarray) -> dict[str, np.ndarray]:
    """Coarse block scores ``(K, 27)`` of every aggregation, from one volume's block maxima."""
    k = len(block)
    has = block > -1
    fine = np.where(has, block, np.nan)
    total, squares = block.sum(axis=0), (block * block).sum(axis=0)
    mean = (total[None] - block) / (k - 1)  # the other slices' mean, per block
    spread = np.sqrt(np.maximum((squares[None] - block * block) / (k - 1) - mean * mean, 1e-12))
    z = np.where(has, (block - mean) / spread, np.nan).reshape(k, N_HIGH, -1)
    rank = np.where(has, (block[:, None, :] > block[None, :, :]).sum(axis=1) / (k - 1), np.nan)
    coarse = fine.reshape(k, N_HIGH, -1)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a coarse block without candidates: all-NaN
        scores = {
            "max": np.nanmax(coarse, axis=2),
            "mean of fine maxima": np.nanmean(coarse, axis=2),
            "z, max": np.nanmax(z, axis=2),
            "z, mean": np.nanmean(z, axis=2),
            "z, top-3 mean": -np.sort(-np.nan_to_num(z, nan=-np.inf), axis=2)[:, :, :3].mean(axis=2),
            "rank, mean": np.nanmean(rank.reshape(k, N_HIGH, -1), axis=2),
        }
    return {name: np.nan_to_num(value, nan=-np.inf) for name, value in scores.items()}  # argmax would pick a NaN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--track", default="histology")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--slices", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = load_split(args.track, args.split).with_format("numpy")
    volumes = load_volumes(args.track)
    by_volume = seeded_samples_by_volume(data, args.slices, args.seed)
    search = PoseSearch(similarity="cr")
    hits: dict[str, list[np.ndarray]] = {}
    for volume_id, members in progress(list(by_volume.items()), description="coarse stage per volume"):
        if len(members) < 2:
            continue
        volume = torch.as_tensor(volumes[volume_id].data, dtype=torch.float32)
        images = torch.as_tensor(np.stack([np.asarray(data[i]["slice"]).squeeze() for i in members]), dtype=torch.float32)
        truth = np.array([int(data[i]["high_label"]) for i in members])
        for name, scores in aggregations(coarse_block_maxima(search, volume, images)).items():
            hits.setdefault(name, []).append(scores.argmax(axis=1) == truth)
    n = sum(len(m) for m in by_volume.values() if len(m) > 1)
    print(f"{args.track} {args.split}: {n} slices in {len(by_volume)} volumes, seed {args.seed}\n")
    print("| aggregation of the block maxima | coarse top-1 |")
    print("|---|---|")
    for name, parts in hits.items():
        print(f"| {name} | {100 * np.concatenate(parts).mean():.1f} % |")


if __name__ == "__main__":
    main()
