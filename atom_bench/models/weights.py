"""Weights: safetensors files only (never pickle), and the record of a model's shipped weights.

- :func:`read_safetensors` / :func:`load_weights` / :func:`save_weights` read and write a model's
  ``state_dict`` with ``safetensors``: a weights file is a flat map of tensors plus string
  metadata and cannot run code when it is read.
- :class:`Weights` is one shipped weights file of a registered model (one per track), in the
  spirit of torchvision's ``Weights`` records: where the file is inside its package, where its
  model card is, and its metadata (validation scores, seed, ...), read lazily from the file.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from atom_bench._io import atomic_path
from atom_bench.errors import ModelError


def read_safetensors(path: str | Path) -> dict[str, Tensor]:
    """Read a safetensors file to CPU tensors; a missing or corrupt file is a ModelError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"weights file {path} is not a readable safetensors file: {exc}") from exc


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file's header (no tensor is read)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    stat = path.stat()
    return dict(_header_metadata(str(path.resolve()), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=256)
def _header_metadata(path: str, mtime_ns: int, size: int) -> Mapping[str, str]:
    # keyed by modification time and size as well: a re-stamped file is read again
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, "pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"weights file {path} is not a readable safetensors file: {exc}") from exc


def _short_list(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_weights(model: Any, path: str | Path) -> None:
    """Load a safetensors file into ``model`` (strict: every key, every shape).

    A model with its own ``load_weights(path)`` method handles the file itself.

    Raises:
        ModelError: missing or unreadable file, missing/unexpected keys, shape mismatch.
    """
    path = Path(path)
    custom = getattr(model, "load_weights", None)
    if callable(custom):
        custom(path)
        return
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"this model takes no weights file (got {path})")
    state = read_safetensors(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_short_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_short_list(unexpected)}")
        raise ModelError(f"weights {path} do not fit the model; {'; '.join(parts)}")
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if state[k].shape != own[k].shape]
    if wrong:
        raise ModelError(f"weights {path} have wrong shapes: {_short_list(wrong, 3)}")
    model.load_state_dict(state, strict=True)


def describe_training(metadata: Mapping[str, str]) -> str | None:
    """One line saying what a weights file was trained on, from its own metadata (``None`` when
    the file records no training run, e.g. weights written by someone else's code).

    >>> describe_training({"model": "cnn", "track": "hard", "source": "stream", "step": "840", "seed": "0",
    ...                    "dataset_hash": "cf73bbb78ea32eb7"})
    'hard train volumes, stream source, 840 steps, seed 0 (dataset cf73bbb78ea3)'

    A warm-started run (``init_from`` in the metadata) says what its start had seen:

    >>> describe_training({"track": "histology", "source": "synthetic", "step": "500", "seed": "0",
    ...                    "init_from": '{"trained_on": "hard train volumes, synthetic source, 950 steps, seed 0"}'})
    'histology train volumes, synthetic source, 500 steps, seed 0; initialised from weights trained on hard train volumes, synthetic source, 950 steps, seed 0'
    """
    track = metadata.get("track")
    if not track:
        return None
    dataset = metadata.get("trained_on_dataset_hash") or metadata.get("dataset_hash") or ""
    where = f" (dataset {dataset[:12]})" if dataset else ""
    if "n_train" in metadata:  # a count-built model: nothing was optimised
        return f"label counts of the {track} train split, {metadata['n_train']} samples{where}"
    parts = [f"{metadata.get('trained_on_track') or track} train volumes"]
    if metadata.get("source"):
        parts.append(f"{metadata['source']} source")
    if metadata.get("step"):
        parts.append(f"{metadata['step']} steps")
    if metadata.get("seed"):
        parts.append(f"seed {metadata['seed']}")
    own = ", ".join(parts) + where
    if metadata.get("init_from"):
        try:
            start = json.loads(metadata["init_from"]).get("trained_on", "unknown weights")
        except (ValueError, AttributeError):
            start = "unrecorded weights"
        own += f"; initialised from weights trained on {start}"
    return own


def save_weights(model: torch.nn.Module, path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model.state_dict()`` to a safetensors file atomically (tensors made contiguous)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={str(k): str(v) for k, v in (metadata or {}).items()})
    return path


@dataclass(frozen=True)
class Weights:
    """One shipped weights file of a registered model, for one track.

    Attributes:
        track: the track the weights were trained and selected on (``paper``, ``easy``, ...).
        file: the safetensors file, a path inside ``package`` (``weights/cnn-easy.safetensors``).
        card: its model card, ``<file inside package>#<section heading>``
            (``weights/MODEL_CARDS.md#cnn-easy.safetensors``); empty for none.
        package: the importable package holding ``file`` and ``card``. ``register_model`` fills
            it with the registering module's package (or, for a module that is a plain ``.py``
            file, makes the paths absolute, relative to that file's folder).
    """

    track: str
    file: str
    card: str = ""
    package: str = ""

    def __post_init__(self) -> None:
        from atom_bench.core.tracks import TRACK_NAMES

        if self.track not in TRACK_NAMES:
            raise ModelError(f"shipped weights {self.file!r} name unknown track {self.track!r}; choose one of {', '.join(TRACK_NAMES)}")
        if not self.file.endswith(".safetensors"):
            raise ModelError(f"shipped weights must be a .safetensors file; got {self.file!r}")

    def _locate(self, relative: str) -> Path:
        if not self.package:
            return Path(relative)
        from importlib.resources import files

        return Path(str(files(self.package) / relative))

    @property
    def path(self) -> Path:
        """The weights file on disk."""
        return self._locate(self.file)

    @property
    def metadata(self) -> dict[str, str]:
        """The file's safetensors metadata (track, seed, step, validation scores, ...), read lazily."""
        return read_metadata(self.path)

    @property
    def validation_top1(self) -> tuple[float, float] | None:
        """``(coarse, fine)`` validation top-1 recorded in the metadata, if any."""
        meta = self.metadata
        if "val_top1_high" not in meta or "val_top1_low" not in meta:
            return None
        return float(meta["val_top1_high"]), float(meta["val_top1_low"])

    def card_text(self) -> str:
        """The model card's section for these weights (``""`` when there is no card)."""
        if not self.card:
            return ""
        file, _, section = self.card.partition("#")
        path = self._locate(file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelError(f"model card {path} of {self.file} cannot be read: {exc}") from exc
        heading = f"## {section or Path(self.file).name}"
        lines = text.splitlines()
        if heading not in lines:
            raise ModelError(f"model card {path} has no section {heading!r}")
        start = lines.index(heading)
        stop = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        return "\n".join(lines[start:stop]).rstrip() + "\n"
