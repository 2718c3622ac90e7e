"""The model interface: a prediction protocol, model metadata, a registry and safe weights.

Every model, a shipped baseline or a user's own, implements :class:`SliceLocator`::

    prediction = model.predict(volumes, slices)   # (B,1,S,S,S), (B,1,h,w) float tensors

returning a :class:`Prediction`: scores over the 27 coarse and 729 fine blocks of
``docs/PROTOCOL.md`` section 3.3 (higher = more likely; fine index ``27 * high + sub``) and,
optionally, a pose (centre in cube voxels, unit plane normal in voxel axes).

A model is found by :func:`resolve_model` from a *spec*:

- a short name of a shipped baseline (``regismcan``), meaning the module ``baselines.regismcan``;
- a module path (``baselines.regismcan``, ``mypackage.mymodel``) or a ``.py`` file path: the
  module's ``create_model(**kwargs)`` factory is called;
- ``module:attribute``: that attribute is the factory.

A factory returns ``(model, ModelMeta)`` (or just the model; metadata is then inferred).
Weights are safetensors files, read with ``safetensors.torch.load_file``: never pickle.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from atom_bench._io import atomic_path
from atom_bench.errors import ModelError

N_HIGH = 27
N_LOW = 729

#: Shipped baselines, by short name (module ``baselines.<name>``).
BASELINES: tuple[str, ...] = ("chance", "prior", "regismcan", "released", "cnn", "vit", "search")


@dataclass
class Prediction:
    """What a model says about a batch of ``B`` slices.

    Attributes:
        high_scores: ``(B, 27)`` float, one score per coarse block (``high_label`` order).
        low_scores: ``(B, 729)`` float, one score per fine block (``low_label = 27 * high + sub``).
        center_vox: optional ``(B, 3)`` predicted slice centre, cube voxel coordinates.
        normal: optional ``(B, 3)`` predicted unit plane normal, voxel axes (sign is irrelevant).

    Scores are any monotone confidence (logits, log-probabilities, probabilities).
    """

    high_scores: Tensor
    low_scores: Tensor
    center_vox: Tensor | None = None
    normal: Tensor | None = None

    def __post_init__(self) -> None:
        b = self.high_scores.shape[0] if self.high_scores.ndim == 2 else -1
        if self.high_scores.ndim != 2 or self.high_scores.shape[1] != N_HIGH:
            raise ModelError(f"high_scores must be (B, 27); got {tuple(self.high_scores.shape)}")
        if tuple(self.low_scores.shape) != (b, N_LOW):
            raise ModelError(f"low_scores must be ({b}, 729); got {tuple(self.low_scores.shape)}")
        for name in ("center_vox", "normal"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (b, 3):
                raise ModelError(f"{name} must be ({b}, 3) or None; got {tuple(value.shape)}")

    @property
    def high_label(self) -> Tensor:
        """Top-1 coarse block per slice ``(B,)``."""
        return self.high_scores.argmax(dim=1)

    @property
    def low_label(self) -> Tensor:
        """Top-1 fine block per slice ``(B,)``."""
        return self.low_scores.argmax(dim=1)


@runtime_checkable
class SliceLocator(Protocol):
    """Anything with ``predict(volumes (B,1,S,S,S), slices (B,1,h,w)) -> Prediction``."""

    def predict(self, volumes: Tensor, slices: Tensor) -> Prediction: ...


@dataclass(frozen=True)
class ModelMeta:
    """Metadata recorded beside every result (leaderboard row, evaluation report).

    ``uses_volume`` is what the author claims (``None``: unknown); the volume-swap diagnostic
    (:func:`volume_swap_diagnostic`) measures it.
    """

    name: str
    n_parameters: int = 0
    training_data: str = "none"
    weights_file: str | None = None
    licence: str = "MIT"
    code_url: str = ""
    reference: str = ""
    uses_volume: bool | None = None
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Factory = Callable[..., Any]


def count_parameters(model: Any) -> int:
    """Number of parameters of a ``torch.nn.Module`` (0 for anything else)."""
    if isinstance(model, torch.nn.Module):
        return sum(p.numel() for p in model.parameters())
    return 0


# --------------------------------------------------------------------------------------------
# Resolution of a spec to a factory


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=3, cutoff=0.5)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _known_names() -> list[str]:
    return [*BASELINES, *(f"baselines.{name}" for name in BASELINES)]


def _public_callables(module: Any) -> list[str]:
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and callable(value) and not inspect.ismodule(value)
    ]


def _import_file(path: Path) -> Any:
    name = f"_atom_bench_user_{path.stem}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot import model file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a user's file failing to import is a user error
        sys.modules.pop(name, None)
        raise ModelError(f"model file {path} failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def _import_module(module_name: str, spec: str) -> Any:
    if module_name.endswith(".py") or "/" in module_name:
        path = Path(module_name)
        if not path.is_file():
            raise ModelError(f"model file {module_name!r} does not exist")
        return _import_file(path)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise ModelError(
                f"unknown model {spec!r}: no module {module_name!r}."
                f"{_suggest(module_name, _known_names())}"
                f" Known baselines: {', '.join(BASELINES)}."
            ) from exc
        raise ModelError(f"model module {module_name!r} needs {missing!r}, which is not installed") from exc


def resolve_factory(spec: str) -> tuple[Factory, str]:
    """The factory named by ``spec`` and a display name for it.

    Raises:
        ModelError: unknown module or attribute, with a 'did you mean' suggestion.
    """
    spec = spec.strip()
    if not spec:
        raise ModelError(f"empty model name; known baselines: {', '.join(BASELINES)}")
    module_name, _, attr = spec.partition(":")
    if module_name in BASELINES:
        module_name = f"baselines.{module_name}"
    module = _import_module(module_name, spec)
    attr = attr or "create_model"
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        what = "has no factory 'create_model'" if attr == "create_model" else f"has no callable {attr!r}"
        raise ModelError(
            f"model module {module_name!r} {what}.{_suggest(attr, _public_callables(module))}"
            " Use 'module:factory' to name another factory."
        )
    return factory, spec.split(":")[-1] if ":" in spec else module_name.rsplit(".", 1)[-1]


def _call_factory(factory: Factory, spec: str, kwargs: Mapping[str, Any]) -> Any:
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        try:
            accepted = ", ".join(inspect.signature(factory).parameters)
        except (TypeError, ValueError):
            accepted = "?"
        raise ModelError(f"model {spec!r} does not accept {sorted(kwargs)}: {exc} (accepts: {accepted})") from exc
    except ValueError:  # builtins without a signature: just call
        pass
    try:
        return factory(**kwargs)
    except ModelError:
        raise
    except (TypeError, ValueError) as exc:
        raise ModelError(f"model {spec!r} cannot be built with {dict(kwargs)}: {exc}") from exc


def resolve_model(spec: str, weights: str | Path | None = None, **kwargs: Any) -> tuple[SliceLocator, ModelMeta]:
    """Build the model named by ``spec`` and load ``weights`` (a safetensors file) if given.

    Args:
        spec: short baseline name, module path, ``.py`` file, or ``module:factory``.
        weights: optional safetensors file for the model's ``state_dict`` (or for its own
            ``load_weights(path)`` method if it defines one).
        **kwargs: passed to the factory (e.g. ``volume_size=64, slice_shape=(16, 16)``).

    Returns:
        ``(model, meta)``; ``meta.weights_file`` is set to ``weights`` when given.

    Raises:
        ModelError: unknown name (with a suggestion), bad factory result or bad weights.
    """
    factory, name = resolve_factory(spec)
    result = _call_factory(factory, spec, kwargs)
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], ModelMeta):
        model, meta = result
    else:
        model, meta = result, ModelMeta(name=name, n_parameters=count_parameters(result))
    if not callable(getattr(model, "predict", None)):
        raise ModelError(f"model {spec!r} has no predict(volumes, slices) method; see SliceLocator")
    if weights is not None:
        load_weights(model, weights)
        meta = dataclasses.replace(meta, weights_file=str(weights))
    return model, meta


# --------------------------------------------------------------------------------------------
# Weights (safetensors only)


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


def save_weights(model: torch.nn.Module, path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model.state_dict()`` to a safetensors file atomically (tensors made contiguous)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={str(k): str(v) for k, v in (metadata or {}).items()})
    return path


# --------------------------------------------------------------------------------------------
# Diagnostic: does the prediction depend on the volume?


def volume_swap_diagnostic(
    model: SliceLocator,
    volumes: Tensor,
    slices: Tensor,
    high_labels: Tensor | None = None,
    low_labels: Tensor | None = None,
    shift: int = 1,
) -> dict[str, float]:
    """Predict with the right volumes, then with each slice paired with another sample's volume.

    The volumes are rolled by ``shift`` along the batch, so every slice meets a different volume.
    A model that really compares slice and volume changes its scores (``max_abs_diff > 0``) and,
    once it is good, loses accuracy (``*_drop > 0``); the released RegisMCAN gives exactly 0.

    Returns:
        ``max_abs_diff_high``, ``max_abs_diff_low`` and, when labels are given, top-1 accuracies
        ``high_acc``, ``high_acc_swapped``, ``high_drop`` and the same for ``low``.
    """
    if volumes.shape[0] < 2:
        raise ModelError("the volume-swap diagnostic needs a batch of at least 2 samples")
    right = model.predict(volumes, slices)
    swapped = model.predict(torch.roll(volumes, shifts=shift, dims=0), slices)
    out = {
        "max_abs_diff_high": float((right.high_scores - swapped.high_scores).abs().max()),
        "max_abs_diff_low": float((right.low_scores - swapped.low_scores).abs().max()),
    }
    for level, labels in (("high", high_labels), ("low", low_labels)):
        if labels is None:
            continue
        labels = torch.as_tensor(labels)
        acc = float((getattr(right, f"{level}_label") == labels).float().mean())
        acc_swapped = float((getattr(swapped, f"{level}_label") == labels).float().mean())
        out.update({f"{level}_acc": acc, f"{level}_acc_swapped": acc_swapped, f"{level}_drop": acc - acc_swapped})
    return out
