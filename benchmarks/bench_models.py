"""Model costs on CPU: inference throughput and peak memory per baseline; training-step time and
peak memory of the corrected RegisMCAN against the released architecture as the cube grows.

Every configuration runs in its own subprocess, so its peak memory is its own: the reported
peak is the growth of the process's peak resident set (``resource.getrusage().ru_maxrss``)
from just before the model is built to the end of the timed work (model, activations, gradients
and optimiser state; the interpreter and libraries are excluded). A configuration whose
estimated memory exceeds ``--max-gb`` is not run; its row says so, with the estimate.

Usage: ``python benchmarks/bench_models.py [--write] [--threads 1] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAIN_SIZES = (20, 32, 40, 64, 96, 128)  # 32: the largest S at which the released model still fits


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _volume(size: int, batch: int, seed: int = 0, distinct: bool = False):
    """A batch of real cubes where available (atom-mini's colin27 T1, resized), else noise.

    By default every item is the same cube (an evaluation batch: slices of one volume, which the
    learned baselines' 3D stem and the search encode once); ``distinct`` rolls item ``i`` by
    ``i`` voxels so that every item differs (the worst case: a training batch of B volumes)."""
    import torch
    import torch.nn.functional as F

    try:
        from atom_bench.data.dataset import load_volume

        cube = torch.from_numpy(load_volume("colin27_t1", "hard").data.copy()).float()[None, None]
        cube = F.interpolate(cube, size=(size,) * 3, mode="trilinear", align_corners=False)
    except Exception:  # no data in this checkout: smooth noise
        g = torch.Generator().manual_seed(seed)
        cube = F.avg_pool3d(torch.rand(1, 1, size, size, size, generator=g), 3, 1, 1)
    batch_cubes = cube.expand(batch, -1, -1, -1, -1).contiguous()
    if distinct:
        batch_cubes = torch.stack([torch.roll(c, shifts=i, dims=1) for i, c in enumerate(batch_cubes)])
    return batch_cubes


def _slices(volumes, hw: tuple[int, int]):
    """Axial slices through the cube centre (real content, so the search has work to do)."""
    import torch

    size = volumes.shape[-1]
    h, w = hw
    c0, c1 = (size - w) // 2, (size - h) // 2
    out = [volumes[i, 0, c0 : c0 + w, c1 + i % 3 : c1 + i % 3 + h, size // 2 + i % 5].T for i in range(volumes.shape[0])]
    return torch.stack(out)[:, None].contiguous()


def run_inference(cfg: dict) -> dict:
    import torch

    from atom_bench.models.registry import resolve_model

    volumes = _volume(cfg["size"], cfg["batch"])
    slices = _slices(volumes, tuple(cfg["slice"]))
    before = _peak_mb()
    model, meta = resolve_model(cfg["model"], **cfg.get("kwargs", {}))
    other = torch.flip(volumes[:1], dims=(2,))  # warm-up on another volume: the first timed batch is cold
    model.predict(other, slices[:1])
    times = []
    for _ in range(cfg["repeats"]):
        start = time.perf_counter()
        model.predict(volumes, slices)
        times.append(time.perf_counter() - start)
    best = min(times)
    del torch
    return {"slices_per_s": cfg["batch"] / best, "cold_slices_per_s": cfg["batch"] / times[0], "seconds_per_batch": best,
            "peak_mb": _peak_mb() - before, "n_parameters": meta.n_parameters}  # fmt: skip


def run_training(cfg: dict) -> dict:
    import torch

    from atom_bench.models.losses import block_loss
    from atom_bench.models.registry import resolve_model

    volumes = _volume(cfg["size"], cfg["batch"], distinct=True)
    slices = _slices(volumes, tuple(cfg["slice"]))
    high = torch.arange(cfg["batch"]) % 27
    low = 27 * high + (torch.arange(cfg["batch"]) * 7) % 27
    before = _peak_mb()
    model, meta = resolve_model(cfg["model"], volume_size=cfg["size"], slice_shape=tuple(cfg["slice"]))
    optimiser = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=1e-3)
    times = []
    for _ in range(cfg["repeats"] + 1):  # the first step (optimiser state allocation) is not timed
        start = time.perf_counter()
        logits = model(volumes, slices)
        loss = block_loss(logits.high, logits.low, high, low, kind="asl")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        times.append(time.perf_counter() - start)
    return {"seconds_per_step": min(times[1:]), "peak_mb": _peak_mb() - before, "n_parameters": meta.n_parameters}


def _worker(payload: str) -> None:
    import torch

    cfg = json.loads(payload)
    torch.set_num_threads(cfg["threads"])
    result = run_training(cfg) if cfg["kind"] == "train" else run_inference(cfg)
    print("RESULT " + json.dumps(result))


def _run(cfg: dict, timeout: float) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(cfg)], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": tail[:160]}


def released_estimate_gb(size: int, hw: tuple[int, int], batch: int, training: bool) -> float:
    from baselines.released import parameter_counts, training_memory_estimate

    if training:
        return training_memory_estimate(size, hw, batch) / 1e9
    return 4.0 * parameter_counts(size, hw)["total"] * 1.2 / 1e9


def _fmt_mb(mb: float) -> str:
    return f"{mb:,.0f} MB" if mb < 10_000 else f"{mb / 1024:,.1f} GB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per run (default 1: shared 2-core machine)")
    parser.add_argument("--max-gb", type=float, default=6.0, help="skip configurations estimated above this (default 6)")
    parser.add_argument("--batch", type=int, default=8, help="training batch (default 8)")
    parser.add_argument("--quick", action="store_true", help="one repeat, fewer sizes (smoke run)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration")
    parser.add_argument("--write", action="store_true", help="write the tables into BENCHMARKS.md (section 'Models')")
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker)
        return

    repeats = 1 if args.quick else 3
    inference = [
        ("chance", 64, (16, 16), 64, {}),
        ("prior", 64, (16, 16), 64, {}),
        ("regismcan", 64, (16, 16), 16, {}),
        ("cnn", 64, (16, 16), 16, {}),
        ("vit", 64, (16, 16), 16, {}),
        ("matcher", 64, (16, 16), 16, {}),
        ("regismcan-match", 64, (16, 16), 16, {}),
        ("search", 64, (16, 16), 32, {}),
        ("search-cr", 64, (16, 16), 32, {}),
        ("search", 32, (16, 16), 32, {}),
        ("released", 20, (4, 4), 16, {"volume_size": 20, "slice_shape": (4, 4)}),
        ("released", 32, (16, 16), 4, {"volume_size": 32, "slice_shape": (16, 16)}),
        ("released", 64, (16, 16), 4, {"volume_size": 64, "slice_shape": (16, 16)}),
    ]
    rows = ["| model | S | slice | batch | parameters | slices/s | first batch slices/s | peak memory |", "|---|---|---|---|---|---|---|---|"]
    for name, size, hw, batch, kwargs in inference:
        label = f"| {name} | {size} | {hw[0]}x{hw[1]} | {batch} |"
        if name == "released":
            estimate = released_estimate_gb(size, hw, batch, training=False)
            if estimate > args.max_gb:
                from baselines.released import parameter_counts

                n = parameter_counts(size, hw)["total"]
                rows.append(f"{label} {n:,} | skipped | - | would need about {estimate:,.0f} GB |")
                print(rows[-1], flush=True)
                continue
        cfg = {"kind": "infer", "model": name, "size": size, "slice": hw, "batch": batch, "repeats": repeats, "threads": args.threads, "kwargs": kwargs}
        res = _run(cfg, args.timeout)
        if "error" in res:
            rows.append(f"{label} | failed | - | {res['error']} |")
        else:
            rows.append(f"{label} {res['n_parameters']:,} | {res['slices_per_s']:,.1f} | {res['cold_slices_per_s']:,.1f} | {_fmt_mb(res['peak_mb'])} |")
        print(rows[-1], flush=True)
    inference_table = "\n".join(rows)

    sizes = (20, 40, 64) if args.quick else TRAIN_SIZES
    hw = (16, 16)
    rows = [
        "| S | regismcan params | regismcan s/step | regismcan peak | released params | released s/step | released peak |",
        "|---|---|---|---|---|---|---|",
    ]
    from baselines.released import parameter_counts

    for size in sizes:
        cells = [str(size)]
        for name in ("regismcan", "released"):
            if name == "released":
                estimate = released_estimate_gb(size, hw, args.batch, training=True)
                if estimate > args.max_gb:
                    cells += [f"{parameter_counts(size, hw)['total']:,}", "skipped", f"would need about {estimate:,.0f} GB"]
                    continue
            cfg = {"kind": "train", "model": name, "size": size, "slice": hw, "batch": args.batch, "repeats": repeats, "threads": args.threads}
            res = _run(cfg, args.timeout)
            if "error" in res:
                cells += ["?", "failed", res["error"]]
            else:
                cells += [f"{res['n_parameters']:,}", f"{res['seconds_per_step']:.2f}", _fmt_mb(res["peak_mb"])]
        rows.append("| " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    training_table = "\n".join(rows)

    if args.write:
        sys.path.insert(0, str(ROOT))
        from benchmarks._report import update_section
        from baselines import search

        body = (
            f"CPU only, {args.threads} torch thread(s) per run, each configuration in its own process; peak memory is the "
            "growth of the process's peak RSS from just before the model is built (model, activations, gradients, "
            f"optimiser state). Configurations estimated above {args.max_gb:g} GB are skipped with the estimate "
            "(16 bytes per parameter for AdamW training plus activations; 4.8 bytes per parameter for inference). "
            "Inputs: atom-mini's colin27 T1 cube resized to S, axial 16x16 slices (4x4 for the released model at its "
            "native S = 20).\n\n"
            "### Inference\n\n"
            "A batch is slices of one volume, as in evaluation (the learned baselines' 3D stem encodes each distinct "
            "volume of a batch once). slices/s = batch / best wall time of `predict` over the repeats; *first batch* "
            "is the first timed call after a warm-up on another volume. The search is training-free: per distinct "
            "volume it resamples the candidate planes once (dense over orientations: the oblique family, "
            f"{search.ORIENTATION_GRIDS['ncc'][0]} normals x {search.ORIENTATION_GRIDS['ncc'][1]} in-plane rotations "
            f"with NCC and {search.ORIENTATION_GRIDS['cr'][0]} x {search.ORIENTATION_GRIDS['cr'][1]} with the "
            f"correlation ratio, at a cube side of at most {search.COARSE_SIDE}; the axis views at "
            f"{search.AXIS_SIDE} with NCC, {search.CR_AXIS_SIDE} with the correlation ratio) and keeps them in a "
            "bounded cache, so the first batch on a "
            "volume pays for the resampling and later batches only for the correlation and the per-slice "
            "refinement.\n\n"
            f"{inference_table}\n\n"
            f"### Training step: corrected RegisMCAN vs the released architecture\n\n"
            f"One AdamW step (forward, ASL loss on 27 + 729 outputs, backward, update), batch {args.batch} of "
            f"{args.batch} different volumes (the worst case for the stem), 16x16 slices, best of the timed steps "
            "after one untimed step. The corrected model's token counts are fixed by the "
            "block grid (27 and 729 volume tokens, 16 slice tokens), so only its conv stem grows with S; the "
            "released model's embedding is (S/2)^3 wide, so its parameters grow as S^6.\n\n"
            f"{training_table}"
        )
        update_section("Models", body)


if __name__ == "__main__":
    main()
