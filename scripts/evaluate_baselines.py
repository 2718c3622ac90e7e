"""Evaluate every registered model on every track and split of atom-mini and submit the results.

Rerun after retraining: `python scripts/evaluate_baselines.py [--models ...] [--tracks ...] [--splits ...]`.
Each run writes its predictions under runs/ (:func:`atom_bench.models.run.default_output`), stores
submissions/<track>/<model>-<split>/ (replacing an older record) and finally regenerates
leaderboards/ (``--no-leaderboard`` leaves that to a later call, e.g. when several of these
scripts run side by side). What is evaluated:

- a model runs on the tracks whose cube it can be built for (its registry entry's
  ``max_volume_size``: the released architecture only fits the paper track's 20^3 cube);
- a trainable model runs on the tracks it ships weights for (the matcher and regismcan-match
  have none for the paper track);
- a model with nothing to fit (no training, no label counts: chance, the searches) is not
  evaluated on ``train``: that split is a fourth sample of volumes for it, and the searches'
  cost is per slice;
- the volume-reliance diagnostic (swapped and blank volumes) runs on the test splits, where the
  leaderboards make their claims; ``train`` and ``validation`` are scored without it.

Every record credits "ATOM-Bench baselines" with the model's own source file as ``code_url``
(``atom-bench:baselines/<module>.py``, a link into this source tree on the leaderboard page).
"""

from __future__ import annotations

import argparse
import sys
import time

from rich.console import Console

from atom_bench.board.leaderboard import regenerate
from atom_bench.core.tracks import SPLITS, TRACK_NAMES
from atom_bench.data.benchmark import Benchmark
from atom_bench.models.registry import ModelEntry, get_model, list_models
from atom_bench.models.run import evaluate_model, submit_evaluation

TEST_SPLITS = ("test_seen", "test_unseen")


def authorship(entry: ModelEntry) -> dict[str, object]:
    """The record's authors and code_url: the baselines' team and the entry's own source file."""
    module = sys.modules[entry.factory.__module__]
    return {"authors": ["ATOM-Bench baselines"], "code_url": f"atom-bench:{module.__name__.replace('.', '/')}.py"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=[entry.name for entry in list_models()])
    parser.add_argument("--tracks", nargs="+", default=list(TRACK_NAMES))
    parser.add_argument("--splits", nargs="+", default=list(SPLITS))
    parser.add_argument("--no-leaderboard", action="store_true", help="do not regenerate leaderboards/ at the end")
    parser.add_argument("--no-diagnostic", action="store_true", help="skip the volume-swap diagnostic on test splits too (halves a search's cost)")
    args = parser.parse_args()
    console = Console()
    bench = Benchmark.open()
    for model in args.models:
        entry = get_model(model)
        capabilities = entry.capabilities
        fitted = capabilities.trainable or capabilities.needs_train_counts
        for track in args.tracks:
            if not capabilities.fits(bench.spec(track).size):
                continue
            if capabilities.trainable and entry.weights_for(track) is None:
                continue  # an untrained model's row would say nothing about the baseline
            for split in args.splits:
                if split == "train" and not fitted:
                    continue
                start = time.perf_counter()
                scores, path = evaluate_model(model, track, split, diagnostic=split in TEST_SPLITS and not args.no_diagnostic)
                submit_evaluation(scores, path, f"{model}-{split}", force=True, meta=authorship(entry))
                top1 = scores["metrics"]["top1_high"]["value"]
                drop = scores.get("volume_reliance", {}).get("swapped", {}).get("drop_high", {}).get("value")
                shown = "-" if drop is None else f"{100 * drop:5.1f}"
                console.print(f"{model:10s} {track:10s} {split:12s} top1_high {100 * top1:5.1f}%  swap drop {shown}  ({time.perf_counter() - start:.0f} s)")
    if not args.no_leaderboard:
        regenerate()
        console.print("[green]leaderboards regenerated[/]")


if __name__ == "__main__":
    main()
