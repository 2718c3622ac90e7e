"""Load a built benchmark: splits, volumes, a torch wrapper and an on-the-fly training stream.

A benchmark root is found in this order: the ``root`` argument, the ``ATOM_BENCH_DATA``
environment variable, then the embedded default ``atom-mini`` shipped inside the package.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq

from atom_bench._io import sha256_file
from atom_bench.errors import DataError
from atom_bench.core.tracks import SPLITS, TRACK_NAMES, TrackSpec, get_track, render_samples, sample_poses
from atom_bench.core.volumes import Volume

DEFAULT_BENCHMARK = "atom-mini"
ENV_ROOT = "ATOM_BENCH_DATA"


def embedded_root() -> Path:
    """Directory of the embedded default benchmark ``atom-mini``."""
    return Path(str(files("atom_bench") / "data" / DEFAULT_BENCHMARK))


def resolve_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The benchmark directory to use (argument, then ``$ATOM_BENCH_DATA``, then atom-mini)."""
    chosen = Path(root) if root is not None else Path(os.environ[ENV_ROOT]) if os.environ.get(ENV_ROOT) else embedded_root()
    if not (chosen / "manifest.json").is_file():
        raise DataError(f"{chosen} is not a built benchmark (no manifest.json); run `atom-bench build` or `atom-bench download`")
    return chosen


def load_manifest(root: str | os.PathLike[str] | None = None) -> dict:
    """The benchmark's ``manifest.json`` (build parameters, seeds, file checksums)."""
    return json.loads((resolve_root(root) / "manifest.json").read_text(encoding="utf-8"))


def dataset_hash(root: str | os.PathLike[str] | None = None) -> str:
    """sha256 of ``manifest.json``: identifies the exact data a result was computed on."""
    return hashlib.sha256((resolve_root(root) / "manifest.json").read_bytes()).hexdigest()


def verify_checksums(root: str | os.PathLike[str] | None = None) -> int:
    """Check every file listed in the manifest; returns the number checked, raises on mismatch."""
    base = resolve_root(root)
    manifest = load_manifest(base)
    bad = []
    for name, expected in manifest["files"].items():
        path = base / name
        if not path.is_file():
            bad.append(f"{name} (missing)")
        elif sha256_file(path) != expected:
            bad.append(f"{name} (checksum differs)")
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise DataError(f"{base}: {len(bad)} file(s) fail the manifest: {shown}; download or build the benchmark again")
    return len(manifest["files"])


def split_files(track: str, split: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Parquet shards of one track and split."""
    base = resolve_root(root)
    manifest = load_manifest(base)
    if track not in manifest["tracks"]:
        raise DataError(f"track {track!r} is not in {base}; it has {', '.join(manifest['tracks'])}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    names = manifest["tracks"][track]["splits"][split]["files"]
    if not names:
        raise DataError(f"split {split!r} of track {track!r} is empty in {base}")
    return [base / name for name in names]


def load_split(track: str, split: str, root: str | os.PathLike[str] | None = None) -> datasets.Dataset:
    """One split of one track as an in-memory ``datasets.Dataset`` (PROTOCOL section 4 columns)."""
    paths = split_files(track, split, root)
    table = datasets.table.concat_tables([datasets.table.InMemoryTable(pq.read_table(p)) for p in paths])
    return datasets.Dataset(table)


@lru_cache(maxsize=8)
def _volume_tables(base: Path, table: str) -> dict[str, Volume]:
    manifest = load_manifest(base)
    volumes = {}
    for name in manifest["volume_tables"][table]:
        for row in pq.read_table(base / name).to_pylist():
            volumes[row["volume_id"]] = Volume(
                volume_id=row["volume_id"],
                data=(np.asarray(row["voxels"], dtype=np.float32) / np.float32(65535)),
                mask=np.asarray(row["mask"], dtype=bool),
                affine=np.asarray(row["affine"], dtype=np.float64).reshape(4, 4),
                source_path=row["source"],
            )
    return volumes


def load_volumes(track: str = "easy", root: str | os.PathLike[str] | None = None) -> dict[str, Volume]:
    """All cubes a track samples from, by ``volume_id``."""
    base = resolve_root(root)
    manifest = load_manifest(base)
    if track not in manifest["tracks"]:
        raise DataError(f"track {track!r} is not in {base}; it has {', '.join(manifest['tracks'])}")
    return _volume_tables(base.resolve(), manifest["tracks"][track]["volume_table"])


def load_volume(volume_id: str, track: str = "easy", root: str | os.PathLike[str] | None = None) -> Volume:
    """The cube (float32 in [0, 1], RAS axis order) that ``track``'s samples of ``volume_id`` come from."""
    volumes = load_volumes(track, root)
    if volume_id not in volumes:
        raise DataError(f"unknown volume_id {volume_id!r}; known: {', '.join(sorted(volumes))}")
    return volumes[volume_id]


def volume_groups(root: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """``volume_id -> group`` (train, validation, unseen) of a benchmark."""
    return {v["volume_id"]: v["group"] for v in load_manifest(root)["volumes"]}


class AtomSliceDataset:
    """A ``torch.utils.data.Dataset`` of one split: each item is a dict with tensors

    ``volume`` (1, S, S, S), ``slice`` (1, h, w), ``high_label``, ``low_label`` (int64; -1 when the
    labels are withheld) and the string ``sample_id``. Volumes are shared between items.
    """

    def __init__(self, track: str, split: str, root: str | os.PathLike[str] | None = None) -> None:
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


def stream_sources(track: str, root: str | os.PathLike[str] | None = None, group: str = "train") -> tuple[TrackSpec, dict[str, Volume]]:
    """What an on-the-fly stream draws from: the track's spec as built (cube side, slice shape,
    pixel spacing from the manifest) and the cubes of ``group``'s volumes, by ``volume_id``."""
    if track not in TRACK_NAMES:
        raise DataError(f"unknown track {track!r}; choose one of {', '.join(TRACK_NAMES)}")
    info = load_manifest(root)["tracks"][track]
    spec = replace(get_track(track, info["size"]), slice_shape=tuple(info["slice_shape"]), pixel_spacing=info["pixel_spacing"])
    volumes = load_volumes(track, root)
    chosen = {v: volumes[v] for v, g in volume_groups(root).items() if g == group and v in volumes}
    if not chosen:
        raise DataError(f"no volumes in group {group!r} for track {track!r}")
    return spec, chosen


def stream_samples(
    track: str,
    seed: int,
    batch_size: int = 64,
    root: str | os.PathLike[str] | None = None,
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
