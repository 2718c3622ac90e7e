"""Publishing to and downloading from a Hub, against the local stand-in in ``hub_standin`` (no internet)."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import datasets
import httpx2
import pytest

from atom_bench.data.dataset import load_manifest, load_split, verify_checksums
from atom_bench.data.hub import SOURCE_FILE, _hub_errors, download, publish, read_source
from atom_bench.errors import DataError, HubError
from tests.data.hub_standin import HubStandin, hub_fixture  # noqa: F401  (hub_fixture provides the `hub` fixture)

REPO = "atom-bench/test-small"
# huggingface_hub 2.4.0 streams LFS uploads with a call httpx2 has deprecated; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


@pytest.fixture
def published(hub: HubStandin, small_bench: Path) -> tuple[HubStandin, str]:
    """small_bench published to the stand-in and tagged v1.0; returns the server and the commit sha."""
    return hub, publish(small_bench, REPO, revision_tag="v1.0")


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_publish_then_download_at_tag_and_commit(published, small_bench, tmp_path):
    server, commit = published
    assert len(commit) == 40
    # the card and manifest went up as regular git files, the shards through basic LFS, nothing through Xet
    assert not server.files(REPO)["README.md"]["lfs"]
    assert server.files(REPO)[load_manifest(small_bench)["tracks"]["easy"]["splits"]["train"]["files"][0]]["lfs"]
    assert not any("xet" in path for _, path in server.requests)

    by_tag = download(REPO, "v1.0", out=tmp_path / "by-tag")
    by_sha = download(REPO, commit, out=tmp_path / "by-sha")
    expected = load_split("easy", "train", root=small_bench)["sample_id"]
    for root, revision in ((by_tag, "v1.0"), (by_sha, commit)):
        assert verify_checksums(root) == len(load_manifest(small_bench)["files"])
        assert read_source(root).items() >= {"repo_id": REPO, "revision": revision, "commit": commit}.items()
        assert load_split("easy", "train", root=root)["sample_id"] == expected
    via_card = datasets.load_dataset(str(by_tag), "easy", split="train", cache_dir=str(tmp_path / "ds-cache"))
    assert via_card["sample_id"] == expected

    # downloading the same commit into the same directory again fetches no file
    before = len(server.requests)
    assert download(REPO, "v1.0", out=by_tag) == by_tag
    assert not any("/resolve/" in path for _, path in server.requests[before:])


def test_offline_download_is_served_from_the_cache(published, monkeypatch):
    server, commit = published
    cached = download(REPO, "v1.0")
    assert cached.name == commit and read_source(cached)["commit"] == commit
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(server.requests)
    assert download(REPO, "v1.0") == cached
    assert download(REPO, commit) == cached
    assert load_split("easy", "train", root=cached).num_rows > 0
    assert len(server.requests) == before  # not one request in offline mode


def test_offline_with_an_empty_cache_names_the_embedded_default(hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError) as err:
        download(REPO, "v1.0")
    assert "offline mode: HF_HUB_OFFLINE=1" in _one_line(err) and "atom-mini" in str(err.value)
    with pytest.raises(HubError, match="holds no download"):
        download(REPO, "v1.0", out=tmp_path / "nothing-here")
    assert not hub.requests


def test_unreachable_endpoint_fails_fast(hub, monkeypatch, tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(HubError) as err:
        download(REPO, "v1.0", out=tmp_path / "out")
    assert time.monotonic() - start < 5
    assert "network error" in _one_line(err) and "atom-mini" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_unknown_repo_and_unknown_revision_are_told_apart(published):
    with pytest.raises(HubError) as no_repo:
        download("atom-bench/no-such-benchmark", "v1.0")
    with pytest.raises(HubError) as no_rev:
        download(REPO, "v9.9")
    assert "repository atom-bench/no-such-benchmark does not exist" in _one_line(no_repo)
    assert "revision 'v9.9' does not exist" in _one_line(no_rev)
    with pytest.raises(HubError, match="revision '0{40}' does not exist"):
        download(REPO, "0" * 40)


def test_tampered_file_on_the_server_is_refused_and_leaves_nothing(published, small_bench, tmp_path):
    server, commit = published
    shard = load_manifest(small_bench)["tracks"]["easy"]["splits"]["train"]["files"][0]
    server.tamper(REPO, shard)
    downloads = tmp_path / "downloads"
    with pytest.raises(DataError) as err:
        download(REPO, "v1.0", out=downloads / "dl")
    assert f"{shard} (checksum differs)" in _one_line(err) and commit in str(err.value)
    assert list(downloads.iterdir()) == []  # neither out nor a temporary sibling
    with pytest.raises(DataError):
        download(REPO, "v1.0")  # into the cache: the bad snapshot is dropped again
    cache = Path(os.environ["HF_HUB_CACHE"]) / "datasets--atom-bench--test-small"
    assert list((cache / "snapshots").iterdir()) == []
    assert not (cache / "blobs" / server.files(REPO)[shard]["sha256"]).exists()  # the bad blob went too
    distinct = {f["sha256"] for f in server.files(REPO).values()}
    assert len(list((cache / "blobs").iterdir())) == len(distinct) - 1  # the good ones stay


def test_publish_refuses_a_corrupted_build(hub, small_bench, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(small_bench, broken)
    shard = broken / load_manifest(broken)["tracks"]["easy"]["splits"]["train"]["files"][0]
    shard.write_bytes(shard.read_bytes()[:-1] + b"\0")
    with pytest.raises(DataError, match="fail the manifest"):
        publish(broken, REPO, revision_tag="v1.0")
    assert not hub.requests  # nothing was sent


def test_republishing_keeps_the_commit_and_never_moves_a_tag(published, small_bench):
    server, commit = published
    assert publish(small_bench, REPO) == commit  # unchanged files make no new commit
    with pytest.raises(HubError, match="tag 'v1.0' already exists"):
        publish(small_bench, REPO, revision_tag="v1.0")


def test_download_will_not_overwrite_a_foreign_directory(published, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not an earlier `atom-bench download`"):
        download(REPO, "v1.0", out=foreign)
    assert (foreign / "notes.txt").read_text() == "keep me" and SOURCE_FILE not in {p.name for p in foreign.iterdir()}


def test_errors_wrapped_by_lfs_uploads_become_hub_errors():
    # huggingface_hub re-raises a failed LFS upload as RuntimeError(...) from the HTTP or network error
    with pytest.raises(HubError, match=r"network error: ConnectError: refused\); check the connection") as err:
        with _hub_errors(REPO, "main", "http://hub.invalid", writing=True):
            try:
                raise httpx2.ConnectError("refused")
            except httpx2.ConnectError as exc:
                raise RuntimeError("Error while uploading 'a.parquet' to the Hub.") from exc
    assert "HF_HUB_OFFLINE" not in str(err.value)  # no offline advice when publishing
    with pytest.raises(RuntimeError, match="unrelated"), _hub_errors(REPO, "main", "http://hub.invalid"):
        raise RuntimeError("unrelated")


def test_cli_publish_download_and_offline_message(hub, small_bench, tmp_path, monkeypatch, capsys):
    from atom_bench.cli import main

    assert main(["publish", str(small_bench), "--repo", "atom-bench/cli-small", "--tag", "v1.0"]) == 0
    assert main(["download", "--repo", "atom-bench/cli-small", "--revision", "v1.0", "--out", str(tmp_path / "d")]) == 0
    assert "checksums verified" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "d")]) == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["download", "--repo", "atom-bench/never-fetched", "--revision", "v1.0", "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert code == 2 and "atom-mini" in err and "Traceback" not in err
    assert not (tmp_path / "e").exists()
