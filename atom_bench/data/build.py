"""Build a benchmark (tracks x splits of parquet shards) from a folder or CSV of volumes.

Volumes are processed in worker processes and their rows appended to the shards as each volume
finishes, in input order, so memory stays flat and the output does not depend on the number of
workers. Everything is written into a temporary directory that replaces ``out`` only when the
build succeeded. Building twice with the same inputs gives identical bytes.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
from datasets.arrow_writer import ParquetWriter

from atom_bench import __version__
from atom_bench._io import atomic_directory, sha256_file, write_json_atomic, write_text_atomic
from atom_bench.core.tracks import SPLITS, TRACK_NAMES, TrackSpec, get_track, render_samples, sample_poses
from atom_bench.core.volumes import Volume, prepare_volume
from atom_bench.data.card import dataset_card
from atom_bench.data.medmnist import prepare_npz_volume
from atom_bench.data.schema import VolumeSource, label_features, sample_features, volume_features
from atom_bench.data.sources import read_volume_sources, stable_int
from atom_bench.errors import DataError

TEST_SPLITS = ("test_seen", "test_unseen")


@dataclass(frozen=True)
class SplitCounts:
    """Samples drawn per volume for each split."""

    train: int = 256
    validation: int = 64
    test_seen: int = 64
    test_unseen: int = 128


#: Version of what a build writes; 1.1: histology gamma drawn with a correctly rounded exp (CPU-independent bytes);
#: 1.2: atom-mini gains the ROBEX T1 (validation) and the mayavi heart CT (unseen), nine volumes; the card names
#: each track's volumes config and the dtype of the stored voxels.
DATASET_VERSION = "1.2"

#: Named sample counts per volume (``atom-bench build --preset``); ``atom-mini`` is the embedded default's.
#: ``paper-medmnist`` is the released ATOM generator's setting for MedMNIST3D volumes: build it with
#: ``--track paper`` (its 20^3 cube, as the released code zooms 28^3 to 20^3, and 4 x 4 slices)
#: from a MedMNIST3D ``.npz``. Per volume the released code cuts 38 valid centres x 4 z-planes
#: = 152 slices from each train and val volume and 42 x 4 = 168 from each test volume
#: (``original-atom-spec.md`` 1.3); it has no same-volume test, so ``test_seen`` (new poses in the
#: training volumes) takes the test count, 168.
PRESETS: dict[str, SplitCounts] = {
    "standard": SplitCounts(),
    "atom-mini": SplitCounts(train=256, validation=128, test_seen=64, test_unseen=128),
    "paper-medmnist": SplitCounts(train=152, validation=152, test_seen=168, test_unseen=168),
}


def preset_counts(name: str) -> SplitCounts:
    """The sample counts of a named preset (see :data:`PRESETS`)."""
    if name not in PRESETS:
        raise DataError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}", parameters=("preset",))
    return PRESETS[name]


@dataclass(frozen=True)
class BuildConfig:
    """Parameters of a build; recorded verbatim in the manifest."""

    name: str = "atom-bench"
    tracks: tuple[str, ...] = TRACK_NAMES
    size: int | None = None  # cube side for easy/hard/histology (paper keeps 20 unless named alone)
    slice_size: int | None = None
    seed: int = 2406
    counts: SplitCounts = field(default_factory=SplitCounts)
    shard_rows: int = 50_000
    withhold_test_labels: bool = False

    def specs(self) -> dict[str, TrackSpec]:
        specs = {}
        for name in self.tracks:
            override = name != "paper" or self.tracks == ("paper",)
            specs[name] = get_track(name, self.size if override else None, self.slice_size if override else None)
        return specs


def volume_table_name(spec: TrackSpec) -> str:
    """Name of the volumes split holding the cubes a track samples from, e.g. ``s64_linear``."""
    return f"s{spec.size}_{'cubic' if spec.volume_order == 3 else 'linear'}"


def _splits_of(group: str, validation_from_train: bool) -> tuple[str, ...]:
    if group == "train":
        return ("train", "validation", "test_seen") if validation_from_train else ("train", "test_seen")
    return ("validation",) if group == "validation" else ("test_unseen",)


def _pose_key(centers: np.ndarray, u: np.ndarray, v: np.ndarray) -> list[bytes]:
    return [np.round(np.concatenate(row), 6).tobytes() for row in zip(centers, u, v, strict=True)]


def prepare_source(source: VolumeSource, size: int, order: int) -> Volume:
    """The cube of one input: a scan file, or (``source.array`` set) an entry of an ``.npz``."""
    if source.array:
        return prepare_npz_volume(source, size, order)
    return prepare_volume(source.path, size, frame=source.frame, order=order, volume_id=source.volume_id)


def render_volume(
    source: VolumeSource, config: BuildConfig, validation_from_train: bool
) -> tuple[dict[str, Volume], dict[tuple[str, str], dict[str, list]]]:
    """Prepare one volume at every cube size the tracks need and render all its samples."""
    specs = config.specs()
    cubes: dict[str, Volume] = {}
    for spec in specs.values():
        table = volume_table_name(spec)
        if table not in cubes:
            cubes[table] = prepare_source(source, spec.size, spec.volume_order)
    rows: dict[tuple[str, str], dict[str, list]] = {}
    for track, spec in specs.items():
        volume = cubes[volume_table_name(spec)]
        train_keys: set[bytes] = set()
        for split in _splits_of(source.group, validation_from_train):
            count = getattr(config.counts, split)
            rng = np.random.default_rng([config.seed, TRACK_NAMES.index(track), SPLITS.index(split), stable_int(source.volume_id)])
            oversample = 2 if split != "train" and spec.poses == "paper" else 1
            poses = sample_poses(spec, volume, count * oversample, rng)
            if oversample > 1:  # integer paper poses can repeat: keep held-out poses new
                fresh = [i for i, k in enumerate(_pose_key(poses.centers, poses.u, poses.v)) if k not in train_keys]
                poses = poses.take(np.array(fresh[:count], dtype=np.int64))
            if split == "train":
                train_keys = set(_pose_key(poses.centers, poses.u, poses.v))
            seeds = rng.integers(0, 2**31 - 1, size=len(poses))
            columns = render_samples(spec, volume, poses, seeds)
            n = len(poses)
            rows[(track, split)] = {
                "sample_id": [f"{track}-{split}-{source.volume_id}-{i:05d}" for i in range(n)],
                "volume_id": [source.volume_id] * n,
                "subject": [source.subject] * n,
                "modality": [source.modality] * n,
                "source": [source.source] * n,
                **columns,
            }
    return cubes, rows


class _ShardWriter:
    """Appends batches to ``<dir>/<stem>-NNNNN.parquet``, starting a new shard every ``shard_rows``."""

    def __init__(self, directory: Path, stem: str, features: datasets.Features, shard_rows: int) -> None:
        self.directory, self.stem, self.features, self.shard_rows = directory, stem, features, shard_rows
        self.paths: list[Path] = []
        self.rows = 0
        self._writer: ParquetWriter | None = None
        self._in_shard = 0

    def write(self, batch: dict[str, list]) -> None:
        n = len(next(iter(batch.values())))
        start = 0
        while start < n:
            if self._writer is None or self._in_shard >= self.shard_rows:
                self._open_next()
            take = min(n - start, self.shard_rows - self._in_shard)
            self._writer.write_batch({k: v[start : start + take] for k, v in batch.items() if k in self.features})
            self._in_shard += take
            self.rows += take
            start += take

    def _open_next(self) -> None:
        self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{self.stem}-{len(self.paths):05d}.parquet"
        self.paths.append(path)
        self._writer = ParquetWriter(path=str(path), features=self.features)
        self._in_shard = 0

    def close(self) -> None:
        if self._writer is not None:
            self._writer.finalize()
            self._writer.close()
            self._writer = None

    def abandon(self) -> None:
        """Drop an open shard without writing its footer (the build failed; the folder goes)."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None

    def finish(self) -> list[Path]:
        """Close and rename shards to the Hub's ``-NNNNN-of-MMMMM`` pattern; returns final paths."""
        self.close()
        total = len(self.paths)
        final = []
        for index, path in enumerate(self.paths):
            target = path.with_name(f"{self.stem}-{index:05d}-of-{total:05d}.parquet")
            path.rename(target)
            final.append(target)
        return final


def _volume_row(source: VolumeSource, volume: Volume) -> dict[str, list]:
    return {
        "volume_id": [source.volume_id],
        "subject": [source.subject],
        "modality": [source.modality],
        "source": [source.source],
        "licence": [source.licence],
        "group": [source.group],
        "size": [volume.size],
        "affine": [volume.affine.reshape(-1).tolist()],
        "spacing_mm": [volume.spacing_mm],
        "voxels": [np.rint(volume.data * 65535).astype(np.uint16)],
        "mask": [volume.mask.astype(np.uint8)],
    }


def _render_job(args: tuple[VolumeSource, BuildConfig, bool]):
    return render_volume(*args)


def build_benchmark(
    volumes: str | os.PathLike[str] | list[VolumeSource],
    out: str | os.PathLike[str],
    config: BuildConfig = BuildConfig(),
    workers: int = 1,
    labels_out: str | os.PathLike[str] | None = None,
    on_volume: Callable[[VolumeSource], None] | None = None,
    overwrite: bool = False,
) -> dict:
    """Build a benchmark into ``out`` and return its manifest.

    Args:
        volumes: a directory of scans, a volumes CSV, or a list of :class:`VolumeSource`.
        out: target directory; replaced atomically when the build succeeds.
        config: tracks, sizes, seed and per-volume sample counts.
        workers: number of processes preparing volumes in parallel.
        labels_out: where withheld test labels go when ``config.withhold_test_labels``
            (default ``<out>-labels``).
        on_volume: called after each volume has been written (progress reporting).
        overwrite: replace ``out`` (and ``labels_out``) when they hold an earlier build; without
            it an existing, non-empty output is refused. Nothing the build did not write is ever
            deleted: outputs that hold or sit inside an input, or each other, are refused.
    """
    sources = volumes if isinstance(volumes, list) else read_volume_sources(volumes, config.seed)
    specs = config.specs()
    validation_from_train = not any(s.group == "validation" for s in sources)
    out = Path(out)
    labels_dir = labels_folder(out, labels_out)
    inputs = [Path(s.path) for s in sources] + ([] if isinstance(volumes, list) else [Path(volumes)])
    check_outputs(inputs, out, labels_dir if config.withhold_test_labels else None, overwrite)
    rendered = _map_volumes(sources, config, validation_from_train, workers)
    with atomic_directory(out) as tmp, _abandon_on_error() as open_writers, contextlib.closing(rendered):
        writers = _open_writers(tmp, specs, config)
        label_writers = _open_label_writers(tmp / ".labels", specs, config) if config.withhold_test_labels else {}
        open_writers += [*writers.values(), *label_writers.values()]
        for source, (cubes, rows) in zip(sources, rendered, strict=True):
            for table, volume in cubes.items():
                writers[("volumes", table)].write(_volume_row(source, volume))
            for key, batch in rows.items():
                writers[key].write(batch)
                if key in label_writers:
                    label_writers[key].write(batch)
            if on_volume is not None:
                on_volume(source)
        files = {key: writer.finish() for key, writer in writers.items()}
        label_files = {key: writer.finish() for key, writer in label_writers.items()}
        manifest = _manifest(tmp, config, specs, sources, writers, files, validation_from_train)
        write_text_atomic(tmp / "README.md", dataset_card(manifest))
        manifest["files"] = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file() and ".labels" not in p.parts}
        write_json_atomic(tmp / "manifest.json", manifest)
        if label_files:
            _move_labels(tmp / ".labels", labels_dir, manifest, sha256_file(tmp / "manifest.json"))
    return manifest


@contextlib.contextmanager
def _abandon_on_error() -> Iterator[list[_ShardWriter]]:
    writers: list[_ShardWriter] = []
    try:
        yield writers
    except BaseException:
        for writer in writers:
            writer.abandon()
        raise


def _map_volumes(sources, config, validation_from_train, workers) -> Iterator:
    """Rendered volumes in input order; with ``workers > 1`` from a pool of processes that is
    always shut down and joined, and whose workers die with this process."""
    jobs = [(s, config, validation_from_train) for s in sources]
    if workers <= 1:
        yield from map(_render_job, jobs)
        return
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_die_with_parent, initargs=(os.getpid(),))
    try:
        yield from pool.imap(_render_job, jobs, chunksize=1)
        pool.close()
    except BaseException:  # a failed volume, or the consumer gave up (GeneratorExit)
        pool.terminate()
        raise
    finally:
        pool.join()


def _die_with_parent(parent_pid: int) -> None:
    """Pool initializer: a killed build must not leave workers rendering on (Linux: PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)


def _open_writers(root: Path, specs: dict[str, TrackSpec], config: BuildConfig) -> dict[tuple[str, str], _ShardWriter]:
    writers: dict[tuple[str, str], _ShardWriter] = {}
    for track, spec in specs.items():
        table = volume_table_name(spec)
        writers.setdefault(("volumes", table), _ShardWriter(root / "volumes", table, volume_features(spec.size), 64))
        for split in SPLITS:
            public = sample_features(spec, with_labels=not (config.withhold_test_labels and split in TEST_SPLITS))
            writers[(track, split)] = _ShardWriter(root / track, split, public, config.shard_rows)
    return writers


def _open_label_writers(root: Path, specs: dict[str, TrackSpec], config: BuildConfig) -> dict[tuple[str, str], _ShardWriter]:
    return {
        (track, split): _ShardWriter(root / track, split, label_features(spec), config.shard_rows)
        for track, spec in specs.items()
        for split in TEST_SPLITS
    }


def build_warnings(manifest: dict) -> list[str]:
    """What a user should know about a build that succeeded: empty test splits, validation drawn
    from the training volumes (one line each, in the library's terms)."""
    warnings = []
    for track, info in manifest["tracks"].items():
        empty = [split for split, entry in info["splits"].items() if entry["num_samples"] == 0]
        if empty:
            warnings.append(
                f"track {track}: split(s) {', '.join(empty)} are empty; give at least one subject the group "
                "'unseen' (and 'validation') in the volumes CSV, or build from more subjects"
            )
    if manifest["build"].get("validation_from_train"):
        warnings.append(
            "no volume is in group 'validation': validation poses come from the training volumes, so checkpoint "
            "choice and validation scores are optimistic; give a subject the group 'validation' in the volumes CSV"
        )
    return warnings


def labels_folder(out: str | os.PathLike[str], labels_out: str | os.PathLike[str] | None = None) -> Path:
    """Where withheld test labels go: ``labels_out``, else ``<out>-labels`` beside ``out``."""
    return Path(labels_out) if labels_out else Path(out).with_name(Path(out).name + "-labels")


def check_outputs(inputs: list[Path], out: Path, labels_dir: Path | None, overwrite: bool = False) -> None:
    """Refuse outputs that would delete what the build did not make.

    ``out`` and ``labels_dir`` may not be, hold or sit inside an input folder, may not hold an
    input file, may not overlap each other, and, when they exist and are not empty, must be an
    earlier build (``manifest.json``) or labels output (``labels-manifest.json``) and
    ``overwrite`` must be given.

    Raises:
        DataError: naming the output and what it would overwrite.
    """
    outputs = [("out", out, "manifest.json")] + ([("labels_out", labels_dir, "labels-manifest.json")] if labels_dir else [])
    resolved_inputs = [(p, p.resolve()) for p in inputs]
    for name, target, marker in outputs:
        where = target.resolve()
        for given, source in resolved_inputs:
            holds = source == where or source.is_relative_to(where)
            inside = source.is_dir() and where.is_relative_to(source)
            if holds or inside:
                what = "holds the input" if holds else "lies inside the input folder"
                raise DataError(f"{name} {target} {what} {given}; choose an output folder apart from the volumes", parameters=(name,))
        if target.exists() and not target.is_dir():
            raise DataError(f"{name} {target} exists and is not a folder; choose another {name}", parameters=(name,))
        if target.is_dir() and any(target.iterdir()):
            if not (target / marker).is_file():
                raise DataError(f"{name} {target} exists and is not an earlier ATOM-Bench build (no {marker}); choose a new or empty folder", parameters=(name,))
            if not overwrite:
                raise DataError(f"{name} {target} holds an earlier build; pass overwrite=True to replace it", parameters=(name, "overwrite"))
    if labels_dir is not None:
        a, b = out.resolve(), labels_dir.resolve()
        if a == b or a.is_relative_to(b) or b.is_relative_to(a):
            raise DataError(f"labels_out {labels_dir} overlaps out {out}; the withheld labels must live apart from the public data", parameters=("labels_out", "out"))


def _move_labels(staged: Path, target: Path, manifest: dict, manifest_sha256: str) -> None:
    with atomic_directory(target) as tmp:
        for path in sorted(staged.rglob("*.parquet")):
            dest = tmp / path.relative_to(staged)
            dest.parent.mkdir(parents=True, exist_ok=True)
            path.rename(dest)
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*.parquet"))}
        write_json_atomic(
            tmp / "labels-manifest.json",
            {"dataset": manifest["name"], "version": manifest["version"], "manifest_sha256": manifest_sha256, "files": files},
        )
    for path in sorted(staged.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    staged.rmdir()


def _manifest(root, config, specs, sources, writers, files, validation_from_train) -> dict:
    hashes = {path: sha256_file(path) for path in dict.fromkeys(s.path for s in sources)}  # an .npz holds many volumes
    tracks = {}
    for track, spec in specs.items():
        splits = {}
        for split in SPLITS:
            writer = writers[(track, split)]
            volume_ids = sorted({s.volume_id for s in sources if split in _splits_of(s.group, validation_from_train)})
            splits[split] = {
                "num_samples": writer.rows,
                "volumes": volume_ids if writer.rows else [],
                "files": [p.relative_to(root).as_posix() for p in files[(track, split)]],
            }
        tracks[track] = {**spec.describe(), "volume_table": volume_table_name(spec), "splits": splits}
    return {
        "name": config.name,
        "version": DATASET_VERSION,
        "protocol": 1,
        "toolkit_version": __version__,
        "build": {**asdict(config), "tracks": list(config.tracks), "validation_from_train": validation_from_train},
        "labels_withheld": config.withhold_test_labels,
        "volumes": [
            {**s.record(), "path": Path(s.path).name, "sha256": hashes[s.path]} for s in sources
        ],
        "volume_tables": {
            name: [p.relative_to(root).as_posix() for p in paths]
            for (kind, name), paths in files.items()
            if kind == "volumes"
        },
        "tracks": tracks,
    }
