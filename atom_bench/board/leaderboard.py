"""Leaderboards generated from submission records: ``<track>.md``, ``<track>.csv``, ``index.html``.

Nothing here is edited by hand: :func:`regenerate` rebuilds every file from
``submissions/*/*/{metadata,scores}.json`` and writes only files whose bytes change, so a
second run changes nothing; :func:`stale` lists files that differ from what the records give
(CI runs it). Within a track, entries are grouped by split and dataset manifest (scores on
different data never share a table). Entries are ordered by :data:`RANK_METRIC` and ranked so
that entries whose 95% intervals overlap, directly or through a chain of overlapping entries,
share a rank (each rank is the 1-based position of the group's first entry). The chance and
prior floors of the group's first record are rows of every table, without a rank.
"""

from __future__ import annotations

import csv
import html
import io
import os
from pathlib import Path

from atom_bench._io import write_text_atomic
from atom_bench.board.submissions import load_records

RANK_METRIC = "top1_high"
COLUMNS = (
    "top1_high", "top1_low", "top5_high", "top5_low", "dist_mm_median", "within_10mm",
    "angle_deg_median", "paper_acc1", "paper_acc", "paper_acck1", "volume_swap_drop_high",
)  # fmt: skip
HEADERS = {
    "top1_high": "top-1 coarse %", "top1_low": "top-1 fine %", "top5_high": "top-5 coarse %",
    "top5_low": "top-5 fine %", "dist_mm_median": "median error mm", "within_10mm": "<= 10 mm %",
    "angle_deg_median": "median angle deg", "paper_acc1": "paper acc1 %", "paper_acc": "paper acc %",
    "paper_acck1": "paper acck1 %", "volume_swap_drop_high": "volume-swap drop (coarse) %",
}  # fmt: skip
SPLIT_ORDER = ("test_unseen", "test_seen", "validation", "train")
FLOORS = ("chance", "prior")


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


def _fmt(cell: dict | None, metric: str, with_ci: bool = True) -> str:
    if not cell or cell.get("value") is None:
        return "-"
    scale, digits = (1.0, 1) if metric.startswith(("dist", "angle")) else (100.0, 1)
    value = f"{cell['value'] * scale:.{digits}f}"
    lo, hi = cell.get("ci") or (None, None)
    if with_ci and lo is not None and hi is not None:
        value += f" [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"
    return value


def _title(table: dict) -> str:
    return f"{table['split']} (dataset {table['revision'] or '?'}, manifest {table['manifest'][:12]})"


def render_markdown(track: str, tables: list[dict], metric: str = RANK_METRIC) -> str:
    lines = [
        f"# ATOM-Bench leaderboard: {track}",
        "",
        "Generated by `atom-bench leaderboard` from `submissions/`; do not edit by hand.",
        f"Ranked by {HEADERS[metric]}; entries whose 95% intervals overlap share a rank. Values: estimate [95% CI].",
        "",
    ]
    head = ["rank", "name", "model", *(HEADERS[c] for c in COLUMNS), "params", "date"]
    for table in tables:
        lines += [f"## {_title(table)}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in table["rows"]:
            m = row["metadata"]
            cells = [str(row["rank"]) if row["rank"] else "floor", m["name"], m.get("model_name", "")]
            cells += [_fmt(row["metrics"].get(c), c) for c in COLUMNS]
            cells += [f"{m['n_parameters']:,}" if "n_parameters" in m else "", m.get("date", "")]
            lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def render_csv(track: str, tables: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    meta_cols = ["model_name", "authors", "code_url", "n_parameters", "training_data", "seeds", "hardware", "date", "toolkit_version"]
    metric_cols = [f"{c}{s}" for c in COLUMNS for s in ("", "_lo", "_hi")]
    writer.writerow(["track", "split", "dataset_revision", "manifest_sha256", "rank", "kind", "name", *meta_cols, *metric_cols])
    for table in tables:
        for row in table["rows"]:
            m = row["metadata"]
            meta = [";".join(map(str, v)) if isinstance(v, list) else ("" if v is None else v) for v in (m.get(k) for k in meta_cols)]
            nums = []
            for c in COLUMNS:
                cell = row["metrics"].get(c) or {}
                ci = cell.get("ci") or [None, None]
                nums += ["" if x is None else repr(float(x)) for x in (cell.get("value"), ci[0], ci[1])]
            writer.writerow([track, table["split"], table["revision"] or "", table["manifest"], row["rank"] or "", row["kind"], m["name"], *meta, *nums])
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
            parts.append(f"<h2>{e(track)}: {e(_title(table))}</h2>")
            head = ["rank", "name", "model", *(HEADERS[c] for c in COLUMNS), "params", "date"]
            parts.append(f'<table class="lb" id="{e(tid)}"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>")
            for row in table["rows"]:
                m = row["metadata"]
                rank = row["rank"] or ""
                model = e(m.get("model_name", ""))
                if str(m.get("code_url", "")).startswith(("https://", "http://")):
                    model = f'<a href="{e(m["code_url"])}">{model}</a>'
                cells = [(rank if rank else 1e9, e(str(rank or "floor")), ""), (m["name"], e(m["name"]), "t"), (m.get("model_name", ""), model, "t")]
                for c in COLUMNS:
                    cell = row["metrics"].get(c) or {}
                    cells.append(("" if cell.get("value") is None else cell["value"], e(_fmt(cell, c)), ""))
                cells += [(m.get("n_parameters", ""), f"{m['n_parameters']:,}" if "n_parameters" in m else "", ""), (m.get("date", ""), e(m.get("date", "")), "t")]
                tds = "".join(f'<td data-v="{e(str(v))}"{f" class={cls}" if cls else ""}>{text}</td>' for v, text, cls in cells)
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


def stale(submissions_dir: str | os.PathLike[str] = "submissions", out_dir: str | os.PathLike[str] = "leaderboards") -> list[str]:
    """Names of leaderboard files that are missing, differ from the records, or are left over."""
    out = Path(out_dir)
    files = expected_files(submissions_dir)
    bad = [n for n, text in sorted(files.items()) if not (out / n).is_file() or (out / n).read_text(encoding="utf-8") != text]
    return bad + sorted(_generated(out) - set(files))


def regenerate(submissions_dir: str | os.PathLike[str] = "submissions", out_dir: str | os.PathLike[str] = "leaderboards") -> list[str]:
    """Rewrite the leaderboards from the records; returns the names of files changed or removed."""
    out = Path(out_dir)
    changed = stale(submissions_dir, out)
    files = expected_files(submissions_dir)
    for name in changed:
        if name in files:
            write_text_atomic(out / name, files[name])
        else:
            (out / name).unlink()
    return changed
