"""What the evaluation side reads from a built benchmark (private, thin).

Only the small columns are read (never ``slice`` or ``voxels``). The benchmark root and the
manifest come from :mod:`atom_bench.data.dataset`. The **labels file** used for hidden test labels
is a parquet file (or a directory of them, as ``atom-bench build`` writes) holding the label
columns of the sample rows; see :func:`read_labels`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from atom_bench.errors import DataError
from atom_bench.eval.metrics import MultiHot

LABEL_COLUMNS = (
    "sample_id", "volume_id", "modality", "view", "high_label", "low_label",
    "paper_high", "paper_low", "center_mm", "normal_mm",
)  # fmt: skip
LABELS_META_KEY = b"atom_bench"


@dataclass(frozen=True)
class Reference:
    """What a prediction file for one split must match."""

    track: str
    split: str
    sample_ids: np.ndarray
    manifest_sha256: str
    dataset_revision: str | None
    root: Path


def _dataset():
    from atom_bench.data import dataset

    return dataset


def revision(manifest: dict) -> str | None:
    """The dataset revision a manifest declares (``dataset_revision``, ``revision`` or ``version``)."""
    for key in ("dataset_revision", "revision", "version"):
        if manifest.get(key) is not None:
            return str(manifest[key])
    return None


def reference(track: str, split: str, root: str | os.PathLike[str] | None = None) -> Reference:
    ds = _dataset()
    base = ds.resolve_root(root)
    files = ds.split_files(track, split, base)
    ids = pq.read_table(files, columns=["sample_id"]).column("sample_id").to_numpy(zero_copy_only=False)
    return Reference(track, split, np.asarray(ids, dtype=object), ds.dataset_hash(base), revision(ds.load_manifest(base)), base)


def _read(paths: list[Path], wanted: tuple[str, ...]) -> pd.DataFrame:
    schema = pq.read_schema(paths[0])
    cols = [c for c in schema.names if c in wanted or c.startswith("deg_")]
    table = pa.concat_tables([pq.read_table(p, columns=cols) for p in paths])
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def split_labels(track: str, split: str, root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """The label columns of a public split; raises when the split's labels are withheld."""
    ds = _dataset()
    frame = _read(ds.split_files(track, split, root), LABEL_COLUMNS)
    if "high_label" not in frame.columns:
        raise DataError(
            f"the labels of {track}/{split} are withheld from this benchmark; validate with `atom-bench validate` "
            "and send the file to the maintainers, who score it with --labels"
        )
    return frame


def read_labels(path: str | os.PathLike[str], track: str, split: str, manifest_sha256: str | None = None) -> pd.DataFrame:
    """Read a labels file kept apart from the public data.

    ``path`` is a parquet file with the label columns of one split's sample rows, or a
    directory holding ``<track>/<split>-*.parquet`` (and optionally ``labels-manifest.json``).
    A file's key-value metadata ``atom_bench`` (JSON with ``track``, ``split``,
    ``manifest_sha256``) and a directory's ``labels-manifest.json`` ``manifest_sha256`` are
    checked when present.
    """
    path = Path(path)
    if path.is_dir():
        paths = sorted((path / track).glob(f"{split}-*.parquet"))
        info_file = path / "labels-manifest.json"
        info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
    else:
        paths = [path] if path.is_file() else []
        try:
            raw = (pq.read_metadata(path).metadata or {}).get(LABELS_META_KEY) if paths else None
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path}: not a readable labels parquet file ({exc})") from None
        info = json.loads(raw) if raw else {}
    if not paths:
        raise DataError(f"{path}: no labels for {track}/{split} (expected a parquet file or <dir>/{track}/{split}-*.parquet)")
    for key, want in (("track", track), ("split", split), ("manifest_sha256", manifest_sha256)):
        if want is not None and info.get(key) not in (None, want):
            raise DataError(f"{path}: labels are for {key} {info[key]!r}, not {want!r}")
    frame = _read(paths, LABEL_COLUMNS)
    if not {"sample_id", "high_label", "low_label"} <= set(frame.columns):
        raise DataError(f"{path}: a labels file needs at least sample_id, high_label and low_label")
    return frame


def write_labels(frame: pd.DataFrame, path: str | os.PathLike[str], track: str, split: str, manifest_sha256: str | None) -> Path:
    """Write a labels file (the label columns of a split's sample rows) with its metadata."""
    from atom_bench._io import atomic_path

    cols = [c for c in frame.columns if c in LABEL_COLUMNS or c.startswith("deg_")]
    table = pa.Table.from_pandas(frame[cols], preserve_index=False)
    meta = {"track": track, "split": split, "manifest_sha256": manifest_sha256}
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata({LABELS_META_KEY: json.dumps(meta, sort_keys=True)}), tmp)
    return Path(path)


def volumes_table(track: str, root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """``volume_id``, ``size``, ``affine`` (16 floats) of the volumes a track samples from."""
    ds = _dataset()
    base = ds.resolve_root(root)
    manifest = ds.load_manifest(base)
    names = manifest["volume_tables"][manifest["tracks"][track]["volume_table"]]
    table = pa.concat_tables([pq.read_table(base / n, columns=["volume_id", "size", "affine"]) for n in names])
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def train_counts(track: str, root: str | os.PathLike[str] | None = None) -> dict[str, np.ndarray]:
    """Label counts of the training split (``high`` 27, ``low`` 729) for the prior floor."""
    ds = _dataset()
    table = pa.concat_tables([pq.read_table(p, columns=["high_label", "low_label"]) for p in ds.split_files(track, "train", root)])
    return {
        "high": np.bincount(table.column("high_label").to_numpy(), minlength=27),
        "low": np.bincount(table.column("low_label").to_numpy(), minlength=729),
    }


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
