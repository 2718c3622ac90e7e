"""Pose-search throughput: NCC and correlation ratio side by side, on the same real slices.

Every configuration searches the same slices (the first ``--slices`` of one volume of a track's
``test_unseen`` split of the embedded atom-mini) in one process, one after another, with
``--threads`` torch threads. *first batch* includes the per-volume resampling of the candidate
planes (cold cache); *warm* is the best of ``--repeats`` later calls on the cached volume. The
coarse / refine split is the share of the warm time spent in the dense coarse stage and in the
refinement. A last table times the coarse stage's correlation kernel: ``conv2d`` against
``torch.fft`` on one chunk of planes of the axis views.

Usage: ``python benchmarks/bench_search.py [--track hard] [--slices 16] [--write]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the first defaults: oblique at 24^3, 6 x 6, 16 normals x 6 rotations
FIRST_COARSE = {"coarse_side": 20, "min_coarse_pixels": 6, "top_k": 8, "n_normals": 16, "n_rotations": 6}
CONFIGS = (
    ("search (NCC, defaults: axis views at 64, oblique 32 x 12 orientations at 40^3, top 16)", "ncc", {}),
    ("search (NCC, oblique 16 x 6 orientations, the grid before)", "ncc", {"n_normals": 16, "n_rotations": 6}),
    ("search (NCC, first defaults: oblique 16 x 6 at 24^3, top 8)", "ncc", FIRST_COARSE),
    ("search (NCC, axis views at 48)", "ncc", {"axis_side": 48}),
    ("search-cr (defaults: 8 bins, axis views at 48, oblique 16 x 6 at 40^3, top 16)", "cr", {}),
    ("search-cr (first defaults: oblique 16 x 6 at 24^3, top 8)", "cr", FIRST_COARSE),
)


def _inputs(track: str, n: int):
    import numpy as np
    import torch

    from atom_bench.data.dataset import load_split, load_volume

    split = load_split(track, "test_unseen")
    volume_id = split[0]["volume_id"]
    rows = [r for r in split.select(range(min(len(split), 4 * n))) if r["volume_id"] == volume_id][:n]
    volume = torch.as_tensor(np.asarray(load_volume(volume_id, track).data), dtype=torch.float32)
    slices = torch.stack([torch.as_tensor(np.asarray(r["slice"], dtype=np.float32)) for r in rows])[:, None]
    return volume_id, volume[None, None].expand(len(rows), 1, *volume.shape), slices


def _time_config(model, volumes, slices, repeats: int) -> tuple[float, float, float, float]:
    """(first-batch s, warm s, coarse share, refine share) of ``model.predict(volumes, slices)``."""
    spent = {"coarse": 0.0, "refine": 0.0}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start

        return wrapper

    model._coarse, model._refine = timed("coarse", model._coarse), timed("refine", model._refine)
    start = time.perf_counter()
    model.predict(volumes, slices)
    first = time.perf_counter() - start
    warm = float("inf")
    for _ in range(repeats):
        spent.update(coarse=0.0, refine=0.0)
        start = time.perf_counter()
        model.predict(volumes, slices)
        elapsed = time.perf_counter() - start
        if elapsed < warm:
            warm, shares = elapsed, (spent["coarse"] / elapsed, spent["refine"] / elapsed)
    return first, warm, *shares


def _kernel_table(threads: int) -> str:
    """conv2d vs FFT correlation on one chunk of the axis views (8 frames of a 64^3 cube, 16x16 slices)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)  # random planes: the kernel's cost does not depend on the values
    rows = ["| slices (output channels) | conv2d s | torch.fft s | fft / conv2d |", "|---|---|---|---|"]
    planes = torch.rand(8 * 65, 79, 79)
    for k in (8, 32):
        weights = torch.rand(k, 16, 16)

        def fft(weights: torch.Tensor = weights) -> torch.Tensor:
            h, w = planes.shape[1:]
            spectrum = torch.fft.rfft2(planes)[:, None] * torch.fft.rfft2(weights, s=(h, w)).conj()[None]
            return torch.fft.irfft2(spectrum, s=(h, w))[:, :, : h - 15, : w - 15]

        times = []
        for fn in (lambda weights=weights: F.conv2d(planes[:, None], weights[:, None]), fft):
            fn()
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        rows.append(f"| {k} | {times[0]:.2f} | {times[1]:.2f} | {times[1] / times[0]:.1f}x |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--track", default="hard")
    parser.add_argument("--slices", type=int, default=16, help="slices of one volume, searched as one batch (default 16)")
    parser.add_argument("--repeats", type=int, default=2, help="warm calls per configuration; the best is kept (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: shared 2-core machine)")
    parser.add_argument("--write", action="store_true", help="write the tables into BENCHMARKS.md (section 'Pose search')")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    from baselines.search import PoseSearch

    torch.set_num_threads(args.threads)
    volume_id, volumes, slices = _inputs(args.track, args.slices)
    n = len(slices)
    rows = ["| configuration | slices/s (warm) | first batch slices/s | coarse share | refine share | vs NCC default |", "|---|---|---|---|---|---|"]
    reference = None
    for label, similarity, kwargs in CONFIGS:
        first, warm, coarse, refine = _time_config(PoseSearch(similarity=similarity, **kwargs), volumes, slices, args.repeats)
        reference = reference or n / warm
        rows.append(f"| {label} | {n / warm:.2f} | {n / first:.2f} | {coarse:.0%} | {refine:.0%} | {n / warm / reference:.2f}x |")
        print(rows[-1], flush=True)
    text = (
        f"{n} `{args.track}` test_unseen slices of `{volume_id}` (16 x 16, 64^3 cube) in one batch, {args.threads} torch thread(s). "
        "Same slices, same process, one configuration after another; *warm*: the best of "
        f"{args.repeats} calls on the cached volume; *first batch*: the call that resamples the volume. "
        "Ratios are against the NCC search's default (first row).\n\n" + "\n".join(rows) + "\n\n"
        "Coarse-stage correlation kernel, one chunk of the axis views (8 frames x 65 planes of 79 x 79, 16 x 16 slices):\n\n"
        + _kernel_table(args.threads)
    )
    print(text)
    if args.write:
        from benchmarks._report import update_section

        update_section("Pose search", text)


if __name__ == "__main__":
    main()
