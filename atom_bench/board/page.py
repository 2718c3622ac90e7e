"""``leaderboards/index.html``: one page, a table of contents by track and split, a legend, and
per track its figure, its ranked test tables and its unranked validation/train tables (collapsed).

Every field from a record is HTML-escaped; links are made only from http(s) ``code_url``. The
page is one file with an inline script (column sorting: the first click sorts best first, from
the metric specs' ``higher_is_better``); its only other resources are the track figures beside it.
"""

from __future__ import annotations

import html
import re

from atom_bench.board import tables as T
from atom_bench.eval.metrics import METRICS

e = html.escape

_CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;padding:1.5em 2em;max-width:1500px;color:#222;font-size:14px;line-height:1.4}
h1{margin:.2em 0}h2{margin-top:1.6em;border-bottom:2px solid #ddd;padding-bottom:.2em}h3{margin:1.4em 0 .3em}
h2 small,h3 small,.meta{font-weight:normal;color:#666;font-size:.8em}
a{color:#1f5fa8}nav.toc{background:#f6f8fa;border:1px solid #ddd;padding:.6em 1em;border-radius:4px}
nav.toc ul{margin:.3em 0;padding-left:1.2em}nav.toc li{margin:.15em 0}
.legend{background:#fcfcf7;border:1px solid #e4e2d0;padding:.4em 1em;border-radius:4px}.legend dt{font-weight:600;margin-top:.5em}
.legend dl{display:grid;grid-template-columns:11em 1fr;gap:.3em 1em;margin:.5em 0}.legend dt{margin:0}.legend dd{margin:0}p.note{margin:.2em 0 .5em;color:#555;font-size:.9em}
.scroll{overflow-x:auto;margin-bottom:1em}table.lb{border-collapse:collapse}
table.lb{font-size:13px}table.lb th,table.lb td{border:1px solid #d0d7de;padding:.25em .45em;text-align:right}
table.lb td{white-space:nowrap}table.lb th{background:#eef1f4;cursor:pointer;font-weight:600;vertical-align:bottom;min-width:4em}
table.lb th.t,table.lb td.t{text-align:left}table.lb th[aria-sort=descending]::after{content:" \\25BC";font-size:.7em}
table.lb th[aria-sort=ascending]::after{content:" \\25B2";font-size:.7em}
.ci{font-size:.75em;color:#666;white-space:nowrap}table.lb td .ci{display:block;line-height:1.1}td small.w{display:block;font-size:.75em;color:#777}
tbody.floors tr{font-style:italic;color:#888;background:#f7f7f7}tbody.floors tr:first-child td{border-top:2px solid #aaa}
td.model a{color:inherit;text-decoration:none;border-bottom:1px dotted #999}
tr.submission:hover{background:#f3f8ff}figure{margin:.5em 0 1em}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}details{margin:1em 0}summary{cursor:pointer;font-weight:600}"""

_JS = """document.querySelectorAll('table.lb thead th').forEach(function(th){th.addEventListener('click',function(){
var t=th.closest('table'),b=t.tBodies[0],i=th.cellIndex;
var first=th.dataset.higherIsBetter==='1'?'desc':'asc',dir=th.dataset.dir?(th.dataset.dir==='asc'?'desc':'asc'):first;
t.querySelectorAll('thead th').forEach(function(h){delete h.dataset.dir;h.removeAttribute('aria-sort');});
th.dataset.dir=dir;th.setAttribute('aria-sort',dir==='asc'?'ascending':'descending');
var rows=Array.prototype.slice.call(b.rows);rows.sort(function(x,y){
var a=x.cells[i].dataset.v,c=y.cells[i].dataset.v,ea=(a===undefined||a===''),ec=(c===undefined||c==='');
if(ea||ec){return ea===ec?x.dataset.i-y.dataset.i:(ea?1:-1);}
var p=Number(a),q=Number(c),r=(!isNaN(p)&&!isNaN(q))?p-q:String(a).localeCompare(String(c));
if(dir==='desc'){r=-r;}return r||x.dataset.i-y.dataset.i;});
rows.forEach(function(r){b.appendChild(r);});});});"""


def _anchor(used: set[str], *parts: str) -> str:
    """An id made of ``parts`` (letters, digits, ``_ . -`` only), unique on the page."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(T.plain(p) for p in parts)).strip("-") or "x"
    anchor, n = base, 1
    while anchor in used:
        n += 1
        anchor = f"{base}-{n}"
    used.add(anchor)
    return anchor


def _metric_cell(cell: dict | None, spec) -> str:
    value = T.fmt_value(cell, spec)
    ci = T.fmt_ci((cell or {}).get("ci"), spec) if value != "-" else ""
    v = "" if value == "-" else repr(float(cell["value"]))
    return f'<td data-v="{e(v)}">{e(value)}' + (f'<span class="ci">{e(ci)}</span>' if ci else "") + "</td>"


def _model_cell(meta: dict, floor: bool) -> str:
    label = e(T.model_label(meta))
    href = T.code_href(meta.get("code_url"))
    if not floor and href:
        label = f'<a href="{e(href)}">{label}</a>'
    weights = T.weights(meta)
    small = f'<small class="w">{e(weights)}</small>' if weights else ""
    tip = "" if floor else f' title="entry: {e(T.plain(meta["name"]))}"'
    return f'<td class="t model" data-v="{e(T.model_label(meta))}"{tip}>{label}{small}</td>'


def _rank_cell(row: dict, mark_overlap: bool) -> str:
    vs = row.get("vs_above")
    tip = ""
    if vs and vs["basis"] == "paired":
        spec = METRICS[T.RANK_METRIC]
        lo, hi = (x * spec.scale for x in vs["ci"])
        verdict = "differs from" if vs["distinct"] else "not shown to differ from"
        tip = f"{verdict} the entry above: paired difference {vs['difference'] * spec.scale:+.1f} points, 95% CI [{lo:.1f}, {hi:.1f}]"
    elif vs:
        tip = "compared with the entry above by interval overlap (" + ("no overlap" if vs["distinct"] else "overlap") + ")"
    dagger = "\u2020" if mark_overlap and vs and vs["basis"] == "overlap" else ""
    title = f' title="{e(tip)}"' if tip else ""
    return f'<td class="rank" data-v="{row["rank"]}"{title}>{row["rank"]}{dagger}</td>'


def _note(table: dict) -> str:
    """How a ranked table's ranks were made (and the volume-level interval's absence)."""
    parts = []
    if len(table["rows"]) > 1:
        basis = T.basis(table)
        if basis == "paired":
            parts.append("Ranks: paired slice-level comparison of each entry with the one above.")
        elif basis == "mixed":
            parts.append("Ranks: paired slice-level comparisons; \u2020 marks a rank from interval overlap (prediction file missing or altered).")
        elif table["pairable"]:
            parts.append("Ranks: interval overlap \u2020 (the stored prediction files could not be read, so no pairing).")
        else:
            parts.append("Ranks: interval overlap \u2020 (these records are not on the embedded benchmark's manifest: their predictions cannot be paired).")
    if table["split"] == "test_unseen" and table["volume_note"]:
        parts.append(f"Volume-level interval: {table['volume_note']}.")
    return f'<p class="note">{e(" ".join(parts))}</p>' if parts else ""


def _table(table: dict, tid: str) -> str:
    ranked = table["ranked"]
    vol = table["split"] == "test_unseen" and table["volume_note"] is None
    rank_spec = METRICS[T.RANK_METRIC]
    heads = []
    if ranked:
        heads.append('<th data-higher-is-better="0" title="rank (1 = best)">rank</th>')
    heads.append('<th class="t" title="model (small: weights file; hover: entry name)">model</th>')
    for spec in T.BOARD_METRICS:
        better = "higher" if spec.higher_is_better else "lower"
        heads.append(f'<th data-higher-is-better="{int(spec.higher_is_better)}" title="{e(spec.label)}; {better} is better">{e(T.header(spec))}</th>')
        if vol and spec.name == T.RANK_METRIC:
            heads.append(f'<th data-higher-is-better="{int(rank_spec.higher_is_better)}" title="cluster bootstrap over volumes">'
                         f"{e(T.header(spec))}, volume-level 95% CI</th>")  # fmt: skip
    heads += ['<th title="number of parameters">params</th>', '<th class="t">date</th>']
    mark = ranked and T.basis(table) != "paired"
    out = [f'<div class="scroll"><table class="lb" id="lb-{tid}"><thead><tr>{"".join(heads)}</tr></thead><tbody>']
    for body, rows in (("", table["rows"]), (' class="floors"', table["floors"])):
        if body:
            if not rows:
                continue
            out.append(f"</tbody><tbody{body}>")
        for i, row in enumerate(rows):
            m, floor = row["metadata"], row["kind"] == "floor"
            cells = []
            if ranked:
                cells.append('<td class="rank" data-v="" title="a floor: not ranked">\u2013</td>' if floor else _rank_cell(row, mark))
            cells.append(_model_cell(m, floor))
            for spec in T.BOARD_METRICS:
                cells.append(_metric_cell(row["metrics"].get(spec.name), spec))
                if vol and spec.name == T.RANK_METRIC:
                    ci = None if floor else T.volume_ci(row, spec.name)
                    text = T.fmt_ci(ci, spec) if ci else "-"
                    cells.append(f'<td data-v="{e(repr(float(ci[0])) if ci else "")}"><span class="ci">{e(text)}</span></td>')
            n = m.get("n_parameters")
            cells.append(f'<td data-v="{e(T.plain(n if isinstance(n, int) and not isinstance(n, bool) else ""))}">{e(T.params(m))}</td>')
            cells.append(f'<td class="t" data-v="{e(T.plain(m.get("date", "")))}">{e(T.plain(m.get("date", "")))}</td>')
            out.append(f'<tr class="{row["kind"]}" data-i="{i}">{"".join(cells)}</tr>')
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _caption(table: dict) -> str:
    bits = [f"dataset {T.plain(table['revision'] or '?')}", f"manifest {T.plain(table['manifest'])[:12]}"]
    if isinstance(table["n_samples"], int):
        bits.append(f"{table['n_samples']} slices")
    if isinstance(table["n_volumes"], int):
        bits.append(f"{table['n_volumes']} volumes")
    return e(" \u00b7 ".join(bits))


def _legend(metric: str) -> str:
    header = e(METRICS[metric].leaderboard_header or metric)
    items = [
        ("Tables", ("One table per track and split; an entry is a model with its weights (small text under the model; "
                   "hover for the entry's record name). Ranked: <code>test_unseen</code> (volumes no model saw) and "
                   "<code>test_seen</code>. <code>validation</code> and <code>train</code> are listed unranked under each "
                   "track (collapsed) and in the csv files.")),
        ("Values", ("estimate <span class=\"ci\">[95% interval]</span>; the interval is over the split's slices "
                   "(exact or percentile bootstrap). Percentages unless the header says mm, deg or points.")),
        ("Ranks", (f"Entries are ordered by {header}. An entry shares the rank of the entry above it unless the paired "
                  "95% interval of their difference excludes zero (paired bootstrap over slices of the two stored "
                  "prediction files); otherwise its rank is its position. Records that are not on the embedded "
                  "benchmark's manifest cannot be paired: their ranks (marked \u2020) fall back to whether the two "
                  "entries' own intervals overlap. Hover a rank for the paired difference.")),
        ("Slice and volume level", ("Slice-level intervals support claims about these volumes. A claim that a model "
                                   "generalises to unseen volumes (<code>test_unseen</code>) needs the volume-level "
                                   "(cluster bootstrap) interval, which needs at least 5 volumes; atom-mini's few unseen "
                                   "volumes do not support it, so it shows as n/a.")),
        ("Floors", ("Grey rows at the bottom, not ranked, computed by the scorer on the same slices: "
                   "<em>floor: uniform chance</em> is the expected score of uniformly random valid predictions; "
                   "<em>floor: training prior</em> always predicts the most frequent training labels. The ranked "
                   "<code>chance</code> and <code>prior</code> entries are submitted models (one seeded random draw, "
                   "the prior baseline), not the floors.")),
        ("Paper metrics", ("The released ATOM metrics on multi-hot labels: <em>paper acc1</em> = top-5 coarse hit (a "
                          "coarse block of the top 5 is a ground-truth block); <em>paper acc</em> = the released metric, "
                          "which picks the block using the ground truth (the first top-5 block that is a true block) and "
                          "counts a hit when a fine prediction inside it is a true sub-block; <em>paper acck1</em> = "
                          "top-1 coarse and top-1 fine both right (top-1/top-1).")),
        ("Volume-swap drop", ("top-1 coarse accuracy with the slice's own volume minus with another volume: a "
                             "difference of two percentages, in points. Near 0: the answers ignore the volume.")),
        ("Sorting", ("Click a column header: the first click sorts best first (descending where higher is better, "
                    "ascending where lower is better), the next reverses. Floors stay at the bottom.")),
    ]  # fmt: skip
    return '<section class="legend" id="legend"><h2>How to read these tables</h2><dl>' + "".join(
        f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items
    ) + "</dl></section>"


def render_html(groups: dict[str, list[dict]], figures: dict[str, str] | None = None, metric: str = T.RANK_METRIC) -> str:
    """The page; ``figures`` maps a track to its PNG's file name (beside the page)."""
    figures = figures or {}
    used: set[str] = {"contents", "legend"}
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1"><title>ATOM-Bench leaderboards</title>',
             f"<style>{_CSS}</style></head><body><h1>ATOM-Bench leaderboards</h1>",
             ("<p>Generated from <code>submissions/</code> by <code>atom-bench leaderboard</code>; do not edit by hand. "
              "Test splits are ranked; validation and train are shown unranked under each track.</p>")]  # fmt: skip
    if not groups:
        parts.append("<p>No submissions yet.</p>")
    sections, toc = [], []
    for track, tables in sorted(groups.items()):
        tables = [T.complete(t) for t in tables]
        name = e(T.plain(track))
        tid = _anchor(used, track)
        links, body = [], []
        fig = figures.get(track)
        if fig:
            fid = _anchor(used, track, "figure")
            links.append(f'<a href="#{fid}">figure</a>')
            body.append(f'<figure id="{fid}"><img src="{e(fig)}" width="1100" height="390" alt="{name}: top-1 coarse accuracy and '
                        f'volume-swap drop per entry on test_unseen"><figcaption>{name}, test_unseen: top-1 coarse accuracy of '
                        "each entry with its 95% interval, the floors (grey lines) and the best entry as a ceiling "
                        "(green line); right: the volume-swap drop in points.</figcaption></figure>")  # fmt: skip
        for table in (t for t in tables if t["ranked"]):
            aid = _anchor(used, track, table["split"])
            links.append(f'<a href="#{aid}">{e(T.plain(table["split"]))}</a>')
            body.append(f'<h3 id="{aid}">{e(T.plain(table["split"]))} <span class="meta">{_caption(table)}</span></h3>')
            body += [_note(table), _table(table, aid)]
        others = [t for t in tables if not t["ranked"]]
        if others:
            oid = _anchor(used, track, "unranked")
            splits = ", ".join(dict.fromkeys(T.plain(t["split"]) for t in others))
            links.append(f'<a href="#{oid}">{e(splits)} (unranked)</a>')
            body.append(f'<details id="{oid}"><summary>{e(splits)}: not ranked ({len(others)} table{"s" * (len(others) > 1)}; '
                        "validation is for model selection, train is what models fit)</summary>")  # fmt: skip
            for table in others:
                aid = _anchor(used, track, table["split"])
                body.append(f'<h3 id="{aid}">{e(T.plain(table["split"]))} <span class="meta">{_caption(table)}</span></h3>')
                body.append(_table(table, aid))
            body.append("</details>")
        toc.append(f'<li><a href="#{tid}"><strong>{name}</strong></a>: ' + " \u00b7 ".join(links) + "</li>")
        sections.append(f'<section class="track" id="{tid}"><h2>{name}</h2>' + "\n".join(body) + "</section>")
    if groups:
        parts.append('<nav class="toc" id="contents"><strong>Contents</strong><ul>' + "".join(toc)
                     + '<li><a href="#legend">How to read these tables</a></li></ul></nav>')  # fmt: skip
        parts.append(_legend(metric))
    parts += sections
    parts += [f"<script>{_JS}</script>", "</body></html>", ""]
    return "\n".join(parts)
