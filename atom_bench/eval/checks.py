"""The checks behind :mod:`atom_bench.eval.predictions` (private).

Batches of a parquet file, a CSV file (every column read as text) or an in-memory table go
through the same vectorised checks; every problem is counted with its first few ids in a
:class:`Report`, which raises one :class:`PredictionError` at the end.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from atom_bench.core.labels import N_HIGH, N_LOW
from atom_bench.errors import PredictionError, quote

SHOW = 3  # offending ids quoted per problem
RANGES = {"high": N_HIGH, "low": N_LOW, "high_top5": N_HIGH, "low_top5": N_LOW}
WIDTHS = {"high_top5": 5, "low_top5": 5, "center_mm": 3, "normal_mm": 3}
KNOWN = ("sample_id", "high", "low", *WIDTHS)
INT_RE = r"^-?[0-9]{1,18}$"  # what Arrow casts to int64 without overflow
FLOAT_RE = r"(?i)^[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?|nan|inf|infinity)$"
UNIT_TOL = 1e-3


def quote_all(values: Iterable[object], show: int = 10) -> str:
    """The first ``show`` values, each shortened by :func:`quote`, then how many more there are."""
    values = list(values)
    head = ", ".join(quote(v) for v in values[:show])
    return head + (f" and {len(values) - show} more" if len(values) > show else "")


def brief(exc: object, limit: int = 200) -> str:
    """The first line of an exception's message (or any text), at most ``limit`` characters.

    Arrow's messages may quote a whole row of the user's file.
    """
    lines = str(exc).splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


class Ids:
    """The sample ids of one batch, converted to Python only for the few quoted in a message."""

    def __init__(self, column: pa.Array, offset: int) -> None:
        self.column, self.offset = column, offset

    def pick(self, rows: np.ndarray) -> list[str]:
        values = self.column.take(pa.array(rows, pa.int64())).to_pylist()
        return [v if v is not None else f"row {self.offset + int(r) + 1}" for v, r in zip(values, rows)]


class Report:
    """Problems found in one file: ``kind -> [count, first ids]``, plus whole-file messages."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: dict[str, list] = {}
        self.messages: list[str] = []

    def add(self, kind: str, mask: np.ndarray, ids: Ids | list) -> None:
        count = int(np.count_nonzero(mask))
        if count:
            entry = self.rows.setdefault(kind, [0, []])
            entry[0] += count
            room = SHOW - len(entry[1])
            if room > 0:
                picked = np.flatnonzero(mask)[:room]
                entry[1].extend(ids.pick(picked) if isinstance(ids, Ids) else [ids[i] for i in picked])

    def fail(self, message: str) -> None:
        if message not in self.messages:
            self.messages.append(message)

    def fatal(self, message: str) -> PredictionError:
        return PredictionError(f"{self.name}: {message}")

    def raise_if_any(self) -> None:
        parts = list(self.messages)
        for kind, (count, ids) in self.rows.items():
            shown = ", ".join(quote(i) for i in ids)
            parts.append(f"{count} {kind} (e.g. {shown})")
        if parts:
            n = len(parts)
            raise PredictionError(f"{self.name}: {n} problem{'s' * (n > 1)}: " + "; ".join(parts) + "; see PROTOCOL section 6")


def sniff(path: Path) -> tuple[str, dict | None]:
    """``("parquet" | "csv", metadata or None)``; raises on a missing, empty or foreign file."""
    name = path.name
    if not path.is_file():
        raise PredictionError(f"{name}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise PredictionError(f"{name}: the file is empty")
    with open(path, "rb") as handle:
        head = handle.read(4096)
        handle.seek(max(size - 4, 0))
        tail = handle.read(4)
    if head[:4] == b"PAR1":
        if tail != b"PAR1" or size < 12:
            raise PredictionError(f"{name}: truncated parquet file (no footer); write it again")
        try:
            raw = (pq.read_metadata(path).metadata or {}).get(b"atom_bench")
        except (pa.ArrowException, OSError) as exc:
            raise PredictionError(f"{name}: unreadable parquet file ({brief(exc)})") from None
        return "parquet", _parse_meta(name, raw)
    if path.suffix.lower() in (".parquet", ".pq"):
        raise PredictionError(f"{name}: not a parquet file (no PAR1 magic bytes)")
    if path.suffix.lower() != ".csv":
        raise PredictionError(f"{name}: predictions must be a .parquet or .csv file")
    if b"\0" in head:
        raise PredictionError(f"{name}: not a text CSV file (binary content)")
    first = head.split(b"\n", 1)[0]
    if first.startswith(b"#"):
        body = first[1:].strip()
        if not body.startswith(b"atom_bench"):
            raise PredictionError(f"{name}: the first line must be '# atom_bench {{json}}'")
        return "csv", _parse_meta(name, body[len(b"atom_bench"):])
    return "csv", None


#: Metadata fields a prediction file records; each is text (or null).
META_FIELDS = ("format", "track", "split", "manifest_sha256", "dataset_revision", "toolkit_version")


def _parse_meta(name: str, raw: bytes | None) -> dict | None:
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        raise PredictionError(f"{name}: the atom_bench metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise PredictionError(f"{name}: the atom_bench metadata must be a JSON object")
    wrong = [key for key in META_FIELDS if meta.get(key) is not None and not isinstance(meta[key], str)]
    if wrong:
        kinds = "; ".join(f"{key} must be text, not {type(meta[key]).__name__}" for key in wrong)
        raise PredictionError(f"{name}: in the atom_bench metadata, {kinds}; write the file with atom_bench.write_predictions")
    return meta


def check_meta(meta: dict | None, expected: dict, report: Report, *, required: bool) -> None:
    """Compare what the file was made for with what it is checked against."""
    if meta is None:
        if required:
            report.fail("records no track/split/dataset (write it with atom_bench.write_predictions)")
        return
    for key, want in expected.items():
        got = meta.get(key)
        if want is None or got == want:
            continue
        if key == "manifest_sha256":
            got_s = str(got)[:12] if got else "no dataset hash"
            report.fail(f"made for dataset {got_s} but this benchmark is {str(want)[:12]}; score it against the benchmark it was made for (--root DIR, or root= in Python), or predict again on this one")
        elif key != "dataset_revision" or "manifest_sha256" not in expected:
            report.fail(f"made for {key} {quote(got)}, checked against {quote(want)}")


def iter_parquet(path: Path, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    try:
        with pq.ParquetFile(path) as reader:
            yield from reader.iter_batches(batch_size=chunk_rows, use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise PredictionError(f"{path.name}: unreadable parquet file, truncated or corrupt ({brief(exc)})") from None


def iter_csv(path: Path, chunk_rows: int, has_meta: bool) -> Iterator[pa.RecordBatch]:
    with open(path, "rb") as handle:
        lines = [handle.readline() for _ in range(1 + has_meta)]
    try:
        header_line = lines[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise PredictionError(f"{path.name}: the header line is not UTF-8 text") from None
    if not header_line.strip():
        raise PredictionError(f"{path.name}: no header line (expected columns sample_id,high,low,...)")
    try:
        names = next(csv.reader(io.StringIO(header_line)))
    except csv.Error as exc:  # e.g. a lone carriage return inside the header
        raise PredictionError(f"{path.name}: malformed CSV header ({brief(exc)}); write the file with atom_bench.write_predictions") from None
    read = pacsv.ReadOptions(skip_rows=int(has_meta), block_size=max(1 << 16, chunk_rows * 64))
    convert = pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=True)
    try:
        yield from pacsv.open_csv(path, read_options=read, convert_options=convert)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise PredictionError(f"{path.name}: malformed or truncated CSV ({brief(exc)})") from None


def _parse_text(arr: pa.Array, integer: bool) -> tuple[pa.Array, np.ndarray]:
    """Strings -> (numbers with bad entries nulled, bad mask)."""
    ok = pc.fill_null(pc.match_substring_regex(pc.utf8_trim_whitespace(arr), INT_RE if integer else FLOAT_RE), True)
    bad = ~np.asarray(ok.to_numpy(zero_copy_only=False), dtype=bool)
    cleaned = pc.if_else(ok, pc.utf8_trim_whitespace(arr), pa.scalar(None, pa.string()))
    return pc.cast(cleaned, pa.int64() if integer else pa.float64()), bad


def _scalar(col: pa.Array, name: str, from_csv: bool, report: Report, ids: Ids) -> np.ndarray:
    """Integer labels as int64 with -1 where missing, mistyped or out of range."""
    bad_type = np.zeros(len(col), dtype=bool)
    if from_csv:
        col, bad_type = _parse_text(col, integer=True)
        report.add(f"{name} values that are not integers", bad_type, ids)
    elif not pa.types.is_integer(col.type):
        report.fail(f"column {name} has type {brief(col.type, 80)}; write integers")
        return np.full(len(col), -1, dtype=np.int64)
    missing = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool) & ~bad_type
    report.add(f"missing {name} values", missing, ids)
    values = np.asarray(pc.fill_null(pc.cast(col, pa.int64(), safe=False), -1).to_numpy(zero_copy_only=False))
    out_of_range = ~missing & ~bad_type & ((values < 0) | (values >= RANGES[name]))
    report.add(f"{name} values outside 0..{RANGES[name] - 1}", out_of_range, ids)
    return np.where(out_of_range, -1, values)


def _listcol(col: pa.Array, name: str, from_csv: bool, report: Report, ids: Ids) -> np.ndarray | None:
    """A list column as an ``(n, width)`` float64 matrix, NaN where unusable."""
    width, integer = WIDTHS[name], name.endswith("top5")
    if from_csv:
        text = pc.utf8_trim_whitespace(pc.replace_substring_regex(col, r"[\[\](),;]", " "))
        col = pc.split_pattern_regex(text, r"\s+")
    elif not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type)):
        report.fail(f"column {name} has type {brief(col.type, 80)}; write a list of {width} numbers per row")
        return None
    lengths = np.asarray(pc.fill_null(pc.list_value_length(col), -1).to_numpy(zero_copy_only=False))
    report.add(f"missing {name} values", lengths < 0, ids)
    report.add(f"{name} lists without exactly {width} entries", (lengths >= 0) & (lengths != width), ids)
    flat = pc.list_flatten(col)
    if from_csv:
        flat, bad = _parse_text(flat, integer)
        kind = "integers" if integer else "numbers"
    elif integer and not pa.types.is_integer(flat.type) or not (pa.types.is_integer(flat.type) or pa.types.is_floating(flat.type)):
        report.fail(f"column {name} holds {brief(flat.type, 80)}; write {'integers' if integer else 'numbers'}")
        return None
    else:
        bad, kind = np.zeros(len(flat), dtype=bool), ""
    # unsafe cast: integers beyond 2**53 lose precision (never range) and are refused below as out of range
    values = np.array(pc.fill_null(pc.cast(flat, pa.float64(), safe=False), np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)
    values[bad] = np.nan
    row_of = np.repeat(np.arange(len(col)), np.maximum(lengths, 0))
    bad_rows = np.bincount(row_of[bad], minlength=len(col)) > 0
    if kind:
        report.add(f"{name} entries that are not {kind}", bad_rows, ids)
    good = lengths == width
    out = np.full((len(col), width), np.nan)
    out[good] = values[good[row_of]].reshape(-1, width)
    nonfinite = good & ~bad_rows & ~np.isfinite(out).all(axis=1)
    report.add(f"{name} lists with missing, NaN or infinite entries", nonfinite, ids)
    out[~good | nonfinite | bad_rows] = np.nan
    return out


def _check_ranked(name: str, mat: np.ndarray, top1: np.ndarray, report: Report, ids: Ids) -> np.ndarray:
    usable = np.isfinite(mat).all(axis=1)
    whole = usable & (mat == np.round(mat)).all(axis=1)
    report.add(f"{name} lists with non-integer entries", usable & ~whole, ids)
    bad_range = whole & ((mat < 0) | (mat >= RANGES[name])).any(axis=1)
    report.add(f"{name} lists with entries outside 0..{RANGES[name] - 1}", bad_range, ids)
    srt = np.sort(mat, axis=1)
    repeats = whole & (srt[:, 1:] == srt[:, :-1]).any(axis=1)
    report.add(f"{name} lists with repeated entries", repeats, ids)
    top = name.removesuffix("_top5")
    report.add(f"{name} lists whose first entry is not {top}", whole & (top1 >= 0) & (mat[:, 0] != top1), ids)
    return np.where((whole & ~bad_range)[:, None], mat, -1).astype(np.int64)


def check_batches(batches: Iterable[pa.RecordBatch], report: Report, *, from_csv: bool) -> dict[str, np.ndarray]:
    """Check every batch; return the concatenated columns (invalid entries set to -1 / NaN)."""
    parts: dict[str, list] = {}
    offset, present = 0, None
    for batch in batches:
        if present is None:
            present = batch.schema.names
            unknown = [c for c in present if c not in KNOWN]
            if unknown:
                report.fail(f"unknown column(s) {quote_all(unknown)}; allowed: {', '.join(KNOWN)}")
            missing = [c for c in ("sample_id", "high", "low") if c not in present]
            if missing:
                raise report.fatal(f"missing required column(s) {', '.join(missing)}; found {quote_all(present) or 'none'}")
            if len(set(present)) != len(present):
                raise report.fatal("repeated column names in the header")
        n = batch.num_rows
        sid = batch.column("sample_id")
        if pa.types.is_dictionary(sid.type):
            sid = pc.cast(sid, sid.type.value_type)
        if not (pa.types.is_string(sid.type) or pa.types.is_large_string(sid.type)):
            raise report.fatal(f"column sample_id has type {brief(sid.type, 80)}; write strings")
        sid = sid.cast(pa.string()) if pa.types.is_large_string(sid.type) else sid
        show = Ids(sid, offset)
        report.add("rows without a sample_id", np.asarray(sid.is_null().to_numpy(zero_copy_only=False), dtype=bool), show)
        cols = {name: _scalar(batch.column(name), name, from_csv, report, show) for name in ("high", "low")}
        both = (cols["high"] >= 0) & (cols["low"] >= 0)
        report.add("rows with low // 27 != high", both & (cols["low"] // N_HIGH != cols["high"]), show)
        for name in WIDTHS:
            if name in present:
                mat = _listcol(batch.column(name), name, from_csv, report, show)
                if mat is not None and name.endswith("top5"):
                    mat = _check_ranked(name, mat, cols[name.removesuffix("_top5")], report, show)
                elif mat is not None and name == "normal_mm":
                    norm = np.linalg.norm(np.nan_to_num(mat), axis=1)
                    report.add("normal_mm vectors that are not unit length", np.isfinite(mat).all(axis=1) & (np.abs(norm - 1) > UNIT_TOL), show)
                cols[name] = mat
        cols["sample_id"] = sid
        for key, value in cols.items():
            parts.setdefault(key, []).append(value)
        offset += n
    if present is None:
        raise report.fatal("no columns; expected sample_id,high,low[,high_top5,low_top5,center_mm,normal_mm]")
    ids = pa.chunked_array(parts.pop("sample_id", []), type=pa.string())
    out = {k: np.concatenate(v) if v and v[0] is not None else None for k, v in parts.items()}
    return {"sample_id": ids, **{k: v for k, v in out.items() if v is not None}}


def id_array(ids: Iterable[str] | pa.Array | pa.ChunkedArray | pd.Index) -> pa.Array:
    """Expected sample ids as an Arrow string array (unique)."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if not isinstance(ids, pa.Array):
        ids = pa.array(np.asarray(list(ids) if not hasattr(ids, "__array__") else ids, dtype=object), pa.string())
    return ids.cast(pa.string())


def check_ids(got: pa.ChunkedArray, expected: pa.Array, report: Report) -> np.ndarray:
    """Missing, extra and duplicate sample ids; returns each row's position in ``expected`` (-1: none)."""
    pos = np.asarray(pc.fill_null(pc.index_in(got, value_set=expected), -1).to_numpy(), dtype=np.int64)
    counts = np.bincount(pos[pos >= 0], minlength=len(expected))
    extra = pd.Series(pc.filter(got, pa.array(pos < 0)).to_pylist(), dtype=object).dropna()
    dup_extra = extra[extra.duplicated()].unique().tolist()
    report.add("duplicated sample ids", counts > 1, Ids(expected, 0))
    report.add("duplicated sample ids", np.ones(len(dup_extra), dtype=bool), dup_extra)
    report.add("missing sample ids", counts == 0, Ids(expected, 0))
    distinct = extra.unique().tolist()
    report.add("sample ids not in the split", np.ones(len(distinct), dtype=bool), distinct)
    return pos


def distinct_rows(rng: np.random.Generator, n: int, high: int, k: int, first: np.ndarray | None = None) -> np.ndarray:
    """``(n, k)`` rows of ``k`` distinct integers in ``0..high-1`` (column 0 = ``first`` if given)."""
    out = rng.integers(0, high, size=(n, k))
    if first is not None:
        out[:, 0] = first
    todo = np.arange(n)
    while len(todo):
        srt = np.sort(out[todo], axis=1)
        todo = todo[(srt[:, 1:] == srt[:, :-1]).any(axis=1)]
        out[todo, 1:] = rng.integers(0, high, size=(len(todo), k - 1))
    return out
