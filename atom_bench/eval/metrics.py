"""Per-sample metric functions (pure numpy; ``docs/PROTOCOL.md`` section 7).

Every function maps aligned arrays (one row per sample) to one value per sample: a boolean
hit or a float error. Aggregation (means, medians, confidence intervals) and breakdowns live
in :mod:`atom_bench.eval.scoring`; keeping the per-sample step separate makes each metric easy to
check by hand.

Units: positions in millimetres of the scanner frame (RAS+), angles in degrees, labels as
integers (``high`` 0..26, ``low`` 0..728).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import numpy as np
from numpy.typing import ArrayLike, NDArray

from atom_bench.core.labels import N_HIGH, N_LOW, fine_block_centers_vox

Bool = NDArray[np.bool_]
Float = NDArray[np.float64]
Int = NDArray[np.int64]


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
        vox = fine_block_centers_vox(int(size))  # (729, 3)
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
    block_of = ranked_low // 27
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


@dataclass(frozen=True)
class Metric:
    """How a metric aggregates a per-sample value (see PROTOCOL section 7)."""

    source: str  # per-sample value it aggregates
    kind: str  # proportion | mean | median
    unit: str
    higher_is_better: bool
    label: str


METRICS: dict[str, Metric] = {
    "top1_high": Metric("top1_high", "proportion", "fraction", True, "top-1 coarse (27)"),
    "top1_low": Metric("top1_low", "proportion", "fraction", True, "top-1 fine (729)"),
    "top5_high": Metric("top5_high", "proportion", "fraction", True, "top-5 coarse"),
    "top5_low": Metric("top5_low", "proportion", "fraction", True, "top-5 fine"),
    "dist_mm_mean": Metric("dist_mm", "mean", "mm", False, "centre error, mean"),
    "dist_mm_median": Metric("dist_mm", "median", "mm", False, "centre error, median"),
    "within_5mm": Metric("within_5mm", "proportion", "fraction", True, "centre error <= 5 mm"),
    "within_10mm": Metric("within_10mm", "proportion", "fraction", True, "centre error <= 10 mm"),
    "angle_deg_mean": Metric("angle_deg", "mean", "degrees", False, "plane angle, mean"),
    "angle_deg_median": Metric("angle_deg", "median", "degrees", False, "plane angle, median"),
    "paper_acc1": Metric("paper_acc1", "proportion", "fraction", True, "paper acc1 (top-5 coarse)"),
    "paper_acc": Metric("paper_acc", "proportion", "fraction", True, "paper acc (GT-chosen block)"),
    "paper_acc_noleak": Metric("paper_acc_noleak", "proportion", "fraction", True, "paper acc, top-1 block"),
    "paper_acck1": Metric("paper_acck1", "proportion", "fraction", True, "paper acck1 (top-1/top-1)"),
}


__all__ = [
    "METRICS",
    "Metric",
    "N_HIGH",
    "N_LOW",
    "MultiHot",
    "block_centers_mm",
    "center_distance_mm",
    "paper_hits",
    "plane_angle_deg",
    "topk_hit",
]
