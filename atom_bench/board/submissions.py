"""Submissions: a validated, scored prediction file with its metadata, stored as a record.

``submit`` writes ``submissions/<track>/<name>/`` holding

- ``predictions.parquet`` (or ``.csv``): the submitted file, byte for byte;
- ``metadata.json``: the submitter's metadata (:data:`REQUIRED` fields, plus any of
  :data:`OPTIONAL`) and what the toolkit adds (track, split, toolkit version, dataset revision
  and manifest sha256, predictions sha256, date);
- ``scores.json``: the scorer's result (:mod:`atom_bench.eval.scoring`).

The directory appears atomically (built beside it, then renamed) under a lock, so concurrent
submits never leave a half-written or mixed record; an existing record is replaced only with
``force=True``. Leaderboards are generated from these records (:mod:`atom_bench.board.leaderboard`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock

from atom_bench import __version__
from atom_bench._io import atomic_directory, write_json_atomic
from atom_bench.errors import AtomBenchError

REQUIRED = ("model_name", "authors", "code_url", "n_parameters", "training_data", "seeds", "hardware")
OPTIONAL = ("model_version", "paper_url", "external_data", "contact", "notes")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LOCK_NAME = ".submit.lock"


class SubmissionError(AtomBenchError):
    """A submission's name, metadata or target directory is unusable."""


def check_metadata(meta: Any, source: str = "metadata") -> dict:
    """Validate submitter metadata; returns a normalised copy (authors and seeds as lists)."""
    if not isinstance(meta, dict):
        raise SubmissionError(f"{source}: expected a mapping of fields ({', '.join(REQUIRED)})")
    problems = [f"missing {k}" for k in REQUIRED if meta.get(k) in (None, "", [])]
    unknown = sorted(set(meta) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        problems.append(f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(REQUIRED + OPTIONAL)})")
    out = {k: meta[k] for k in REQUIRED + OPTIONAL if k in meta}
    authors = out.get("authors")
    if isinstance(authors, str):
        out["authors"] = [authors]
    elif authors is not None and not (isinstance(authors, list) and all(isinstance(a, str) and a for a in authors)):
        problems.append("authors must be a name or a list of names")
    seeds = out.get("seeds")
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        out["seeds"] = [seeds]
    elif seeds is not None and not (isinstance(seeds, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        problems.append("seeds must be an integer or a list of integers")
    n_params = out.get("n_parameters")
    if n_params is not None and (isinstance(n_params, bool) or not isinstance(n_params, int) or n_params < 0):
        problems.append("n_parameters must be a non-negative integer")
    for key in ("code_url", "paper_url"):
        if out.get(key) and not re.match(r"^https?://\S+$", str(out[key])):
            problems.append(f"{key} must be an http(s) URL")
    for key in ("model_name", "training_data", "hardware"):
        if out.get(key) is not None and not isinstance(out[key], str):
            problems.append(f"{key} must be text")
    if "external_data" in out and not isinstance(out["external_data"], bool):
        problems.append("external_data must be true or false")
    if problems:
        raise SubmissionError(f"{source}: " + "; ".join(problems))
    return out


def load_metadata(path: str | os.PathLike[str]) -> dict:
    """Read and validate a ``META.yaml`` (or JSON) file."""
    path = Path(path)
    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SubmissionError(f"{path}: no such metadata file") from None
    except yaml.YAMLError as exc:
        raise SubmissionError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return check_metadata(meta, path.name)


def submit(
    predictions: str | os.PathLike[str],
    *,
    name: str,
    meta: dict | str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    labels: str | os.PathLike[str] | None = None,
    submissions_dir: str | os.PathLike[str] = "submissions",
    force: bool = False,
    evaluator: Any = None,
    today: dt.date | None = None,
    extra: dict | None = None,
) -> Path:
    """Validate, score and store a submission; returns ``submissions/<track>/<name>``.

    Args:
        predictions: a prediction file (its metadata names the track and split).
        name: the entry's name, unique within a track (letters, digits, ``.``, ``_``, ``-``).
        meta: a metadata mapping or a YAML file (see :func:`check_metadata`).
        root, labels: the benchmark, and a labels file for withheld test labels.
        force: replace an existing record of the same name.
        evaluator: a ready :class:`~atom_bench.eval.scoring.Evaluator` (tests, custom data).
        extra: additional results stored with the scores (``metrics`` entries are merged; used by
            ``atom-bench evaluate --submit`` for the volume-reliance diagnostic).
    """
    from atom_bench.eval import predictions as P
    from atom_bench.eval import scoring

    if not NAME_RE.match(name or ""):
        raise SubmissionError(
            f"invalid name {name!r}: use 1-64 letters, digits, '.', '_' or '-', not starting with a symbol", parameters=("name",)
        )
    info = check_metadata(meta) if isinstance(meta, dict) else load_metadata(meta)
    path = Path(predictions)
    file_meta = P.file_meta(path)
    track, split = file_meta.get("track"), file_meta.get("split")
    target = Path(submissions_dir) / str(track) / name
    if target.exists() and not force:  # early exit; checked again under the lock
        raise SubmissionError(f"{target} already exists; choose another name or pass force=True to replace it", parameters=("name", "force"))
    ev = evaluator if evaluator is not None else scoring.Evaluator.from_benchmark(track, split, root=root, labels=labels)
    scores = ev.evaluate_file(path)
    for key, value in (extra or {}).items():
        if key == "metrics":
            scores["metrics"] = {**scores["metrics"], **value}
        else:
            scores[key] = value
    digest = scores["predictions_sha256"]
    record = {
        **info,
        "name": name,
        "track": track,
        "split": split,
        "toolkit_version": __version__,
        "dataset_revision": ev.info["dataset_revision"],
        "manifest_sha256": ev.info["manifest_sha256"],
        "predictions_file": f"predictions{path.suffix.lower()}",
        "predictions_sha256": digest,
        "date": (today or dt.datetime.now(dt.timezone.utc).date()).isoformat(),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(Path(submissions_dir) / LOCK_NAME), timeout=600):
        if target.exists() and not force:
            raise SubmissionError(f"{target} already exists; choose another name or pass force=True to replace it", parameters=("name", "force"))
        with atomic_directory(target) as tmp:
            shutil.copyfile(path, tmp / record["predictions_file"])
            write_json_atomic(tmp / "metadata.json", record)
            write_json_atomic(tmp / "scores.json", scores)
    return target


def load_records(submissions_dir: str | os.PathLike[str] = "submissions") -> list[dict]:
    """Every stored record as ``{"metadata": ..., "scores": ..., "path": ...}``, sorted by track and name."""
    base = Path(submissions_dir)
    records = []
    for folder in sorted(base.glob("*/*")) if base.is_dir() else []:
        if folder.name.startswith(".") or folder.parent.name.startswith(".") or not folder.is_dir():
            continue
        try:
            metadata = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
            scores = json.loads((folder / "scores.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SubmissionError(f"{folder}: unreadable submission record ({exc}); submit it again") from None
        if metadata.get("track") != folder.parent.name or metadata.get("name") != folder.name:
            raise SubmissionError(f"{folder}: metadata.json names {metadata.get('track')}/{metadata.get('name')}; the folder must match")
        records.append({"metadata": metadata, "scores": scores, "path": folder.as_posix()})
    return records
