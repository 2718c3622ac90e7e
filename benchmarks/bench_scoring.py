"""Time the scorer on 1,000,000 synthetic predictions: every metric, 95% bootstrap intervals,
breakdowns (modality, view, 200 volumes, one degradation) and both floors.

The labels are geometrically consistent (PROTOCOL 3.3 labels of random centres in 64^3 cubes
with random affines) with multi-hot paper labels and poses; predictions carry top-5 lists and a
pose, so every metric of PROTOCOL 7 is computed. Target: under 10 s on 2 cores for reading and
validating the parquet file plus scoring.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from atom_bench.core import labels as L
from atom_bench.eval import predictions as P
from atom_bench.eval.checks import distinct_rows
from atom_bench.eval.scoring import Evaluator

MANIFEST = "0" * 64


def _lists(values: np.ndarray, lengths: np.ndarray) -> pd.Series:
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    return pd.Series(pd.arrays.ArrowExtensionArray(pa.ListArray.from_arrays(offsets, pa.array(values))))


def synthetic(n: int, n_volumes: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, dict, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    size = 64
    q = np.linalg.qr(rng.normal(size=(n_volumes, 3, 3)))[0] * rng.uniform(0.8, 2.0, (n_volumes, 1, 1))
    affines = np.tile(np.eye(4), (n_volumes, 1, 1))
    affines[:, :3, :3], affines[:, :3, 3] = q, rng.uniform(-100, 100, (n_volumes, 3))
    volumes = pd.DataFrame({"volume_id": [f"v{i:04d}" for i in range(n_volumes)], "size": size})
    volumes["affine"] = _lists(affines.reshape(-1), np.full(n_volumes, 16))
    vidx = rng.integers(0, n_volumes, n)
    cvox = rng.uniform(-0.5, size - 0.5, (n, 3))
    cmm = np.einsum("nij,nj->ni", affines[vidx, :3, :3], cvox) + affines[vidx, :3, 3]
    normal = rng.normal(size=(n, 3))
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    high, low = L.high_label(cvox, size), L.low_label(cvox, size)
    k = rng.integers(0, 3, n)  # paper labels: the true block plus up to 2 neighbours, 0-2 sub-blocks each
    ph = np.stack([high, (high + 1) % 27, (high + 9) % 27], axis=1)
    mask = np.arange(3)[None, :] <= k[:, None]
    ph_sorted = np.sort(np.where(mask, ph, 99), axis=1)
    ph_rows = ph_sorted[ph_sorted < 99]
    sub = np.stack([low % 27, (low + 4) % 27], axis=1)
    pl = (27 * ph_sorted[:, :, None] + np.sort(sub, axis=1)[:, None, :]).reshape(n, 6)
    pl_ok = (ph_sorted[:, :, None] < 99).repeat(2, axis=2).reshape(n, 6)
    labels = pd.DataFrame({
        "sample_id": np.char.add("s", np.arange(n).astype(str)).astype(object),
        "volume_id": volumes["volume_id"].to_numpy()[vidx],
        "modality": np.array(["T1", "T2", "CT", "EPI"], dtype=object)[vidx % 4],
        "view": np.array(["axial", "coronal", "sagittal", "oblique"], dtype=object)[rng.integers(0, 4, n)],
        "high_label": high, "low_label": low,
        "deg_noise": np.where(rng.random(n) < 0.25, 0.0, rng.uniform(0, 0.3, n)),
    })  # fmt: skip
    labels["center_mm"] = _lists(cmm.reshape(-1), np.full(n, 3))
    labels["normal_mm"] = _lists(normal.reshape(-1), np.full(n, 3))
    labels["paper_high"] = _lists(ph_rows, k + 1)
    labels["paper_low"] = _lists(pl[pl_ok], 2 * (k + 1))
    counts = {"high": np.bincount(high[: n // 2], minlength=27), "low": np.bincount(low[: n // 2], minlength=729)}
    right = rng.random(n) < 0.5
    p_high = np.where(right, high, rng.integers(0, 27, n))
    p_low = np.where(right, low, 27 * p_high + rng.integers(0, 27, n))
    pred = {
        "high": p_high, "low": p_low,
        "high_top5": distinct_rows(rng, n, 27, 5, first=p_high), "low_top5": distinct_rows(rng, n, 729, 5, first=p_low),
        "center_mm": cmm + rng.normal(scale=4.0, size=(n, 3)), "normal_mm": normal,
    }  # fmt: skip
    frame = P.to_frame(pred, labels["sample_id"].to_numpy(), P.make_meta("hard", "test_unseen", MANIFEST, "bench"))
    return labels, volumes, counts, frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000, help="predictions to score")
    parser.add_argument("--volumes", type=int, default=200, help="volumes the samples come from")
    parser.add_argument("--write", action="store_true", help="write the result into BENCHMARKS.md")
    args = parser.parse_args()
    labels, volumes, counts, frame = synthetic(args.n, args.volumes)
    with tempfile.TemporaryDirectory() as tmp:
        path = P.write_predictions(frame, Path(tmp) / "pred.parquet")
        t0 = time.perf_counter()
        ev = Evaluator(labels, volumes, counts, track="hard", split="test_unseen", manifest_sha256=MANIFEST, dataset_revision="bench")
        t1 = time.perf_counter()
        arrays, _, positions = P.read_arrays(path, track="hard", split="test_unseen", sample_ids=ev.id_array, manifest_sha256=MANIFEST)
        t2 = time.perf_counter()
        result = ev._result(arrays, positions, floors=False)
        t3 = time.perf_counter()
        floors = ev.floors()
        t4 = time.perf_counter()
    groups = sum(len(v) for v in result["breakdowns"].values())
    rows = [
        "| step | seconds |", "|---|---|",
        f"| prepare labels (Evaluator: {args.n:,} rows, {args.volumes} volumes) | {t1 - t0:.2f} |",
        f"| read + validate the parquet prediction file | {t2 - t1:.2f} |",
        f"| score: {len(result['metrics'])} metrics x (overall + {groups} breakdown groups), intervals | {t3 - t2:.2f} |",
        f"| floors: chance and prior, same metrics and breakdowns | {t4 - t3:.2f} |",
        f"| **total** | **{t4 - t0:.2f}** |",
    ]  # fmt: skip
    table = "\n".join(rows)
    print(table)
    assert len(floors) == 2 and len(result["metrics"]) == 14
    if args.write:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from benchmarks._report import update_section

        update_section(
            "Scoring",
            f"{args.n:,} synthetic predictions with top-5 lists and poses (every metric of PROTOCOL 7), 95% bootstrap "
            "intervals for every number, breakdowns by modality, view, volume and degradation, chance and prior floors. "
            "Target: total under 10 s on 2 cores.\n\n" + table,
        )


if __name__ == "__main__":
    main()
