"""The model registry: one record per model, and the resolution of a model spec to a model.

A model registers itself next to its factory, in its own module::

    @register_model(
        name="cnn",
        description="two-stream CNN fused by a learned per-block correlation",
        capabilities=Capabilities(trainable=True, uses_volume=True),
        weights=[Weights("easy", "weights/cnn-easy.safetensors", card="weights/MODEL_CARDS.md#cnn-easy.safetensors")],
        licence="MIT",
    )
    def create_model(volume_size=None, slice_shape=None, dim=64): ...

The record (:class:`ModelEntry`) says what the model can do (:class:`Capabilities`), so the
toolkit never checks a model by its name: ``train`` reads ``trainable`` and
``needs_train_counts``, evaluation reads the shipped :class:`~atom_bench.models.weights.Weights`
of the track.

**Discovery.** The toolkit never imports a model package by name. A package announces itself in
the entry-point group :data:`ENTRY_POINT_GROUP` (the shipped baselines: ``baselines = "baselines"``
under ``[project.entry-points."atom_bench.models"]`` in ``pyproject.toml``); the first look-up by
name (:func:`list_models`, :func:`get_model`, a short ``--model`` name) imports every such
package, and importing it registers its models.

**Specs** (:func:`resolve_model`, ``--model``):

- a registered name (``regismcan``);
- a module path (``baselines.regismcan``, ``mypackage.mymodel``) or a ``.py`` file path: the
  module's ``create_model(**kwargs)`` factory is called (a module without one that registers
  exactly one model means that model);
- ``module:attribute``: that attribute is the factory.

A factory returns ``(model, ModelMeta)`` (or just the model; metadata is then inferred). For a
registered factory, the entry supplies the metadata's name, licence, code URL, reference and
``uses_volume``. The model contract lives in :mod:`atom_bench.models.protocol` and weights in
:mod:`atom_bench.models.weights`; both are re-exported here, where user modules written against
earlier versions import them from.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from atom_bench.errors import ModelError
from atom_bench.models.diagnostics import volume_swap_diagnostic
from atom_bench.models.protocol import Logits, ModelMeta, Prediction, SliceLocator, TrainableLocator, count_parameters
from atom_bench.models.weights import Weights, describe_training, load_weights, read_metadata, read_safetensors, save_weights

__all__ = [
    "ENTRY_POINT_GROUP", "Capabilities", "ModelEntry", "register_model", "list_models", "get_model", "entry_of",
    "ResolvedSpec", "resolve_spec", "resolve_factory", "resolve_model",
    # re-exported: the contract and weights helpers, where user modules import them from
    "Logits", "ModelMeta", "Prediction", "SliceLocator", "TrainableLocator", "Weights", "count_parameters",
    "load_weights", "read_safetensors", "save_weights", "volume_swap_diagnostic",
]  # fmt: skip

ENTRY_POINT_GROUP = "atom_bench.models"
#: Registered names: short, and free of ``.``, ``/`` and ``:`` so they never read as a module or a file.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

Factory = Callable[..., Any]
F = TypeVar("F", bound=Factory)


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What a model can do; the toolkit's only source for these questions.

    Attributes:
        trainable: ``train()`` can optimise it (the trainable contract of
            :class:`~atom_bench.models.protocol.TrainableLocator`).
        needs_train_counts: it is built from the training split's label counts: its factory takes
            ``high_counts (27,)`` and ``low_counts (729,)``; evaluation without weights passes the
            benchmark's counts, and ``train()`` "trains" it by counting (the prior).
        uses_volume: the author's claim that the prediction depends on the volume (``None``:
            unknown); the volume-reliance diagnostic measures it.
        max_volume_size: the largest cube side the model can be built for (its size grows with
            the cube); ``None``: any.
    """

    trainable: bool
    needs_train_counts: bool = False
    uses_volume: bool | None = None
    max_volume_size: int | None = None

    def __post_init__(self) -> None:
        if self.trainable and self.needs_train_counts:
            raise ModelError("a model is either trained by gradient (trainable) or built from label counts (needs_train_counts), not both")

    def fits(self, volume_size: int) -> bool:
        """Whether the model can be built for cubes of side ``volume_size``."""
        return self.max_volume_size is None or volume_size <= self.max_volume_size


@dataclass(frozen=True, kw_only=True)
class ModelEntry:
    """A registered model: its name, its factory, what it can do and its shipped weights.

    Attributes:
        name: the short name (``--model NAME``): letters, digits, ``_`` and ``-``.
        factory: the loader, ``factory(volume_size=..., slice_shape=..., **options)`` returning
            ``(model, ModelMeta)`` or the model.
        description: one line saying what the model is.
        capabilities: see :class:`Capabilities`.
        reference, code_url, licence: where it comes from (recorded with every result).
        weights: shipped weights, at most one per track.
    """

    name: str
    factory: Factory
    description: str
    capabilities: Capabilities
    reference: str = ""
    code_url: str = ""
    licence: str = "unknown"
    weights: tuple[Weights, ...] = ()

    def __post_init__(self) -> None:
        if not NAME_PATTERN.fullmatch(self.name):
            raise ModelError(f"invalid model name {self.name!r}: use 1-64 letters, digits, '_' or '-', not starting with a symbol")
        if not callable(self.factory):
            raise ModelError(f"model {self.name!r}: the factory must be callable; got {type(self.factory).__name__}")
        if not isinstance(self.capabilities, Capabilities):
            raise ModelError(f"model {self.name!r}: capabilities must be a Capabilities record")
        weights = tuple(self.weights)
        if not all(isinstance(w, Weights) for w in weights):
            raise ModelError(f"model {self.name!r}: weights must be Weights records")
        tracks = [w.track for w in weights]
        if len(set(tracks)) != len(tracks):
            raise ModelError(f"model {self.name!r} ships more than one weights file for a track: {tracks}")
        object.__setattr__(self, "weights", weights)  # a list given by the caller becomes a tuple

    def weights_for(self, track: str) -> Weights | None:
        """The shipped weights for ``track``, if any."""
        return next((w for w in self.weights if w.track == track), None)

    def describe(self, meta: ModelMeta) -> ModelMeta:
        """``meta`` (from the factory) with what this entry says about the model."""
        return dataclasses.replace(
            meta, name=self.name, licence=self.licence, code_url=self.code_url, reference=self.reference,
            uses_volume=self.capabilities.uses_volume,
        )  # fmt: skip

    def build(self, weights: str | Path | None = None, **kwargs: Any) -> tuple[SliceLocator, ModelMeta]:
        """Build the model (``kwargs`` go to the factory) and load ``weights`` if given."""
        return ResolvedSpec(self.name, self.name, self.factory, self).build(weights, **kwargs)


# --------------------------------------------------------------------------------------------
# The registry

_ENTRIES: dict[str, ModelEntry] = {}
_discovered = False


def _origin(factory: Factory) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', repr(factory))}"


def _anchored(weights: Weights, module: ModuleType | None) -> Weights:
    """``weights`` with its paths tied to the registering module (its package, or its folder)."""
    if weights.package or module is None:
        return weights
    package = getattr(module, "__package__", None) or ""
    if package:
        return dataclasses.replace(weights, package=package)
    folder = Path(getattr(module, "__file__", None) or ".").resolve().parent  # a plain .py file
    card = str(folder / weights.card) if weights.card else ""
    return dataclasses.replace(weights, file=str(folder / weights.file), card=card)


def register_model(
    name: str,
    *,
    description: str,
    capabilities: Capabilities,
    reference: str = "",
    code_url: str = "",
    licence: str = "unknown",
    weights: Iterable[Weights] = (),
) -> Callable[[F], F]:
    """Decorator: register the decorated factory as model ``name`` (see :class:`ModelEntry`).

    Weights paths are inside the registering module's package. Registering a name again from the
    same factory (a module imported again) replaces the entry; from another factory it is an error.
    """

    def decorate(factory: F) -> F:
        module = sys.modules.get(getattr(factory, "__module__", ""))
        entry = ModelEntry(
            name=name, factory=factory, description=description, capabilities=capabilities, reference=reference,
            code_url=code_url, licence=licence, weights=tuple(_anchored(w, module) for w in weights),
        )  # fmt: skip
        existing = _ENTRIES.get(name)
        if existing is not None and _origin(existing.factory) != _origin(factory):
            raise ModelError(f"model name {name!r} is already registered by {_origin(existing.factory)}; choose another name")
        _ENTRIES[name] = entry
        return factory

    return decorate


def _discover() -> None:
    """Import every package of the :data:`ENTRY_POINT_GROUP` entry points (once per process)."""
    global _discovered
    if _discovered:
        return
    _discovered = True  # first: a plugin's import may look models up itself
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()
        except Exception as exc:  # one broken plugin must not take the others down with it
            warnings.warn(f"model plugin {point.name!r} ({point.value}) failed to load: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=3)


def list_models() -> tuple[ModelEntry, ...]:
    """Every registered model, in registration order (shipped baselines and plugins included)."""
    _discover()
    return tuple(_ENTRIES.values())


def get_model(name: str) -> ModelEntry:
    """The entry registered as ``name``.

    Raises:
        ModelError: no such model, with a 'did you mean' suggestion.
    """
    _discover()
    entry = _ENTRIES.get(name)
    if entry is None:
        raise ModelError(f"unknown model {name!r}.{_suggest(name, list(_ENTRIES))} Known models: {', '.join(_ENTRIES) or 'none'}.")
    return entry


def entry_of(factory: Factory) -> ModelEntry | None:
    """The entry whose factory is ``factory`` (``None`` for an unregistered factory)."""
    return next((e for e in _ENTRIES.values() if e.factory is factory), None)


# --------------------------------------------------------------------------------------------
# Resolution of a spec to a factory


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=3, cutoff=0.5)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _known_specs() -> list[str]:
    _discover()
    return [*_ENTRIES, *(getattr(e.factory, "__module__", "") for e in _ENTRIES.values())]


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
            local = Path(*module_name.split(".")).with_suffix(".py")
            if local.is_file():  # a file right here that is not on the import path
                raise ModelError(f"unknown model {spec!r}: no importable module {module_name!r}, but {local} is here; "
                                 f"pass it as a file: --model ./{local.as_posix()}") from exc  # fmt: skip
            raise ModelError(
                f"unknown model {spec!r}: no module {module_name!r}.{_suggest(module_name, _known_specs())}"
                f" Known baselines and registered models: {', '.join(_ENTRIES) or 'none'}."
            ) from exc
        raise ModelError(f"model module {module_name!r} needs {missing!r}, which is not installed") from exc


def resolve_spec(spec: str) -> ResolvedSpec:
    """What ``spec`` names: its factory, a display name and its registry entry (if registered).

    A module or file is imported once here; build from the result as often as needed.

    Raises:
        ModelError: unknown name, module or attribute, with a 'did you mean' suggestion.
    """
    spec = spec.strip()
    if not spec:
        raise ModelError(f"empty model name; known models: {', '.join(e.name for e in list_models())}")
    module_name, _, attr = spec.partition(":")
    if NAME_PATTERN.fullmatch(module_name):  # could be a registered name
        _discover()
        entry = _ENTRIES.get(module_name)
        if entry is not None and not attr:
            return ResolvedSpec(spec, entry.name, entry.factory, entry)
        if entry is not None:  # "name:factory": another factory of the registered model's module
            module_name = entry.factory.__module__
    module = _import_module(module_name, spec)
    factory = getattr(module, attr or "create_model", None)
    if factory is None and not attr:
        registered = [e for e in _ENTRIES.values() if getattr(e.factory, "__module__", None) == module.__name__]
        if len(registered) == 1:
            return ResolvedSpec(spec, registered[0].name, registered[0].factory, registered[0])
    if factory is None or not callable(factory):
        what = "has no factory 'create_model'" if not attr else f"has no callable {attr!r}"
        raise ModelError(
            f"model module {module_name!r} {what}.{_suggest(attr or 'create_model', _public_callables(module))}"
            " Use 'module:factory' to name another factory."
        )
    entry = entry_of(factory)
    leaf = Path(module_name).stem if module_name.endswith(".py") or "/" in module_name else module_name.rsplit(".", 1)[-1]
    name = entry.name if entry is not None else attr or leaf
    return ResolvedSpec(spec, name, factory, entry)


def resolve_factory(spec: str) -> tuple[Factory, str]:
    """The factory named by ``spec`` and a display name for it (see :func:`resolve_spec`)."""
    resolved = resolve_spec(spec)
    return resolved.factory, resolved.name


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


@dataclass(frozen=True)
class ResolvedSpec:
    """A model spec resolved to its factory (:func:`resolve_spec`).

    Attributes:
        spec: the spec as given (for messages).
        name: display name: the entry's name, else the factory's or module's name.
        factory: the callable that builds the model.
        entry: the registry entry of ``factory``; ``None`` for an unregistered user factory.
    """

    spec: str
    name: str
    factory: Factory
    entry: ModelEntry | None

    def build(self, weights: str | Path | None = None, **kwargs: Any) -> tuple[SliceLocator, ModelMeta]:
        """Call the factory with ``kwargs`` and load ``weights`` (a safetensors file) if given."""
        result = _call_factory(self.factory, self.spec, kwargs)
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], ModelMeta):
            model, meta = result
        else:
            model, meta = result, ModelMeta(name=self.name, n_parameters=count_parameters(result))
        if self.entry is not None:
            meta = self.entry.describe(meta)
        if not callable(getattr(model, "predict", None)):
            raise ModelError(f"model {self.spec!r} has no predict(volumes, slices) method; see SliceLocator")
        if weights is not None:
            load_weights(model, weights)
            meta = dataclasses.replace(meta, weights_file=str(weights))
            if Path(weights).suffix == ".safetensors":
                # the record says what these weights were trained on, not what the factory built
                meta = dataclasses.replace(meta, training_data=describe_training(read_metadata(weights)) or meta.training_data)
        return model, meta


def resolve_model(spec: str, weights: str | Path | None = None, **kwargs: Any) -> tuple[SliceLocator, ModelMeta]:
    """Build the model named by ``spec`` and load ``weights`` (a safetensors file) if given.

    Args:
        spec: registered name, module path, ``.py`` file, or ``module:factory``.
        weights: optional safetensors file for the model's ``state_dict`` (or for its own
            ``load_weights(path)`` method if it defines one). Shipped weights are not loaded
            here; :func:`atom_bench.models.run.build_model` picks them for a track.
        **kwargs: passed to the factory (e.g. ``volume_size=64, slice_shape=(16, 16)``).

    Returns:
        ``(model, meta)``; ``meta.weights_file`` is set to ``weights`` when given.

    Raises:
        ModelError: unknown name (with a suggestion), bad factory result or bad weights.
    """
    return resolve_spec(spec).build(weights, **kwargs)
