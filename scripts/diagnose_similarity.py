"""Which histology degradation breaks the search's similarity? (``docs/PROTOCOL.md`` section 9)

For ``--slices`` seeded ``histology`` test_unseen samples, each sample's slice is rendered again
from its stored pose and degradation draw with some steps turned off (section 5.1), and scored at
its true pose with the correlation ratio (8 bins, as ``search-cr``) and with NCC. Against
``--poses`` random poses of the same volume (centres in the tissue, uniformly random
orientations) whose coarse block is another one, the table gives the mean similarity at the true
pose and the mean fraction of those wrong poses that score at least as high. A similarity the
search can use has a fraction near 0: the search visits millions of poses.

    .venv/bin/python scripts/diagnose_similarity.py [--slices 32] [--poses 8000] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch
from rich.progress import track as progress

from atom_bench.core import geometry
from atom_bench.core.degrade import apply_histology, draw_histology, slab_offsets
from atom_bench.data.dataset import load_split, load_volumes
from baselines._search_tools import (
    bin_index,
    correlation_ratio_rows,
    fine_labels,
    intensity_bin_edges,
    ncc_rows_torch,
    sample_points_torch,
)

N_BINS = 8
OFF = {"thickness": 0.0, "gamma": 1.0, "wave_amp": 0.0, "bias": 0.0, "warp": 0.0, "shrink": 1.0, "tear": 0.0, "holes": 0.0, "crop": 1.0, "noise": 0.0}
STEPS = {  # what each row keeps on (the draw's own values); everything else is turned off
    "none (clean slab-free cut)": (),
    "remap": ("gamma", "wave_amp"),
    "remap + slab": ("gamma", "wave_amp", "thickness"),
    "remap + bias + noise": ("gamma", "wave_amp", "bias", "noise"),
    "remap + holes + crop + tear": ("gamma", "wave_amp", "holes", "crop", "tear"),
    "remap + shrink": ("gamma", "wave_amp", "shrink"),
    "remap + warp": ("gamma", "wave_amp", "warp"),
    "remap + warp + shrink": ("gamma", "wave_amp", "warp", "shrink"),
    "all (the track)": tuple(OFF),
}


def render_with_steps(data: np.ndarray, points: np.ndarray, normal: np.ndarray, draw, kept: tuple[str, ...]) -> np.ndarray:
    """A sample's slice rendered again from its pose (``points (h, w, 3)`` cube voxels, unit
    ``normal``) and degradation ``draw`` with only the ``kept`` steps on (the others at ``OFF``)."""
    varied = dataclasses.replace(draw, **{k: x for k, x in OFF.items() if k not in kept})
    slab = points[None] + slab_offsets(varied.thickness)[:, None, None, None] * normal
    return apply_histology(geometry.sample_points(data, slab, "linear"), varied)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--poses", type=int, default=8000, help="random wrong poses per slice")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    data = load_split("histology", "test_unseen").with_format("numpy")
    volumes = load_volumes("histology")
    offsets = geometry.centered_offsets(int(data[0]["slice"].shape[0]), 1.0)
    rows: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in STEPS}
    for index in progress(rng.choice(len(data), args.slices, replace=False), description="slices"):
        sample = data[int(index)]
        volume = volumes[sample["volume_id"]]
        cube = torch.from_numpy(volume.data).float()
        edges = intensity_bin_edges(cube, N_BINS)
        tissue = np.argwhere(volume.data > 1e-3)
        n = args.poses
        normals = rng.standard_normal((n, 3))
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        u, v = geometry.frame_from_normal(normals, rng.uniform(0, 2 * np.pi, n))
        centers = np.vstack([sample["center_vox"][None], tissue[rng.integers(0, len(tissue), n)] + rng.uniform(-0.5, 0.5, (n, 3))])
        u, v = np.vstack([sample["u"][None], u]), np.vstack([sample["v"][None], v])
        points = geometry.slice_points(centers, u, v, offsets, offsets)
        cuts = sample_points_torch(cube, torch.as_tensor(points)).reshape(n + 1, -1)
        bins = bin_index(cuts, edges)
        wrong = (fine_labels(torch.as_tensor(centers), volume.data.shape[0]) // 27 != fine_labels(torch.as_tensor(centers[:1]), volume.data.shape[0]) // 27).numpy()
        draw = draw_histology(np.random.default_rng([int(sample["seed"]), 1]), int(sample["seed"]))
        normal = np.cross(sample["u"], sample["v"])
        for name, kept in STEPS.items():
            image = torch.as_tensor(render_with_steps(volume.data, points[0], normal, draw, kept)).reshape(1, -1).double()
            template = (image - image.mean()).expand(n + 1, -1)
            cr = correlation_ratio_rows(bins, template, (template[0] ** 2).sum().expand(n + 1), N_BINS).numpy()
            ncc = ncc_rows_torch(cuts.double(), template, template[0].norm().expand(n + 1)).numpy()
            rows[name].append((cr[0], float(np.mean(cr[wrong] >= cr[0])), ncc[0], float(np.mean(ncc[wrong] >= ncc[0]))))
    print(f"{args.slices} histology test_unseen slices, {args.poses} random poses each, seed {args.seed}\n")
    print("| degradations on | CR at the true pose | wrong poses with CR >= it | NCC at the true pose | wrong poses with NCC >= it |")
    print("|---|---|---|---|---|")
    for name, values in rows.items():
        m = np.mean(values, axis=0)
        print(f"| {name} | {m[0]:.3f} | {100 * m[1]:.2f} % | {m[2]:.3f} | {100 * m[3]:.2f} % |")


if __name__ == "__main__":
    main()
