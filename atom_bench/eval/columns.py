"""Label columns as arrays: Arrow list columns to matrices and multi-hot sets, degradation bins."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from atom_bench.errors import DataError
from atom_bench.eval.metrics import MultiHot


def list_parts(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, per-row lengths) of a list column (Arrow-backed or Python lists)."""
    if isinstance(series.dtype, pd.ArrowDtype):
        arr = pa.chunked_array(series.array._pa_array).combine_chunks()
        lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy()
        return pc.list_flatten(arr).to_numpy(zero_copy_only=False), np.asarray(lengths, dtype=np.int64)
    rows = [np.asarray(r if r is not None else [], dtype=np.float64).ravel() for r in series.tolist()]
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    return (np.concatenate(rows) if rows else np.array([])), lengths


def list_matrix(series: pd.Series, width: int, name: str) -> np.ndarray:
    values, lengths = list_parts(series)
    if np.any(lengths != width):
        raise DataError(f"labels column {name} must hold {width} numbers per row")
    return np.asarray(values, dtype=np.float64).reshape(-1, width)


def multihot(series: pd.Series) -> MultiHot:
    values, lengths = list_parts(series)
    return MultiHot(np.asarray(values, dtype=np.int64), np.concatenate([[0], np.cumsum(lengths)]))


def deg_bins(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Degradation strength groups: exactly 0, then terciles of the non-zero draws."""
    nonzero = values[values != 0]
    edges = np.unique(np.quantile(nonzero, [0, 1 / 3, 2 / 3, 1])) if len(nonzero) else np.array([])
    codes = np.where(values == 0, 0, np.clip(np.searchsorted(edges, values, side="left"), 1, max(len(edges) - 1, 1)))
    names = ["0"] + [f"({edges[i - 1]:.3g}, {edges[i]:.3g}]" for i in range(1, len(edges))]
    used = np.unique(codes)
    return np.searchsorted(used, codes), [names[i] if i < len(names) else names[-1] for i in used]
