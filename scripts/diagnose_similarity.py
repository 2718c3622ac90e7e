"""Which histology degradation breaks the search's similarity? (``docs/PROTOCOL.md`` section 9)

For ``--slices`` seeded ``histology`` test_unseen samples, each sample's slice is rendered again
from its stored pose and degradation draw with some steps turned off (section 5.1), and scored at
its true pose with the correlation ratio (8 bins, as ``search-cr``) and with NCC. Against
``--poses`` random poses of the same volume (centres in the tissue, uniformly random
orientations) whose coarse block is another one, the table gives the mean similarity at the true
pose and the mean fraction of those wrong poses that score at least as high. A similarity the
search can use has a fraction near 0: the search visits millions of poses. The masked
correlation ratio leaves out the slice's empty pixels (values <= 0.05: holes, crops, tears).

``--slice-size`` and ``--pixel-spacing`` (voxels) render every slice, and every wrong pose, at
another size than the stored one (the pose's centre and frame and the degradation draw are
kept): does a larger section, or a finer one, keep the true pose on top? The warp's standard
deviation is in pixels, the shrinkage a fraction of the side, the holes' radii a fraction of
the side (section 5.1), so a finer pixel makes the warp smaller in voxels.

``--picture PATH`` draws the first ``--picture-slices`` slices as each row renders them (masked
correlation ratio at the true pose above each), and beside them the clean cut of the wrong pose
whose masked ratio against the last row's slice is highest: what the search finds instead.

``--fit`` adds the masked correlation ratio of every pose (the true one and the wrong ones
alike) at its best in-plane scale (0.85 to 1, the shrinkage) and shift (+-3 pixels, the warp's
translation): would a search that fits them keep the true pose on top?

    .venv/bin/python scripts/diagnose_similarity.py [--slices 32] [--poses 8000] [--seed 0]
        [--slice-size 16] [--pixel-spacing 1.0] [--rows NAME ...] [--fit] [--root DIR]
        [--picture docs/images/histology_similarity.png] [--picture-slices 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
from pathlib import Path

import numpy as np
import torch
from rich.progress import track as progress

from atom_bench._io import atomic_path
from atom_bench.core import geometry
from atom_bench.core.degrade import apply_histology, draw_histology, slab_offsets, warp_displacement
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
TRACK_ROW = "all (the track)"
STEPS = {  # what each row keeps on (the draw's own values); everything else is turned off
    "none (clean slab-free cut)": (),
    "remap": ("gamma", "wave_amp"),
    "remap + slab": ("gamma", "wave_amp", "thickness"),
    "remap + bias + noise": ("gamma", "wave_amp", "bias", "noise"),
    "remap + holes + crop + tear": ("gamma", "wave_amp", "holes", "crop", "tear"),
    "remap + shrink": ("gamma", "wave_amp", "shrink"),
    "remap + warp": ("gamma", "wave_amp", "warp"),
    "remap + warp + shrink": ("gamma", "wave_amp", "warp", "shrink"),
    TRACK_ROW: tuple(OFF),
}
LEAVE_ONE_OUT = {  # the steps of section 5.1 (a draw's fields) that each "all but" row turns off
    "the remap": ("gamma", "wave_amp"),
    "the slab": ("thickness",),
    "the bias": ("bias",),
    "the warp": ("warp",),
    "the shrinkage": ("shrink",),
    "holes, crop and tear": ("holes", "crop", "tear"),
    "the noise": ("noise",),
    "the warp and the shrinkage": ("warp", "shrink"),
}
PICTURED = tuple(STEPS)  # the picture's columns: the steps added one by one, not the "all but" rows
STEPS.update({f"all but {name}": tuple(k for k in OFF if k not in off) for name, off in LEAVE_ONE_OUT.items()})


def render_with_steps(data: np.ndarray, points: np.ndarray, normal: np.ndarray, draw, kept: tuple[str, ...]) -> np.ndarray:
    """A sample's slice rendered again from its pose (``points (h, w, 3)`` cube voxels, unit
    ``normal``) and degradation ``draw`` with only the ``kept`` steps on (the others at ``OFF``)."""
    varied = dataclasses.replace(draw, **{k: x for k, x in OFF.items() if k not in kept})
    slab = points[None] + slab_offsets(varied.thickness)[:, None, None, None] * normal
    return apply_histology(geometry.sample_points(data, slab, "linear"), varied)


def warp_field_statistics(side: int, draws: int = 2000) -> tuple[float, float]:
    """Per unit of ``deg_warp``: the standard deviation of the mean displacement (a translation,
    pixels) and the mean displacement gradient (local strain, pixels per pixel) of the field
    that :func:`atom_bench.core.degrade.warp_displacement` draws for a ``side x side`` slice
    (``draws`` seeds, both axes)."""
    fields = [f for seed in range(draws) for f in warp_displacement((side, side), 1.0, np.random.default_rng(seed))]
    return float(np.std([f.mean() for f in fields])), float(np.mean([np.hypot(*np.gradient(f)).mean() for f in fields]))


def masked_template(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The tissue pixels of ``image (P,)`` (values > 0.05: not holes, crops, tears or the border a
    shrinkage empties) and their values less their mean, the masked correlation ratio's template."""
    tissue_pixels = image > 0.05
    kept = image[tissue_pixels]
    return tissue_pixels, kept - kept.mean()


FIT_SCALES = (1.0, 0.95, 0.9, 0.85)  # the shrinkage's range, U(0.85, 1)
FIT_SHIFTS = range(-3, 4)  # pixels along u and v: the warp's translation (about 2.1 warp px, warp <= 1.5)


def fitted_masked_cr(cube: torch.Tensor, edges: torch.Tensor, centers: np.ndarray, u: np.ndarray, v: np.ndarray,
                     offsets: np.ndarray, spacing: float, image: torch.Tensor, chunk: int = 500) -> np.ndarray:  # fmt: skip
    """Masked correlation ratio of ``image (P,)`` with each pose ``(N, 3)`` at its best in-plane
    scale (``FIT_SCALES``: the cut's offsets divided by the slice's shrinkage) and shift
    (``FIT_SHIFTS``, pixels of ``spacing`` voxels along ``u`` and ``v``), ``(N,)``: every pose, the
    true one and the wrong ones alike, gets the same fit."""
    tissue_pixels, template = masked_template(image)
    template_sq = (template**2).sum()
    variants = [(scale, dr * spacing, dc * spacing) for scale in FIT_SCALES for dr in FIT_SHIFTS for dc in FIT_SHIFTS]
    best = np.full(len(centers), -1.0)
    for start in range(0, len(centers), chunk):
        c, uu, vv = (x[start : start + chunk] for x in (centers, u, v))
        points = np.stack(
            [geometry.slice_points(c + dr * vv + dc * uu, uu, vv, offsets / scale, offsets / scale) for scale, dr, dc in variants], axis=1
        )  # (n, V, h, w, 3)
        bins = bin_index(sample_points_torch(cube, torch.as_tensor(points)).reshape(-1, len(image)), edges)[:, tissue_pixels]
        m = len(bins)
        cr = correlation_ratio_rows(bins, template.expand(m, -1), template_sq.expand(m), N_BINS).reshape(len(c), len(variants))
        best[start : start + chunk] = cr.amax(dim=1).numpy()
    return best


def draw_picture(out: Path, panels: list[list[tuple[np.ndarray, str]]], columns: list[str]) -> Path:
    """A PNG grid: one row per slice, one ``(image (h, w) in [0, 1], caption)`` panel per column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), len(columns), figsize=(1.45 * len(columns), 1.6 * len(panels) + 0.6), squeeze=False)
    for r, row in enumerate(panels):
        for c, (image, caption) in enumerate(row):
            ax = axes[r, c]
            ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_xlabel(caption, fontsize=7)
            if r == 0:
                ax.set_title("\n".join(textwrap.wrap(columns[c], 15)), fontsize=7)
    fig.suptitle("histology test_unseen slices by degradation step (masked CR at the true pose) and the best wrong pose", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--poses", type=int, default=8000, help="random wrong poses per slice")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slice-size", type=int, default=None, help="slice side in pixels (default: the stored slices')")
    parser.add_argument("--pixel-spacing", type=float, default=1.0, help="pixel spacing in cube voxels")
    parser.add_argument("--rows", nargs="*", default=None, help="only these rows of the table (by name prefix)")
    parser.add_argument("--fit", action="store_true", help="also score every pose at its best in-plane scale and shift (masked CR)")
    parser.add_argument("--root", default=None, help="benchmark directory (default: the embedded atom-mini)")
    parser.add_argument("--picture", type=Path, default=None, help="also draw the first slices as each row renders them (PNG)")
    parser.add_argument("--picture-slices", type=int, default=4, help="slices in the picture")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    data = load_split("histology", "test_unseen", args.root).with_format("numpy")
    volumes = load_volumes("histology", args.root)
    side = args.slice_size or int(data[0]["slice"].shape[0])
    offsets = geometry.centered_offsets(side, args.pixel_spacing)
    steps = {name: kept for name, kept in STEPS.items() if not args.rows or any(name.startswith(r) for r in args.rows)}
    if args.picture is not None and TRACK_ROW not in steps:
        parser.error(f"--picture draws the best wrong pose of the row {TRACK_ROW!r}: add 'all (' to --rows")
    rows: dict[str, list[tuple[float, ...]]] = {name: [] for name in steps}
    panels: list[list[tuple[np.ndarray, str]]] = []
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
        drawn = args.picture is not None and len(panels) < args.picture_slices
        if drawn:
            panels.append([])
        for name, kept in steps.items():
            image = torch.as_tensor(render_with_steps(volume.data, points[0], normal, draw, kept)).reshape(1, -1).double()
            template = (image - image.mean()).expand(n + 1, -1)
            cr = correlation_ratio_rows(bins, template, (template[0] ** 2).sum().expand(n + 1), N_BINS).numpy()
            ncc = ncc_rows_torch(cuts.double(), template, template[0].norm().expand(n + 1)).numpy()
            tissue_pixels, masked = masked_template(image[0])
            mcr = correlation_ratio_rows(bins[:, tissue_pixels], masked.expand(n + 1, -1), (masked**2).sum().expand(n + 1), N_BINS).numpy()
            row = (cr[0], float(np.mean(cr[wrong] >= cr[0])), mcr[0], float(np.mean(mcr[wrong] >= mcr[0])), ncc[0], float(np.mean(ncc[wrong] >= ncc[0])))
            if args.fit:
                fit = fitted_masked_cr(cube, edges, centers, u, v, offsets, args.pixel_spacing, image[0])
                row += (fit[0], float(np.mean(fit[wrong] >= fit[0])))
            rows[name].append(row)
            if drawn and name in PICTURED:
                panels[-1].append((image[0].reshape(side, side).numpy(), f"{mcr[0]:.2f}"))
            if drawn and name == TRACK_ROW:
                best = int(np.argmax(np.where(wrong, mcr, -np.inf)))
                best_wrong = (cuts[best].reshape(side, side).numpy(), f"{mcr[best]:.2f}")
        if drawn:
            panels[-1].append(best_wrong)
    print(
        f"{args.slices} histology test_unseen slices rendered at {side} x {side} pixels spaced {args.pixel_spacing:g} voxels, "
        f"{args.poses} random poses each, seed {args.seed}"
    )
    translation, strain = warp_field_statistics(side)
    print(f"warp field per unit of deg_warp: translation std {translation:.2f} px, mean strain {strain:.3f} px/px\n")
    fit_header = " fitted masked CR | wrong poses with fitted >= it | slices none of whose wrong poses reach the fitted |" if args.fit else ""
    print(
        "| degradations on | CR at the true pose | wrong poses with CR >= it | masked CR | wrong poses with masked CR >= it "
        "| slices none of whose wrong poses reach the masked CR | NCC at the true pose | wrong poses with NCC >= it |" + fit_header
    )
    print("|---|---|---|---|---|---|---|---|" + ("---|---|---|" if args.fit else ""))
    for name, values in rows.items():
        table = np.asarray(values)
        m = table.mean(axis=0)
        line = f"| {name} | {m[0]:.3f} | {100 * m[1]:.2f} % | {m[2]:.3f} | {100 * m[3]:.2f} % | {100 * np.mean(table[:, 3] == 0):.0f} % | {m[4]:.3f} | {100 * m[5]:.2f} % |"
        if args.fit:
            line += f" {m[6]:.3f} | {100 * m[7]:.2f} % | {100 * np.mean(table[:, 7] == 0):.0f} % |"
        print(line)
    if args.picture is not None:
        columns = [name for name in steps if name in PICTURED] + ["best wrong pose (clean cut)"]
        print(f"\npicture: {draw_picture(args.picture, panels, columns)}")


if __name__ == "__main__":
    main()
