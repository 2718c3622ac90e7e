"""Write the warm start of ``matcher-rings`` from a trained ``matcher``: every tensor copied, the
ring inputs of the slice MLP at zero, so the start computes exactly the matcher's scores.

    python scripts/warm_start_matcher_rings.py --matcher baselines/weights/matcher-hard.safetensors \\
        --out runs/matcher-rings-hard-init.safetensors
    atom-bench train --model baselines.matcher:create_rings --track hard --init-from runs/matcher-rings-hard-init.safetensors ...

The file's metadata repeats the matcher's training record, as
``scripts/warm_start_regismcan_match.py`` does, so the trained weights' ``training_data`` says
what the start had seen.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from warm_start_regismcan_match import inherited_record

from atom_bench.models.weights import read_safetensors, save_weights
from baselines.matcher import create_rings, widen_to_rings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--matcher", type=Path, required=True, help="trained matcher weights (.safetensors)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the warm start (.safetensors)")
    args = parser.parse_args()
    model, _ = create_rings()
    state = {key: value.float() for key, value in read_safetensors(args.matcher).items()}
    model.load_state_dict(widen_to_rings(state), strict=True)
    meta = inherited_record(args.matcher, f"every tensor from {args.matcher.name} (sha256 {{sha256}}), the ring inputs of the slice MLP at zero")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model, args.out, metadata=meta)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
