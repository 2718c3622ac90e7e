"""Prediction files: the schema, a chunked strict reader, and dummy predictions (PROTOCOL 6).

A prediction file is parquet or CSV with one row per sample of one split:

=============  ===========================================  ==========
column         meaning                                      required
=============  ===========================================  ==========
``sample_id``  id of a sample of the split                  yes
``high``       coarse block 0..26                           yes
``low``        fine block 0..728, ``low // 27 == high``     yes
``high_top5``  5 distinct coarse blocks, best first          no
``low_top5``   5 distinct fine blocks, best first            no
``center_mm``  predicted slice centre, 3 finite floats (mm)  no
``normal_mm``  predicted unit plane normal, 3 floats (mm)    no
=============  ===========================================  ==========

``high_top5[0] == high`` and ``low_top5[0] == low``. In CSV a list cell holds its numbers
separated by spaces (``"4 13 1 3 22"``; brackets and commas are tolerated). The file records
what it was made for: parquet in the key-value metadata ``atom_bench``, CSV in a first line
``# atom_bench {json}``; both hold ``{"format", "track", "split", "manifest_sha256",
"dataset_revision", "toolkit_version"}``. :func:`write_predictions` writes both forms.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from atom_bench import __version__
from atom_bench._io import atomic_path
from atom_bench.core.labels import N_HIGH, N_LOW
from atom_bench.errors import PredictionError
from atom_bench.eval import checks as chk

if TYPE_CHECKING:
    from atom_bench.data.benchmark import BenchmarkLike

FORMAT = "atom-bench-predictions/1"
META_KEY = "atom_bench"
SCALAR_COLUMNS = ("sample_id", "high", "low")
LIST_WIDTHS = {"high_top5": 5, "low_top5": 5, "center_mm": 3, "normal_mm": 3}
COLUMNS = SCALAR_COLUMNS + tuple(LIST_WIDTHS)
TARGET_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a track or split as a file records it


def make_meta(track: str, split: str, manifest_sha256: str | None, dataset_revision: str | None = None) -> dict:
    """The metadata record a prediction file carries."""
    return {
        "format": FORMAT,
        "track": track,
        "split": split,
        "manifest_sha256": manifest_sha256,
        "dataset_revision": dataset_revision,
        "toolkit_version": __version__,
    }


def to_frame(arrays: dict[str, np.ndarray], sample_ids: Sequence[str] | pa.Array | pa.ChunkedArray, meta: dict | None = None) -> pd.DataFrame:
    """A prediction DataFrame from aligned arrays (list columns become Arrow list columns)."""
    if isinstance(sample_ids, (pa.Array, pa.ChunkedArray)):
        ids: object = pd.arrays.ArrowExtensionArray(pa.chunked_array([sample_ids]) if isinstance(sample_ids, pa.Array) else sample_ids)
    else:
        ids = pd.array(np.asarray(sample_ids, dtype=object), dtype="string[pyarrow]")
    data: dict[str, object] = {"sample_id": ids}
    for name in ("high", "low"):
        data[name] = np.asarray(arrays[name], dtype=np.int64)
    for name, width in LIST_WIDTHS.items():
        if arrays.get(name) is not None:
            values = np.asarray(arrays[name]).reshape(-1, width)
            offsets = pa.array(np.arange(0, values.size + 1, width, dtype=np.int32))
            data[name] = pd.Series(pd.arrays.ArrowExtensionArray(pa.ListArray.from_arrays(offsets, pa.array(values.ravel()))))
    frame = pd.DataFrame(data)
    if meta is not None:
        frame.attrs[META_KEY] = dict(meta)
    return frame


def frame_arrays(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Numpy arrays (``high``, ``low``, ``(N, 5)`` top-5, ``(N, 3)`` pose) of a checked frame."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    out: dict[str, np.ndarray] = {"sample_id": table.column("sample_id").to_numpy(zero_copy_only=False)}
    for name in ("high", "low"):
        out[name] = table.column(name).to_numpy().astype(np.int64)
    for name, width in LIST_WIDTHS.items():
        if name in table.column_names:
            column = table.column(name).combine_chunks()
            dtype = np.int64 if name.endswith("top5") else np.float64
            out[name] = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=dtype).reshape(-1, width)
    return out


def write_predictions(frame: pd.DataFrame, path: str | os.PathLike[str], meta: dict | None = None) -> Path:
    """Write predictions atomically as parquet (``.parquet``) or CSV (``.csv``).

    Every column is written (extra columns make the file invalid: drop them first). ``meta`` defaults to ``frame.attrs["atom_bench"]`` (set by :func:`dummy_prediction` and
    :func:`to_frame`); see :func:`make_meta`.
    """
    path = Path(path)
    meta = meta if meta is not None else frame.attrs.get(META_KEY)
    if not meta:
        raise PredictionError("no track/split metadata: pass meta=atom_bench.eval.predictions.make_meta(track, split, manifest_sha256)")
    with atomic_path(path) as tmp:
        if path.suffix == ".csv":
            out = frame.copy()
            for name in LIST_WIDTHS:
                if name in out.columns:
                    out[name] = [_cell(row) for row in out[name].tolist()]
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                handle.write(f"# {META_KEY} {json.dumps(meta, sort_keys=True)}\n")
                out.to_csv(handle, index=False)
        elif path.suffix in (".parquet", ".pq"):
            table = pa.Table.from_pandas(frame, preserve_index=False)
            table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True)})
            pq.write_table(table, tmp)
        else:
            raise PredictionError(f"{path}: write predictions to a .parquet or .csv file")
    return path


def _cell(row: object) -> str:
    """A list cell as CSV text: numbers separated by spaces (floats at full precision)."""
    if row is None or (isinstance(row, float) and np.isnan(row)):
        return ""
    return " ".join(repr(float(v)) if isinstance(v, (float, np.floating)) else str(v) for v in row)  # type: ignore[attr-defined]


def read_arrays(
    path: str | os.PathLike[str],
    *,
    track: str,
    split: str,
    sample_ids: Iterable[str] | pa.Array,
    manifest_sha256: str | None = None,
    dataset_revision: str | None = None,
    chunk_rows: int = 1 << 18,
    plain_ok: bool = False,
) -> tuple[dict[str, np.ndarray], dict | None, np.ndarray]:
    """Like :func:`read_predictions`, returning ``(arrays, metadata, positions)``: numpy columns
    in file order and each row's position in ``sample_ids`` (a permutation once valid)."""
    path = Path(path)
    report = chk.Report(path.name)
    fmt, meta = chk.sniff(path)
    batches = chk.iter_parquet(path, chunk_rows) if fmt == "parquet" else chk.iter_csv(path, chunk_rows, meta is not None)
    expected = {"track": track, "split": split, "manifest_sha256": manifest_sha256, "dataset_revision": dataset_revision}
    chk.check_meta(meta, expected, report, required=not plain_ok)
    with contextlib.closing(batches):
        arrays = chk.check_batches(batches, report, from_csv=fmt == "csv")
    positions = chk.check_ids(arrays["sample_id"], chk.id_array(sample_ids), report)
    report.raise_if_any()
    return arrays, meta, positions


def read_predictions(
    path: str | os.PathLike[str],
    *,
    track: str,
    split: str,
    sample_ids: Iterable[str] | pa.Array,
    manifest_sha256: str | None = None,
    dataset_revision: str | None = None,
    chunk_rows: int = 1 << 18,
    plain_ok: bool = False,
) -> pd.DataFrame:
    """Read and validate a prediction file against the split it must cover.

    ``plain_ok``: the caller vouches for the track and split (a user's flags), so a plain file
    without ATOM-Bench metadata (e.g. ``df.to_csv(path, index=False)``) is accepted; metadata a
    file does carry must still agree.

    Every problem is collected first, then one :class:`PredictionError` lists them all (with
    counts and the first few offending ids). ``manifest_sha256`` / ``dataset_revision`` (when
    given) must match what the file records. The file is read ``chunk_rows`` rows at a time.

    Returns:
        The predictions as a DataFrame (list columns as Arrow lists), rows in file order,
        with the file's metadata in ``attrs["atom_bench"]``.
    """
    arrays, meta, _ = read_arrays(
        path, track=track, split=split, sample_ids=sample_ids,
        manifest_sha256=manifest_sha256, dataset_revision=dataset_revision, chunk_rows=chunk_rows, plain_ok=plain_ok,
    )  # fmt: skip
    return to_frame(arrays, arrays["sample_id"], meta)


def check_arrays(
    frame: pd.DataFrame,
    *,
    sample_ids: Iterable[str] | pa.Array,
    track: str | None = None,
    split: str | None = None,
    manifest_sha256: str | None = None,
    name: str = "predictions",
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """:func:`check_frame` returning ``(arrays, positions)`` like :func:`read_arrays`."""
    report = chk.Report(name)
    if not isinstance(frame, pd.DataFrame):
        raise PredictionError(f"{name}: expected a pandas DataFrame, got {type(frame).__name__}")
    meta = frame.attrs.get(META_KEY)
    chk.check_meta(meta, {"track": track, "split": split, "manifest_sha256": manifest_sha256}, report, required=False)
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise PredictionError(f"{name}: columns cannot be read as typed arrays ({exc}); see the schema in PROTOCOL 6") from None
    batches = table.to_batches(max_chunksize=1 << 18) or [pa.RecordBatch.from_pylist([], schema=table.schema)]
    arrays = chk.check_batches(batches, report, from_csv=False)
    positions = chk.check_ids(arrays["sample_id"], chk.id_array(sample_ids), report)
    report.raise_if_any()
    return arrays, positions


def check_frame(
    frame: pd.DataFrame,
    *,
    sample_ids: Iterable[str] | pa.Array,
    track: str | None = None,
    split: str | None = None,
    manifest_sha256: str | None = None,
    name: str = "predictions",
) -> pd.DataFrame:
    """Validate in-memory predictions like :func:`read_predictions` validates a file.

    The frame's ``attrs["atom_bench"]`` metadata, when present, must match ``track``,
    ``split`` and ``manifest_sha256``.
    """
    arrays, _ = check_arrays(frame, sample_ids=sample_ids, track=track, split=split, manifest_sha256=manifest_sha256, name=name)
    return to_frame(arrays, arrays["sample_id"], frame.attrs.get(META_KEY))


def random_arrays(n: int, rng: np.random.Generator, *, top5: bool = True, normals: bool = False) -> dict[str, np.ndarray]:
    """A uniformly random valid prediction for ``n`` samples (chance predictor)."""
    out: dict[str, np.ndarray] = {}
    high5 = chk.distinct_rows(rng, n, N_HIGH, 5)
    out["high"] = high5[:, 0]
    out["low"] = N_HIGH * out["high"] + rng.integers(0, N_HIGH, n)
    if top5:
        out["high_top5"] = high5
        low5 = chk.distinct_rows(rng, n, N_LOW, 5, first=out["low"])
        out["low_top5"] = low5
    if normals:
        vec = rng.normal(size=(n, 3))
        out["normal_mm"] = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    return out


def dummy_prediction(track: str, split: str, *, root: BenchmarkLike = None, seed: int = 0) -> pd.DataFrame:
    """Uniformly random, valid predictions for every sample of a split (with top-5 lists).

    Write it with :func:`write_predictions` and check it with ``atom-bench validate``; it is
    also the template of a prediction file.
    """
    from atom_bench.data.benchmark import Benchmark

    bench = Benchmark.open(root)
    ids = bench.sample_ids(track, split)
    arrays = random_arrays(len(ids), np.random.default_rng(seed))
    return to_frame(arrays, ids, make_meta(track, split, bench.hash, bench.revision))


def validate_predictions(path: str | os.PathLike[str], track: str, split: str, root: BenchmarkLike = None) -> pd.DataFrame:
    """Validate a prediction file against a built benchmark's split (see :func:`read_predictions`)."""
    from atom_bench.data.benchmark import Benchmark

    bench = Benchmark.open(root)
    return read_predictions(
        path, track=track, split=split, sample_ids=bench.sample_ids(track, split),
        manifest_sha256=bench.hash, dataset_revision=bench.revision, plain_ok=True,
    )  # fmt: skip


def file_meta(path: str | os.PathLike[str]) -> dict:
    """The metadata a prediction file records (raises if it records none)."""
    _, meta = chk.sniff(Path(path))
    if not meta:
        raise PredictionError(
            f"{Path(path).name}: records no split it was made for; pass track and split (a plain CSV or parquet file is fine), "
            "or write it with atom_bench.write_predictions", parameters=("track", "split")
        )
    return meta


def file_target(path: str | os.PathLike[str], track: str | None = None, split: str | None = None) -> tuple[str, str]:
    """``(track, split)`` of a prediction file, each a plain name (they name folders).

    Given ``track`` and ``split`` (a user's flags) are used, and a file without metadata is fine;
    metadata the file records must agree with them. Otherwise they come from the file's metadata.
    """
    if (track is None) != (split is None):
        raise PredictionError("give both track and split, or neither (then the file's metadata names them)", parameters=("track", "split"))
    if track is not None:
        for key, value in (("track", track), ("split", split)):
            if not TARGET_NAME_RE.fullmatch(value):
                raise PredictionError(f"{key} {chk.quote(value)} is not a track/split name", parameters=(key,))
        _, meta = chk.sniff(Path(path))
        for key, value in (("track", track), ("split", split)):
            if meta and meta.get(key) not in (None, value):
                raise PredictionError(
                    f"{Path(path).name} records {key} {chk.quote(meta.get(key))} but {key} {chk.quote(value)} was given; "
                    "give the split the file was made for", parameters=(key,)
                )  # fmt: skip
        return track, split
    meta = file_meta(path)
    for key in ("track", "split"):
        value = meta.get(key)
        if not value:
            raise PredictionError(f"{Path(path).name}: the metadata names no {key}; write it with atom_bench.write_predictions")
        if not TARGET_NAME_RE.fullmatch(value):
            raise PredictionError(f"{Path(path).name}: the metadata names {key} {chk.quote(value)}, not a track/split name; write it with atom_bench.write_predictions")
    return meta["track"], meta["split"]
