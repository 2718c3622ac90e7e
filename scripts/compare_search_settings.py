"""Where does the pose search lose a slice: the similarity, or the search? (PROTOCOL section 9)

Runs :class:`baselines.search.PoseSearch` with each ``--setting`` (keyword arguments, e.g.
``"coarse_side=20,min_coarse_pixels=6,top_k=8"``) on the same ``--slices`` seeded samples of a
track's split (validation by default: settings are chosen there, never on a test split) and
prints, per setting, coarse top-1 and the median best similarity of the slices it found and of
those it missed. On a clean track the true pose scores 1 with NCC (about 0.93 with the
correlation ratio's 8 bins), so misses whose best similarity lies below it are failures of the
search (the true pose was never refined), not of the similarity.

    .venv/bin/python scripts/compare_search_settings.py --track hard \
        --setting "coarse_side=20,min_coarse_pixels=6,top_k=8" --setting "" [--slices 128] [--seed 1]
"""

from __future__ import annotations

import argparse
import ast
import time

import numpy as np
import torch
from rich.progress import track as progress

from atom_bench.core.labels import N_HIGH
from atom_bench.data.dataset import load_split, load_volumes
from baselines.search import PoseSearch


def parse_setting(text: str) -> dict[str, object]:
    """``"a=1,b='cr'"`` -> ``{"a": 1, "b": "cr"}`` (Python literals as such, anything else as text)."""
    setting: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        try:
            setting[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            setting[key.strip()] = value.strip()
    return setting


def seeded_samples_by_volume(data, count: int, seed: int) -> dict[str, list[int]]:
    """Row indices of ``count`` samples of a split (all if fewer) drawn with ``seed``, in row
    order and grouped by volume id (a search resamples each volume once)."""
    chosen = np.sort(np.random.default_rng(seed).choice(len(data), min(count, len(data)), replace=False))
    by_volume: dict[str, list[int]] = {}
    for index in chosen.tolist():
        by_volume.setdefault(str(data[index]["volume_id"]), []).append(index)
    return by_volume


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--track", default="hard")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--slices", type=int, default=128)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--setting", action="append", default=None, help="PoseSearch keyword arguments; repeat to compare ('' = the defaults)")
    parser.add_argument("--root", default=None, help="benchmark directory (default: the embedded atom-mini)")
    args = parser.parse_args()
    data = load_split(args.track, args.split, args.root).with_format("numpy")
    volumes = load_volumes(args.track, args.root)
    by_volume = seeded_samples_by_volume(data, args.slices, args.seed)
    print(f"{args.track} {args.split}: {sum(map(len, by_volume.values()))} slices, seed {args.seed}\n")
    print("| setting | coarse top-1 | best similarity, found (median) | best similarity, missed (median) | seconds |")
    print("|---|---|---|---|---|")
    for text in args.setting or [""]:
        model = PoseSearch(**parse_setting(text))
        hits, best = [], []
        start = time.perf_counter()
        for volume_id, members in progress(list(by_volume.items()), description=text or "defaults"):
            cube = torch.from_numpy(volumes[volume_id].data).float()
            images = torch.stack([torch.from_numpy(np.asarray(data[i]["slice"])).float() for i in members])
            for i, result in zip(members, model._search_group(cube, images)):
                predicted = int(result.block_ncc.reshape(N_HIGH, -1).amax(dim=1).argmax())
                hits.append(predicted == int(data[i]["high_label"]))
                best.append(result.ncc)
        hit, value = np.array(hits), np.array(best)
        found = f"{np.median(value[hit]):.3f}" if hit.any() else "-"
        missed = f"{np.median(value[~hit]):.3f}" if (~hit).any() else "-"
        print(f"| {text or 'defaults'} | {100 * hit.mean():.1f} % | {found} | {missed} | {time.perf_counter() - start:.0f} |")


if __name__ == "__main__":
    main()
