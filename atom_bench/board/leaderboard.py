"""Leaderboards generated from submission records: ``<track>.md``, ``<track>.csv``, ``index.html``.

Nothing here is edited by hand: :func:`regenerate` rebuilds every file from
``submissions/*/*/{metadata,scores}.json`` and writes only files whose bytes change, so a
second run changes nothing; :func:`stale` lists files that differ from what the records give
(CI runs it). Within a track, entries are grouped by split and dataset manifest (scores on
different data never share a table). Entries are ordered by :data:`RANK_METRIC` and ranked so
that entries whose 95% intervals overlap, directly or through a chain of overlapping entries,
share a rank (each rank is the 1-based position of the group's first entry). The chance and
prior floors of the group's first record are rows of every table, without a rank.

Every field from a record is user data: in ``.md`` it is escaped for Markdown and HTML (a
model name cannot end the table, add a link, an image or a script), in ``index.html`` it is
HTML-escaped (links only to http(s) ``code_url``), in ``.csv`` a text cell that a spreadsheet
would run as a formula gets a leading ``'``. Control characters from a hand-edited record are
shown as U+FFFD (``submit`` refuses them).
"""

from __future__ import annotations

import contextlib
import csv
import html
import io
import os
import re
import shutil
import tempfile
from pathlib import Path

from atom_bench._io import remove_stale_directories
from atom_bench.board.submissions import load_records, submissions_lock
from atom_bench.eval.metrics import METRICS, MetricSpec

RANK_METRIC = "top1_high"
#: The leaderboard's metric columns: every spec with a header, in registry order.
BOARD_METRICS: tuple[MetricSpec, ...] = tuple(spec for spec in METRICS.values() if spec.leaderboard_header is not None)
SPLIT_ORDER = ("test_unseen", "test_seen", "validation", "train")
FLOORS = ("chance", "prior")
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_MD_SPECIAL_RE = re.compile(r"([\\`*\[\]|~$#])")
_MD_UNDERSCORE_RE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")  # intraword "_" (test_seen) is no emphasis
_URL_RE = re.compile(r"https?://[^\s\x00-\x1f\x7f]+")
_CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _plain(value: object) -> str:
    """A record field as one line of text: control characters become U+FFFD."""
    return _CONTROL_RE.sub("\ufffd", "" if value is None else str(value))


def _md(value: object) -> str:
    """A record field as inert Markdown: HTML (``& < >``) as entities, Markdown syntax backslashed."""
    text = html.escape(_plain(value), quote=False)
    return _MD_UNDERSCORE_RE.sub(r"\\_", _MD_SPECIAL_RE.sub(r"\\\1", text))


def _csv(value: object) -> object:
    """A CSV cell: numbers as they are; text that a spreadsheet would run as a formula gets a leading ``'``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_CSV_FORMULA) else text


def _params(meta: dict) -> str:
    """The parameter count with thousands separators ("" when absent)."""
    n = meta.get("n_parameters")
    if n is None:
        return ""
    return f"{n:,}" if isinstance(n, int) and not isinstance(n, bool) else _plain(n)


def overlap_ranks(values: list[float], lows: list[float], highs: list[float]) -> list[int]:
    """Ranks of entries listed best first: entries joined by overlapping intervals share a rank.

    Components of the interval-overlap graph are found by a sweep from the highest upper
    bound; each component's rank is the 1-based position of its first entry in the list.
    """
    component = [0] * len(values)
    reach, current = None, -1
    for i in sorted(range(len(values)), key=lambda k: -highs[k]):
        if reach is None or highs[i] < reach:
            current += 1
            reach = lows[i]
        component[i] = current
        reach = min(reach, lows[i])
    first: dict[int, int] = {}
    return [first.setdefault(c, i + 1) for i, c in enumerate(component)]


def _groups(records: list[dict], metric: str) -> dict[str, list[dict]]:
    """``track -> [table]``; a table is ``{"split", "manifest", "revision", "rows"}`` with ranks."""
    tables: dict[tuple, list[dict]] = {}
    for rec in records:
        m = rec["metadata"]
        tables.setdefault((m["track"], m["split"], m.get("manifest_sha256") or ""), []).append(rec)
    out: dict[str, list[dict]] = {}
    order = {s: i for i, s in enumerate(SPLIT_ORDER)}
    for (track, split, manifest), recs in sorted(tables.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9), kv[0][1], kv[0][2])):
        def key(rec: dict) -> tuple:
            cell = rec["scores"]["metrics"].get(metric) or {}
            return (-(cell.get("value") if cell.get("value") is not None else -1.0), rec["metadata"]["name"])

        recs = sorted(recs, key=key)
        cells = [r["scores"]["metrics"].get(metric) or {"value": None, "ci": [None, None]} for r in recs]
        ranks = overlap_ranks(
            [c["value"] if c["value"] is not None else -1.0 for c in cells],
            [c["ci"][0] if c["ci"][0] is not None else -1.0 for c in cells],
            [c["ci"][1] if c["ci"][1] is not None else -1.0 for c in cells],
        )
        rows = [{"rank": r, "kind": "submission", "metadata": rec["metadata"], "metrics": rec["scores"]["metrics"]} for r, rec in zip(ranks, recs)]
        floors = recs[0]["scores"].get("floors", {})
        for name in FLOORS:
            if name in floors:
                rows.append({"rank": None, "kind": "floor", "metadata": {"name": name, "model_name": f"{name} (floor)"}, "metrics": floors[name]["metrics"]})
        rows.sort(key=lambda r: (-((r["metrics"].get(metric) or {}).get("value") or -1.0), r["kind"] == "floor"))
        revision = recs[0]["metadata"].get("dataset_revision")
        out.setdefault(track, []).append({"split": split, "manifest": manifest, "revision": revision, "rows": rows})
    return out


def _fmt(cell: dict | None, spec: MetricSpec, with_ci: bool = True) -> str:
    if not cell or cell.get("value") is None:
        return "-"
    scale, digits = spec.scale, 1
    value = f"{cell['value'] * scale:.{digits}f}"
    lo, hi = cell.get("ci") or (None, None)
    if with_ci and lo is not None and hi is not None:
        value += f" [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"
    return value


def _title(table: dict, escape=_plain) -> str:
    parts = (table["split"], table["revision"] or "?", _plain(table["manifest"])[:12])
    split, revision, manifest = (escape(p) for p in parts)
    return f"{split} (dataset {revision}, manifest {manifest})"


def render_markdown(track: str, tables: list[dict], metric: str = RANK_METRIC) -> str:
    lines = [
        f"# ATOM-Bench leaderboard: {_md(track)}",
        "",
        "Generated by `atom-bench leaderboard` from `submissions/`; do not edit by hand.",
        f"Ranked by {METRICS[metric].leaderboard_header}; entries whose 95% intervals overlap share a rank. Values: estimate [95% CI].",
        "",
    ]
    head = ["rank", "name", "model", *(spec.leaderboard_header for spec in BOARD_METRICS), "params", "date"]
    for table in tables:
        lines += [f"## {_title(table, _md)}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in table["rows"]:
            m = row["metadata"]
            cells = [str(row["rank"]) if row["rank"] else "floor", _md(m["name"]), _md(m.get("model_name", ""))]
            cells += [_fmt(row["metrics"].get(spec.name), spec) for spec in BOARD_METRICS]  # numbers: ours
            cells += [_md(_params(m)), _md(m.get("date", ""))]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def render_csv(track: str, tables: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    meta_cols = ["model_name", "authors", "code_url", "n_parameters", "training_data", "seeds", "hardware", "date", "toolkit_version"]
    metric_cols = [f"{spec.name}{s}" for spec in BOARD_METRICS for s in ("", "_lo", "_hi")]
    writer.writerow(["track", "split", "dataset_revision", "manifest_sha256", "rank", "kind", "name", *meta_cols, *metric_cols])
    for table in tables:
        for row in table["rows"]:
            m = row["metadata"]
            meta = [";".join(map(str, v)) if isinstance(v, list) else v for v in (m.get(k) for k in meta_cols)]
            nums = []
            for spec in BOARD_METRICS:
                cell = row["metrics"].get(spec.name) or {}
                ci = cell.get("ci") or [None, None]
                nums += ["" if x is None else repr(float(x)) for x in (cell.get("value"), ci[0], ci[1])]
            text = [track, table["split"], table["revision"] or "", table["manifest"], row["rank"] or "", row["kind"], m["name"], *meta]
            writer.writerow([*map(_csv, text), *nums])  # nums: floats we formatted
    return buf.getvalue()


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin-bottom:2em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#eee;cursor:pointer}td.t{text-align:left}
tr.floor{font-style:italic;color:#777;background:#fafafa}"""
_JS = """document.querySelectorAll('table.lb th').forEach(function(th){th.addEventListener('click',function(){
var t=th.closest('table'),b=t.tBodies[0],i=th.cellIndex,asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
var rows=Array.prototype.slice.call(b.rows);rows.sort(function(x,y){var a=x.cells[i].dataset.v,c=y.cells[i].dataset.v;
var p=parseFloat(a),q=parseFloat(c);var r=(!isNaN(p)&&!isNaN(q))?p-q:String(a).localeCompare(String(c));return asc?r:-r;});
rows.forEach(function(r){b.appendChild(r);});});});"""


def render_html(groups: dict[str, list[dict]]) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>ATOM-Bench leaderboards</title>',
             f"<style>{_CSS}</style></head><body><h1>ATOM-Bench leaderboards</h1>",
             "<p>Generated from <code>submissions/</code> by <code>atom-bench leaderboard</code>. Values: estimate [95% CI]; "
             "entries whose intervals overlap share a rank; floors are grey. Click a column to sort.</p>"]  # fmt: skip
    if not groups:
        parts.append("<p>No submissions yet.</p>")
    for track, tables in sorted(groups.items()):
        for table in tables:
            tid = f"lb-{track}-{table['split']}-{table['manifest'][:12]}"
            parts.append(f"<h2>{e(_plain(track))}: {e(_title(table))}</h2>")
            head = ["rank", "name", "model", *(spec.leaderboard_header for spec in BOARD_METRICS), "params", "date"]
            parts.append(f'<table class="lb" id="{e(_plain(tid))}"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>")
            for row in table["rows"]:
                m = row["metadata"]
                rank = row["rank"] or ""
                model = e(_plain(m.get("model_name", "")))
                url = m.get("code_url")
                if isinstance(url, str) and _URL_RE.fullmatch(url):  # http(s) only: no javascript: or data: links
                    model = f'<a href="{e(url)}">{model}</a>'
                cells = [(rank if rank else 1e9, e(str(rank or "floor")), ""), (m["name"], e(_plain(m["name"])), "t"), (m.get("model_name", ""), model, "t")]
                for spec in BOARD_METRICS:
                    cell = row["metrics"].get(spec.name) or {}
                    cells.append(("" if cell.get("value") is None else cell["value"], e(_fmt(cell, spec)), ""))
                cells += [(m.get("n_parameters", ""), e(_params(m)), ""), (m.get("date", ""), e(_plain(m.get("date", ""))), "t")]
                tds = "".join(f'<td data-v="{e(_plain(v))}"{f" class={cls}" if cls else ""}>{text}</td>' for v, text, cls in cells)
                parts.append(f'<tr class="{row["kind"]}">{tds}</tr>')
            parts.append("</tbody></table>")
    parts += [f"<script>{_JS}</script>", "</body></html>", ""]
    return "\n".join(parts)


def expected_files(submissions_dir: str | os.PathLike[str] = "submissions", metric: str = RANK_METRIC) -> dict[str, str]:
    """File name -> content that the records give."""
    groups = _groups(load_records(submissions_dir), metric)
    files = {"index.html": render_html(groups)}
    for track, tables in groups.items():
        files[f"{track}.md"] = render_markdown(track, tables, metric)
        files[f"{track}.csv"] = render_csv(track, tables)
    return files


def _generated(out: Path) -> set[str]:
    """Files in ``out`` that a previous run may have generated."""
    return {p.name for p in out.glob("*") if p.suffix in (".md", ".csv") and p.name.lower() != "readme.md"} if out.is_dir() else set()


def _differing(files: dict[str, str], out: Path) -> list[str]:
    """Names in ``files`` whose file in ``out`` is missing or differs, then leftover generated files."""
    def same(name: str) -> bool:
        path = out / name
        return path.is_file() and path.read_text(encoding="utf-8", errors="replace") == files[name]

    return [n for n in sorted(files) if not same(n)] + sorted(_generated(out) - set(files))


def stale(submissions_dir: str | os.PathLike[str] = "submissions", out_dir: str | os.PathLike[str] = "leaderboards") -> list[str]:
    """Names of leaderboard files that are missing, differ from the records, or are left over."""
    return _differing(expected_files(submissions_dir), Path(out_dir))


def _replace_all(out: Path, writes: dict[str, str], removes: list[str]) -> None:
    """Write every file into a folder inside ``out``, then rename each into place: a failed write
    (a full disk) changes nothing, so the .md, .csv and index.html always come from one state."""
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_directories(out / "leaderboard")  # folders of killed runs (only their process id is dead)
    staging = Path(tempfile.mkdtemp(prefix=f".leaderboard.{os.getpid()}.", suffix=".tmp", dir=out))
    try:
        for name, text in writes.items():
            with open(staging / name, "w", encoding="utf-8") as handle:  # a plain open: the umask's mode
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
        for name in writes:
            os.replace(staging / name, out / name)
        for name in removes:
            (out / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def regenerate(
    submissions_dir: str | os.PathLike[str] = "submissions", out_dir: str | os.PathLike[str] = "leaderboards", *, lock: bool = True
) -> list[str]:
    """Rewrite the leaderboards from the records; returns the names of files changed or removed.

    The records are read once, under the lock ``submit`` holds while it stores one (``lock=False``
    when the caller holds it already), so a concurrent submit is either wholly in the files or not.
    """
    out, subs = Path(out_dir), Path(submissions_dir)
    # a folder this user cannot write holds no lock file, and no submit of this user can race
    can_lock = lock and subs.is_dir() and os.access(subs, os.W_OK)
    held = submissions_lock(subs) if can_lock else contextlib.nullcontext()
    with held:
        files = expected_files(submissions_dir)
        changed = _differing(files, out)
        if changed:
            _replace_all(out, {n: files[n] for n in changed if n in files}, [n for n in changed if n not in files])
    return changed
