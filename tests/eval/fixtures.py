"""Synthetic labels / volumes / predictions for the evaluation tests and benchmarks.

Labels are geometrically consistent: centres are drawn in each volume's cube, partition labels
follow PROTOCOL 3.3 (``atom_bench.core.labels``), millimetres follow a random rotation-and-scale
cube affine. Paper labels are random sorted lists (the scorer does not re-derive them).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from atom_bench.core import labels as L
from atom_bench.eval import predictions as P
from atom_bench.eval.checks import distinct_rows


def _list_series(values: np.ndarray | list, width: int | None = None) -> pd.Series:
    if width is not None:
        arr = np.asarray(values)
        offsets = pa.array(np.arange(0, arr.size + 1, width, dtype=np.int32))
        return pd.Series(pd.arrays.ArrowExtensionArray(pa.ListArray.from_arrays(offsets, pa.array(arr.ravel()))))
    return pd.Series(pd.arrays.ArrowExtensionArray(pa.array(values, type=pa.list_(pa.int64()))))


def make_tables(n: int = 500, n_volumes: int = 5, seed: int = 0, size: int = 20, paper: bool = True):
    """``(labels, volumes, train_counts)`` for ``n`` samples spread over ``n_volumes`` volumes."""
    rng = np.random.default_rng(seed)
    vol_ids = np.array([f"vol{i:04d}" for i in range(n_volumes)], dtype=object)
    affines = []
    for _ in range(n_volumes):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        a = np.eye(4)
        a[:3, :3] = q * rng.uniform(0.8, 2.0)
        a[:3, 3] = rng.uniform(-100, 100, 3)
        affines.append(a)
    affines = np.stack(affines)
    volumes = pd.DataFrame({"volume_id": vol_ids, "size": np.full(n_volumes, size)})
    volumes["affine"] = _list_series(affines.reshape(n_volumes, 16), 16)
    vidx = rng.integers(0, n_volumes, n)
    cvox = rng.uniform(-0.5, size - 0.5, (n, 3))
    cmm = np.einsum("nij,nj->ni", affines[vidx, :3, :3], cvox) + affines[vidx, :3, 3]
    normal = rng.normal(size=(n, 3))
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    labels = pd.DataFrame({
        "sample_id": np.array([f"s{i:07d}" for i in range(n)], dtype=object),
        "volume_id": vol_ids[vidx],
        "modality": np.array(["T1", "CT", "EPI"], dtype=object)[vidx % 3],
        "view": np.array(["axial", "coronal", "sagittal", "oblique"], dtype=object)[rng.integers(0, 4, n)],
        "high_label": L.high_label(cvox, size),
        "low_label": L.low_label(cvox, size),
    })  # fmt: skip
    labels["center_mm"] = _list_series(cmm, 3)
    labels["normal_mm"] = _list_series(normal, 3)
    if paper:
        k = rng.integers(0, 4, n)
        ph = [sorted(set(rng.choice(27, size=kk, replace=False).tolist())) for kk in k]
        pl = [sorted({27 * h + int(b) for h in row for b in rng.choice(27, size=rng.integers(0, 4), replace=False)}) for row in ph]
        labels["paper_high"] = _list_series(ph)
        labels["paper_low"] = _list_series(pl)
    labels["deg_noise"] = np.where(rng.random(n) < 0.3, 0.0, rng.uniform(0.01, 0.5, n))
    counts = {"high": np.bincount(rng.integers(0, 27, 1000), minlength=27), "low": np.bincount(rng.integers(0, 729, 1000), minlength=729)}
    return labels, volumes, counts


def make_predictions(labels: pd.DataFrame, seed: int = 1, accuracy: float = 0.5, pose: bool = False, meta: dict | None = None) -> pd.DataFrame:
    """Valid predictions: right with probability ``accuracy``, uniformly random otherwise."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    right = rng.random(n) < accuracy
    high = np.where(right, labels["high_label"].to_numpy(), rng.integers(0, 27, n))
    low = np.where(right, labels["low_label"].to_numpy(), 27 * high + rng.integers(0, 27, n))
    arrays = {
        "high": high,
        "low": low,
        "high_top5": distinct_rows(rng, n, 27, 5, first=high),
        "low_top5": distinct_rows(rng, n, 729, 5, first=low),
    }
    if pose:
        vec = rng.normal(size=(n, 3))
        arrays["normal_mm"] = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    if pose:
        arrays["center_mm"] = np.stack(labels["center_mm"].tolist()) + rng.normal(scale=3.0, size=(n, 3))
    return P.to_frame(arrays, labels["sample_id"].to_numpy(), meta)
