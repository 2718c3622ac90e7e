"""ATOM-Bench: locate a 2D slice inside a 3D medical volume.

The public API is re-exported here; see ``docs/PROTOCOL.md`` for the task contract.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("atom-bench")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"

from atom_bench.errors import AtomBenchError

__all__ = ["AtomBenchError", "__version__"]
