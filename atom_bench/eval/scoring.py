"""The scorer: predictions + labels -> metrics with 95% intervals, breakdowns and floors.

One input contract (``Evaluator(labels, volumes, train_counts)`` then ``evaluate(predictions)``)
and one output, a JSON-ready dict (:data:`SCORES_FORMAT`)::

    ev = Evaluator.from_benchmark("easy", "validation")
    result = ev.evaluate(predictions_frame)
    result["metrics"]["top1_high"]  # {"value": 0.41, "ci": [0.39, 0.43], "n": 2048}

Metrics are defined in ``docs/PROTOCOL.md`` section 7; each is one
:class:`~atom_bench.eval.metrics.MetricSpec` of :data:`~atom_bench.eval.metrics.METRICS` (its
per-sample values, requirements and statistic). Intervals come from :mod:`atom_bench.eval.intervals`.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from atom_bench import __version__
from atom_bench.core.labels import N_HIGH, N_LOW
from atom_bench.data.benchmark import Benchmark, BenchmarkLike
from atom_bench.data.labels_file import read_labels, split_labels
from atom_bench.errors import DataError
from atom_bench.eval import intervals
from atom_bench.eval import predictions as P
from atom_bench.eval.columns import deg_bins, list_matrix, multihot
from atom_bench.eval.metrics import COMPUTED_METRICS, METRICS, UNIT_DISPLAY, MetricSpec, SampleContext

SCORES_FORMAT = "atom-bench-scores/1"
PRIMARY = ("top1_high", "top1_low")
BREAKDOWNS = ("modality", "view", "volume_id")
CHANCE_SAMPLES = 200_000  # pooled sample size of the chance estimate


class Evaluator:
    """Scores predictions for one split against its labels.

    Args:
        labels: one row per sample: ``sample_id``, ``high_label``, ``low_label`` and, when
            available, ``volume_id``, ``center_mm`` and ``normal_mm`` (3 floats),
            ``paper_high`` / ``paper_low`` (lists), ``modality``, ``view``, ``deg_*``.
        volumes: ``volume_id``, ``size``, ``affine`` (16 floats, row-major); needed for the
            centre error of block predictions.
        train_counts: ``{"high": (N_HIGH,), "low": (N_LOW,)}`` training label counts (prior floor).
        track, split, manifest_sha256, dataset_revision: recorded in the result and checked
            against the predictions' metadata.
        seed: seeds the chance floor and the Monte Carlo part of the intervals.
    """

    def __init__(
        self,
        labels: pd.DataFrame,
        volumes: pd.DataFrame | None = None,
        train_counts: dict[str, np.ndarray] | None = None,
        *,
        track: str | None = None,
        split: str | None = None,
        manifest_sha256: str | None = None,
        dataset_revision: str | None = None,
        confidence: float = 0.95,
        seed: int = 0,
    ) -> None:
        missing = {"sample_id", "high_label", "low_label"} - set(labels.columns)
        if missing:
            raise DataError(f"labels lack column(s) {', '.join(sorted(missing))}")
        self.info = {"track": track, "split": split, "manifest_sha256": manifest_sha256, "dataset_revision": dataset_revision}
        self.confidence, self.seed = confidence, seed
        self.ids = pd.Index(np.asarray(labels["sample_id"], dtype=object))
        if self.ids.has_duplicates:
            raise DataError("labels have duplicated sample ids")
        self.id_array = pa.array(self.ids.to_numpy(), pa.string())
        self.n = len(labels)
        self.high = np.asarray(labels["high_label"], dtype=np.int64)
        self.low = np.asarray(labels["low_label"], dtype=np.int64)
        cols = set(labels.columns)
        self.center = list_matrix(labels["center_mm"], 3, "center_mm") if "center_mm" in cols else None
        self.normal = list_matrix(labels["normal_mm"], 3, "normal_mm") if "normal_mm" in cols else None
        self.paper_high = multihot(labels["paper_high"]) if "paper_high" in cols else None
        self.paper_low = multihot(labels["paper_low"]) if "paper_low" in cols else None
        self.volume_index = self.sizes = self.affines = None
        if volumes is not None and "volume_id" in cols:
            vol_ids = pd.Index(np.asarray(volumes["volume_id"], dtype=object))
            self.volume_index = vol_ids.get_indexer(np.asarray(labels["volume_id"], dtype=object))
            if np.any(self.volume_index < 0):
                raise DataError("some labels refer to a volume_id missing from the volumes table")
            self.sizes = np.asarray(volumes["size"], dtype=np.int64)
            self.affines = list_matrix(volumes["affine"], 16, "affine").reshape(-1, 4, 4)
        # a volumes table counts only when the labels say which volume each sample comes from
        joined = volumes.columns if self.affines is not None else ()
        self.table_columns = frozenset([*(f"labels:{c}" for c in cols), *(f"volumes:{c}" for c in joined)])
        self.groups: dict[str, tuple[np.ndarray, list[str]]] = {}
        for name in BREAKDOWNS:
            if name in cols:
                codes, uniques = pd.factorize(np.asarray(labels[name], dtype=object), sort=True)
                self.groups[name] = (codes, [str(u) for u in uniques])
        for name in sorted(c for c in cols if c.startswith("deg_")):
            values = np.asarray(labels[name], dtype=np.float64)
            if np.any(values != 0):
                self.groups[name] = deg_bins(values)
        self.counts = train_counts
        self._floors: dict | None = None

    @classmethod
    def from_benchmark(
        cls, track: str, split: str, root: BenchmarkLike = None, labels: str | os.PathLike[str] | None = None, **kwargs
    ) -> Evaluator:
        """An evaluator for a split of a built benchmark (``labels``: a withheld-labels file)."""
        bench = Benchmark.open(root)
        table = read_labels(labels, track, split, bench.hash) if labels else split_labels(track, split, bench)
        ids = pa.array(np.asarray(table["sample_id"], dtype=object), pa.string())
        public = pa.array(bench.sample_ids(track, split), pa.string())
        if len(ids) != len(public) or not pc.all(pc.is_in(public, value_set=ids)).as_py():
            raise DataError(f"the labels do not cover exactly the samples of {track}/{split}")
        return cls(
            table, bench.volumes_table(track), bench.train_counts(track),
            track=track, split=split, manifest_sha256=bench.hash, dataset_revision=bench.revision, **kwargs,
        )  # fmt: skip

    # -- per-sample values ------------------------------------------------------------------
    def available(self, pred: dict[str, np.ndarray]) -> frozenset[str]:
        """The ``"source:column"`` entries (as metric requirements name them) that labels, volumes and ``pred`` provide."""
        return self.table_columns | {f"pred:{key}" for key, value in pred.items() if value is not None}

    def context(self, pred: dict[str, np.ndarray], rows: np.ndarray | None = None) -> SampleContext:
        """The labels (or ``rows`` of them) beside prediction arrays aligned with them."""
        def at(a):
            return a if rows is None or a is None else a[rows]

        def take(m):
            return m if rows is None or m is None else m.take(rows)

        return SampleContext(
            pred=pred, high=at(self.high), low=at(self.low), center_mm=at(self.center), normal_mm=at(self.normal),
            paper_high=take(self.paper_high), paper_low=take(self.paper_low), volume_index=at(self.volume_index),
            sizes=self.sizes, affines=self.affines,
        )  # fmt: skip

    def per_sample(self, pred: dict[str, np.ndarray], rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Per-sample values of every computed metric whose requirements are met, by metric name."""
        have, ctx = self.available(pred), self.context(pred, rows)
        return {name: spec.compute(ctx) for name, spec in COMPUTED_METRICS.items() if not spec.unmet(have)}

    def summarise(self, values: dict[str, np.ndarray], key: str, rows: np.ndarray | None = None) -> dict:
        """Overall metrics and breakdowns of per-sample values (of the labels' ``rows``)."""
        n = self.n if rows is None else len(rows)
        floats = {name: np.asarray(x, dtype=np.float64) for name, x in values.items()}
        finite = {name: x.dtype == bool or bool(np.isfinite(floats[name]).all()) for name, x in values.items()}
        orders = {name: np.argsort(floats[name], kind="stable") for name in values if METRICS[name].aggregate == "median"}

        def block(codes: np.ndarray, n_groups: int, tag: str) -> list[dict]:
            out: list[dict] = [{} for _ in range(n_groups)]
            clean_codes = n_groups == 1 or bool((codes >= 0).all())
            for name, spec in COMPUTED_METRICS.items():
                if name in values:
                    stat = intervals.grouped(
                        floats[name], codes, n_groups, spec.aggregate, order=orders.get(name),
                        clean=clean_codes and finite[name], confidence=self.confidence, seed=self.seed,
                        key=f"{key}/{tag}/{name}",
                    )  # fmt: skip
                    for g, (v, lo, hi, n) in enumerate(zip(*stat)):
                        out[g][name] = {"value": _num(v), "ci": [_num(lo), _num(hi)], "n": int(n)}
            return out

        overall = block(np.zeros(n, dtype=np.int64), 1, "all")[0]
        breakdowns = {
            name: dict(zip(labels, block(codes if rows is None else codes[rows], len(labels), name)))
            for name, (codes, labels) in self.groups.items()
        }
        return {"metrics": overall, "breakdowns": breakdowns}

    def volume_level(self, values: dict[str, np.ndarray], resamples: int = intervals.MC_RESAMPLES) -> dict:
        """Cluster-bootstrap intervals (volumes, then slices within them) of the overall metrics.

        Slices of one volume are not independent: for a claim about unseen volumes this is the
        interval to read. Below ``intervals.MIN_VOLUMES`` volumes it is not computed, and says why.
        """
        if "volume_id" not in self.groups:
            return {"note": "the labels name no volume_id"}
        codes = self.groups["volume_id"][0]
        n_volumes = len(self.groups["volume_id"][1])
        if n_volumes < intervals.MIN_VOLUMES:
            return {"n_volumes": n_volumes, "note": f"not meaningful with {n_volumes} volume(s); needs at least {intervals.MIN_VOLUMES}"}
        draws = intervals.cluster_draws(codes, intervals.rng_for(self.seed, "volume_level"), resamples)
        metrics = {
            name: {"ci": intervals.cluster_interval(x, draws, COMPUTED_METRICS[name].aggregate, self.confidence)}
            for name, x in values.items() if np.isfinite(np.asarray(x, dtype=np.float64)).all()
        }  # fmt: skip
        return {"n_volumes": n_volumes, "method": "cluster bootstrap: volumes with replacement, then slices within them",
                "resamples": resamples, "metrics": metrics}  # fmt: skip

    # -- floors -----------------------------------------------------------------------------
    def floors(self) -> dict[str, dict]:
        """Scores of the chance and training-prior predictors on the same samples.

        ``chance`` is the expected score of a uniformly random valid prediction (with top-5
        lists and, when the labels have normals, a uniform random normal), estimated on
        ``ceil(CHANCE_SAMPLES / n)`` seeded replicates of the samples; its interval is that of
        the pooled replicates. ``prior`` predicts the most frequent training labels (top-5:
        the five most frequent, ties to the lower label) for every sample.
        """
        if self._floors is None:
            reps = max(1, -(-CHANCE_SAMPLES // max(self.n, 1)))
            rows = None if reps == 1 else np.tile(np.arange(self.n), reps)
            rng = np.random.default_rng([self.seed, 27729])  # a fixed stream: every recorded chance floor was drawn from it
            chance = P.random_arrays(self.n * reps, rng, top5=True, normals=self.normal is not None)
            self._floors = {"chance": self.summarise(self.per_sample(chance, rows), "chance", rows)}
            if self.counts is not None:
                prior = {}
                for level, size in (("high", N_HIGH), ("low", N_LOW)):
                    counts = np.asarray(self.counts[level], dtype=np.int64)
                    if counts.shape != (size,):
                        raise DataError(f"train_counts[{level!r}] must have {size} entries")
                    top = np.argsort(-counts, kind="stable")[:5]
                    prior[level] = np.full(self.n, top[0])
                    prior[f"{level}_top5"] = np.broadcast_to(top, (self.n, 5))
                self._floors["prior"] = self.summarise(self.per_sample(prior), "prior")
        return self._floors

    # -- entry point ------------------------------------------------------------------------
    def evaluate(self, predictions: pd.DataFrame, *, floors: bool = True) -> dict:
        """Validate and score a prediction frame; returns the JSON-ready result."""
        arrays, positions = P.check_arrays(
            predictions, sample_ids=self.id_array, track=self.info["track"], split=self.info["split"],
            manifest_sha256=self.info["manifest_sha256"],
        )  # fmt: skip
        return self._result(_aligned(arrays, positions), floors)

    def evaluate_file(self, path: str | os.PathLike[str], *, floors: bool = True, plain_ok: bool = False) -> dict:
        """Validate (chunked, strict) and score a prediction file; returns the JSON-ready result.

        ``plain_ok``: accept a file without ATOM-Bench metadata (the caller vouches for the split)."""
        from atom_bench._io import sha256_file

        result = self._result(self.read_aligned(path, plain_ok=plain_ok), floors)
        result["predictions_sha256"] = sha256_file(path)
        return result

    def read_aligned(self, path: str | os.PathLike[str], *, plain_ok: bool = False) -> dict[str, np.ndarray]:
        """Validate a prediction file and return its arrays in the labels' row order (no scoring)."""
        arrays, _, positions = P.read_arrays(
            path, track=self.info["track"], split=self.info["split"], sample_ids=self.id_array,
            manifest_sha256=self.info["manifest_sha256"], dataset_revision=self.info["dataset_revision"], plain_ok=plain_ok,
        )  # fmt: skip
        return _aligned(arrays, positions)

    def _result(self, aligned: dict[str, np.ndarray], floors: bool) -> dict:
        values = self.per_sample(aligned)
        summary = self.summarise(values, "model")
        have = self.available(aligned)
        skipped = {name: reason for name, spec in COMPUTED_METRICS.items() if (reason := spec.skip_reason(have))}
        result = {
            "format": SCORES_FORMAT,
            **self.info,
            "toolkit_version": __version__,
            "n_samples": self.n,
            "primary": list(PRIMARY),
            "confidence": self.confidence,
            "bootstrap": {"method": "percentile bootstrap over samples (exact where closed-form)", "seed": self.seed,
                          "mc_resamples": intervals.MC_RESAMPLES, "mc_max_n": intervals.MC_MAX_N},  # fmt: skip
            **summary,
            "volume_level": self.volume_level(values),
            "skipped": skipped,
        }
        if floors:
            result["floors"] = self.floors()
        return result


def _aligned(arrays: dict[str, np.ndarray], positions: np.ndarray) -> dict[str, np.ndarray]:
    """Prediction arrays reordered so that row ``i`` is the labels' row ``i``."""
    aligned = {}
    for key, value in arrays.items():
        if key != "sample_id":
            aligned[key] = np.empty_like(value)
            aligned[key][positions] = value
    return aligned


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def score_file(
    path: str | os.PathLike[str], *, root: BenchmarkLike = None, labels: str | os.PathLike[str] | None = None,
    track: str | None = None, split: str | None = None,
) -> dict:  # fmt: skip
    """Validate a prediction file against its split and score it.

    The split is ``track`` / ``split`` when given (then a plain CSV or parquet file without
    ATOM-Bench metadata is accepted, and metadata it has must agree), else the file's metadata.
    """
    target = P.file_target(path, track, split)
    return Evaluator.from_benchmark(*target, root=root, labels=labels).evaluate_file(path, plain_ok=track is not None)


def render_scores(result: dict, breakdowns: tuple[str, ...] = ("modality", "view")):
    """A rich table: each metric, its 95% interval, and the chance and prior floors beside it.

    Track, split and breakdown labels come from the data (a volumes table's modality may read
    ``[/]``): they are plain :class:`rich.text.Text`, never parsed as markup.
    """
    from rich.table import Table
    from rich.text import Text

    def fmt(entry: dict | None, spec: MetricSpec, ci: bool = False) -> str:
        if not entry or entry.get("value") is None:
            return "-"
        scale, unit = UNIT_DISPLAY[spec.unit]
        if ci:
            lo, hi = entry["ci"]
            return "-" if lo is None else f"[{lo * scale:.1f}, {hi * scale:.1f}]"
        return f"{entry['value'] * scale:.1f}{unit}"

    table = Table(title=Text(f"{result.get('track')}/{result.get('split')}: {result['n_samples']} samples", style="table.title"))
    level = result.get("volume_level") or {}
    by_volume = level.get("metrics")  # cluster-bootstrap intervals, only from enough volumes
    columns = ("metric", "value", "95% CI (slices)", *(["95% CI (volumes)"] if by_volume else []), "chance", "prior")
    for col in columns:
        table.add_column(col, justify="left" if col == "metric" else "right")
    if not by_volume and level.get("note"):
        table.caption = f"volume-level interval: {level['note']}"
    floors = result.get("floors", {})

    def add(label: str, entry: dict | None, spec: MetricSpec, floor: list, volume: dict | None = None) -> None:
        cells = [fmt(entry, spec), fmt(entry, spec, ci=True)]
        if by_volume:
            cells.append(fmt({"value": 0, **volume}, spec, ci=True) if volume else "")
        table.add_row(Text(label), *cells, *(fmt(f, spec) for f in floor))  # numbers: ours

    for name, spec in METRICS.items():
        if name in result["metrics"]:
            floor = [floors.get(f, {}).get("metrics", {}).get(name) for f in ("chance", "prior")]
            add(name, result["metrics"][name], spec, floor, (by_volume or {}).get(name))
    for group in breakdowns:
        for label, entry in result.get("breakdowns", {}).get(group, {}).items():
            for name in PRIMARY:
                floor = [floors.get(f, {}).get("breakdowns", {}).get(group, {}).get(label, {}).get(name) for f in ("chance", "prior")]
                add(f"{name} {group}={label} (n={entry[name]['n']})", entry.get(name), METRICS[name], floor)
    return table
