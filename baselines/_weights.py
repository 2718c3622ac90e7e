"""Where the baselines keep their shipped weights: ``weights/<name>-<track>.safetensors`` in this
package, each with its section of ``weights/MODEL_CARDS.md`` (written by
``scripts/write_model_cards.py``). Each baseline lists the tracks it ships weights for."""

from __future__ import annotations

from atom_bench.models.weights import Weights

EVERY_TRACK = ("paper", "easy", "hard", "histology")
CARDS = "weights/MODEL_CARDS.md"


def shipped(name: str, tracks: tuple[str, ...] = EVERY_TRACK) -> tuple[Weights, ...]:
    """The weights records of baseline ``name`` for ``tracks``."""
    return tuple(Weights(track, f"weights/{name}-{track}.safetensors", card=f"{CARDS}#{name}-{track}.safetensors") for track in tracks)
