"""The leaderboard's tables: records grouped by track, split and manifest, ranked, and the text
helpers (escaping, labels, number formats) that the Markdown, CSV and HTML renderers share.

Ranks (ranked tables only: the test splits of :data:`RANKED_SPLITS`). Entries are ordered by
:data:`RANK_METRIC`, best first; each entry shares the rank of the entry above it unless the
paired 95% interval of their difference excludes zero (:func:`atom_bench.eval.compare.compare_arrays`
on the two stored prediction files, slice level), and otherwise takes its 1-based position.
Pairing needs the labels: the evaluator of the embedded benchmark, so only records whose
``manifest_sha256`` is that benchmark's hash are paired. For other records (and a pair whose
prediction file is missing, altered or unreadable) the rule falls back to the two entries' own
95% intervals: distinct when they do not overlap. Only neighbours in the sorted order are
compared, and nothing is cached on disk.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path

from atom_bench.eval.metrics import METRICS, MetricSpec

RANK_METRIC = "top1_high"
#: The leaderboard's metric columns: every spec with a header, in registry order.
BOARD_METRICS: tuple[MetricSpec, ...] = tuple(spec for spec in METRICS.values() if spec.leaderboard_header is not None)
SPLIT_ORDER = ("test_unseen", "test_seen", "validation", "train")
#: Splits whose tables are ranked; the others (model selection, fitting data) are shown unranked.
RANKED_SPLITS = ("test_unseen", "test_seen")
FLOORS = ("chance", "prior")
FLOOR_LABELS = {"chance": "floor: uniform chance", "prior": "floor: training prior"}
#: An evaluator for ``(track, split, manifest_sha256)``, or ``None`` when its labels are not at hand.
EvaluatorFor = Callable[[str, str, str], object]

_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_MD_SPECIAL_RE = re.compile(r"([\\`*\[\]|~$#])")
_MD_UNDERSCORE_RE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")  # intraword "_" (test_seen) is no emphasis
URL_RE = re.compile(r"https?://[^\s\x00-\x1f\x7f]+")
# code shipped inside the toolkit's own source tree, e.g. ``atom-bench:baselines/regismcan.py``
SOURCE_REF_RE = re.compile(r"atom-bench:((?:[A-Za-z0-9_][A-Za-z0-9_.-]*/)*[A-Za-z0-9_][A-Za-z0-9_.-]*\.py)")
_CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")
_WEIGHTS_RE = re.compile(r"^[ \t]*weights:[ \t]*([^\s;]+)", re.MULTILINE)  # the file name, up to a ";" or blank


def code_href(code_url: object) -> str | None:
    """Where a record's ``code_url`` links to from ``leaderboards/index.html``: an http(s) URL as
    it is, an ``atom-bench:<path>`` reference as the relative link ``../<path>`` (the page sits
    one folder below the source tree's root); anything else (``javascript:``, ``data:``) is no link."""
    if not isinstance(code_url, str):
        return None
    if URL_RE.fullmatch(code_url):
        return code_url
    match = SOURCE_REF_RE.fullmatch(code_url)
    return f"../{match.group(1)}" if match and ".." not in match.group(1).split("/") else None


# -- escaping ---------------------------------------------------------------------------------
def plain(value: object) -> str:
    """A record field as one line of text: control characters become U+FFFD."""
    return _CONTROL_RE.sub("\ufffd", "" if value is None else str(value))


def md(value: object) -> str:
    """A record field as inert Markdown: HTML (``& < >``) as entities, Markdown syntax backslashed."""
    text = html.escape(plain(value), quote=False)
    return _MD_UNDERSCORE_RE.sub(r"\\_", _MD_SPECIAL_RE.sub(r"\\\1", text))


def csv_cell(value: object) -> object:
    """A CSV cell: numbers as they are; text that a spreadsheet would run as a formula gets a leading ``'``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_CSV_FORMULA) else text


# -- labels and numbers -----------------------------------------------------------------------
def params(meta: dict) -> str:
    """The parameter count with thousands separators ("" when absent)."""
    n = meta.get("n_parameters")
    if n is None:
        return ""
    return f"{n:,}" if isinstance(n, int) and not isinstance(n, bool) else plain(n)


def weights(meta: dict) -> str:
    """The weights file named in ``notes`` (``weights: <file>``), "" when none is named."""
    notes = meta.get("notes")
    found = _WEIGHTS_RE.search(notes) if isinstance(notes, str) else None
    name = found.group(1) if found else ""
    return "" if name.lower() in ("none", "-", "") else plain(name)


def model_label(meta: dict) -> str:
    """The model as a reader names it: ``model_name``, with ``model_version`` when given."""
    version = meta.get("model_version")
    return plain(meta.get("model_name", "")) + (f" {plain(version)}" if version not in (None, "") else "")


def header(spec: MetricSpec) -> str:
    """A metric's column header, as its spec defines it."""
    return spec.leaderboard_header or spec.name


def fmt_value(cell: dict | None, spec: MetricSpec) -> str:
    if not cell or cell.get("value") is None:
        return "-"
    return f"{cell['value'] * spec.scale:.1f}"


def fmt_ci(ci, spec: MetricSpec) -> str:
    """``[lo, hi]`` in display units, "" when absent."""
    lo, hi = ci[:2] if isinstance(ci, (list, tuple)) and len(ci) >= 2 else (None, None)
    if lo is None or hi is None:
        return ""
    return f"[{lo * spec.scale:.1f}, {hi * spec.scale:.1f}]"


def fmt(cell: dict | None, spec: MetricSpec, with_ci: bool = True) -> str:
    """``estimate [lo, hi]`` in display units ("-" when absent)."""
    value = fmt_value(cell, spec)
    ci = fmt_ci((cell or {}).get("ci"), spec) if with_ci and value != "-" else ""
    return f"{value} {ci}" if ci else value


def volume_ci(row: dict, name: str) -> list | None:
    """The volume-level (cluster bootstrap) interval of a metric, when the record's scores have one."""
    entry = (row.get("volume_level") or {}).get("metrics", {}).get(name) or {}
    ci = entry.get("ci")
    return ci if isinstance(ci, list) and len(ci) == 2 and None not in ci else None


def title(table: dict, escape=plain) -> str:
    parts = (table["split"], table["revision"] or "?", plain(table["manifest"])[:12])
    split, revision, manifest = (escape(p) for p in parts)
    return f"{split} (dataset {revision}, manifest {manifest})"


# -- ranks ------------------------------------------------------------------------------------
def overlap_ranks(values: list[float], lows: list[float], highs: list[float]) -> list[int]:
    """Ranks of entries listed best first when only their own intervals are known: an entry
    shares the rank of the one above it while their 95% intervals overlap (the fallback rule)."""
    distinct = [i > 0 and not (lows[i - 1] <= highs[i] and lows[i] <= highs[i - 1]) for i in range(len(values))]
    return chained_ranks(distinct)


def chained_ranks(distinct: list[bool]) -> list[int]:
    """Ranks of entries listed best first: entry ``i`` shares the rank of entry ``i - 1`` unless
    ``distinct[i]`` (they were shown to differ), then it takes its 1-based position."""
    ranks: list[int] = []
    for i, split_here in enumerate(distinct):
        ranks.append(1 if i == 0 else (i + 1 if split_here else ranks[-1]))
    return ranks


class _OneMetric:
    """An evaluator seen through one metric: :func:`compare_arrays` then resamples only it (the
    resampling, not the per-sample scoring, is what costs). The draws do not depend on which
    metrics are compared, so the interval is the one a full comparison gives."""

    def __init__(self, evaluator, metric: str) -> None:
        self._evaluator, self._metric = evaluator, metric

    def __getattr__(self, name: str):
        return getattr(self._evaluator, name)

    def per_sample(self, pred, rows=None):
        values = self._evaluator.per_sample(pred, rows)
        return {self._metric: values[self._metric]} if self._metric in values else {}


def benchmark_evaluators() -> EvaluatorFor:
    """Evaluators of the embedded benchmark, built on first use (in memory only): ``None`` for a
    manifest that is not the benchmark's, or a split the benchmark cannot label."""
    state: dict = {}

    def get(track: str, split: str, manifest: str):
        from atom_bench.data.benchmark import Benchmark
        from atom_bench.eval.scoring import Evaluator

        if "bench" not in state:
            try:
                state["bench"] = Benchmark.open()
            except (ValueError, OSError, KeyError):
                state["bench"] = None
        bench = state["bench"]
        if bench is None or manifest != bench.hash:
            return None
        if (track, split) not in state:
            try:
                state[(track, split)] = Evaluator.from_benchmark(track, split, root=bench)
            except (ValueError, OSError, KeyError):
                state[(track, split)] = None
        return state[(track, split)]

    return get


def _cell(row: dict, metric: str) -> dict:
    return row["metrics"].get(metric) or {"value": None, "ci": [None, None]}


def _overlap_distinct(above: dict, below: dict, metric: str) -> bool:
    a, b = _cell(above, metric), _cell(below, metric)
    if a.get("value") is None or b.get("value") is None:
        return (a.get("value") is None) != (b.get("value") is None)
    (alo, ahi), (blo, bhi) = (c.get("ci") or [c["value"], c["value"]] for c in (a, b))
    alo, ahi = (a["value"] if x is None else x for x in (alo, ahi))
    blo, bhi = (b["value"] if x is None else x for x in (blo, bhi))
    return not (alo <= bhi and blo <= ahi)


def rank_rows(rows: list[dict], metric: str, evaluator) -> None:
    """Set ``rank`` and ``vs_above`` (how the entry was told apart from the one above) of rows
    sorted best first; ``evaluator`` is ``None`` when the predictions cannot be paired."""
    from atom_bench._io import sha256_file
    from atom_bench.eval.compare import better, compare_arrays

    view = _OneMetric(evaluator, metric) if evaluator is not None else None
    loaded: dict[int, dict | None] = {}

    def arrays(i: int):
        if i not in loaded:
            meta, path = rows[i]["metadata"], rows[i].get("path")
            loaded[i] = None
            if path and isinstance(meta.get("predictions_file"), str):
                file = Path(path) / Path(meta["predictions_file"]).name
                try:
                    if file.is_file() and sha256_file(file) == meta.get("predictions_sha256"):
                        loaded[i] = evaluator.read_aligned(file)
                except (ValueError, OSError, KeyError):
                    pass
        return loaded[i]

    distinct = [False]
    if rows:
        rows[0]["vs_above"] = None
    for i in range(1, len(rows)):
        above, below = rows[i - 1], rows[i]
        pair = (arrays(i - 1), arrays(i)) if view is not None else (None, None)
        entry = None
        if None not in pair:
            try:
                entry = compare_arrays(view, pair[0], pair[1])["metrics"].get(metric)
            except (ValueError, KeyError):
                entry = None
        if entry is not None:
            split_here = better(entry) != 0
            below["vs_above"] = {"basis": "paired", "difference": entry["difference"], "ci": entry["slice"]["ci"], "distinct": split_here}
        else:
            split_here = _overlap_distinct(above, below, metric)
            below["vs_above"] = {"basis": "overlap", "distinct": split_here}
        distinct.append(split_here)
    for row, rank in zip(rows, chained_ranks(distinct)):
        row["rank"] = rank


def basis(table: dict) -> str:
    """``paired``, ``overlap`` or ``mixed``: how a ranked table's neighbours were compared."""
    kinds = {row["vs_above"]["basis"] for row in table["rows"] if row.get("vs_above")}
    return "paired" if kinds <= {"paired"} else "overlap" if kinds == {"overlap"} else "mixed"


def complete(table: dict) -> dict:
    """A table with every key the renderers read (a hand-made table may give only split, manifest,
    revision and rows)."""
    rows = table.get("rows", [])
    defaults = {
        "track": "", "ranked": table.get("split") in RANKED_SPLITS, "floors": [], "pairable": False,
        "n_samples": None, "n_volumes": None, "volume_note": None if table.get("split") != "test_unseen" else "n/a",
    }  # fmt: skip
    out = {**defaults, **table, "rows": [{"rank": None, "kind": "submission", **row} for row in rows]}
    if out["ranked"] and any(row["rank"] is None for row in out["rows"]):
        for i, row in enumerate(out["rows"]):
            row.setdefault("vs_above", None)
            row["rank"] = row["rank"] or i + 1
    return out


# -- tables -----------------------------------------------------------------------------------
def _sort_key(metric: str):
    """Best first by ``metric`` (its direction from the spec), missing values last, then by name."""
    spec = METRICS[metric]

    def key(row: dict) -> tuple:
        value = (row["metrics"].get(metric) or {}).get("value")
        missing = value is None
        return (missing, 0.0 if missing else (-value if spec.higher_is_better else value), row["metadata"]["name"])

    return key


def group(records: list[dict], metric: str = RANK_METRIC, evaluator_for: EvaluatorFor | None = None) -> dict[str, list[dict]]:
    """``track -> [table]`` in split order. A table is ``{"track", "split", "manifest", "revision",
    "ranked", "rows", "floors", "n_samples", "n_volumes", "volume_note", "pairable"}``; rows of
    ranked tables carry ``rank`` and ``vs_above``."""
    tables: dict[tuple, list[dict]] = {}
    for rec in records:
        m = rec["metadata"]
        tables.setdefault((m["track"], m["split"], m.get("manifest_sha256") or ""), []).append(rec)
    order = {s: i for i, s in enumerate(SPLIT_ORDER)}
    out: dict[str, list[dict]] = {}
    for (track, split, manifest), recs in sorted(tables.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9), kv[0][1], kv[0][2])):
        rows = [{"rank": None, "kind": "submission", "metadata": rec["metadata"], "metrics": rec["scores"]["metrics"],
                 "volume_level": rec["scores"].get("volume_level"), "path": rec.get("path"), "floors": rec["scores"].get("floors")}
                for rec in recs]  # fmt: skip
        rows.sort(key=_sort_key(metric))
        ranked = split in RANKED_SPLITS
        evaluator = None
        if ranked:
            evaluator = (evaluator_for or benchmark_evaluators())(track, split, manifest) if len(rows) > 1 else None
            rank_rows(rows, metric, evaluator)
        floors = rows[0].pop("floors") or {}  # the best entry's floors (one manifest: every record has the same)
        for row in rows:
            row.pop("floors", None)
        floor_rows = [{"rank": None, "kind": "floor", "metadata": {"name": name, "model_name": FLOOR_LABELS[name]},
                       "metrics": floors[name].get("metrics", {})} for name in FLOORS if isinstance(floors.get(name), dict)]  # fmt: skip
        floor_rows.sort(key=_sort_key(metric))
        levels = [r["volume_level"] for r in rows if isinstance(r["volume_level"], dict)]
        n_volumes = next((v["n_volumes"] for v in levels if isinstance(v.get("n_volumes"), int)), None)
        if any("metrics" in v for v in levels):
            note = None
        elif levels:
            note = f"n/a (<5 volumes: {n_volumes})" if n_volumes is not None else "n/a (" + plain(levels[0].get("note", "not computed")) + ")"
        else:
            note = "n/a (not in these records)"
        out.setdefault(track, []).append({
            "track": track, "split": split, "manifest": manifest, "revision": rows[0]["metadata"].get("dataset_revision"),
            "ranked": ranked, "rows": rows, "floors": floor_rows, "pairable": evaluator is not None,
            "n_samples": _cell(rows[0], metric).get("n"), "n_volumes": n_volumes, "volume_note": note,
        })  # fmt: skip
    return out
