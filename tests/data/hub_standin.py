"""A minimal local stand-in for the Hugging Face Hub HTTP API, so hub tests never touch the internet.

It serves, for dataset repos, exactly what huggingface_hub 2.4.0's ``snapshot_download``, ``dataset_info``,
``create_repo``, ``upload_folder`` (regular and basic-LFS uploads) and ``create_tag`` call (``_ROUTES``).
State lives under ``root``: content-addressed ``blobs/<sha256>`` and one ``repos/<ns>/<name>.json`` per
repo with branches, tags and commits (each commit maps every path to its blob), so branches, tags and
commit shas resolve. Errors carry the ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound)
the client maps to its exceptions; writes need an ``Authorization`` header (any token). Files ending in
``LFS_SUFFIXES`` or holding a NUL byte go through LFS, the others are committed inline, as on the Hub.

Xet is never advertised (no ``X-Xet-Hash`` header, no ``xetHash`` in trees), so downloads use plain HTTP.
Uploads differ: huggingface_hub 2.4.0 uploads through Xet whenever ``hf_xet`` is installed, whatever the
server says, so the fixture sets ``HF_HUB_DISABLE_XET`` to get the basic LFS protocol.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

LFS_SUFFIXES = (".parquet", ".arrow", ".nii", ".gz", ".npy", ".safetensors", ".bin")
_REPO = r"([\w.-]+/[\w.-]+)"
_ROUTES = [  # (method, path pattern, handler name)
    ("POST", r"/api/repos/create", "create_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("GET", rf"/api/datasets/{_REPO}(?:/revision/([^/]+))?", "info"),
    ("GET", rf"/api/datasets/{_REPO}/tree/([^/]+)", "tree"),
    ("POST", rf"/api/datasets/{_REPO}/preupload/([^/]+)", "preupload"),
    ("POST", rf"/api/datasets/{_REPO}/commit/([^/]+)", "commit"),
    ("POST", rf"/api/datasets/{_REPO}/tag/([^/]+)", "tag"),
    ("POST", rf"/datasets/{_REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
    ("PUT", r"/lfs/([0-9a-f]{64})", "lfs_put"),
    ("GET", rf"/datasets/{_REPO}/resolve/([^/]+)/(.+)", "resolve"),
    ("HEAD", rf"/datasets/{_REPO}/resolve/([^/]+)/(.+)", "resolve"),
]


class HubHTTPError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.commit = status, code, commit


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubStandin:
    """The server (``start()``, ``url``, ``stop()``), its storage, and helpers to inspect or tamper with it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, for assertions
        self._server: ThreadingHTTPServer | None = None

    def repo_file(self, repo_id: str) -> Path:
        return self.root / "repos" / f"{repo_id}.json"

    def load(self, repo_id: str) -> dict:
        if not self.repo_file(repo_id).is_file():
            raise HubHTTPError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return json.loads(self.repo_file(repo_id).read_text())

    def save(self, repo_id: str, repo: dict) -> None:
        self.repo_file(repo_id).parent.mkdir(parents=True, exist_ok=True)
        self.repo_file(repo_id).write_text(json.dumps(repo, indent=1))

    @staticmethod
    def resolve(repo: dict, revision: str) -> str:
        sha = repo["branches"].get(revision) or repo["tags"].get(revision)
        if sha is None and revision not in repo["commits"]:
            raise HubHTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha or revision

    def files(self, repo_id: str, revision: str = "main") -> dict[str, dict]:
        """``path -> {sha256, size, lfs, git_oid}`` of every file at ``revision``."""
        repo = self.load(repo_id)
        return repo["commits"][self.resolve(repo, revision)]["files"]

    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def tamper(self, repo_id: str, path: str, revision: str = "main") -> None:
        """Flip one byte of a stored file in place: same size and metadata, wrong content."""
        blob = self.blob_path(self.files(repo_id, revision)[path]["sha256"])
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))

    def start(self) -> HubStandin:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"hub": self}))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubStandin
    _read: bool  # whether the request body was consumed

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def _dispatch(self) -> None:
        path, self._read = urlsplit(self.path).path, False
        self.hub.requests.append((self.command, path))
        try:
            for method, pattern, name in _ROUTES:
                if method == self.command and (match := re.fullmatch(pattern, path)):
                    if name not in ("info", "tree", "resolve", "validate_yaml", "lfs_put") and not self._authorized():
                        raise HubHTTPError(401, "Invalid username or password.")
                    with self.hub.lock:
                        return getattr(self, name)(*(unquote(g) if g else g for g in match.groups()))
            raise HubHTTPError(404, f"no route for {self.command} {path} in the Hub stand-in")
        except HubHTTPError as err:
            if not self._read:
                self._body()  # drain it, or the client sees a reset connection instead of the error
            headers = {"X-Error-Message": str(err), "X-Error-Code": err.code, "X-Repo-Commit": err.commit}
            self._send(err.status, {"error": str(err)}, {k: v for k, v in headers.items() if v})

    do_GET = do_HEAD = do_POST = do_PUT = _dispatch

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "").startswith("Bearer ")

    def _body(self) -> bytes:
        self._read = True
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))
        data = b""
        while size := int(self.rfile.readline().split(b";")[0], 16):
            data += self.rfile.read(size)
            self.rfile.readline()
        self.rfile.readline()
        return data

    def _json(self) -> dict:
        return json.loads(self._body())

    def _send(self, status: int, payload: object = None, headers: dict | None = None, raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    # -- endpoints (arguments: the pattern's groups) ----------------------------------------------
    def create_repo(self) -> None:
        body = self._json()
        if body.get("type") != "dataset":
            raise HubHTTPError(400, "the stand-in hosts dataset repositories only")
        repo_id = f"{body['organization']}/{body['name']}"
        url = f"{self.hub.url}/datasets/{repo_id}"
        if self.hub.repo_file(repo_id).is_file():
            return self._send(409, {"error": "You already created this dataset repo", "url": url})
        first = hashlib.sha1(f"initial {repo_id}".encode()).hexdigest()
        self.hub.save(repo_id, {"private": body.get("visibility") == "private", "branches": {"main": first},
                                "tags": {}, "commits": {first: {"parent": None, "message": "initial", "files": {}}}})
        self._send(200, {"url": url, "name": repo_id})

    def validate_yaml(self) -> None:
        match = re.match(r"^---\n(.*?)\n---", self._json()["content"], re.S)
        try:
            yaml.safe_load(match[1] if match else "")
        except yaml.YAMLError as err:
            return self._send(400, {"errors": [{"message": str(err)}]})
        self._send(200, {"errors": [], "warnings": []})

    def info(self, repo_id: str, rev: str | None) -> None:
        repo = self.hub.load(repo_id)
        sha = self.hub.resolve(repo, rev or "main")
        siblings = [{"rfilename": p, "size": f["size"]} for p, f in sorted(repo["commits"][sha]["files"].items())]
        self._send(200, {"id": repo_id, "sha": sha, "private": repo["private"], "siblings": siblings, "tags": []})

    def tree(self, repo_id: str, rev: str) -> None:
        entries = []
        for path, f in sorted(self.hub.files(repo_id, rev).items()):
            entry = {"type": "file", "path": path, "size": f["size"], "oid": f["git_oid"]}
            if f["lfs"]:
                entry["lfs"] = {"oid": f["sha256"], "size": f["size"], "pointerSize": 134}
            entries.append(entry)
        self._send(200, entries)

    def resolve(self, repo_id: str, rev: str, path: str) -> None:
        repo = self.hub.load(repo_id)
        sha = self.hub.resolve(repo, rev)
        f = repo["commits"][sha]["files"].get(path)
        if f is None:
            raise HubHTTPError(404, f"Entry not found: {path}", "EntryNotFound", commit=sha)
        etag = f["sha256"] if f["lfs"] else f["git_oid"]  # as the Hub: sha256 for LFS files, git oid otherwise
        headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "X-Linked-Size": str(f["size"])}
        self._send(200, headers=headers, raw=self.hub.blob_path(f["sha256"]).read_bytes())

    def preupload(self, repo_id: str, rev: str) -> None:
        current, answer = self.hub.files(repo_id, rev), []
        for item in self._json()["files"]:
            lfs = item["path"].endswith(LFS_SUFFIXES) or b"\0" in base64.b64decode(item["sample"])
            old = current.get(item["path"])  # the client skips files whose oid did not change
            oid = None if old is None else old["sha256"] if old["lfs"] else old["git_oid"]
            mode = "lfs" if lfs else "regular"
            answer.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._send(200, {"files": answer})

    def lfs_batch(self, repo_id: str) -> None:
        self.hub.load(repo_id)
        objects = []
        for obj in self._json()["objects"]:
            if not self.hub.blob_path(obj["oid"]).is_file():  # no "actions": already stored
                obj["actions"] = {"upload": {"href": f"{self.hub.url}/lfs/{obj['oid']}"}}
            objects.append(obj)
        self._send(200, {"transfer": "basic", "objects": objects})

    def lfs_put(self, oid: str) -> None:
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubHTTPError(400, "uploaded content does not match its sha256")
        self.hub.blob_path(oid).write_bytes(data)
        self._send(200, {})

    def commit(self, repo_id: str, rev: str) -> None:
        repo = self.hub.load(repo_id)
        if rev not in repo["branches"]:
            raise HubHTTPError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        parent = repo["branches"][rev]
        files, summary = dict(repo["commits"][parent]["files"]), ""
        for line in self._body().splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value["summary"]
            elif key == "file":
                data = base64.b64decode(value["content"])
                sha256 = hashlib.sha256(data).hexdigest()
                self.hub.blob_path(sha256).write_bytes(data)
                files[value["path"]] = {"sha256": sha256, "size": len(data), "lfs": False,
                                        "git_oid": git_blob_sha1(data)}
            elif key == "lfsFile":
                oid, size = value["oid"], value["size"]
                if not self.hub.blob_path(oid).is_file():
                    raise HubHTTPError(400, f"LFS object {oid} of {value['path']} was never uploaded")
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()
                files[value["path"]] = {"sha256": oid, "size": size, "lfs": True,
                                        "git_oid": git_blob_sha1(pointer)}
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {p: f for p, f in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
        sha = hashlib.sha1(json.dumps([parent, files, summary, len(repo["commits"])]).encode()).hexdigest()
        repo["commits"][sha] = {"parent": parent, "message": summary, "files": files}
        repo["branches"][rev] = sha
        self.hub.save(repo_id, repo)
        url = f"{self.hub.url}/datasets/{repo_id}/commit/{sha}"
        self._send(200, {"success": True, "commitOid": sha, "commitUrl": url, "pullRequestUrl": None})

    def tag(self, repo_id: str, rev: str) -> None:
        repo, tag = self.hub.load(repo_id), self._json()["tag"]
        if tag in repo["tags"] or tag in repo["branches"]:
            raise HubHTTPError(409, f"Tag {tag} already exists")
        repo["tags"][tag] = self.hub.resolve(repo, rev)
        self.hub.save(repo_id, repo)
        self._send(200, {})


@pytest.fixture(name="hub")
def hub_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStandin]:
    """Fixture ``hub``: a running stand-in, the environment pointed at it, an empty HF_HOME, a dummy token.

    Use it with ``from tests.data.hub_standin import hub_fixture  # noqa: F401`` and a ``hub`` argument.
    huggingface_hub reads its settings once, at import, into ``huggingface_hub.constants``: they are
    patched there as well as in the environment (for child processes and for call-time readers).
    """
    from huggingface_hub import constants

    server = HubStandin(tmp_path / "hub-server").start()
    home = tmp_path / "hf-home"
    settings = {
        "HF_ENDPOINT": ("ENDPOINT", server.url),
        "HF_HOME": ("HF_HOME", str(home)),
        "HF_HUB_CACHE": ("HF_HUB_CACHE", str(home / "hub")),
        "HF_HUB_DISABLE_TELEMETRY": ("HF_HUB_DISABLE_TELEMETRY", True),
        "HF_HUB_DISABLE_XET": ("HF_HUB_DISABLE_XET", True),
        "HF_HUB_ETAG_TIMEOUT": ("HF_HUB_ETAG_TIMEOUT", 5),
        "HF_HUB_DOWNLOAD_TIMEOUT": ("HF_HUB_DOWNLOAD_TIMEOUT", 5),
    }
    for env, (attr, value) in settings.items():
        monkeypatch.setenv(env, "1" if value is True else str(value))
        monkeypatch.setattr(constants, attr, value)
    # hf_hub_url() builds file URLs from this template and swaps in an `endpoint` argument only when they
    # start with constants.ENDPOINT: patch both, or file downloads silently go to huggingface.co.
    template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_standin_dummy_token")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # for child processes; this one read it at import
    try:
        yield server
    finally:
        server.stop()
