"""Label columns kept apart from the public data (hidden test labels), and the public ones.

A **labels file** is a parquet file (or a directory of them, as ``atom-bench build
--withhold-test-labels`` writes) holding the label columns of one split's sample rows, with its
track, split and manifest sha256 recorded beside them; see :func:`read_labels`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from atom_bench.data.benchmark import Benchmark, BenchmarkLike
from atom_bench.errors import DataError

#: The columns the scorer reads (never ``slice`` or ``voxels``), plus every ``deg_*`` column.
SCORED_COLUMNS = (
    "sample_id", "volume_id", "modality", "view", "high_label", "low_label",
    "paper_high", "paper_low", "center_mm", "normal_mm",
)  # fmt: skip
LABELS_META_KEY = b"atom_bench"


def _read(paths: list[Path], wanted: tuple[str, ...]) -> pd.DataFrame:
    schema = pq.read_schema(paths[0])
    cols = [c for c in schema.names if c in wanted or c.startswith("deg_")]
    table = pa.concat_tables([pq.read_table(p, columns=cols) for p in paths])
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def split_labels(track: str, split: str, root: BenchmarkLike = None) -> pd.DataFrame:
    """The label columns of a public split; raises when the split's labels are withheld."""
    frame = _read(Benchmark.open(root).split_files(track, split), SCORED_COLUMNS)
    if "high_label" not in frame.columns:
        raise DataError(
            f"the labels of {track}/{split} are withheld from this benchmark; validate with `atom-bench validate` "
            "and send the file to the maintainers, who score it with --labels"
        )
    return frame


def _loads(raw: bytes | str, where: str) -> dict:
    try:
        info = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{where} is not valid JSON ({exc.__class__.__name__}); write the labels again with atom-bench build") from None
    if not isinstance(info, dict):
        raise DataError(f"{where} must hold a JSON object, not {type(info).__name__}; write the labels again with atom-bench build")
    return info


def _read_json(path: Path) -> dict:
    return _loads(path.read_bytes(), str(path))


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
        info = _read_json(info_file) if info_file.is_file() else {}
    else:
        paths = [path] if path.is_file() else []
        try:
            raw = (pq.read_metadata(path).metadata or {}).get(LABELS_META_KEY) if paths else None
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path}: not a readable labels parquet file ({exc})") from None
        info = _loads(raw, f"{path} metadata") if raw else {}
    if not paths:
        raise DataError(f"{path}: no labels for {track}/{split} (expected a parquet file or <dir>/{track}/{split}-*.parquet)")
    for key, want in (("track", track), ("split", split), ("manifest_sha256", manifest_sha256)):
        if want is not None and info.get(key) not in (None, want):
            raise DataError(f"{path}: labels are for {key} {info[key]!r}, not {want!r}")
    frame = _read(paths, SCORED_COLUMNS)
    if not {"sample_id", "high_label", "low_label"} <= set(frame.columns):
        raise DataError(f"{path}: a labels file needs at least sample_id, high_label and low_label")
    return frame


def write_labels(frame: pd.DataFrame, path: str | os.PathLike[str], track: str, split: str, manifest_sha256: str | None) -> Path:
    """Write a labels file (the label columns of a split's sample rows) with its metadata."""
    from atom_bench._io import atomic_path

    cols = [c for c in frame.columns if c in SCORED_COLUMNS or c.startswith("deg_")]
    table = pa.Table.from_pandas(frame[cols], preserve_index=False)
    meta = {"track": track, "split": split, "manifest_sha256": manifest_sha256}
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata({LABELS_META_KEY: json.dumps(meta, sort_keys=True)}), tmp)
    return Path(path)
