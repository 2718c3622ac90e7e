"""The leaderboard's figures: one PNG per track, from its ``test_unseen`` table.

Left: top-1 coarse accuracy (%) of each entry with its 95% interval as error bars, against the
uniform-chance and training-prior floors (horizontal lines) and the best entry's score as a
ceiling line (on clean slices that is the pose search; no model is picked by its name). Right: the volume-swap drop (points, a
difference of two percentages) with its interval; zero means the answers ignore the volume.

The bytes are deterministic for a given matplotlib (``constraints.txt`` pins it): the default
style whatever the user's matplotlibrc, no ``Software`` chunk, no timestamps. Record fields are
drawn as plain text (no mathtext: a model name ``$x$`` is shown as typed).
"""

from __future__ import annotations

import io
import warnings

from atom_bench.board.tables import RANK_METRIC, model_label, plain
from atom_bench.eval.metrics import METRICS

DROP_METRIC = "volume_swap_drop_high"
FIGURE_SPLIT = "test_unseen"
_STYLE = {
    "font.family": "DejaVu Sans", "font.size": 9, "axes.titlesize": 10, "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "axes.grid.axis": "y", "grid.alpha": 0.35,
    "svg.hashsalt": "atom-bench", "path.simplify": False,
}  # fmt: skip
_BLUE, _GREEN, _GREY, _RED = "#1f5fa8", "#2a8a3e", "#777777", "#b0413e"


def figure_table(tables: list[dict]) -> dict | None:
    """The table a track's figure shows: its ``test_unseen`` table with the most entries."""
    candidates = [t for t in tables if t["split"] == FIGURE_SPLIT]
    return max(candidates, key=lambda t: len(t["rows"])) if candidates else None


def _short(text: str, width: int = 22) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _labels(rows: list[dict]) -> list[str]:
    names = [model_label(r["metadata"]) or plain(r["metadata"]["name"]) for r in rows]
    seen = [n for n in names if names.count(n) > 1]
    return [_short(f"{n} ({plain(r['metadata']['name'])})" if n in seen else n) for n, r in zip(names, rows)]


def _points(rows: list[dict], metric: str) -> tuple[list[int], list[float], list[list[float]]]:
    """Positions, values and ``[below, above]`` error lengths (display units) of rows with a value."""
    scale = METRICS[metric].scale
    xs, ys, err = [], [], [[], []]
    for i, row in enumerate(rows):
        cell = row["metrics"].get(metric) or {}
        if cell.get("value") is None:
            continue
        value = cell["value"] * scale
        lo, hi = (cell.get("ci") or [None, None])[:2]
        xs.append(i)
        ys.append(value)
        err[0].append(max(value - lo * scale, 0.0) if lo is not None else 0.0)
        err[1].append(max(hi * scale - value, 0.0) if hi is not None else 0.0)
    return xs, ys, err


def render_figure(track: str, table: dict) -> bytes:
    """The PNG of one track's ``test_unseen`` table (entries in rank order)."""
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = table["rows"]
    labels = _labels(rows)
    with warnings.catch_warnings(), matplotlib.style.context(["default", _STYLE]):
        warnings.simplefilter("ignore")  # a glyph the font lacks is drawn as a box, not an error
        fig = Figure(figsize=(11.0, 3.9), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        left, right = fig.subplots(1, 2, width_ratios=[3, 2])
        scale = METRICS[RANK_METRIC].scale
        xs, ys, err = _points(rows, RANK_METRIC)
        best = max(range(len(xs)), key=lambda k: ys[k]) if xs else None  # the ceiling: whoever is best, no name decides
        colours = [_GREEN if k == best else _BLUE for k in range(len(xs))]
        left.errorbar(xs, ys, yerr=err, fmt="none", ecolor=_GREY, elinewidth=1.2, capsize=4, zorder=2)
        left.scatter(xs, ys, c=colours, s=36, zorder=3)
        floors = {f["metadata"]["name"]: (f["metrics"].get(RANK_METRIC) or {}).get("value") for f in table["floors"]}
        for name, style, text in (("chance", (0, (4, 3)), "uniform chance"), ("prior", (0, (1, 2)), "training prior")):
            if floors.get(name) is not None:
                left.axhline(floors[name] * scale, color=_GREY, linestyle=style, linewidth=1.2, label=f"floor: {text} ({floors[name] * scale:.1f}%)")
        if best is not None:
            leader = plain(model_label(rows[xs[best]]["metadata"]))
            left.axhline(ys[best], color=_GREEN, linestyle=(0, (6, 2, 1, 2)), linewidth=1.2,
                         label=f"ceiling: best entry, {leader} ({ys[best]:.1f}%)")  # fmt: skip
        left.set_ylim(0, 100)
        left.set_ylabel("top-1 coarse accuracy (%)")
        left.set_title(f"{plain(track)}, {FIGURE_SPLIT}: top-1 coarse accuracy, 95% interval", parse_math=False)
        if left.get_legend_handles_labels()[0]:
            left.legend(loc="best", fontsize=8, framealpha=0.9, edgecolor="#dddddd")
        dx, dy, derr = _points(rows, DROP_METRIC)
        right.axhline(0, color=_GREY, linewidth=1)
        if dx:
            right.errorbar(dx, dy, yerr=derr, fmt="o", color=_RED, ecolor=_GREY, elinewidth=1.2, capsize=4, markersize=5)
            lows = [y - e for y, e in zip(dy, derr[0])]
            highs = [y + e for y, e in zip(dy, derr[1])]
            pad = max(2.0, 0.1 * (max(highs) - min(lows)))
            right.set_ylim(min(0.0, min(lows)) - pad, max(0.0, max(highs)) + pad)
        else:
            right.text(0.5, 0.5, "no volume-swap diagnostic recorded", ha="center", va="center", transform=right.transAxes, color=_GREY)
        right.set_ylabel("own volume minus swapped (points)")
        right.set_title("volume-swap drop (points), 95% interval", parse_math=False)
        for ax in (left, right):
            ax.set_xlim(-0.6, max(len(rows), 1) - 0.4)
            ax.set_xticks(range(len(rows)))
            ax.set_xticklabels(labels, rotation=30 if len(rows) > 4 else 0, ha="right" if len(rows) > 4 else "center", parse_math=False)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
