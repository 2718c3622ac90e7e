"""Which scans a build reads: a folder of NIfTI/MGH files, a volumes CSV or a MedMNIST3D
``.npz``, and their groups.

A volumes CSV has columns ``path, subject, modality`` and optionally ``group`` (``train``,
``validation``, ``unseen``), ``volume_id``, ``source``, ``licence`` and ``frame``. Groups are by
subject, so no subject's scans are ever on both sides of a split. A MedMNIST3D ``.npz`` (the ATOM
paper's data) gives one volume per array entry, grouped by the file's own split
(:mod:`atom_bench.data.medmnist`).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from pathlib import Path

from atom_bench.data.schema import VolumeSource
from atom_bench.errors import DataError, quote

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mgh", ".mgz")
GROUPS = ("train", "validation", "unseen")


def stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def read_volume_sources(
    spec: str | os.PathLike[str], seed: int = 2406, frame: int | None = None
) -> list[VolumeSource]:
    """Volume sources from a directory of scans, a CSV (``path, subject, modality, group``) or a
    MedMNIST3D ``.npz`` (see :func:`atom_bench.data.medmnist.npz_sources`).

    ``frame`` picks the volume of every 4D series (a CSV ``frame`` column overrides it per row).

    In a directory every file is its own subject of unknown modality. Missing groups are assigned
    per subject from ``seed``: about a quarter of the subjects are ``unseen`` and an eighth
    ``validation`` (at least one train subject, and one unseen subject when there are three or more).
    """
    spec = Path(spec)
    if spec.is_dir():
        files = sorted(p for p in spec.rglob("*") if p.name.lower().endswith(VOLUME_SUFFIXES))
        rows = [{"path": str(p), "subject": _volume_id(p), "modality": "unknown"} for p in files]
    elif spec.is_file() and spec.suffix.lower() == ".csv":
        rows = _read_csv(spec)
    elif spec.is_file() and spec.suffix.lower() == ".npz":
        from atom_bench.data.medmnist import npz_sources

        sources = npz_sources(spec, frame)
        _check_sources(sources, spec)
        return sources
    else:
        raise DataError(f"volumes {spec} is neither a directory of scans, a .csv file nor a MedMNIST3D .npz", parameters=("volumes",))
    if not rows:
        raise DataError(f"no volumes found in {spec}; expected files ending in {', '.join(VOLUME_SUFFIXES)}")
    groups = _assign_groups(sorted({r["subject"] for r in rows if not r.get("group")}), seed)
    sources = [
        VolumeSource(
            path=r["path"],
            volume_id=r.get("volume_id") or _volume_id(Path(r["path"])),
            subject=r["subject"],
            modality=r.get("modality") or "unknown",
            group=r.get("group") or groups[r["subject"]],
            source=r.get("source") or Path(r["path"]).name,
            licence=r.get("licence", ""),
            frame=int(r["frame"]) if r.get("frame") not in (None, "") else frame,
        )
        for r in rows
    ]
    _check_sources(sources, spec)
    return sources


def _volume_id(path: Path) -> str:
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return "".join(ch if ch.isalnum() else "_" for ch in name)


#: What a volume id may hold: it names files and sample ids, so no path separators or dots first.
VOLUME_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
REQUIRED_COLUMNS = ("path", "subject", "modality")


def _read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a volumes CSV, each complete and with an absolute ``path``."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = set(REQUIRED_COLUMNS) - set(reader.fieldnames or [])
            if missing:
                raise DataError(f"{path} lacks column(s) {', '.join(sorted(missing))}; required: path, subject, modality (group optional)")
            rows = [dict(row) for row in reader]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}); save the volumes CSV as UTF-8") from None
    except csv.Error as exc:
        raise DataError(f"{path} is not a readable CSV ({exc}); check its quoting") from None
    for line, row in enumerate(rows, start=2):
        if None in row or any(row.get(c) is None for c in reader.fieldnames or []):
            raise DataError(f"{path} line {line} has {len([v for k, v in row.items() if k is not None and v is not None])} fields "
                            f"where the header has {len(reader.fieldnames or [])}; give every row every column")  # fmt: skip
        for column in REQUIRED_COLUMNS:
            if not row[column].strip():
                raise DataError(f"{path} line {line}: empty {column}; every volume needs a path, a subject and a modality")
        volume_id = row.get("volume_id") or ""
        if volume_id and not VOLUME_ID.fullmatch(volume_id):
            raise DataError(f"{path} line {line}: volume_id {quote(volume_id)} must be 1-64 letters, digits, '_' or '-', starting with a letter or digit")
        frame = row.get("frame") or ""
        if frame and not frame.strip().isdigit():
            raise DataError(f"{path} line {line}: frame {quote(frame)} is not a non-negative integer (the 0-based volume of a 4D series)")
        if not Path(row["path"]).is_absolute():
            row["path"] = str((path.parent / row["path"]).resolve())
    return rows


def _assign_groups(subjects: list[str], seed: int) -> dict[str, str]:
    ranked = sorted(subjects, key=lambda s: stable_int(f"{seed}:{s}"))
    n = len(ranked)
    n_unseen = max(1, round(n / 4)) if n >= 3 else 0
    n_validation = round(n / 8) if n >= 8 else 0
    groups = {s: "unseen" for s in ranked[:n_unseen]}
    groups |= {s: "validation" for s in ranked[n_unseen : n_unseen + n_validation]}
    return groups | {s: "train" for s in ranked[n_unseen + n_validation :]}


def _check_sources(sources: list[VolumeSource], where: Path) -> None:
    seen: dict[str, str] = {}
    subject_group: dict[str, str] = {}
    for s in sources:
        if s.group not in GROUPS:
            raise DataError(f"{where}: volume {s.volume_id!r} has group {s.group!r}; use one of {', '.join(GROUPS)}")
        if s.volume_id in seen:
            raise DataError(f"{where}: volume id {s.volume_id!r} appears twice; volume ids must be unique")
        seen[s.volume_id] = s.path
        if subject_group.setdefault(s.subject, s.group) != s.group:
            raise DataError(f"{where}: subject {s.subject!r} is in two groups; a subject's volumes must share one group")
    if "train" not in subject_group.values():
        raise DataError(f"{where}: no volume is in group 'train'; at least one training subject is needed")
