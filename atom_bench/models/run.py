"""Run a model over a split, write its prediction file, score it, and test its use of the volume.

The **volume-reliance diagnostic** scores the model twice more on the same slices: once with every
slice paired with another volume of the benchmark, once with a blank (all-zero) volume. A model
that ignores the volume (the released RegisMCAN) loses nothing; one that registers the slice
against the volume drops towards chance. The drops are stored with the scores and shown on the
leaderboard (``docs/PROTOCOL.md`` section 9).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atom_bench.core import geometry as geo
from atom_bench.core.labels import N_HIGH
from atom_bench.data.benchmark import Benchmark
from atom_bench.data.dataset import AtomSliceDataset, load_split, load_volumes
from atom_bench.errors import ModelError
from atom_bench.models.protocol import ModelMeta, Prediction, SliceLocator
from atom_bench.models.registry import ResolvedSpec, resolve_spec
from atom_bench.models.sharding import BatchCache

VOLUME_MODES = ("own", "swapped", "blank")


@dataclass(frozen=True)
class SplitInputs:
    """A split's slices ``(N, 1, h, w)``, their volume ids and the cubes ``volume_id -> (S, S, S)``."""

    sample_ids: list[str]
    volume_ids: list[str]
    slices: torch.Tensor
    volumes: dict[str, torch.Tensor]
    affines: dict[str, np.ndarray]

    @classmethod
    def of(cls, data: AtomSliceDataset, track: str, root: str | os.PathLike[str] | None = None) -> SplitInputs:
        """The inputs of a loaded split (``data``'s labels stay out)."""
        affines = {k: v.affine for k, v in load_volumes(track, root).items()}  # cached: no second read
        return cls(data.sample_ids, data.volume_ids, data.slices[:, None], data.volumes, affines)

    def take(self, indices: np.ndarray) -> SplitInputs:
        """The slices at ``indices`` (in that order); every volume stays, so the swap pairing is unchanged."""
        index = [int(i) for i in indices]
        return SplitInputs([self.sample_ids[i] for i in index], [self.volume_ids[i] for i in index],
                           self.slices[torch.as_tensor(index, dtype=torch.long)], self.volumes, self.affines)  # fmt: skip


def load_inputs(track: str, split: str, root: str | os.PathLike[str] | None = None) -> SplitInputs:
    """Everything a model sees for a split (no labels), from the split's torch wrapper."""
    return SplitInputs.of(AtomSliceDataset(track, split, root), track, root)


def paired_volume_ids(inputs: SplitInputs, mode: str) -> list[str | None]:
    """The volume each slice is shown with: its own, another (the next id in sorted order), or none."""
    if mode == "own":
        return list(inputs.volume_ids)
    if mode == "blank":
        return [None] * len(inputs.volume_ids)
    ids = sorted(inputs.volumes)
    if len(ids) < 2:
        raise ModelError("the volume-swap diagnostic needs a benchmark with at least two volumes; "
                         "evaluate without it (diagnostic=False)", parameters=("diagnostic",))
    return [ids[(ids.index(v) + 1) % len(ids)] for v in inputs.volume_ids]


def iter_predictions(
    model: SliceLocator, inputs: SplitInputs, batch_size: int = 32, mode: str = "own", name: str | None = None,
    device: torch.device | str | None = None, skip: Collection[int] = (),
) -> Iterator[tuple[slice, Prediction]]:
    """The one evaluation loop: ``(rows, prediction)`` for consecutive batches of a split, in order.

    Slices are shown with their own volume, another one or a blank cube (``mode``, see
    :func:`paired_volume_ids`). Evaluation (:func:`predict`) and validation during training
    (:func:`atom_bench.models.train.validate`) both read their answers from here. Every batch's
    answer is checked (:func:`check_prediction`); an error names the model (``name``) and batch.
    Batches go to ``device`` (the model must be there already) and answers come back to the CPU;
    the batches numbered in ``skip`` (finished earlier, see :func:`predict`) are not run.
    """
    if batch_size < 1:
        raise ModelError(f"batch_size must be at least 1; got {batch_size}", parameters=("batch_size",))
    paired = paired_volume_ids(inputs, mode)
    size = next(iter(inputs.volumes.values())).shape[0]
    blank = torch.zeros(size, size, size)
    device = torch.device(device) if device is not None else None
    moved = device is not None and device.type != "cpu"
    for start in range(0, len(paired), batch_size):
        if start // batch_size in skip:
            continue
        rows = slice(start, min(start + batch_size, len(paired)))
        volumes = torch.stack([inputs.volumes[v] if v else blank for v in paired[rows]])[:, None]
        slices = inputs.slices[rows]
        if moved:
            volumes, slices = volumes.to(device), slices.to(device)
        # no_grad rather than inference_mode: validation runs between training steps, and anything a
        # model keeps from predict must stay usable by autograd; per batch, not around the yield,
        # so that the caller's code between batches keeps its own grad mode
        where = f"model {name or type(model).__name__!r}, batch {start // batch_size} (slices {rows.start}-{rows.stop - 1})"
        with torch.no_grad():
            try:
                prediction = model.predict(volumes, slices)
                if moved and isinstance(prediction, Prediction):  # checks and top-5 lists run on the CPU
                    prediction = dataclasses.replace(prediction, **{
                        f.name: getattr(prediction, f.name).cpu() for f in dataclasses.fields(prediction)
                        if isinstance(getattr(prediction, f.name), torch.Tensor)})  # fmt: skip
            except ModelError as error:  # e.g. a Prediction built with the wrong shapes
                raise ModelError(f"{where}: {error}") from None
        check_prediction(prediction, rows.stop - rows.start, where)
        yield rows, prediction


def check_prediction(prediction: object, n: int, where: str = "the model") -> None:
    """Refuse what ``predict`` must not return: not a Prediction, not tensors, another batch
    size, NaN or infinite scores or poses. ``where`` names the model and the batch in the error."""
    if not isinstance(prediction, Prediction):
        raise ModelError(f"{where}: predict returned a {type(prediction).__name__}; return "
                         "atom_bench.models.protocol.Prediction(high_scores=(B, 27), low_scores=(B, 729))")  # fmt: skip
    for field in ("high_scores", "low_scores", "center_vox", "normal"):
        value = getattr(prediction, field)
        if value is None and field in ("center_vox", "normal"):
            continue
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"{where}: {field} is a {type(value).__name__}; return torch tensors (torch.as_tensor(...))")
        if value.shape[0] != n:
            raise ModelError(f"{where}: {field} has {value.shape[0]} rows for a batch of {n} slices; return one row per slice")
        if not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise ModelError(f"{where}: {field} holds {bad} NaN or infinite value(s); scores and poses must be finite")


def predict(
    model: SliceLocator,
    inputs: SplitInputs,
    batch_size: int = 32,
    mode: str = "own",
    on_batch: Callable[[int], None] | None = None,
    name: str | None = None,
    *,
    device: torch.device | str | None = None,
    cache: BatchCache | None = None,
) -> dict[str, np.ndarray]:
    """Prediction arrays in the scorer's format (``high``, ``low``, top-5 lists, optional pose in mm).

    With a ``cache`` (:class:`atom_bench.models.sharding.BatchCache`), batches finished by an
    earlier, interrupted run are read back instead of predicted, and every batch predicted now is
    stored as soon as it is done; the result is only returned once every batch is there.
    """
    if len(inputs.sample_ids) == 0:
        raise ModelError("there are no slices to predict", parameters=("inputs",))
    done: dict[int, dict[str, np.ndarray]] = {}
    if cache is not None:
        if (cache.n_rows, cache.batch_size) != (len(inputs.sample_ids), batch_size):
            raise ModelError(f"the cache in {cache.directory} is for {cache.n_rows} slices in batches of {cache.batch_size}; "
                             f"got {len(inputs.sample_ids)} in batches of {batch_size}", parameters=("cache",))  # fmt: skip
        for index in range(cache.n_batches):
            arrays = cache.load(index)
            if arrays is not None:
                done[index] = arrays
                if on_batch is not None:
                    on_batch(cache.rows(index))
    for rows, out in iter_predictions(model, inputs, batch_size, mode, name, device=device, skip=set(done)):
        batch = consistent_top5(out.high_scores.float(), out.low_scores.float())
        if out.center_vox is not None and out.normal is not None:
            affines = [inputs.affines[v] for v in inputs.volume_ids[rows]]
            centres, normals = out.center_vox.double().numpy(), out.normal.double().numpy()
            batch["center_mm"] = np.stack([geo.voxel_to_mm(a, c) for a, c in zip(affines, centres, strict=True)])
            batch["normal_mm"] = np.stack([geo.direction_to_mm(a, n) for a, n in zip(affines, normals, strict=True)])
        index = rows.start // batch_size
        if cache is not None:
            cache.save(index, batch)
        done[index] = batch
        if on_batch is not None:
            on_batch(rows.stop - rows.start)
    n_batches = -(-len(inputs.sample_ids) // batch_size)
    if sorted(done) != list(range(n_batches)) or (cache is not None and not cache.complete()):
        raise ModelError(f"only {len(done)} of {n_batches} batches were predicted; the predictions are incomplete")
    keys = set(done[0])
    if any(set(arrays) != keys for arrays in done.values()):
        raise ModelError(f"model {name or type(model).__name__!r}: some batches have a pose (center_vox, normal) and others not")
    arrays = {key: np.concatenate([done[index][key] for index in range(n_batches)]) for key in sorted(keys)}
    if len(arrays["high_top5"]) != len(inputs.sample_ids):
        raise ModelError(f"{len(arrays['high_top5'])} predictions for {len(inputs.sample_ids)} slices; the predictions are incomplete")
    arrays["high"], arrays["low"] = arrays["high_top5"][:, 0], arrays["low_top5"][:, 0]
    return arrays


def consistent_top5(high_scores: torch.Tensor, low_scores: torch.Tensor) -> dict[str, np.ndarray]:
    """Ranked top-5 coarse and fine answers with the fine top-1 inside the coarse top-1 block.

    The coarse ranking follows ``high_scores``. The fine top-1 is the best fine block inside the
    coarse top-1 (so ``low // 27 == high``, as the prediction contract requires); the other four
    fine answers are the best remaining fine blocks anywhere.
    """
    high_top5 = high_scores.topk(5, dim=1).indices
    block = high_top5[:, :1] * N_HIGH + torch.arange(N_HIGH)  # the fine blocks of the coarse top-1
    first = block.gather(1, low_scores.gather(1, block).argmax(dim=1, keepdim=True))
    rest = low_scores.scatter(1, first, float("-inf")).topk(4, dim=1).indices
    return {"high_top5": high_top5.numpy(), "low_top5": torch.cat([first, rest], dim=1).numpy()}


def volume_reliance(own: dict[str, np.ndarray], others: dict[str, dict[str, np.ndarray]], labels: dict[str, np.ndarray] | None) -> dict:
    """How predictions change when the volume is swapped or blanked.

    Returns per mode the fraction of top-1 coarse/fine answers that change and, when labels are
    known, the top-1 accuracies and the drop (own minus other) with a 95% normal interval over the
    paired per-slice differences.
    """
    result: dict[str, dict] = {}
    for mode, arrays in others.items():
        entry = {f"changed_{lvl}": float(np.mean(own[lvl] != arrays[lvl])) for lvl in ("high", "low")}
        if labels is not None:
            for lvl in ("high", "low"):
                right = own[lvl] == labels[lvl]
                other = arrays[lvl] == labels[lvl]
                diff = right.astype(float) - other.astype(float)
                half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
                entry[f"top1_{lvl}_{mode}"] = float(other.mean())
                entry[f"drop_{lvl}"] = {"value": float(diff.mean()), "ci": [float(diff.mean() - half), float(diff.mean() + half)], "n": len(diff)}
        result[mode] = entry
    return result


def track_kwargs(resolved: ResolvedSpec, track: str, root=None) -> dict[str, Any]:
    """The factory arguments for a track's cube and slice sizes (as built in the benchmark).

    Raises:
        ModelError: the cube is larger than the registered model's ``max_volume_size``.
    """
    spec = Benchmark.open(root).spec(track)
    capabilities = resolved.entry.capabilities if resolved.entry is not None else None
    if capabilities is not None and not capabilities.fits(spec.size):
        raise ModelError(
            f"model {resolved.name!r} can be built for cubes of at most {capabilities.max_volume_size} voxels a side;"
            f" track {track!r} has {spec.size}"
        )
    return {"volume_size": spec.size, "slice_shape": spec.slice_shape}


def train_count_kwargs(track: str, root=None) -> dict[str, torch.Tensor]:
    """``high_counts`` and ``low_counts`` of the training split: what a ``needs_train_counts`` factory is built from."""
    counts = Benchmark.open(root).train_counts(track)
    return {"high_counts": torch.as_tensor(counts["high"]), "low_counts": torch.as_tensor(counts["low"])}


def build_model(model_spec: str, track: str, weights: str | os.PathLike[str] | None, root=None) -> tuple[SliceLocator, ModelMeta]:
    """Resolve a model for a track's cube and slice sizes and load its weights.

    Without ``weights``, a registered model loads its shipped weights for the track, if it has
    any; one that ``needs_train_counts`` is otherwise built from the training split's label counts.

    Raises:
        ModelError: unknown model, a cube larger than the model's ``max_volume_size``, bad weights.
    """
    resolved = resolve_spec(model_spec)
    kwargs = track_kwargs(resolved, track, root)
    if resolved.entry is not None:
        shipped = resolved.entry.weights_for(track)
        if weights is None and shipped is not None:
            weights = shipped.path
        if weights is None and resolved.entry.capabilities.needs_train_counts:
            kwargs |= train_count_kwargs(track, root)
    model, meta = resolved.build(weights=str(weights) if weights else None, **kwargs)
    if hasattr(model, "eval"):
        model.eval()
    return model, meta


def evaluate_model(
    model_spec: str,
    track: str = "hard",
    split: str = "test_unseen",
    *,
    weights: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    out: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    diagnostic: bool = True,
    on_batch: Callable[[int], None] | None = None,
    device: str | torch.device | None = "cpu",
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[dict, Path | None]:
    """Evaluate a model on a split: returns the scores (with ``volume_reliance``) and the prediction file.

    Under ``torchrun`` (``WORLD_SIZE > 1``) every rank predicts its share of the split's volumes
    (:func:`atom_bench.models.sharding.shard_indices`); rank 0 gathers the shares, writes and
    scores; the other ranks write nothing and return ``({}, None)``.

    Args:
        model_spec: a baseline name, module path or ``module:factory`` (see ``resolve_model``).
        weights: a safetensors file; a registered model defaults to its shipped weights for the track.
        out: prediction file to write (``.parquet`` or ``.csv``; default
            :func:`default_output`, ``runs/<benchmark>-<manifest[:8]>/<model>-<track>-<split>.parquet``).
        diagnostic: also run the model with swapped and blank volumes (three passes in total).
        on_batch: called with the number of slices done after every batch (progress bars).
        device: where the model runs (``cpu``, ``cuda``, ``cuda:N``); a ``torch.nn.Module`` is moved there.
        cache: keep every finished batch under ``cache_dir`` (default ``runs/.cache``) so that an
            interrupted run resumes where it stopped; the cache is removed once the run is done.
    """
    from atom_bench.models import sharding

    rank, world = sharding.world()
    where = sharding.resolve_device(device)
    model, meta = build_model(model_spec, track, weights, root)
    if isinstance(model, torch.nn.Module) and where.type != "cpu":
        model.to(where)
    inputs = load_inputs(track, split, root)
    modes = ("own", "swapped", "blank") if diagnostic else ("own",)
    if diagnostic:
        paired_volume_ids(inputs, "swapped")  # refuse a one-volume benchmark before any pass
    caches: dict[str, BatchCache] = {}

    def run_share(indices: np.ndarray) -> dict[str, dict[str, np.ndarray] | None]:
        share = inputs if world == 1 else inputs.take(indices)
        if len(indices) == 0:
            return {mode: None for mode in modes}
        if cache:
            source = sharding.model_source_sha256(resolve_spec(model_spec).factory)
            manifest = Benchmark.open(root).hash
            for mode in modes:
                parts = sharding.cache_parts(model_spec, source, meta.weights_file, manifest, track, split, mode, batch_size,
                                             where.type, f"{rank}/{world}")  # fmt: skip
                caches[mode] = BatchCache.under(cache_dir, parts, len(indices), batch_size)
        return {mode: predict(model, share, batch_size, mode, on_batch, meta.name, device=where, cache=caches.get(mode)) for mode in modes}

    if world == 1:
        results = run_share(np.arange(len(inputs.sample_ids)))
    else:
        with sharding.distributed() as dist:
            rank, world = dist.rank, dist.world
            indices = sharding.shard_indices(inputs.volume_ids, rank, world)
            try:
                payload: tuple = (indices, run_share(indices), None)
                failure = None
            except Exception as error:  # noqa: BLE001 -- every rank must reach the gather, or the others wait for ever
                payload, failure = (indices, None, f"{error}"), error
            gathered = sharding.gather(payload, world)
            if failure is not None:
                raise failure
            failed = [(r, message) for r, (_, _, message) in enumerate(gathered) if message is not None]
            if failed:
                raise ModelError(f"rank {failed[0][0]} of {world} failed: {failed[0][1]}")
        for entry in caches.values():
            entry.clear()
        if rank != 0:
            return {}, None
        results = {mode: sharding.reassemble([(i, arrays[mode]) for i, arrays, _ in gathered], len(inputs.sample_ids)) for mode in modes}
    scores, path = _write_and_score(results, inputs, meta, track, split, out, root, diagnostic)
    for entry in caches.values():
        entry.clear()
    return scores, path


def _write_and_score(results: dict[str, dict[str, np.ndarray]], inputs: SplitInputs, meta: ModelMeta, track: str, split: str,
                     out, root, diagnostic: bool) -> tuple[dict, Path]:  # fmt: skip
    """Write the ``own`` predictions, score them and add the volume-reliance diagnostic."""
    from atom_bench.eval.predictions import make_meta, to_frame, write_predictions
    from atom_bench.eval.scoring import Evaluator

    own = results["own"]
    evaluator = Evaluator.from_benchmark(track, split, root=root)
    out = Path(out) if out else default_output(meta.name, track, split, root)
    frame = to_frame(own, inputs.sample_ids, make_meta(track, split, evaluator.info["manifest_sha256"], evaluator.info["dataset_revision"]))
    write_predictions(frame, out)
    scores = evaluator.evaluate_file(out)
    if diagnostic:
        data = load_split(track, split, root)
        labels = None
        if "high_label" in data.column_names:
            labels = {"high": np.asarray(data["high_label"]), "low": np.asarray(data["low_label"])}
        others = {mode: results[mode] for mode in ("swapped", "blank")}
        scores["volume_reliance"] = volume_reliance(own, others, labels)
    scores["model"] = {**meta.to_dict(), "weights_file": meta.weights_file or ""}
    return scores, out


def reliance_metrics(scores: dict) -> dict[str, dict]:
    """The diagnostic's drops as leaderboard metrics (``volume_swap_drop_high``, ``volume_blank_drop_high``)."""
    out = {}
    for mode in ("swapped", "blank"):
        drop = scores.get("volume_reliance", {}).get(mode, {}).get("drop_high")
        if drop is not None:
            out[f"volume_{mode.removesuffix('ped')}_drop_high"] = drop
    return out


def default_output(model_name: str, track: str, split: str, root=None) -> Path:
    """``runs/<benchmark>-<manifest[:8]>/<model>-<track>-<split>.parquet``: runs on different
    benchmarks (``root``) or revisions never overwrite each other."""
    bench = Benchmark.open(root)

    def safe(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)

    return Path("runs") / f"{safe(bench.name)}-{bench.hash[:8]}" / f"{safe(model_name)}-{track}-{split}.parquet"


def submit_evaluation(
    scores: dict, path: str | os.PathLike[str], name: str, *, root=None, force: bool = False,
    submissions_dir: str | os.PathLike[str] = "submissions", seeds: tuple[int, ...] = (0,),
    meta: dict | str | os.PathLike[str] | None = None,
) -> Path:
    """Store an :func:`evaluate_model` result as a submission.

    What the run knows (model name, parameter count, training data, weights, hardware, seeds) is
    filled in; ``meta`` (a mapping or a META.yaml, as for ``atom-bench submit``) adds or overrides
    fields, and must give the ``authors`` and ``code_url`` of anything but a model whose record
    names them: nobody's model is credited to somebody else. The prediction file is not scored
    again: its scores are passed on (``submit`` checks the file's sha256 against them)."""
    import platform

    from atom_bench.board.submissions import SubmissionError, read_metadata_file, submit

    info = scores["model"]
    given = read_metadata_file(meta) if isinstance(meta, (str, os.PathLike)) else meta or {}
    if not isinstance(given, dict):
        raise SubmissionError(f"{meta}: expected a mapping of metadata fields (authors, code_url, ...)", parameters=("meta",))
    defaults = {
        "model_name": info["name"],
        "n_parameters": int(info["n_parameters"]),
        "training_data": info["training_data"],
        "seeds": list(seeds),
        "hardware": f"{platform.machine()} CPU",
        "notes": f"weights: {Path(info['weights_file']).name if info['weights_file'] else 'none'}",
    }
    if info.get("code_url"):
        defaults["code_url"] = info["code_url"]
    merged = {**defaults, **given}
    missing = [key for key in ("authors", "code_url") if not merged.get(key)]
    if missing:
        raise SubmissionError(
            f"say who made {info['name']!r}: meta needs {' and '.join(missing)} (a META.yaml as for submit)", parameters=("meta",)
        )
    meta = merged
    extra = {"metrics": reliance_metrics(scores), "volume_reliance": scores.get("volume_reliance", {})}
    scored = {key: value for key, value in scores.items() if key not in ("model", "volume_reliance")}  # the scorer's own result
    return submit(path, name=name, meta=meta, root=root, force=force, submissions_dir=submissions_dir, extra=extra, scores=scored)
