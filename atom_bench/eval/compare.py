"""Is model A better than model B on the same split? Paired differences with paired bootstrap
intervals and p-values, over slices and over volumes (``docs/PROTOCOL.md`` section 8).

Both prediction files are scored against the same labels, sample by sample, so every metric has
a per-sample difference. Two resampling schemes:

- **slice level**: resample slices with replacement (``RESAMPLES`` times); right when the claim is
  about these volumes.
- **volume level** (cluster bootstrap): resample volumes with replacement, then slices within
  each drawn volume; right for a claim about unseen volumes in general (``test_unseen``), since
  slices of one volume are not independent. With fewer than :data:`MIN_VOLUMES` volumes it is
  not computed: such an interval would say more about the resampling than about the models.

The interval is the percentile interval of the resampled differences; the two-sided p-value is
that of the bootstrap test with the resampled differences centred on the observed one
(``P(|d* - d| >= |d|)``, at least ``1 / (RESAMPLES + 1)``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from atom_bench.data.benchmark import BenchmarkLike
from atom_bench.errors import PredictionError
from atom_bench.eval.intervals import MIN_VOLUMES, cluster_draws
from atom_bench.eval.metrics import COMPUTED_METRICS
from atom_bench.eval.predictions import file_meta
from atom_bench.eval.scoring import Evaluator

COMPARISON_FORMAT = "atom-bench-comparison/1"
RESAMPLES = 2000


def _statistic(values: np.ndarray, aggregate: str) -> float:
    return float(np.median(values)) if aggregate == "median" else float(np.mean(values))


def _resampled_difference(a: np.ndarray, b: np.ndarray, aggregate: str, draws: list[np.ndarray]) -> np.ndarray:
    if aggregate != "median":  # a mean of differences is the difference of means: one pass
        diff = a - b
        return np.array([diff[rows].mean() for rows in draws])
    return np.array([np.median(a[rows]) - np.median(b[rows]) for rows in draws])


def _summary(observed: float, resampled: np.ndarray, confidence: float) -> dict:
    alpha = 1.0 - confidence
    lo, hi = np.quantile(resampled, [alpha / 2, 1 - alpha / 2])
    extreme = np.sum(np.abs(resampled - observed) >= abs(observed) - 1e-15)
    p = max(float(extreme) / len(resampled), 1.0 / (len(resampled) + 1)) if observed != 0 else 1.0
    return {"ci": [float(lo), float(hi)], "p": min(p, 1.0)}


def slice_draws(n: int, rng: np.random.Generator, resamples: int) -> list[np.ndarray]:
    """Row indices of ``resamples`` slice-level bootstrap samples of ``n`` slices."""
    return [rng.integers(0, n, size=n) for _ in range(resamples)]


def compare_arrays(
    evaluator: Evaluator, pred_a: dict[str, np.ndarray], pred_b: dict[str, np.ndarray], *,
    confidence: float = 0.95, seed: int = 0, resamples: int = RESAMPLES, min_volumes: int = MIN_VOLUMES,
) -> dict:  # fmt: skip
    """Paired comparison of two prediction arrays aligned with the evaluator's labels.

    Returns a JSON-ready dict: per metric both values, the difference ``A - B``, its slice-level
    interval and p-value, and the volume-level ones (or why they are not given).
    """
    values_a, values_b = evaluator.per_sample(pred_a), evaluator.per_sample(pred_b)
    rng = np.random.default_rng([seed, 2406])
    draws = slice_draws(evaluator.n, rng, resamples)
    codes = evaluator.groups.get("volume_id", (None, []))[0]
    n_volumes = 0 if codes is None else len(np.unique(codes))
    cluster = cluster_draws(codes, rng, resamples) if n_volumes >= min_volumes else None
    metrics = {}
    for name, spec in COMPUTED_METRICS.items():
        if name not in values_a or name not in values_b:
            continue
        a, b = (np.asarray(v[name], dtype=np.float64) for v in (values_a, values_b))
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            continue
        observed = _statistic(a, spec.aggregate) - _statistic(b, spec.aggregate)
        entry = {
            "a": _statistic(a, spec.aggregate), "b": _statistic(b, spec.aggregate), "difference": observed,
            "higher_is_better": spec.higher_is_better, "unit": spec.unit,
            "slice": _summary(observed, _resampled_difference(a, b, spec.aggregate, draws), confidence),
        }  # fmt: skip
        if cluster is not None:
            entry["volume"] = _summary(observed, _resampled_difference(a, b, spec.aggregate, cluster), confidence)
        else:
            entry["volume"] = {"note": f"not meaningful with {n_volumes} volume(s); needs at least {min_volumes}"}
        metrics[name] = entry
    return {
        "format": COMPARISON_FORMAT, **evaluator.info, "n_samples": evaluator.n, "n_volumes": n_volumes,
        "confidence": confidence, "resamples": resamples, "seed": seed, "metrics": metrics,
    }  # fmt: skip


def compare_files(
    path_a: str | os.PathLike[str], path_b: str | os.PathLike[str], *, root: BenchmarkLike = None,
    labels: str | os.PathLike[str] | None = None, **kwargs,
) -> dict:  # fmt: skip
    """Paired comparison of two prediction files for the same split (see :func:`compare_arrays`)."""
    meta_a, meta_b = file_meta(path_a), file_meta(path_b)
    for key in ("track", "split"):
        if meta_a.get(key) != meta_b.get(key):
            raise PredictionError(
                f"{Path(path_a).name} is for {key} {meta_a.get(key)!r} and {Path(path_b).name} for {meta_b.get(key)!r}; "
                "compare predictions of the same split"
            )
    evaluator = Evaluator.from_benchmark(meta_a["track"], meta_a["split"], root=root, labels=labels)
    result = compare_arrays(evaluator, evaluator.read_aligned(path_a), evaluator.read_aligned(path_b), **kwargs)
    return {**result, "a": str(path_a), "b": str(path_b)}


def better(entry: dict, level: str = "slice") -> int:
    """+1 when A is better than B with the interval excluding zero at ``level``, -1 when worse, 0 otherwise."""
    ci = entry.get(level, {}).get("ci")
    if not ci or ci[0] <= 0 <= ci[1]:
        return 0
    sign = 1 if entry["difference"] > 0 else -1
    return sign if entry["higher_is_better"] else -sign


def render_comparison(result: dict):
    """A rich table: each metric, A, B, the difference with its slice- (and volume-) level interval."""
    from rich.table import Table
    from rich.text import Text

    with_volumes = any("ci" in entry["volume"] for entry in result["metrics"].values())
    table = Table(title=Text(f"{result['track']}/{result['split']}: A = {result['a']}, B = {result['b']} "
                             f"({result['n_samples']} samples, {result['n_volumes']} volumes)"))  # fmt: skip
    columns = ["metric", "A", "B", "A - B", "slice 95% CI", "p"] + (["volume 95% CI", "p (volume)"] if with_volumes else []) + ["verdict"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("metric", "verdict") else "right")
    for name, entry in result["metrics"].items():
        scale = COMPUTED_METRICS[name].scale

        def ci(part: dict) -> str:
            return "-" if "ci" not in part else f"[{part['ci'][0] * scale:.1f}, {part['ci'][1] * scale:.1f}]"

        cells = [name, f"{entry['a'] * scale:.1f}", f"{entry['b'] * scale:.1f}", f"{entry['difference'] * scale:+.1f}",
                 ci(entry["slice"]), f"{entry['slice']['p']:.2g}"]  # fmt: skip
        if with_volumes:
            cells += [ci(entry["volume"]), f"{entry['volume']['p']:.2g}" if "p" in entry["volume"] else "-"]
        cells.append({1: "A better", -1: "B better", 0: "no difference shown"}[better(entry)])
        table.add_row(*cells)
    if not with_volumes:
        table.caption = f"volume level: not meaningful with {result['n_volumes']} volume(s) (needs {MIN_VOLUMES})"
    return table
