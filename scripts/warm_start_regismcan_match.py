"""Write the warm start of ``regismcan-match``: the matcher's trained weights in ``matcher.*``,
every other parameter (the co-attention) at its seed-``--seed`` initialisation.

    python scripts/warm_start_regismcan_match.py --matcher baselines/weights/matcher-hard.safetensors \\
        --out runs/regismcan-match-hard-init.safetensors
    atom-bench train --model regismcan-match --track hard --init-from runs/regismcan-match-hard-init.safetensors ...

The file's metadata repeats the matcher's training record (track, source, steps, seed, dataset),
so the trained weights' ``training_data`` says what the start had seen
(``atom_bench.models.weights.describe_training``).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from atom_bench.models.train import seed_everything
from atom_bench.models.weights import read_metadata, read_safetensors, save_weights
from baselines.regismcan import create_match

RECORD = (  # a warm-started matcher keeps its own start (init_from) in the record
    "model", "track", "trained_on_track", "source", "step", "seed", "seconds", "init_from", "dataset_hash",
    "trained_on_dataset_hash", "toolkit_version",
)


def inherited_record(start: Path, composed: str) -> dict[str, str]:
    """The metadata of a warm start built from the weights file ``start``: its training record
    (``RECORD``) and ``composed``, a sentence saying how (``{sha256}`` in it: the file's digest)."""
    source = read_metadata(start)
    meta = {key: source[key] for key in RECORD if key in source}
    meta["composed"] = composed.format(sha256=hashlib.sha256(start.read_bytes()).hexdigest())
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--matcher", type=Path, required=True, help="trained matcher weights (.safetensors)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the warm start (.safetensors)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the co-attention's initialisation")
    args = parser.parse_args()
    seed_everything(args.seed)
    model, _ = create_match()
    model.matcher.load_state_dict(read_safetensors(args.matcher), strict=True)
    meta = inherited_record(args.matcher, f"matcher.* from {args.matcher.name} (sha256 {{sha256}}), the rest at seed {args.seed}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model, args.out, metadata=meta)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
