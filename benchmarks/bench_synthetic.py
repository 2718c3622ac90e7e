"""Training-batch cost: the synthetic-subject source against the stream of real volumes.

Both sources draw batches of ``--batch`` slices from 4 training volumes (subjects) of a track of
the embedded atom-mini, one after another in one process with ``--threads`` torch threads; the
time per batch is the median of ``--batches`` batches after one untimed batch (the synthetic
source's one-off generation labels). A last row times one training step of the small ``cnn``
baseline on such a batch, the cost a batch should stay modest against.

Usage: ``python benchmarks/bench_synthetic.py [--batches 8] [--batch 64] [--write]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _per_batch(batches, n: int) -> float:
    next(batches)  # untimed: builds what is computed once
    times = []
    for _ in range(n):
        start = time.perf_counter()
        next(batches)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cnn_step(batch) -> float:
    import torch

    from atom_bench.models.losses import cross_entropy
    from atom_bench.models.registry import resolve_model

    model, _ = resolve_model("cnn", volume_size=64, slice_shape=(16, 16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    volumes, slices, high, low = batch
    times = []
    for _ in range(3):
        start = time.perf_counter()
        logits = model(volumes, slices)
        loss = cross_entropy(logits.high, high) + cross_entropy(logits.low, low)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="update the section of BENCHMARKS.md")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    from atom_bench.models.batches import stream_batches
    from atom_bench.models.synthetic import synthetic_batches

    torch.set_num_threads(args.threads)
    rows = ["| track | stream s/batch | synthetic s/batch | synthetic / stream | cnn step s | synthetic / cnn step |", "|---|---|---|---|---|---|"]
    for track in ("hard", "histology"):
        stream = _per_batch(stream_batches(track, None, args.batch, seed=0), args.batches)
        synthetic_source = synthetic_batches(track, None, args.batch, seed=0)
        synthetic = _per_batch(synthetic_source, args.batches)
        step = _cnn_step(next(synthetic_source))
        rows.append(f"| {track} | {stream:.3f} | {synthetic:.3f} | {synthetic / stream:.1f}x | {step:.3f} | {synthetic / step:.1f}x |")
        print(rows[-1], flush=True)
    body = (
        f"Batches of {args.batch} slices from 4 training volumes (subjects) of atom-mini, {args.threads} torch thread(s); "
        f"median of {args.batches} batches after one untimed batch. *stream*: fresh slices of the real volumes under a "
        "random cube symmetry; *synthetic*: a new subject per volume and batch (TorchIO affine + elastic warp of the "
        "generation labels, a Gaussian mixture per class, bias field, blur, noise; on histology a second contrast for the "
        "slice). *cnn step*: one AdamW step of the `cnn` baseline on a synthetic batch.\n\n" + "\n".join(rows)
    )
    if args.write:
        from benchmarks._report import update_section

        update_section("Synthetic training subjects", body)
    else:
        print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
