"""Read a built benchmark as data: splits as ``datasets.Dataset``, cubes, a torch wrapper and an
on-the-fly sample stream. Which benchmark: see :class:`atom_bench.data.benchmark.Benchmark`.
"""

from __future__ import annotations

from collections.abc import Iterator

import datasets
import numpy as np
import pyarrow.parquet as pq

from atom_bench.core.tracks import TRACK_NAMES, TrackSpec, render_samples, sample_poses
from atom_bench.core.volumes import Volume
from atom_bench.data.benchmark import Benchmark, BenchmarkLike
from atom_bench.errors import DataError


def load_manifest(root: BenchmarkLike = None) -> dict:
    """The benchmark's ``manifest.json`` (build parameters, seeds, file checksums)."""
    return Benchmark.open(root).manifest


def verify_checksums(root: BenchmarkLike = None) -> int:
    """Check every file listed in the manifest; returns the number checked, raises on mismatch."""
    return Benchmark.open(root).verify()


def load_split(track: str, split: str, root: BenchmarkLike = None) -> datasets.Dataset:
    """One split of one track as an in-memory ``datasets.Dataset`` (PROTOCOL section 4 columns)."""
    paths = Benchmark.open(root).split_files(track, split)
    table = datasets.table.concat_tables([datasets.table.InMemoryTable(pq.read_table(p)) for p in paths])
    return datasets.Dataset(table)


def load_volumes(track: str = "easy", root: BenchmarkLike = None) -> dict[str, Volume]:
    """All cubes a track samples from, by ``volume_id``."""
    return Benchmark.open(root).volumes(track)


def load_volume(volume_id: str, track: str = "easy", root: BenchmarkLike = None) -> Volume:
    """The cube (float32 in [0, 1], RAS axis order) that ``track``'s samples of ``volume_id`` come from."""
    volumes = load_volumes(track, root)
    if volume_id not in volumes:
        raise DataError(f"unknown volume_id {volume_id!r}; known: {', '.join(sorted(volumes))}")
    return volumes[volume_id]


class AtomSliceDataset:
    """A ``torch.utils.data.Dataset`` of one split: each item is a dict with tensors

    ``volume`` (1, S, S, S), ``slice`` (1, h, w), ``high_label``, ``low_label`` (int64; -1 when the
    labels are withheld) and the string ``sample_id``. Volumes are shared between items.
    """

    def __init__(self, track: str, split: str, root: BenchmarkLike = None) -> None:
        import torch

        data = load_split(track, split, root).with_format("numpy")
        self.sample_ids: list[str] = list(data["sample_id"])
        self.volume_ids: list[str] = list(data["volume_id"])
        self.slices = torch.from_numpy(np.ascontiguousarray(np.stack(data["slice"]), dtype=np.float32))
        missing = np.full(len(data), -1, dtype=np.int64)
        cols = data.column_names
        self.high = torch.from_numpy(np.asarray(data["high_label"]) if "high_label" in cols else missing)
        self.low = torch.from_numpy(np.asarray(data["low_label"]) if "low_label" in cols else missing)
        self.volumes = {k: torch.from_numpy(v.data) for k, v in load_volumes(track, root).items()}

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, index: int) -> dict:
        return {
            "volume": self.volumes[self.volume_ids[index]][None],
            "slice": self.slices[index][None],
            "high_label": self.high[index],
            "low_label": self.low[index],
            "sample_id": self.sample_ids[index],
        }


def stream_sources(track: str, root: BenchmarkLike = None, group: str = "train") -> tuple[TrackSpec, dict[str, Volume]]:
    """What an on-the-fly stream draws from: the track's spec as built and the cubes of
    ``group``'s volumes, by ``volume_id``."""
    if track not in TRACK_NAMES:
        raise DataError(f"unknown track {track!r}; choose one of {', '.join(TRACK_NAMES)}")
    bench = Benchmark.open(root)
    return bench.spec(track), bench.volumes_of_group(track, group)


def stream_samples(
    track: str,
    seed: int,
    batch_size: int = 64,
    root: BenchmarkLike = None,
    group: str = "train",
) -> Iterator[dict[str, list]]:
    """An endless stream of fresh sample batches drawn from the volumes of one group.

    Each batch comes from one volume (cycled in a seeded random order) and has the same columns
    as a stored split, with poses drawn by the track's own sampler, so a model can train on the
    fly on poses it has never seen. ``seed`` fixes the whole stream.
    """
    spec, volumes = stream_sources(track, root, group)
    ids = sorted(volumes)
    rng = np.random.default_rng([seed, TRACK_NAMES.index(track)])
    while True:
        volume = volumes[ids[rng.integers(len(ids))]]
        poses = sample_poses(spec, volume, batch_size, rng)
        columns = render_samples(spec, volume, poses, rng.integers(0, 2**31 - 1, size=batch_size))
        yield {"volume_id": [volume.volume_id] * batch_size, **columns}
