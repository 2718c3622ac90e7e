"""ATOM-Bench: locate a 2D slice inside a 3D medical volume.

The public API is re-exported here (imported lazily, so ``import atom_bench`` stays cheap);
``docs/PROTOCOL.md`` is the task contract.

    >>> import atom_bench
    >>> train = atom_bench.load_split("easy", "train")          # a datasets.Dataset
    >>> volume = atom_bench.load_volume(train[0]["volume_id"])  # cube, mask, affine
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("atom-bench")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"

from atom_bench.errors import AtomBenchError

_EXPORTS = {
    "load_split": "atom_bench.data.dataset",
    "load_volume": "atom_bench.data.dataset",
    "load_volumes": "atom_bench.data.dataset",
    "load_manifest": "atom_bench.data.dataset",
    "verify_checksums": "atom_bench.data.dataset",
    "AtomSliceDataset": "atom_bench.data.dataset",
    "stream_samples": "atom_bench.data.dataset",
    "build_benchmark": "atom_bench.data.build",
    "BuildConfig": "atom_bench.data.build",
    "prepare_volume": "atom_bench.core.volumes",
    "get_track": "atom_bench.core.tracks",
    "fine_grid_to_label_order": "atom_bench.core.labels",
    "Benchmark": "atom_bench.data.benchmark",
    "dummy_prediction": "atom_bench.eval.predictions",
    "write_predictions": "atom_bench.eval.predictions",
    "validate_predictions": "atom_bench.eval.predictions",
    "Evaluator": "atom_bench.eval.scoring",
    "score_file": "atom_bench.eval.scoring",
    "submit": "atom_bench.board.submissions",
    "resolve_model": "atom_bench.models.registry",
    "register_model": "atom_bench.models.registry",
    "list_models": "atom_bench.models.registry",
    "get_model": "atom_bench.models.registry",
    "Capabilities": "atom_bench.models.registry",
    "Weights": "atom_bench.models.weights",
    "Prediction": "atom_bench.models.protocol",
    "compare_files": "atom_bench.eval.compare",
}

__all__ = ["AtomBenchError", "__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'atom_bench' has no attribute {name!r}")
