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
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock

from atom_bench import __version__
from atom_bench._io import atomic_directory, write_json_atomic
from atom_bench.board.tables import SOURCE_REF_RE, URL_RE
from atom_bench.errors import AtomBenchError, quote

REQUIRED = ("model_name", "authors", "code_url", "n_parameters", "training_data", "seeds", "hardware")
OPTIONAL = ("model_version", "paper_url", "external_data", "contact", "notes")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # matched whole (fullmatch: "evil\n" is no name)
LOCK_NAME = ".submit.lock"
MAX_METADATA_BYTES = 64 * 1024  # a META.yaml is a few lines; anything larger is refused unread
MAX_PARAMETERS = 10**15
MAX_SEED = 2**64  # seeds are refused outside -MAX_SEED < seed < MAX_SEED
#: Fields of one line: control characters (newlines, tabs, NUL, DEL, C1, Unicode line and paragraph
#: separators) and bidirectional overrides are refused in them and in every author's name.
SINGLE_LINE = ("model_name", "training_data", "hardware", "model_version", "contact", "code_url", "paper_url")
_SINGLE_LINE_BAD = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NOTES_BAD = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")  # notes: newlines and tabs allowed


class SubmissionError(AtomBenchError):
    """A submission's name, metadata or target directory is unusable."""


def _kind(value: Any) -> str:
    """How a wrongly typed value reads in a message (never the value: it may be huge)."""
    if isinstance(value, dt.date):
        return "a date (quote it)"
    return {bool: "true/false", int: "a number", float: "a number", list: "a list", dict: "a mapping", type(None): "empty"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _text_problem(key: str, value: Any, *, multi_line: bool = False) -> str | None:
    if not isinstance(value, str):
        return f"{key} must be text, not {_kind(value)}"
    if (_NOTES_BAD if multi_line else _SINGLE_LINE_BAD).search(value):
        return f"{key} must be {'text without control characters' if multi_line else 'one line of text, without control characters'}"
    return None


def _int_ok(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < high


def check_metadata(meta: Any, source: str = "metadata") -> dict:
    """Validate submitter metadata; returns a normalised copy (authors and seeds as lists).

    Every field is type-checked (a YAML date or a 5000-digit number is refused here, before
    anything is scored); one-line fields (:data:`SINGLE_LINE`, author names) refuse control
    characters, ``notes`` allows newlines and tabs.
    """
    from atom_bench.eval.checks import quote_all

    if not isinstance(meta, dict):
        raise SubmissionError(f"{source}: expected a mapping of fields ({', '.join(REQUIRED)})")
    problems = [f"missing {k}" for k in REQUIRED if meta.get(k) is None or (isinstance(meta.get(k), (str, list)) and len(meta[k]) == 0)]
    unknown = sorted((k for k in meta if k not in REQUIRED + OPTIONAL), key=str)
    if unknown:
        problems.append(f"unknown field(s) {quote_all(unknown)} (allowed: {', '.join(REQUIRED + OPTIONAL)})")
    out = {k: meta[k] for k in REQUIRED + OPTIONAL if k in meta}
    authors = out.get("authors")
    if isinstance(authors, str):
        out["authors"] = authors = [authors]
    if authors is not None and not (isinstance(authors, list) and all(isinstance(a, str) and a for a in authors)):
        problems.append("authors must be a name or a list of names")
    elif authors and any(_SINGLE_LINE_BAD.search(a) for a in authors):
        problems.append("authors must be one line of text each, without control characters")
    seeds = out.get("seeds")
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        out["seeds"] = seeds = [seeds]
    if seeds is not None and not (isinstance(seeds, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        problems.append("seeds must be an integer or a list of integers")
    elif seeds and not all(_int_ok(s, -MAX_SEED + 1, MAX_SEED) for s in seeds):
        problems.append("seeds must be integers below 2**64 in size")
    n_params = out.get("n_parameters")
    if n_params is not None and not _int_ok(n_params, 0, MAX_PARAMETERS):
        problems.append("n_parameters must be a non-negative integer below 10**15")
    version = out.get("model_version")
    if version is not None and not isinstance(version, str) and not (
        _int_ok(version, 0, MAX_PARAMETERS) or (isinstance(version, float) and math.isfinite(version))
    ):
        problems.append(f"model_version must be text, not {_kind(version)}")
        del out["model_version"]
    for key in SINGLE_LINE:
        if key in out and out[key] is not None and not (key == "model_version" and not isinstance(out[key], str)):
            problem = _text_problem(key, out[key])
            if problem:
                problems.append(problem)
            elif key == "code_url" and out[key] and not (URL_RE.fullmatch(out[key]) or SOURCE_REF_RE.fullmatch(out[key])):
                problems.append("code_url must be an http(s) URL or atom-bench:<path of a .py file in the toolkit's source tree>")
            elif key.endswith("_url") and key != "code_url" and out[key] and not URL_RE.fullmatch(out[key]):
                problems.append(f"{key} must be an http(s) URL")
    for key in ("contact", "paper_url", "model_version"):
        if key in out and out[key] is None:
            problems.append(f"{key} is empty; remove it or fill it in")
    if "notes" in out:
        problem = _text_problem("notes", out["notes"], multi_line=True)
        if problem:
            problems.append(problem)
    if "external_data" in out and not isinstance(out["external_data"], bool):
        problems.append("external_data must be true or false")
    if problems:
        raise SubmissionError(f"{source}: " + "; ".join(problems))
    return out


class _AliasRefused(yaml.composer.ComposerError):
    pass


class _MetadataLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader without anchors and aliases (a 1 KB alias bomb grows to gigabytes) and
    without integers longer than any valid field (Python refuses to parse 4300+ digits)."""

    def compose_node(self, parent, index):  # PyYAML's signature
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _AliasRefused(None, None, "YAML anchors and aliases (& and *) are not allowed in metadata", event.start_mark)
        return super().compose_node(parent, index)

    def construct_yaml_int(self, node):
        if len(node.value) > 40:
            raise yaml.constructor.ConstructorError(None, None, f"a number of {len(node.value)} characters is too large", node.start_mark)
        return super().construct_yaml_int(node)


_MetadataLoader.add_constructor("tag:yaml.org,2002:int", _MetadataLoader.construct_yaml_int)


def load_metadata(path: str | os.PathLike[str]) -> dict:
    """Read and validate a ``META.yaml`` (or JSON) file of at most :data:`MAX_METADATA_BYTES`."""
    return check_metadata(read_metadata_file(path), Path(path).name)


def read_metadata_file(path: str | os.PathLike[str]) -> Any:
    """Parse a ``META.yaml`` (or JSON) file safely (size cap, UTF-8, no aliases), unchecked."""
    from atom_bench.eval.checks import brief

    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_METADATA_BYTES + 1)
    except FileNotFoundError:
        raise SubmissionError(f"{path}: no such metadata file") from None
    except OSError as exc:
        raise SubmissionError(f"{path}: cannot read the metadata file ({exc.strerror or brief(exc)})") from None
    if len(raw) > MAX_METADATA_BYTES:
        raise SubmissionError(f"{path}: the metadata file is larger than {MAX_METADATA_BYTES // 1024} KiB; a META.yaml holds a few lines")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SubmissionError(f"{path}: the metadata file is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        meta = yaml.load(text, Loader=_MetadataLoader)  # a SafeLoader subclass
    except _AliasRefused as exc:
        line = f" (line {exc.problem_mark.line + 1})" if exc.problem_mark else ""
        raise SubmissionError(f"{path}: {exc.problem}{line}; write each value out") from None
    except yaml.YAMLError as exc:
        raise SubmissionError(f"{path}: not valid YAML ({brief(exc)})") from None
    except RecursionError:
        raise SubmissionError(f"{path}: not valid metadata (nested too deeply)") from None
    return meta


def submissions_lock(submissions_dir: str | os.PathLike[str], timeout: float = 600) -> FileLock:
    """The lock that ``submit`` holds while it stores a record (and ``regenerate`` while it reads them)."""
    return FileLock(str(Path(submissions_dir) / LOCK_NAME), timeout=timeout)


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
    scores: dict | None = None,
    track: str | None = None,
    split: str | None = None,
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
        scores: the scores ``predictions`` already got (an ``Evaluator.evaluate_file`` result),
            so it is not scored twice; its sha256, track and split must match the file's.
        track, split: the split the file is for, when it records none (a plain CSV or parquet
            file); metadata the file does record must agree.
    """
    from atom_bench._io import sha256_file
    from atom_bench.eval import checks, scoring
    from atom_bench.eval import predictions as P

    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise SubmissionError(
            f"invalid name {checks.quote(name)}: use 1-64 letters, digits, '.', '_' or '-', not starting with a symbol", parameters=("name",)
        )
    info = check_metadata(meta) if isinstance(meta, dict) else load_metadata(meta)
    path = Path(predictions)
    plain_ok = track is not None
    track, split = P.file_target(path, track, split)  # plain names: they become folders
    fmt, _ = checks.sniff(path)  # stored by its content: parquet bytes named .txt or .csv are .parquet
    target = Path(submissions_dir) / track / name
    if target.exists() and not force:  # early exit; checked again under the lock
        raise SubmissionError(f"{target} already exists; choose another name or pass force=True to replace it", parameters=("name", "force"))
    if scores is None:
        ev = evaluator if evaluator is not None else scoring.Evaluator.from_benchmark(track, split, root=root, labels=labels)
        scores, dataset = ev.evaluate_file(path, plain_ok=plain_ok), ev.info
    else:  # scored already: the file must still be the one those scores are for
        if sha256_file(path) != scores.get("predictions_sha256") or (scores.get("track"), scores.get("split")) != (track, split):
            raise SubmissionError(f"{path} is not the file the given scores were computed for (sha256, track or split differ)")
        scores, dataset = dict(scores), scores
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
        "dataset_revision": dataset["dataset_revision"],
        "manifest_sha256": dataset["manifest_sha256"],
        "predictions_file": f"predictions.{fmt}",
        "predictions_sha256": digest,
        "date": (today or dt.datetime.now(dt.timezone.utc).date()).isoformat(),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    with submissions_lock(submissions_dir):
        if target.exists() and not force:
            raise SubmissionError(f"{target} already exists; choose another name or pass force=True to replace it", parameters=("name", "force"))
        with atomic_directory(target) as tmp:
            shutil.copyfile(path, tmp / record["predictions_file"])
            if sha256_file(tmp / record["predictions_file"]) != digest:
                raise SubmissionError(f"{path} changed while it was being submitted; submit it again")
            write_json_atomic(tmp / "metadata.json", record)
            write_json_atomic(tmp / "scores.json", scores)
    return target


def load_records(submissions_dir: str | os.PathLike[str] = "submissions") -> list[dict]:
    """Every stored record as ``{"metadata": ..., "scores": ..., "path": ...}``, sorted by track and name."""
    from atom_bench.eval.checks import brief

    base = Path(submissions_dir)
    records = []
    for folder in sorted(base.glob("*/*")) if base.is_dir() else []:
        if folder.name.startswith(".") or folder.parent.name.startswith(".") or not folder.is_dir():
            continue
        try:
            metadata = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
            scores = json.loads((folder / "scores.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise SubmissionError(f"{folder}: unreadable submission record ({brief(exc)}); submit it again") from None
        if not isinstance(metadata, dict) or not isinstance(scores, dict) or not isinstance(scores.get("metrics"), dict):
            raise SubmissionError(f"{folder}: metadata.json or scores.json is not a submission record; submit it again")
        if metadata.get("track") != folder.parent.name or metadata.get("name") != folder.name:
            raise SubmissionError(
                f"{folder}: metadata.json names {quote(metadata.get('track'))}/{quote(metadata.get('name'))}; the folder must match"
            )
        records.append({"metadata": metadata, "scores": scores, "path": folder.as_posix()})
    return records


def predictions_of(spec: str | os.PathLike[str], submissions_dir: str | os.PathLike[str] = "submissions") -> Path:
    """A prediction file given as a path, or as a submission name (``<name>`` or ``<track>/<name>``).

    Raises:
        SubmissionError: neither a file nor exactly one submission of that name.
    """
    path = Path(spec)
    if path.is_file():
        return path
    base = Path(submissions_dir)
    text = str(spec)
    pattern = text if "/" in text else f"*/{text}"
    found = sorted(p for p in base.glob(pattern) if p.is_dir() and any(p.glob("predictions.*"))) if base.is_dir() and text.strip("/.") else []
    if len(found) != 1:
        what = "no file and no submission" if not found else f"{len(found)} submissions ({', '.join(p.parent.name for p in found[:4])})"
        raise SubmissionError(f"{quote(text)} names {what} in {base}; pass a prediction file or <track>/<name>")
    return next(found[0].glob("predictions.*"))

