"""Download a published benchmark from the Hugging Face Hub, or publish a built one.

A benchmark lives in a *dataset* repository (``DEFAULT_REPO``) whose files are exactly a built
benchmark directory: ``README.md`` (the dataset card, with YAML ``configs``), ``manifest.json`` and
the parquet shards. Releases are pinned by a tag (``DEFAULT_REVISION = "v1.0"``). A tag can be moved
by the repository owner; a full 40-character commit sha cannot, so pass the sha recorded in a result
(``read_source(root)["commit"]``) to get exactly the same bytes again.

``download`` honours the usual ``huggingface_hub`` settings, read when it is called:
``HF_ENDPOINT`` (a mirror or any Hub-compatible server), ``HF_HUB_OFFLINE=1`` (no network: use what
is cached), ``HF_HOME`` / ``HF_HUB_CACHE`` (where the cache lives), ``HF_TOKEN`` and
``HF_HUB_ETAG_TIMEOUT`` (seconds to wait for the Hub before giving up). Every download is checked
against the manifest's sha256 checksums before it is returned, and its origin (repository,
requested revision, resolved commit, endpoint) is written to ``.atom-bench-source.json`` beside the
manifest, outside the checksummed files, so results can carry the dataset revision.

Failures are one-line errors: :class:`~atom_bench.errors.HubError` when the Hub cannot serve the
request (offline mode, network error, unknown repository or revision, refused token) and
:class:`~atom_bench.errors.DataError` when the files arrive but fail the manifest. Both name the
embedded default benchmark, which needs no network.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from atom_bench._io import atomic_directory, sha256_file, write_json_atomic
from atom_bench.data.benchmark import DEFAULT_BENCHMARK, Benchmark
from atom_bench.errors import DataError, HubError

DEFAULT_REPO = "atom-bench/atom-mini"
DEFAULT_REVISION = "v1.0"  # a tag; a full commit sha pins harder (tags can be moved, commits cannot)
SOURCE_FILE = ".atom-bench-source.json"

_EMBEDDED_HINT = (
    f"the embedded default benchmark {DEFAULT_BENCHMARK} is available offline: "
    "leave --root and ATOM_BENCH_DATA unset (see `atom-bench info`)"
)
_HUB_ERRORS = (HfHubHTTPError, httpx2.HTTPError, EntryNotFoundError, HFValidationError, OSError)


def download(
    repo_id: str = DEFAULT_REPO,
    revision: str = DEFAULT_REVISION,
    out: str | os.PathLike[str] | None = None,
    token: str | None = None,
) -> Path:
    """Fetch ``repo_id`` at ``revision`` (tag, branch or commit sha), verify it and return its directory.

    ``out=None`` downloads into the Hugging Face cache and returns the snapshot folder there; a
    snapshot that fails the manifest is removed from the cache again. With ``out``, the files are
    downloaded into a temporary sibling of ``out``, verified, and only then renamed onto ``out``,
    so a failed download leaves ``out`` as it was (absent, or the previous download). ``out`` must
    be new, empty or a previous download; an ``out`` that already holds this commit intact is
    returned without downloading again. In offline mode only the cache (or such an ``out``) is used.
    """
    where = f"{repo_id}@{revision}"
    endpoint = _endpoint()
    if _offline():
        return _download_offline(repo_id, revision, out, endpoint)
    api = HfApi(endpoint=endpoint, token=token)
    with _hub_errors(repo_id, revision, endpoint):  # resolve first, with a timeout: most failures show here
        commit = api.dataset_info(repo_id, revision=revision, timeout=_timeout()).sha
    assert commit is not None, "the Hub returned no commit sha"

    if out is None:
        with _hub_errors(repo_id, revision, endpoint):
            root = _snapshot(repo_id, revision, endpoint, token)
        try:
            _verify(root, where, root.name, "the cached copy was removed")
        except DataError:
            _discard_cached_snapshot(root)
            raise
        _record_source(root, repo_id, revision, root.name, endpoint)
        return root

    out = Path(out)
    _check_out(out)
    if _holds(out, repo_id, commit):
        return out
    with atomic_directory(out) as tmp:
        with _hub_errors(repo_id, revision, endpoint):
            _snapshot(repo_id, commit, endpoint, token, local_dir=tmp)
        _verify(tmp, where, commit, f"nothing was written to {out}")
        _record_source(tmp, repo_id, revision, commit, endpoint)
    return out


def publish(
    path: str | os.PathLike[str],
    repo_id: str,
    token: str | None = None,
    revision_tag: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
) -> str:
    """Upload the built benchmark at ``path`` as the dataset repository ``repo_id``; return the commit sha.

    The build's checksums are verified first (a broken build is refused with DataError). The repo
    is created if needed, then the whole directory (card included) is uploaded to ``main``, and
    files of an older release that the new build lacks are deleted. Without ``hf_xet`` this is one
    commit; with it, huggingface_hub may split a large folder into several commits, and the last
    one (the complete release) is returned. ``revision_tag`` (e.g. ``"v1.0"``) tags exactly that
    commit; an existing tag is never moved. Unchanged files make no new commit (the current sha is
    returned). Needs a token with write access (``token`` or ``HF_TOKEN``).
    """
    root = Path(path)
    bench = Benchmark.open(root)
    bench.verify()
    if not (root / "README.md").is_file():
        raise DataError(f"{root} has no README.md dataset card; build the benchmark again with `atom-bench build`")
    manifest = bench.manifest
    endpoint = _endpoint()
    where = f"{repo_id}@{revision_tag or 'main'}"
    if _offline():
        raise HubError(f"cannot publish {where}: offline mode is on (HF_HUB_OFFLINE=1); unset it to upload")
    api = HfApi(endpoint=endpoint, token=token)
    message = commit_message or f"Publish {manifest.get('name', root.name)} {manifest.get('version', '')}".strip()
    with _hub_errors(repo_id, "main", endpoint, writing=True):
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True, private=private)
        info = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=root,
            commit_message=message,
            ignore_patterns=[SOURCE_FILE, ".*.tmp", ".*.old"],
            delete_patterns="*",
        )
    if revision_tag:
        with _hub_errors(repo_id, revision_tag, endpoint, writing=True):
            try:
                api.create_tag(repo_id, repo_type="dataset", tag=revision_tag, revision=info.oid, tag_message=message)
            except HfHubHTTPError as exc:
                if exc.response is None or exc.response.status_code != 409:
                    raise
                raise HubError(
                    f"tag {revision_tag!r} already exists in {repo_id} (tags are release pins and are never moved); "
                    f"the upload is commit {info.oid}: tag it with a new version"
                ) from exc
    return info.oid


def read_source(root: str | os.PathLike[str]) -> dict | None:
    """Where a downloaded benchmark came from (repo_id, revision, commit, endpoint, ...), or None if built locally."""
    path = Path(root) / SOURCE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


# -- settings, read at call time so that changes to os.environ after import are honoured ----------

def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _offline() -> bool:
    return constants.is_offline_mode() or _truthy(os.environ.get("HF_HUB_OFFLINE"))


def _endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _timeout() -> float:
    return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or constants.HF_HUB_ETAG_TIMEOUT)


def _cache_dir() -> str:
    env = os.environ
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return os.path.expanduser(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"])
    if env.get("HF_HOME"):
        return os.path.join(os.path.expanduser(env["HF_HOME"]), "hub")
    return constants.HF_HUB_CACHE


# -- helpers --------------------------------------------------------------------------------------

def _snapshot(repo_id: str, revision: str, endpoint: str, token: str | None, local_dir: Path | None = None,
              local_files_only: bool = False) -> Path:
    """snapshot_download of the dataset repo, into ``local_dir`` or else the (call-time) HF cache."""
    return Path(snapshot_download(
        repo_id, repo_type="dataset", revision=revision, cache_dir=_cache_dir(), local_dir=local_dir,
        endpoint=endpoint, token=token, etag_timeout=_timeout(), local_files_only=local_files_only,
    ))


def _download_offline(repo_id: str, revision: str, out: str | os.PathLike[str] | None, endpoint: str) -> Path:
    where = f"{repo_id}@{revision}"
    reason = f"cannot reach the Hugging Face Hub for {where} (offline mode: HF_HUB_OFFLINE=1)"
    if out is not None:
        source = read_source(out)
        if source and source.get("repo_id") == repo_id and revision in (source.get("revision"), source.get("commit")):
            _verify(Path(out), where, source["commit"], f"re-download {out} with network access")
            return Path(out)
        raise HubError(f"{reason} and {out} holds no download of it; download once with network access; "
                       f"{_EMBEDDED_HINT}")
    try:
        root = _snapshot(repo_id, revision, endpoint, None, local_files_only=True)
    except _HUB_ERRORS as exc:
        raise HubError(f"{reason} and it is not in the local cache {_cache_dir()}; download once with network "
                       f"access (or copy a downloaded directory and pass it as --root); {_EMBEDDED_HINT}") from exc
    _verify(root, where, root.name, "download it again with network access")
    if (read_source(root) or {}).get("commit") != root.name:
        _record_source(root, repo_id, revision, root.name, endpoint)
    return root


@contextlib.contextmanager
def _hub_errors(repo_id: str, revision: str, endpoint: str, writing: bool = False) -> Iterator[None]:
    """Re-raise huggingface_hub and network exceptions as one-line HubErrors."""
    try:
        yield
    except (*_HUB_ERRORS, RuntimeError) as exc:
        cause = exc.__cause__ if isinstance(exc, RuntimeError) else exc  # LFS uploads wrap errors in RuntimeError
        if not isinstance(cause, _HUB_ERRORS):
            raise
        if isinstance(cause, OSError) and cause.errno is not None and not isinstance(cause, ConnectionError):
            raise  # a local file-system error (disk full, permissions): its own message says it best
        raise _hub_error(cause, repo_id, revision, endpoint, writing) from exc


def _hub_error(exc: Exception, repo_id: str, revision: str, endpoint: str, writing: bool = False) -> HubError:
    """Translate a huggingface_hub / network exception into one actionable HubError line."""
    where = f"{repo_id}@{revision}"
    hint = "" if writing else f"; {_EMBEDDED_HINT}"
    if isinstance(exc, OfflineModeIsEnabled):
        return HubError(f"cannot reach the Hugging Face Hub for {where} (offline mode: HF_HUB_OFFLINE=1){hint}")
    if isinstance(exc, HFValidationError):
        return HubError(f"{repo_id!r} is not a valid repository id ({_short(exc)}); use the form owner/name")
    if isinstance(exc, RevisionNotFoundError):
        return HubError(f"revision {revision!r} does not exist in the dataset repository {repo_id} on {endpoint}; "
                        f"pass an existing tag (default {DEFAULT_REVISION}), branch or full commit sha{hint}")
    if isinstance(exc, RepositoryNotFoundError):
        return HubError(f"the dataset repository {repo_id} does not exist on {endpoint}, or it is private and the "
                        f"token (HF_TOKEN or --token) cannot read it; check the repository id{hint}")
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status in (401, 403):
            need = "write" if writing else "read"
            return HubError(f"the Hub at {endpoint} refused the request for {where} (HTTP {status}: no token, or one "
                            f"without {need} access); pass a token with {need} access via HF_TOKEN or --token")
        return HubError(f"the Hub at {endpoint} answered HTTP {status} for {where} ({_short(exc)}); "
                        f"try again later{hint}")
    offline_tip = "" if writing else ", or set HF_HUB_OFFLINE=1 to use the local cache"
    return HubError(f"cannot reach the Hugging Face Hub at {endpoint} for {where} (network error: {_short(exc)}); "
                    f"check the connection, HF_ENDPOINT and proxy settings{offline_tip}{hint}")


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _verify(root: Path, where: str, commit: str, consequence: str) -> None:
    """Benchmark.verify, re-worded to say which download failed and what happened to it."""
    try:
        Benchmark.open(root).verify()
    except DataError as exc:
        detail = str(exc).split(": ", 1)[-1].split("; download or build")[0]
        if not (root / "manifest.json").is_file():
            detail = "it has no manifest.json, so it is not an atom-bench benchmark"
        raise DataError(f"the download of {where} (commit {commit}) does not match its manifest: {detail}; "
                        f"{consequence}; pin another revision or republish it; {_EMBEDDED_HINT}") from exc


def _record_source(root: Path, repo_id: str, revision: str, commit: str, endpoint: str) -> None:
    bench = Benchmark.open(root)
    write_json_atomic(root / SOURCE_FILE, {
        "repo_id": repo_id, "repo_type": "dataset", "revision": revision, "commit": commit, "endpoint": endpoint,
        "name": bench.manifest.get("name"), "version": bench.manifest.get("version"), "dataset_hash": bench.hash,
    })


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / SOURCE_FILE).is_file())):
        raise DataError(f"{out} exists and is not an earlier `atom-bench download`; choose a new or empty directory")


def _holds(out: Path, repo_id: str, commit: str) -> bool:
    """Whether ``out`` already is an intact download of ``commit``."""
    source = read_source(out) if out.is_dir() else None
    if not source or source.get("repo_id") != repo_id or source.get("commit") != commit:
        return False
    try:
        Benchmark.open(out).verify()
    except DataError:
        return False
    return True


def _discard_cached_snapshot(snapshot: Path) -> None:
    """Drop a cache snapshot that failed the manifest, and the blobs of its bad files.

    Blobs whose content matches the manifest are kept (other snapshots may share them), so the next
    online download fetches only the bad files again, and an offline one finds nothing to serve.
    """
    manifest_path = snapshot / "manifest.json"
    expected = json.loads(manifest_path.read_text(encoding="utf-8")).get("files", {}) if manifest_path.is_file() else {}
    for name, sha in expected.items():
        link = snapshot / name
        if link.is_symlink() and (not link.is_file() or sha256_file(link) != sha):
            link.resolve().unlink(missing_ok=True)
    shutil.rmtree(snapshot, ignore_errors=True)
