"""Evaluate every registered model on every track and split of atom-mini and submit the results.

Rerun after retraining: `python scripts/evaluate_baselines.py [--models ...] [--tracks ...]`.
Each run writes runs/<model>-<track>-<split>.parquet, stores submissions/<track>/<model>-<split>/
(replacing an older record) and finally regenerates leaderboards/. A model runs on the tracks
whose cube it can be built for (its registry entry's ``max_volume_size``: the released
architecture only fits the paper track's 20^3 cube, its size grows as S^6).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from atom_bench.board.leaderboard import regenerate
from atom_bench.core.tracks import SPLITS, TRACK_NAMES
from atom_bench.data.benchmark import Benchmark
from atom_bench.models.registry import get_model, list_models
from atom_bench.models.run import evaluate_model, submit_evaluation

BASELINE_AUTHORS = {"authors": ["ATOM-Bench baselines"], "code_url": "https://pypi.org/project/atom-bench/"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=[entry.name for entry in list_models()])
    parser.add_argument("--tracks", nargs="+", default=list(TRACK_NAMES))
    parser.add_argument("--splits", nargs="+", default=list(SPLITS))
    args = parser.parse_args()
    console = Console()
    bench = Benchmark.open()
    for model in args.models:
        capabilities = get_model(model).capabilities
        for track in args.tracks:
            if not capabilities.fits(bench.spec(track).size):
                continue
            for split in args.splits:
                start = time.perf_counter()
                scores, path = evaluate_model(model, track, split, out=Path("runs") / f"{model}-{track}-{split}.parquet")
                submit_evaluation(scores, path, f"{model}-{split}", force=True, meta=BASELINE_AUTHORS)
                top1 = scores["metrics"]["top1_high"]["value"]
                drop = scores["volume_reliance"]["swapped"].get("drop_high", {}).get("value")
                console.print(f"{model:10s} {track:10s} {split:12s} top1_high {100 * top1:5.1f}%  swap drop {100 * (drop or 0):5.1f}  ({time.perf_counter() - start:.0f} s)")
    regenerate()
    console.print("[green]leaderboards regenerated[/]")


if __name__ == "__main__":
    main()
