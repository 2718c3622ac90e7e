"""Grouped statistics with 95% percentile-bootstrap intervals, vectorised over groups (private).

The interval of a statistic is the percentile interval of the sample bootstrap (resample the
``n`` samples of a group with replacement, recompute, take the 2.5% and 97.5% quantiles).
Where that distribution has a closed form it is used exactly, without Monte Carlo noise:

- **proportion** (mean of 0/1 hits): ``n`` times the resampled mean is ``Binomial(n, p)``,
  so the bounds are ``binom.ppf(q, n, p) / n``.
- **median** (lower median, rank ``m = ceil(n / 2)``): the resampled median is at most the
  ``j``-th smallest value exactly when at least ``m`` of the ``n`` draws fall among the
  ``j`` smallest, with probability ``P(Binomial(n, j / n) >= m)``; the bounds are the order
  statistics where this reaches 2.5% and 97.5%.
- **mean** of a continuous value: Monte Carlo (``MC_RESAMPLES`` resamples from a generator
  seeded by ``seed`` and the group's key) for groups of at most ``MC_MAX_N`` samples; above
  that the bootstrap distribution of the mean is its normal limit
  ``N(mean, s^2 / n)`` with ``s`` the plug-in standard deviation.
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy import stats

MC_MAX_N = 200
MC_RESAMPLES = 2000
KINDS = ("proportion", "mean", "median")


def rng_for(seed: int, key: str) -> np.random.Generator:
    """The generator of one named statistic: draws do not depend on the order of calls."""
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def grouped(
    x: np.ndarray,
    codes: np.ndarray,
    n_groups: int,
    kind: str,
    *,
    confidence: float = 0.95,
    seed: int = 0,
    key: str = "",
    order: np.ndarray | None = None,
    clean: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Statistic, lower and upper bound, and sample count per group.

    Args:
        x: ``(N,)`` per-sample values (bool or float; NaN means "not scored" and is skipped).
        codes: ``(N,)`` group of each sample in ``0..n_groups-1`` (negative: no group).
        kind: ``"proportion"``, ``"mean"`` or ``"median"``.
        key: names the statistic, so that Monte Carlo draws do not depend on call order.
        order: optional ``argsort(x)`` reused across groupings (medians only).
        clean: the caller guarantees finite ``x`` and non-negative ``codes`` (skips filtering).

    Returns:
        Four ``(n_groups,)`` arrays; groups without samples get NaN and ``n = 0``.
    """
    x = np.asarray(x, dtype=np.float64)
    keep = None if clean else np.isfinite(x) & (codes >= 0)
    alpha = 1.0 - confidence
    if kind == "median":
        base = order if order is not None else np.argsort(x, kind="stable")
        base = base if keep is None else base[keep[base]]
        if n_groups > 1:
            small = codes.astype(np.int16) if n_groups < 2**15 else codes
            base = base[np.argsort(small[base], kind="stable")]  # by group, then by value
        n = np.bincount(codes if keep is None else codes[keep], minlength=n_groups).astype(np.int64)
        return (*_medians(x[base], n, alpha), n)
    if keep is not None:
        x, codes = x[keep], codes[keep]
    n = np.bincount(codes, minlength=n_groups).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "proportion":
            p = np.bincount(codes, weights=x, minlength=n_groups) / n
            ok = n > 0
            lo = np.full(n_groups, np.nan)
            hi = np.full(n_groups, np.nan)
            lo[ok] = stats.binom.ppf(alpha / 2, n[ok], p[ok]) / n[ok]
            hi[ok] = stats.binom.ppf(1 - alpha / 2, n[ok], p[ok]) / n[ok]
            return p, lo, hi, n
        if kind == "mean":
            return (*_means(x, codes, n, alpha, seed, key), n)
    raise ValueError(f"unknown statistic kind {kind!r}; choose one of {KINDS}")


def _medians(srt: np.ndarray, n: np.ndarray, alpha: float) -> tuple[np.ndarray, ...]:
    """Medians and exact bootstrap bounds; ``srt`` holds the values sorted by group then value."""
    start = np.concatenate([[0], np.cumsum(n)[:-1]])
    ok = n > 0
    med = np.full(len(n), np.nan)
    lo = np.full(len(n), np.nan)
    hi = np.full(len(n), np.nan)
    s, k = start[ok], n[ok]
    med[ok] = 0.5 * (srt[s + (k - 1) // 2] + srt[s + k // 2])
    m = (k + 1) // 2
    for q, out in ((alpha / 2, lo), (1 - alpha / 2, hi)):
        j = _smallest_rank(k, m, q)
        out[ok] = srt[s + j - 1]
    return med, lo, hi


def _smallest_rank(n: np.ndarray, m: np.ndarray, q: float) -> np.ndarray:
    """Smallest ``j`` in ``1..n`` with ``P(Binomial(n, j / n) >= m) >= q`` (vectorised bisection)."""
    lo = np.ones_like(n)
    hi = n.copy()
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        ok = stats.binom.sf(m - 1, n, mid / n) >= q
        hi = np.where(ok, mid, hi)
        lo = np.where(ok, lo, mid + 1)
    return lo


def _means(x: np.ndarray, codes: np.ndarray, n: np.ndarray, alpha: float, seed: int, key: str) -> tuple[np.ndarray, ...]:
    total = np.bincount(codes, weights=x, minlength=len(n))
    mean = total / n
    var = np.maximum(np.bincount(codes, weights=x * x, minlength=len(n)) / n - mean**2, 0.0)
    half = stats.norm.ppf(1 - alpha / 2) * np.sqrt(var / n)
    lo, hi = mean - half, mean + half
    small = np.flatnonzero((n > 0) & (n <= MC_MAX_N))
    if len(small):
        order = np.argsort(codes, kind="stable")
        start = np.concatenate([[0], np.cumsum(n)[:-1]])
        for g in small:
            values = x[order[start[g] : start[g] + n[g]]]
            rng = rng_for(seed, f"{key}/{g}")
            boot = values[rng.integers(0, n[g], size=(MC_RESAMPLES, n[g]))].mean(axis=1)
            lo[g], hi[g] = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return mean, lo, hi


#: Fewest volumes for which a volume-level (cluster) interval is reported.
MIN_VOLUMES = 5


def cluster_draws(codes: np.ndarray, rng: np.random.Generator, resamples: int) -> list[np.ndarray]:
    """Row indices of cluster bootstrap samples: volumes with replacement, then slices within each.

    ``codes (N,)`` is each slice's volume; every draw takes as many volumes as there are, and
    from each drawn volume as many slices (with replacement) as it has.
    """
    members = [np.flatnonzero(codes == v) for v in np.unique(codes)]
    draws = []
    for _ in range(resamples):
        picked = rng.integers(0, len(members), size=len(members))
        draws.append(np.concatenate([members[v][rng.integers(0, len(members[v]), size=len(members[v]))] for v in picked]))
    return draws


def cluster_interval(x: np.ndarray, draws: list[np.ndarray], kind: str, confidence: float = 0.95) -> list[float]:
    """Percentile interval of a statistic (``kind``) over cluster bootstrap ``draws``."""
    x = np.asarray(x, dtype=np.float64)
    stat = np.median if kind == "median" else np.mean
    values = np.array([stat(x[rows]) for rows in draws])
    alpha = 1.0 - confidence
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return [float(lo), float(hi)]

