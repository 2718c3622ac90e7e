"""From a training checkpoint to a shipped weights file, and whether it should replace the shipped one.

    ship("matcher", "hard", "runs/matcher-hard4/best.safetensors", "baselines/weights/matcher-hard.safetensors")

:func:`export_weights` rounds a checkpoint to the shipped dtype and rescores it on validation.
:func:`ship` does the same but replaces an existing file only when a paired comparison on the
validation split says the new one is better (:class:`Comparison`): a selection rule that reads a
one-slice difference as a win ships noise (a histology matcher 2.9 points below the prior on
``test_unseen`` was once shipped on a one-slice tie-break of fine top-1).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from atom_bench._io import atomic_path
from atom_bench.models.registry import resolve_spec
from atom_bench.models.run import build_model, track_kwargs
from atom_bench.models.train import validation_hits
from atom_bench.models.weights import read_metadata, read_safetensors

__all__ = ["Comparison", "compare_weights", "export_weights", "ship"]


def export_weights(
    model_spec: str,
    track: str,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    dtype: str = "float16",
    root: str | os.PathLike[str] | None = None,
) -> dict[str, float]:
    """Copy a checkpoint to a shipped weights file for ``track``, stored in ``dtype`` (half the
    size in float16).

    The weights are rounded to ``dtype``, the validation scores on ``track`` are recomputed with
    the rounded weights (loaded back into the float32 model, as ``resolve_model(weights=...)``
    does) and written to the metadata; the run's own scores stay as ``run_val_top1_*``. A
    checkpoint trained on another track with the same cube (one synthetic-stream run serving
    easy, hard and histology) keeps that track as ``trained_on_track``.
    """
    high, low = _export(model_spec, track, src, dst, dtype, root)
    return _scores(high, low)


def _scores(high: np.ndarray, low: np.ndarray) -> dict[str, float]:
    return {"val_top1_high": float(high.mean()), "val_top1_low": float(low.mean())}


def _export(
    model_spec: str, track: str, src: str | os.PathLike[str], dst: str | os.PathLike[str], dtype: str,
    root: str | os.PathLike[str] | None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """:func:`export_weights`, returning the exported file's per-slice validation hits (coarse, fine)."""
    from safetensors.torch import save_file

    resolved = resolve_spec(model_spec)
    model, _ = resolved.build(**track_kwargs(resolved, track, root))
    cast = getattr(torch, dtype)
    state = {k: v.to(cast) if v.is_floating_point() else v for k, v in read_safetensors(src).items()}
    model.load_state_dict(state, strict=True)  # type: ignore[attr-defined]
    high, low = validation_hits(model, track, root)
    scores = _scores(high, low)
    meta = read_metadata(src)
    for key in ("val_top1_high", "val_top1_low"):
        meta[f"run_{key}"] = meta.get(key, "")
    if meta.get("track", track) != track:
        meta["trained_on_track"], meta["track"] = meta["track"], track
    meta.update({k: str(v) for k, v in scores.items()}, weights_dtype=dtype)
    with atomic_path(Path(dst)) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=meta)
    return high, low


@dataclass(frozen=True)
class Comparison:
    """Paired coarse top-1 of a candidate and a shipped file on the same ``n`` validation slices.

    ``gained``: slices the candidate gets right and the shipped file wrong; ``lost``: the reverse.
    Under "both are equally good" the difference ``gained - lost`` has standard deviation
    ``sqrt(gained + lost)`` (a sign test on the slices where they disagree); the candidate
    :attr:`replaces` the shipped file when it wins by more than ``z`` of those.
    """

    gained: int
    lost: int
    n: int
    z: float = 1.0

    @property
    def replaces(self) -> bool:
        return self.gained - self.lost > self.z * math.sqrt(self.gained + self.lost)

    def __str__(self) -> str:
        verdict = "replaces" if self.replaces else "keeps"
        return f"{verdict} the shipped file: +{self.gained} / -{self.lost} of {self.n} validation slices (coarse top-1, z = {self.z:g})"


def _coarse_hits(model_spec: str, track: str, weights: Path, root: str | os.PathLike[str] | None) -> np.ndarray:
    model, _ = build_model(model_spec, track, weights, root)
    return validation_hits(model, track, root)[0]


def compare_weights(
    model_spec: str, track: str, candidate: str | os.PathLike[str], shipped: str | os.PathLike[str],
    *, z: float = 1.0, root: str | os.PathLike[str] | None = None,
) -> Comparison:  # fmt: skip
    """Score two weights files of ``model_spec`` on ``track``'s validation split, slice by slice."""
    return _paired(_coarse_hits(model_spec, track, Path(candidate), root), _coarse_hits(model_spec, track, Path(shipped), root), z)


def _paired(new: np.ndarray, old: np.ndarray, z: float) -> Comparison:
    return Comparison(gained=int((new & ~old).sum()), lost=int((old & ~new).sum()), n=len(new), z=z)


def ship(
    model_spec: str, track: str, src: str | os.PathLike[str], dst: str | os.PathLike[str],
    *, z: float = 1.0, dtype: str = "float16", root: str | os.PathLike[str] | None = None,
) -> Comparison | None:  # fmt: skip
    """Export ``src`` as ``dst`` if there is no ``dst`` yet (returns ``None``) or if the exported
    file beats it (:class:`Comparison`, compared after rounding to ``dtype``); otherwise ``dst``
    is left exactly as it was. The candidate is written beside ``dst`` first and removed when
    it loses, so no run of this leaves a half-written or a replaced-by-worse shipped file.
    """
    dst = Path(dst)
    if not dst.exists():
        export_weights(model_spec, track, src, dst, dtype=dtype, root=root)
        return None
    candidate = dst.with_name(f".{dst.stem}.candidate{dst.suffix}")
    try:
        new, _ = _export(model_spec, track, src, candidate, dtype, root)  # validated once, as it is exported
        comparison = _paired(new, _coarse_hits(model_spec, track, dst, root), z)
        if comparison.replaces:
            os.replace(candidate, dst)
        return comparison
    finally:
        candidate.unlink(missing_ok=True)
