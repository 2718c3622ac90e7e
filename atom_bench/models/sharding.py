"""Evaluation across processes (torchrun) and the per-batch prediction cache (resume).

**Sharding.** Under ``torchrun`` (``WORLD_SIZE > 1``) each rank predicts a share of the split:
whole volumes, assigned largest first to the rank with the fewest slices so far (ties: the lower
rank; volumes of equal size in id order), so the assignment is the same on every rank and run.
With fewer volumes than ranks the split's rows are cut into contiguous, near-equal chunks. The
shares are gathered to rank 0 and put back in split order (:func:`reassemble`).

**Cache.** :class:`BatchCache` keeps one ``.npz`` per finished batch under
``runs/.cache/<key>/`` (written atomically) and a ``meta.json`` with the key's parts and the
number of batches expected, so that an interrupted evaluation resumes where it stopped. A
batch file that is missing, unreadable or of the wrong row count is predicted again;
:meth:`BatchCache.complete` says whether every batch is there.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atom_bench._io import atomic_path, sha256_file, write_json_atomic
from atom_bench.errors import ModelError

DEFAULT_CACHE = Path("runs") / ".cache"


# --------------------------------------------------------------------------------------------
# Shards


def shard_indices(volume_ids: Sequence[str], rank: int, world: int) -> np.ndarray:
    """The sorted sample indices rank ``rank`` of ``world`` predicts (all of them when ``world == 1``)."""
    n = len(volume_ids)
    if world <= 1:
        return np.arange(n)
    groups: dict[str, list[int]] = {}
    for index, volume in enumerate(volume_ids):
        groups.setdefault(volume, []).append(index)
    if len(groups) < world:  # not enough whole volumes to go round: contiguous chunks
        return np.array_split(np.arange(n), world)[rank]
    load, mine = [0] * world, []
    for volume in sorted(groups, key=lambda v: (-len(groups[v]), v)):
        target = min(range(world), key=lambda r: (load[r], r))
        load[target] += len(groups[volume])
        if target == rank:
            mine.extend(groups[volume])
    return np.array(sorted(mine), dtype=np.int64)


def reassemble(parts: Sequence[tuple[np.ndarray, dict[str, np.ndarray] | None]], n: int) -> dict[str, np.ndarray]:
    """Put the ranks' ``(indices, arrays)`` back into one set of arrays in split order.

    Raises:
        ModelError: the shares do not cover each of the ``n`` rows exactly once, or disagree on fields.
    """
    seen = np.zeros(n, dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    keys: set[str] | None = None
    for indices, arrays in parts:
        seen[indices] += 1
        if arrays is None or len(indices) == 0:
            continue
        if keys is None:
            keys = set(arrays)
        elif set(arrays) != keys:
            raise ModelError(f"ranks returned different prediction fields: {sorted(keys)} and {sorted(arrays)}")
        for key, value in arrays.items():
            if key not in out:
                out[key] = np.empty((n, *value.shape[1:]), dtype=value.dtype)
            out[key][indices] = value
    if not np.all(seen == 1):
        raise ModelError(f"the ranks' shares cover {int((seen == 1).sum())} of {n} slices exactly once; expected all")
    return out


# --------------------------------------------------------------------------------------------
# Processes and devices


def world() -> tuple[int, int]:
    """``(rank, world size)`` from torchrun's environment (``(0, 1)`` without torchrun)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any rank (so that every rank stops at the same step)."""
        if self.world == 1:
            return flag
        import torch.distributed as dist

        value = torch.tensor([float(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())


@contextmanager
def distributed() -> Iterator[Distributed]:
    """Join the torchrun job (gloo) when ``WORLD_SIZE > 1``; leave it, after a barrier, at the end.

    A process group that exists already is used and left alone; one created here is destroyed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield Distributed()
        return
    import torch.distributed as dist

    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("gloo")
    try:
        yield Distributed(dist.get_rank(), dist.get_world_size())
        dist.barrier()  # no rank leaves while another is still writing or validating
    finally:
        if owned:
            dist.destroy_process_group()


def gather(payload: Any, world_size: int) -> list[Any]:
    """Every rank's ``payload``, in rank order, on every rank (a no-op list of one without torchrun)."""
    if world_size <= 1:
        return [payload]
    import torch.distributed as dist

    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, payload)
    return out


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to run on; ``cuda`` under torchrun is this process's ``cuda:LOCAL_RANK``.

    Raises:
        ModelError: an unknown device name, or one this machine does not have.
    """
    if device is None:
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, ValueError):
        raise ModelError(f"unknown device {str(device)!r}; use cpu, cuda or cuda:N", parameters=("device",)) from None
    if chosen.type == "cpu":
        return chosen
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device {str(device)!r} is not available here (no CUDA GPU); use --device cpu", parameters=("device",))
        count = torch.cuda.device_count()
        index = chosen.index if chosen.index is not None else int(os.environ.get("LOCAL_RANK", "0")) % count
        if index >= count:
            raise ModelError(f"device {str(device)!r} is not available here ({count} CUDA device(s))", parameters=("device",))
        return torch.device("cuda", index)
    if chosen.type == "mps" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return chosen
    raise ModelError(f"device {str(device)!r} is not available here; use --device cpu", parameters=("device",))


# --------------------------------------------------------------------------------------------
# The cache


def model_source_sha256(factory: Any) -> str:
    """sha256 of the file that defines a model factory ("none" where it has none): an edited model
    file gets a new cache key."""
    try:
        source = inspect.getsourcefile(factory)
    except TypeError:
        source = None
    return sha256_file(source) if source and os.path.isfile(source) else "none"


def cache_parts(model_spec: str, source_sha256: str, weights: str | os.PathLike[str] | None, manifest_sha256: str, track: str,
                split: str, mode: str, batch_size: int, device: str, shard: str = "0/1") -> dict[str, Any]:  # fmt: skip
    """What a cached batch depends on (the key is the sha256 of this, see :func:`cache_key`)."""
    return {
        "model": model_spec, "model_source_sha256": source_sha256,
        "weights_sha256": sha256_file(weights) if weights else "none", "manifest_sha256": manifest_sha256,
        "track": track, "split": split, "mode": mode, "batch_size": int(batch_size), "device": device, "shard": shard,
    }  # fmt: skip


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class BatchCache:
    """One run's finished batches: ``batch-00000.npz`` ... and ``meta.json`` in ``directory``.

    Nothing is written before the first batch finishes. ``meta.json`` that does not match (a
    different key, batch count or row count) empties the directory first.
    """

    def __init__(self, directory: str | os.PathLike[str], parts: dict[str, Any], n_rows: int, batch_size: int):
        self.directory = Path(directory)
        self.n_rows, self.batch_size = int(n_rows), int(batch_size)
        self.n_batches = -(-self.n_rows // self.batch_size)
        self.meta = {"key": cache_key(parts), "parts": parts, "n_batches": self.n_batches, "n_rows": self.n_rows}
        self._checked = False

    @classmethod
    def under(cls, root: str | os.PathLike[str] | None, parts: dict[str, Any], n_rows: int, batch_size: int) -> BatchCache:
        """The cache for ``parts`` under ``root`` (default ``runs/.cache``): ``root/<key>/``."""
        return cls(Path(root or DEFAULT_CACHE) / cache_key(parts), parts, n_rows, batch_size)

    def rows(self, index: int) -> int:
        return min(self.batch_size, self.n_rows - index * self.batch_size)

    def _path(self, index: int) -> Path:
        return self.directory / f"batch-{index:05d}.npz"

    def _check_meta(self) -> None:
        """Empty a directory whose ``meta.json`` is not this cache's (once per instance)."""
        if self._checked:
            return
        self._checked = True
        meta = self.directory / "meta.json"
        try:
            stored = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None
        if stored is not None and stored != self.meta:
            shutil.rmtree(self.directory, ignore_errors=True)

    def load(self, index: int) -> dict[str, np.ndarray] | None:
        """A finished batch's arrays, or ``None`` if it is missing, unreadable or of the wrong size."""
        self._check_meta()
        path = self._path(index)
        if not (self.directory / "meta.json").is_file() or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError, EOFError):  # a damaged file: predict the batch again
            return None
        if not arrays or any(value.shape[:1] != (self.rows(index),) for value in arrays.values()):
            return None
        return arrays

    def save(self, index: int, arrays: dict[str, np.ndarray]) -> None:
        """Store a finished batch (atomically; ``meta.json`` first)."""
        self._check_meta()
        self.directory.mkdir(parents=True, exist_ok=True)
        if not (self.directory / "meta.json").is_file():
            write_json_atomic(self.directory / "meta.json", self.meta)
        with atomic_path(self._path(index)) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    def complete(self) -> bool:
        """Whether every expected batch is stored with its row count."""
        return all(self.load(index) is not None for index in range(self.n_batches))

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
