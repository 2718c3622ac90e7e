"""A built benchmark on disk: the one object every API takes.

    bench = Benchmark.open()                   # $ATOM_BENCH_DATA, else the embedded atom-mini
    bench = Benchmark.open("path/to/build")    # a directory written by `atom-bench build`
    bench.spec("hard").size                    # cube side the track was built with [voxels]
    bench.sample_ids("hard", "test_unseen")    # what a prediction file must cover

``manifest.json`` is read once per build (opening the same unchanged directory again returns the
same object); everything else (split shards, volume cubes, label columns) is read on demand from
the files the manifest lists, and only the columns asked for. A function of the toolkit that
takes ``root`` accepts a :class:`Benchmark`, a directory, or ``None`` (the default benchmark).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from functools import cached_property, lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from atom_bench._io import sha256_file
from atom_bench.core.labels import N_HIGH, N_LOW
from atom_bench.core.tracks import SPLITS, TrackSpec, get_track
from atom_bench.core.volumes import Volume
from atom_bench.errors import DataError

DEFAULT_BENCHMARK = "atom-mini"
ENV_ROOT = "ATOM_BENCH_DATA"
VOLUME_GROUPS = ("train", "validation", "unseen")

#: What a ``root`` argument may be.
BenchmarkLike = Union["Benchmark", str, os.PathLike, None]


def embedded_root() -> Path:
    """Directory of the embedded default benchmark ``atom-mini`` (ships inside the package)."""
    return Path(str(files("atom_bench") / "data" / DEFAULT_BENCHMARK))


class Benchmark:
    """A built benchmark: its directory, its manifest (read once) and what is derived from it.

    Use :meth:`open`; the constructor takes an already parsed manifest.
    """

    def __init__(self, root: Path, manifest: dict, manifest_bytes: bytes) -> None:
        self.root = root
        self.manifest = manifest
        self.hash = hashlib.sha256(manifest_bytes).hexdigest()

    @classmethod
    def open(cls, root: BenchmarkLike = None) -> Benchmark:
        """The benchmark at ``root`` (a Benchmark is returned as is).

        ``None`` means ``$ATOM_BENCH_DATA`` if set, else the embedded ``atom-mini``; the name
        ``atom-mini`` also means the embedded one unless a directory of that name holds a build.

        Raises:
            DataError: no ``manifest.json`` there, or one that is not a benchmark manifest.
        """
        if isinstance(root, Benchmark):
            return root
        if root is None:
            chosen = Path(os.environ[ENV_ROOT]) if os.environ.get(ENV_ROOT) else embedded_root()
        else:
            chosen = Path(root)
            if str(root) == DEFAULT_BENCHMARK and not (chosen / "manifest.json").is_file():
                chosen = embedded_root()
        manifest = chosen / "manifest.json"
        if not manifest.is_file():
            raise DataError(f"{chosen} is not a built benchmark (no manifest.json); run `atom-bench build` or `atom-bench download`")
        stat = manifest.stat()
        return _open_cached(chosen.resolve(), stat.st_mtime_ns, stat.st_size, chosen)

    # -- identity ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.root.name))

    @property
    def revision(self) -> str | None:
        """The dataset revision the manifest declares (``dataset_revision``, ``revision`` or ``version``)."""
        for key in ("dataset_revision", "revision", "version"):
            if self.manifest.get(key) is not None:
                return str(self.manifest[key])
        return None

    @property
    def tracks(self) -> tuple[str, ...]:
        return tuple(self.manifest["tracks"])

    def __repr__(self) -> str:
        return f"Benchmark({self.name!r} {self.revision}, {str(self.root)!r}, manifest {self.hash[:12]})"

    # -- tracks and splits ------------------------------------------------------------------
    def track(self, track: str) -> dict:
        """The manifest's record of a track (size, slice shape, splits, volume table)."""
        if track not in self.manifest["tracks"]:
            raise DataError(f"track {track!r} is not in {self.root}; it has {', '.join(self.tracks)}")
        return self.manifest["tracks"][track]

    def spec(self, track: str) -> TrackSpec:
        """The track's spec as built: cube side, slice shape and pixel spacing from the manifest."""
        info = self.track(track)
        return replace(get_track(track, int(info["size"])), slice_shape=tuple(int(n) for n in info["slice_shape"]), pixel_spacing=info["pixel_spacing"])

    def split_files(self, track: str, split: str) -> list[Path]:
        """Parquet shards of one track and split."""
        info = self.track(track)
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        names = info["splits"][split]["files"]
        if not names:
            raise DataError(f"split {split!r} of track {track!r} is empty in {self.root}")
        return [self.root / name for name in names]

    def read_columns(self, track: str, split: str, columns: tuple[str, ...], prefixes: tuple[str, ...] = ()) -> pa.Table:
        """The named columns of a split (those present, plus any starting with ``prefixes``)."""
        paths = self.split_files(track, split)
        names = pq.read_schema(paths[0]).names
        wanted = [c for c in names if c in columns or c.startswith(prefixes or ("\0",))]
        return pa.concat_tables([pq.read_table(p, columns=wanted) for p in paths])

    def sample_ids(self, track: str, split: str) -> np.ndarray:
        """The split's sample ids, in file order (object array of str)."""
        ids = self.read_columns(track, split, ("sample_id",)).column("sample_id")
        return np.asarray(ids.to_numpy(zero_copy_only=False), dtype=object)

    def train_counts(self, track: str) -> dict[str, np.ndarray]:
        """Label counts of the training split (``high`` 27, ``low`` 729): the prior floor."""
        table = self.read_columns(track, "train", ("high_label", "low_label"))
        return {
            "high": np.bincount(table.column("high_label").to_numpy(), minlength=N_HIGH),
            "low": np.bincount(table.column("low_label").to_numpy(), minlength=N_LOW),
        }

    # -- volumes ----------------------------------------------------------------------------
    @cached_property
    def volume_groups(self) -> dict[str, str]:
        """``volume_id -> group`` (train, validation, unseen)."""
        return {v["volume_id"]: v["group"] for v in self.manifest["volumes"]}

    def volumes(self, track: str) -> dict[str, Volume]:
        """All cubes a track samples from, by ``volume_id`` (float32 in [0, 1], RAS axis order)."""
        return self._volume_table(self.track(track)["volume_table"])

    def volumes_of_group(self, track: str, group: str) -> dict[str, Volume]:
        """The cubes of one volume group (``train``, ``validation``, ``unseen``) of a track."""
        volumes = self.volumes(track)
        chosen = {v: volumes[v] for v, g in self.volume_groups.items() if g == group and v in volumes}
        if not chosen:
            raise DataError(f"no volumes in group {group!r} for track {track!r}")
        return chosen

    def volumes_table(self, track: str) -> pd.DataFrame:
        """``volume_id``, ``size``, ``affine`` (16 floats, row-major) of a track's volumes."""
        names = self.manifest["volume_tables"][self.track(track)["volume_table"]]
        table = pa.concat_tables([pq.read_table(self.root / n, columns=["volume_id", "size", "affine"]) for n in names])
        return table.to_pandas(types_mapper=pd.ArrowDtype)

    @lru_cache(maxsize=8)  # noqa: B019 - one Benchmark per build (see open), so the cache is per build
    def _volume_table(self, table: str) -> dict[str, Volume]:
        volumes = {}
        for name in self.manifest["volume_tables"][table]:
            for row in pq.read_table(self.root / name).to_pylist():
                volumes[row["volume_id"]] = Volume(
                    volume_id=row["volume_id"],
                    data=(np.asarray(row["voxels"], dtype=np.float32) / np.float32(65535)),
                    mask=np.asarray(row["mask"], dtype=bool),
                    affine=np.asarray(row["affine"], dtype=np.float64).reshape(4, 4),
                    source_path=row["source"],
                )
        return volumes

    # -- integrity --------------------------------------------------------------------------
    def verify(self) -> int:
        """Check every file the manifest lists; returns the number checked.

        Raises:
            DataError: a file is missing or its sha256 differs.
        """
        bad = []
        for name, expected in self.manifest["files"].items():
            path = self.root / name
            if not path.is_file():
                bad.append(f"{name} (missing)")
            elif sha256_file(path) != expected:
                bad.append(f"{name} (checksum differs)")
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise DataError(f"{self.root}: {len(bad)} file(s) fail the manifest: {shown}; download or build the benchmark again")
        return len(self.manifest["files"])


@lru_cache(maxsize=16)
def _open_cached(resolved: Path, mtime_ns: int, size: int, given: Path) -> Benchmark:
    """One Benchmark per unchanged manifest (a rebuild in place changes mtime and opens anew)."""
    raw = (resolved / "manifest.json").read_bytes()
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{given}/manifest.json is not valid JSON ({exc}); download or build the benchmark again") from None
    if not isinstance(manifest, dict) or not {"tracks", "files", "volumes", "volume_tables"} <= set(manifest):
        raise DataError(f"{given}/manifest.json is not an ATOM-Bench manifest (needs tracks, files, volumes, volume_tables); build it again")
    return Benchmark(given, manifest, raw)
