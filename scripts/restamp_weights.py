"""Re-stamp shipped weights for a new atom-mini revision without retraining them.

    python scripts/restamp_weights.py --files baselines/weights/cnn-paper.safetensors ... --note "..."

For weights whose training data did not change (the train split is byte-identical) but whose
validation split did, the tensors are kept bit for bit; the metadata gets the validation scores
recomputed on the current atom-mini (``val_top1_*``), the current ``dataset_hash``, the hash the
weights were trained and selected on (``trained_on_dataset_hash``, kept if already there) and
``--note`` as ``dataset_note``. The checkpoint choice stays the one made on the old validation
split: say so in the note.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safetensors.torch import save_file

from atom_bench._io import atomic_path
from atom_bench.data.benchmark import Benchmark
from atom_bench.models.registry import resolve_spec
from atom_bench.models.run import track_kwargs
from atom_bench.models.train import validate
from atom_bench.models.weights import read_metadata, read_safetensors


def restamp(path: Path, note: str) -> dict[str, str]:
    meta = read_metadata(path)
    model_name, track = meta["model"], meta["track"]
    resolved = resolve_spec(model_name)
    model, _ = resolved.build(path, **track_kwargs(resolved, track, None))
    scores = validate(model, track)
    meta.setdefault("trained_on_dataset_hash", meta.get("dataset_hash", ""))
    meta.update({k: str(v) for k, v in scores.items()}, dataset_hash=Benchmark.open().hash, dataset_note=note)
    state = read_safetensors(path)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=meta)
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", nargs="+", type=Path, required=True)
    parser.add_argument("--note", required=True)
    args = parser.parse_args()
    for path in args.files:
        meta = restamp(path, args.note)
        print(f"{path.name}: val_top1_high {meta['val_top1_high']} val_top1_low {meta['val_top1_low']}")


if __name__ == "__main__":
    main()
