"""Which histology degradation breaks a model? The learned-model form of ``diagnose_similarity.py``.

For ``--slices`` seeded ``histology`` samples of a split, each sample's slice is rendered again
from its stored pose and degradation draw with some steps turned off (the rows of
``diagnose_similarity.STEPS``, plus the track with one group of steps left out), the model
predicts it with the sample's real volume, and the table gives coarse top-1 per row. A model
that matches slice against volume falls from its clean-cut row as the steps it has not learnt
to ignore come in; one that reads only the layout gives the same number on every row.

    .venv/bin/python scripts/diagnose_model_degradations.py --model matcher \
        [--weights baselines/weights/matcher-hard.safetensors] [--split test_unseen] [--slices 128] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from diagnose_similarity import OFF, STEPS, render_with_steps
from rich.progress import track as progress

from atom_bench.core import geometry
from atom_bench.core.degrade import draw_histology
from atom_bench.data.dataset import load_split, load_volumes
from atom_bench.models.run import build_model

ROWS = {
    **STEPS,
    "all but the remap": tuple(k for k in OFF if k not in ("gamma", "wave_amp")),
    "all but warp + shrink": tuple(k for k in OFF if k not in ("warp", "shrink")),
    "all but holes + crop + tear": tuple(k for k in OFF if k not in ("holes", "crop", "tear")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="registered name, module path or module:factory")
    parser.add_argument("--weights", default=None, help="weights file (default: the shipped histology weights)")
    parser.add_argument("--split", default="test_unseen")
    parser.add_argument("--slices", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, meta = build_model(args.model, "histology", args.weights)  # without --weights: the shipped histology file
    data = load_split("histology", args.split).with_format("numpy")
    volumes = load_volumes("histology")
    picked = np.random.default_rng(args.seed).choice(len(data), min(args.slices, len(data)), replace=False)
    hits: dict[str, list[bool]] = {name: [] for name in ROWS}
    for index in progress(picked, description="slices"):
        sample = data[int(index)]
        volume = volumes[sample["volume_id"]]
        offsets = geometry.centered_offsets(int(sample["slice"].shape[0]), float(sample["pixel_spacing"]))
        points = geometry.slice_points(sample["center_vox"][None], sample["u"][None], sample["v"][None], offsets, offsets)[0]
        draw = draw_histology(np.random.default_rng([int(sample["seed"]), 1]), int(sample["seed"]))
        normal = np.cross(sample["u"], sample["v"])
        cube = torch.from_numpy(volume.data).float()[None, None]
        for name, kept in ROWS.items():
            image = render_with_steps(volume.data, points, normal, draw, kept)
            if name == "all (the track)" and not np.allclose(image, sample["slice"], atol=1e-5):
                raise SystemExit(f"error: sample {int(index)} does not re-render to its stored slice; is the split from another toolkit version?")
            prediction = model.predict(cube, torch.as_tensor(image)[None, None])
            hits[name].append(int(prediction.high_label[0]) == int(sample["high_label"]))
    print(f"{meta.name} ({args.weights or 'shipped histology weights'}), {len(picked)} histology {args.split} slices, seed {args.seed}\n")
    print("| degradations on | coarse top-1 % |")
    print("|---|---|")
    for name, values in hits.items():
        print(f"| {name} | {100 * np.mean(values):.1f} |")


if __name__ == "__main__":
    main()
