"""Per-sample metric functions (pure numpy; ``docs/PROTOCOL.md`` section 7) and the metric registry.

Every function maps aligned arrays (one row per sample) to one value per sample: a boolean
hit or a float error. Aggregation (means, medians, confidence intervals) and breakdowns live
in :mod:`atom_bench.eval.scoring`; keeping the per-sample step separate makes each metric easy to
check by hand.

:data:`METRICS` holds one :class:`MetricSpec` per metric: its per-sample values, the columns it
needs, its statistic, unit and leaderboard header. The scorer (values, intervals, skip reasons,
the printed table) and the leaderboards read only the specs, so a metric is added there alone.

Units: positions in millimetres of the scanner frame (RAS+), angles in degrees, labels as
integers (``high`` 0..26, ``low`` 0..728).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from atom_bench.core.labels import N_HIGH, N_LOW, fine_block_centers_vox

Bool = NDArray[np.bool_]
Float = NDArray[np.float64]
Int = NDArray[np.int64]

FINE_PER_COARSE = N_LOW // N_HIGH  # sub-blocks of a coarse block: low // FINE_PER_COARSE == high


def topk_hit(true: ArrayLike, ranked: ArrayLike) -> Bool:
    """Whether the true label is among the ranked predictions.

    Args:
        true: ``(N,)`` true labels.
        ranked: ``(N, k)`` predicted labels, best first (or ``(N,)`` for top-1).

    Returns:
        ``(N,)`` booleans; the mean is top-``k`` accuracy (a fraction in [0, 1]).
    """
    true = np.asarray(true, dtype=np.int64)
    ranked = np.asarray(ranked, dtype=np.int64)
    if ranked.ndim == 1:
        return ranked == true
    return (ranked == true[:, None]).any(axis=1)


def block_centers_mm(low: ArrayLike, volume_index: ArrayLike, sizes: ArrayLike, affines: ArrayLike) -> Float:
    """Scanner-frame centre (mm) of each sample's predicted fine block.

    Args:
        low: ``(N,)`` predicted fine labels (0..728).
        volume_index: ``(N,)`` row of each sample's volume in ``sizes`` / ``affines``.
        sizes: ``(V,)`` cube side ``S`` of each volume, in voxels.
        affines: ``(V, 4, 4)`` cube affines (voxel -> mm).

    Returns:
        ``(N, 3)`` millimetres: ``A @ [fine_block_centers_vox(S)[low], 1]``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    affines = np.asarray(affines, dtype=np.float64).reshape(-1, 4, 4)
    table = np.empty((len(sizes), N_LOW, 3))
    for size in np.unique(sizes):
        rows = np.flatnonzero(sizes == size)
        vox = fine_block_centers_vox(int(size))  # (N_LOW, 3)
        table[rows] = np.einsum("vij,kj->vki", affines[rows, :3, :3], vox) + affines[rows, None, :3, 3]
    return table[np.asarray(volume_index, dtype=np.int64), np.asarray(low, dtype=np.int64)]


def center_distance_mm(true_mm: ArrayLike, pred_mm: ArrayLike) -> Float:
    """Euclidean distance (mm) between true and predicted slice centres, ``(N, 3)`` each."""
    diff = np.asarray(true_mm, dtype=np.float64) - np.asarray(pred_mm, dtype=np.float64)
    return np.sqrt(np.einsum("ij,ij->i", diff, diff))


def plane_angle_deg(true_normal: ArrayLike, pred_normal: ArrayLike) -> Float:
    """Angle (degrees, 0..90) between the true and predicted slice planes.

    A plane's normal has no sign, so ``n`` and ``-n`` score the same:
    ``degrees(arccos(|n_true . n_pred| / (|n_true| |n_pred|)))``.
    """
    a = np.asarray(true_normal, dtype=np.float64)
    b = np.asarray(pred_normal, dtype=np.float64)
    cos = np.abs(np.einsum("ij,ij->i", a, b)) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return np.degrees(np.arccos(np.clip(cos, 0.0, 1.0)))


class MultiHot:
    """Ragged positive-label lists in CSR form: row ``i`` is ``values[offsets[i]:offsets[i+1]]``."""

    def __init__(self, values: ArrayLike, offsets: ArrayLike) -> None:
        self.values = np.asarray(values, dtype=np.int64)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        rows = np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.offsets))
        if len(self.values) == 0 or self.values.max() < 63:  # small label space: one bit mask per row
            bits = np.zeros(len(self), dtype=np.int64)
            np.bitwise_or.at(bits, rows, np.left_shift(1, self.values))
            self._bits: NDArray[np.int64] | None = bits
        else:
            self._bits = None
            self._keys = np.sort(rows * N_LOW + self.values)  # labels are < N_LOW: unique keys per row

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]]) -> MultiHot:
        """Build from a sequence of label lists (possibly empty)."""
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        flat = [int(v) for r in rows for v in r]
        return cls(np.asarray(flat, dtype=np.int64), np.concatenate([[0], np.cumsum(lengths)]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def take(self, rows: ArrayLike) -> MultiHot:
        """The lists of the given rows, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        lengths = ends - starts
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        index = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return MultiHot(self.values[index], offsets)

    def contains(self, query: ArrayLike) -> Bool:
        """``(N, k)`` (or ``(N,)``) booleans: is ``query[i, j]`` a positive label of row ``i``.

        Negative queries (meaning "no prediction") are never contained.
        """
        query = np.asarray(query, dtype=np.int64)
        valid = query >= 0
        shape = (-1,) + (1,) * (query.ndim - 1)
        if self._bits is not None:
            ok = valid & (query < 63)
            return ok & ((self._bits.reshape(shape) >> np.where(ok, query, 0)) & 1).astype(bool)
        keys = self._keys
        wanted = np.arange(len(self), dtype=np.int64).reshape(shape) * N_LOW + query
        if len(keys) == 0:
            return np.zeros(query.shape, dtype=bool)
        at = np.searchsorted(keys, wanted)
        found = keys[np.minimum(at, len(keys) - 1)]
        return (at < len(keys)) & (found == wanted) & valid


def paper_hits(
    paper_high: MultiHot,
    paper_low: MultiHot,
    high: ArrayLike,
    low: ArrayLike,
    high_top5: ArrayLike | None = None,
    low_top5: ArrayLike | None = None,
) -> dict[str, Bool]:
    """Per-sample hits of the released ATOM metrics on multi-hot labels (spec section 7).

    ``G`` = ``paper_high`` of the sample; ``S_a`` = sub-blocks ``b`` with ``27 a + b`` in
    ``paper_low``. ``P5`` = ``high_top5``, ``P1`` = ``high``. The sub-block predictions for a
    coarse block ``a`` are the entries of the ranked fine list (``low_top5``, else ``[low]``)
    whose ``// 27`` is ``a``, in rank order; their sub-block is ``% 27``.

    Returns a dict of ``(N,)`` booleans:

    - ``paper_acck1``: ``P1 in G`` and the first sub-block prediction for ``P1`` is in ``S_P1``.
    - ``paper_acc1`` (needs ``high_top5``): ``P5`` meets ``G`` (coarse top-5 hit).
    - ``paper_acc`` (needs both top-5 lists): released metric, with ground-truth block choice:
      ``a*`` = first element of ``P5`` in ``G``; hit when some sub-block prediction for ``a*``
      is in ``S_a*``.
    - ``paper_acc_noleak`` (needs ``low_top5``): the same with ``a* = P1`` (no ground truth used
      to pick the block): ``P1 in G`` and some sub-block prediction for ``P1`` is in ``S_P1``.
    """
    high = np.asarray(high, dtype=np.int64)
    low = np.asarray(low, dtype=np.int64)
    ranked_low = np.asarray(low_top5, dtype=np.int64) if low_top5 is not None else low[:, None]
    rows = np.arange(len(high))
    low_pos = paper_low.contains(ranked_low)  # (N, k): ranked fine label is a positive (block, sub-block)
    block_of = ranked_low // FINE_PER_COARSE
    in_p1 = block_of == high[:, None]
    first = np.argmax(in_p1, axis=1)  # Q1 for block P1: first ranked fine label inside P1
    q1_hit = in_p1[rows, first] & low_pos[rows, first]
    if high_top5 is not None:
        p5 = np.asarray(high_top5, dtype=np.int64)
        in_g = paper_high.contains(p5)
        p1_in_g = np.where(p5[:, 0] == high, in_g[:, 0], paper_high.contains(high))
    else:
        p1_in_g = paper_high.contains(high)
    out = {"paper_acck1": p1_in_g & q1_hit}
    if low_top5 is not None:
        out["paper_acc_noleak"] = p1_in_g & (low_pos & in_p1).any(axis=1)
    if high_top5 is not None:
        out["paper_acc1"] = in_g.any(axis=1)
        if low_top5 is not None:
            chosen = np.where(out["paper_acc1"], p5[rows, np.argmax(in_g, axis=1)], -1)
            out["paper_acc"] = out["paper_acc1"] & (low_pos & (block_of == chosen[:, None])).any(axis=1)
    return out


# -- metric specs: one definition per metric, read by the scorer, its table and the leaderboards --

Aggregate = Literal["proportion", "mean", "median"]
Unit = Literal["fraction", "mm", "degrees", "points"]

#: Display multiplier and suffix of each unit. ``points`` is a difference of two fractions (the
#: volume-reliance drops), so it is shown like a fraction, in percentage points.
UNIT_DISPLAY: dict[str, tuple[float, str]] = {
    "fraction": (100.0, "%"), "points": (100.0, " pts"), "mm": (1.0, " mm"), "degrees": (1.0, " deg"),
}  # fmt: skip

#: Where a requirement's column lives, named as a skip reason says it.
REQUIREMENT_SOURCES: dict[str, str] = {
    "pred": "predictions", "labels": "labels", "volumes": "volumes table", "diagnostic": "evaluation diagnostic",
}  # fmt: skip


@dataclass(frozen=True, eq=False)
class SampleContext:
    """One evaluation's row-aligned labels and prediction arrays, and the intermediate values
    that several metrics share (each computed on first use, so once per evaluation).

    ``pred`` maps prediction columns (``high``, ``low``, and whichever of ``high_top5``,
    ``low_top5``, ``center_mm``, ``normal_mm`` were given) to arrays. Label fields are ``None``
    when the labels lack them, the volume fields when there is no volumes table. A metric's
    ``compute`` runs only when its requirements are met, so it may rely on what they name.
    """

    pred: Mapping[str, NDArray[Any]]
    high: Int
    low: Int
    center_mm: Float | None = None
    normal_mm: Float | None = None
    paper_high: MultiHot | None = None
    paper_low: MultiHot | None = None
    volume_index: Int | None = None
    sizes: Int | None = None
    affines: Float | None = None

    @cached_property
    def dist_mm(self) -> Float:
        """Centre error (mm) of the predicted ``center_mm``, else of the predicted fine block's centre."""
        where = self.pred.get("center_mm")
        if where is None:
            where = block_centers_mm(self.pred["low"], self.volume_index, self.sizes, self.affines)
        return center_distance_mm(self.center_mm, where)

    @cached_property
    def angle_deg(self) -> Float:
        """Plane angle (degrees) between the true and predicted normals."""
        return plane_angle_deg(self.normal_mm, self.pred["normal_mm"])

    @cached_property
    def paper(self) -> dict[str, Bool]:
        """:func:`paper_hits` with whichever top-5 lists were given."""
        pred = self.pred
        return paper_hits(self.paper_high, self.paper_low, pred["high"], pred["low"], pred.get("high_top5"), pred.get("low_top5"))


Compute = Callable[[SampleContext], NDArray[Any]]


def _split(requirement: str) -> tuple[str, str]:
    source, _, column = requirement.strip().partition(":")
    return source, column


@dataclass(frozen=True)
class MetricSpec:
    """Everything about one metric; the scorer, its table and the leaderboards all read it.

    Attributes:
        name: the key in a result's ``metrics`` and ``skipped``.
        compute: per-sample values (booleans or floats) from a :class:`SampleContext`; ``None``
            for a metric another step stores in the scores (the volume-reliance drops).
        requires: ``"source:column"`` entries (sources: :data:`REQUIREMENT_SOURCES`); ``"a | b"``
            is met by either. The scorer skips the metric unless every entry is met, and the
            reason it records names the unmet columns (:meth:`skip_reason`).
        aggregate: the statistic of the per-sample values, and so its interval
            (:mod:`atom_bench.eval.intervals`).
        higher_is_better, label: direction and a short human description.
        unit: of the aggregated value (``fraction`` is in [0, 1]).
        leaderboard_header: the metric's leaderboard column header; ``None`` keeps it off.
    """

    name: str
    compute: Compute | None
    requires: tuple[str, ...]
    aggregate: Aggregate
    higher_is_better: bool
    label: str
    unit: Unit
    leaderboard_header: str | None = None

    def __post_init__(self) -> None:
        if self.aggregate not in ("proportion", "mean", "median"):
            raise ValueError(f"metric {self.name}: unknown aggregate {self.aggregate!r}")
        if self.unit not in UNIT_DISPLAY:
            raise ValueError(f"metric {self.name}: unknown unit {self.unit!r}")
        for source, column in self.columns:
            if source not in REQUIREMENT_SOURCES or not column:
                raise ValueError(f"metric {self.name}: requirement {source}:{column} is not 'source:column'")

    @property
    def columns(self) -> tuple[tuple[str, str], ...]:
        """Every ``(source, column)`` the requirements name, alternatives included."""
        return tuple(_split(alt) for req in self.requires for alt in req.split("|"))

    @property
    def scale(self) -> float:
        """Multiplier from the stored value to the displayed one (fractions as percentages)."""
        return UNIT_DISPLAY[self.unit][0]

    def unmet(self, available: Collection[str]) -> tuple[str, ...]:
        """The requirements that none of the ``available`` ``"source:column"`` entries meets."""
        return tuple(req for req in self.requires if not any(alt.strip() in available for alt in req.split("|")))

    def skip_reason(self, available: Collection[str]) -> str | None:
        """Why the metric cannot be scored from ``available``, or ``None`` when it can.

        The first unmet requirement decides: with alternatives, it names them all; otherwise it
        names every unmet column of the same source (``no paper_high/paper_low in the labels``).
        """
        unmet = self.unmet(available)
        if not unmet:
            return None
        first = [_split(alt) for alt in unmet[0].split("|")]
        if len(first) > 1:
            return "neither " + " nor ".join(f"{col} in the {REQUIREMENT_SOURCES[src]}" for src, col in first)
        source = first[0][0]
        columns = [col for src, col in (_split(req) for req in unmet if "|" not in req) if src == source]
        return f"no {'/'.join(columns)} in the {REQUIREMENT_SOURCES[source]}"


def _paper(key: str) -> Compute:
    return lambda ctx: ctx.paper[key]


_PAPER_LABELS = ("labels:paper_high", "labels:paper_low")
_CENTRES = ("labels:center_mm", "pred:center_mm | volumes:affine")  # predicted centre, else the block's
_NORMALS = ("labels:normal_mm", "pred:normal_mm")
_RELIANCE = ("diagnostic:volume_reliance",)  # atom_bench.models.run.reliance_metrics stores these

# fields: name, compute, requires, aggregate, higher_is_better, label, unit, leaderboard_header
_SPECS = (
    MetricSpec("top1_high", lambda ctx: ctx.pred["high"] == ctx.high, ("pred:high", "labels:high_label"),
               "proportion", True, f"top-1 coarse ({N_HIGH})", "fraction", "top-1 coarse %"),
    MetricSpec("top1_low", lambda ctx: ctx.pred["low"] == ctx.low, ("pred:low", "labels:low_label"),
               "proportion", True, f"top-1 fine ({N_LOW})", "fraction", "top-1 fine %"),
    MetricSpec("top5_high", lambda ctx: topk_hit(ctx.high, ctx.pred["high_top5"]), ("pred:high_top5", "labels:high_label"),
               "proportion", True, "top-5 coarse", "fraction", "top-5 coarse %"),
    MetricSpec("top5_low", lambda ctx: topk_hit(ctx.low, ctx.pred["low_top5"]), ("pred:low_top5", "labels:low_label"),
               "proportion", True, "top-5 fine", "fraction", "top-5 fine %"),
    MetricSpec("dist_mm_mean", lambda ctx: ctx.dist_mm, _CENTRES, "mean", False, "centre error, mean", "mm"),
    MetricSpec("dist_mm_median", lambda ctx: ctx.dist_mm, _CENTRES, "median", False, "centre error, median", "mm",
               "median error mm"),
    MetricSpec("within_5mm", lambda ctx: ctx.dist_mm <= 5.0, _CENTRES, "proportion", True, "centre error <= 5 mm", "fraction"),
    MetricSpec("within_10mm", lambda ctx: ctx.dist_mm <= 10.0, _CENTRES, "proportion", True, "centre error <= 10 mm",
               "fraction", "<= 10 mm %"),
    MetricSpec("angle_deg_mean", lambda ctx: ctx.angle_deg, _NORMALS, "mean", False, "plane angle, mean", "degrees"),
    MetricSpec("angle_deg_median", lambda ctx: ctx.angle_deg, _NORMALS, "median", False, "plane angle, median", "degrees",
               "median angle deg"),
    MetricSpec("paper_acc1", _paper("paper_acc1"), ("pred:high_top5", *_PAPER_LABELS),
               "proportion", True, "paper acc1 (top-5 coarse)", "fraction", "paper acc1 %"),
    MetricSpec("paper_acc", _paper("paper_acc"), ("pred:high_top5", "pred:low_top5", *_PAPER_LABELS),
               "proportion", True, "paper acc (GT-chosen block)", "fraction", "paper acc %"),
    MetricSpec("paper_acc_noleak", _paper("paper_acc_noleak"), ("pred:low_top5", *_PAPER_LABELS),
               "proportion", True, "paper acc, top-1 block", "fraction"),
    MetricSpec("paper_acck1", _paper("paper_acck1"), ("pred:high", "pred:low", *_PAPER_LABELS),
               "proportion", True, "paper acck1 (top-1/top-1)", "fraction", "paper acck1 %"),
    MetricSpec("volume_swap_drop_high", None, _RELIANCE, "mean", True, "top-1 coarse drop, volume swapped", "points",
               "volume-swap drop (coarse), points"),
    MetricSpec("volume_blank_drop_high", None, _RELIANCE, "mean", True, "top-1 coarse drop, volume blanked", "points"),
)  # fmt: skip

#: Every metric by name, in report order (the leaderboards keep this order too).
METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in _SPECS}
if len(METRICS) != len(_SPECS):
    raise ValueError("two metric specs share a name")
#: The metrics the scorer computes from predictions and labels.
COMPUTED_METRICS: dict[str, MetricSpec] = {name: spec for name, spec in METRICS.items() if spec.compute is not None}


__all__ = [
    "COMPUTED_METRICS",
    "FINE_PER_COARSE",
    "METRICS",
    "N_HIGH",
    "N_LOW",
    "REQUIREMENT_SOURCES",
    "UNIT_DISPLAY",
    "MetricSpec",
    "MultiHot",
    "SampleContext",
    "block_centers_mm",
    "center_distance_mm",
    "paper_hits",
    "plane_angle_deg",
    "topk_hit",
]
