"""Submissions: records on disk, metadata checks, overwrite protection, concurrent submits and
the ``submit`` command on the embedded atom-mini."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
from pathlib import Path

import pytest
import yaml

import atom_bench
from atom_bench.board.submissions import SubmissionError, check_metadata, load_metadata, load_records, submit
from atom_bench.cli import main
from atom_bench.data.build import DATASET_VERSION
from atom_bench.eval import predictions as P
from atom_bench.eval.scoring import Evaluator
from tests.eval.fixtures import make_predictions, make_tables

META = {
    "model_name": "TinyNet",
    "authors": "A. Author",
    "code_url": "https://example.org/tinynet",
    "n_parameters": 1234,
    "training_data": "atom-mini easy/train",
    "seeds": [0, 1, 2],
    "hardware": "1x CPU",
}
TRACK_META = P.make_meta("easy", "validation", "ef" * 32, "1.0")


def _evaluator() -> Evaluator:
    labels, volumes, counts = make_tables(n=200, n_volumes=3, seed=4)
    return Evaluator(labels, volumes, counts, track="easy", split="validation", manifest_sha256="ef" * 32, dataset_revision="1.0")


def _pred_file(tmp_path: Path, accuracy: float = 0.5, suffix: str = ".parquet") -> Path:
    labels = make_tables(n=200, n_volumes=3, seed=4)[0]
    frame = make_predictions(labels, accuracy=accuracy, meta=TRACK_META)
    return P.write_predictions(frame, tmp_path / f"pred-{accuracy}{suffix}")


def test_submit_writes_a_complete_record(tmp_path: Path) -> None:
    pred = _pred_file(tmp_path, suffix=".csv")
    out = submit(pred, name="tiny", meta=META, evaluator=_evaluator(), submissions_dir=tmp_path / "subs", today=dt.date(2026, 1, 2))
    assert out == tmp_path / "subs" / "easy" / "tiny"
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "predictions.csv", "scores.json"]
    assert (out / "predictions.csv").read_bytes() == pred.read_bytes()
    meta = json.loads((out / "metadata.json").read_text())
    for key in ("toolkit_version", "dataset_revision", "manifest_sha256", "date", "predictions_sha256", "split"):
        assert meta[key], key
    assert meta["authors"] == ["A. Author"] and meta["date"] == "2026-01-02" and meta["toolkit_version"] == atom_bench.__version__
    scores = json.loads((out / "scores.json").read_text())
    assert scores["metrics"]["top1_high"]["value"] > 0.4 and "floors" in scores
    [record] = load_records(tmp_path / "subs")
    assert record["metadata"]["name"] == "tiny"


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    subs = tmp_path / "subs"
    ev = _evaluator()
    submit(_pred_file(tmp_path, 0.2), name="m", meta=META, evaluator=ev, submissions_dir=subs)
    with pytest.raises(SubmissionError, match="already exists; choose another name or pass force=True"):
        submit(_pred_file(tmp_path, 0.9), name="m", meta=META, evaluator=ev, submissions_dir=subs)
    before = json.loads((subs / "easy" / "m" / "scores.json").read_text())["metrics"]["top1_high"]["value"]
    submit(_pred_file(tmp_path, 0.9), name="m", meta=META, evaluator=ev, submissions_dir=subs, force=True)
    after = json.loads((subs / "easy" / "m" / "scores.json").read_text())["metrics"]["top1_high"]["value"]
    assert after > before
    assert [p.name for p in (subs / "easy").iterdir()] == ["m"]  # no temporary folders left behind


def test_invalid_predictions_leave_nothing(tmp_path: Path) -> None:
    labels = make_tables(n=200, n_volumes=3, seed=4)[0]
    bad = P.write_predictions(make_predictions(labels, meta=TRACK_META).iloc[:-2], tmp_path / "bad.parquet")
    with pytest.raises(atom_bench.AtomBenchError, match="2 missing sample ids"):
        submit(bad, name="bad", meta=META, evaluator=_evaluator(), submissions_dir=tmp_path / "subs")
    assert not (tmp_path / "subs" / "easy" / "bad").exists()


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"model_name": None}, "missing model_name"),
        ({"seeds": "zero"}, "seeds must be an integer or a list"),
        ({"n_parameters": -3}, "n_parameters must be a non-negative integer"),
        ({"code_url": "github.com/x"}, "code_url must be an http"),
        ({"favourite_colour": "blue"}, "unknown field"),
        ({"authors": [1, 2]}, "authors must be"),
    ],
)
def test_metadata_checks(change: dict, pattern: str) -> None:
    meta = {k: v for k, v in {**META, **change}.items() if v is not None}
    with pytest.raises(SubmissionError, match=pattern):
        check_metadata(meta)
    assert check_metadata({**META, "seeds": 7})["seeds"] == [7]


def test_bad_names(tmp_path: Path) -> None:
    for name in ("", "../up", ".hidden", "a b", "x" * 65):
        with pytest.raises(SubmissionError, match="invalid name"):
            submit(_pred_file(tmp_path), name=name, meta=META, evaluator=_evaluator(), submissions_dir=tmp_path)


def _worker(args: tuple) -> str:
    pred, name, subs = args
    try:
        submit(pred, name=name, meta=META, evaluator=_evaluator(), submissions_dir=subs)
        return "ok"
    except SubmissionError as exc:
        return "refused" if "already exists" in str(exc) else f"error: {exc}"


def test_concurrent_submits(tmp_path: Path) -> None:
    subs = tmp_path / "subs"
    pred = _pred_file(tmp_path)
    ctx = mp.get_context("fork")
    with ctx.Pool(4) as pool:
        same = pool.map(_worker, [(pred, "same", subs)] * 4)
        different = pool.map(_worker, [(pred, f"n{i}", subs) for i in range(4)])
    assert sorted(same) == ["ok", "refused", "refused", "refused"]
    assert different == ["ok"] * 4
    records = load_records(subs)
    assert sorted(r["metadata"]["name"] for r in records) == ["n0", "n1", "n2", "n3", "same"]
    assert sorted(p.name for p in (subs / "easy").iterdir()) == ["n0", "n1", "n2", "n3", "same"]


def test_submit_command_on_atom_mini(tmp_path: Path) -> None:
    pred = P.write_predictions(atom_bench.dummy_prediction("easy", "test_seen"), tmp_path / "p.parquet")
    meta = tmp_path / "meta.yaml"
    meta.write_text(yaml.safe_dump(META))
    args = ["submit", str(pred), "--name", "dummy", "--meta", str(meta), "--submissions", str(tmp_path / "subs")]
    assert main(args) == 0
    assert main(args) == 2  # exists
    assert main([*args, "--force"]) == 0
    record = json.loads((tmp_path / "subs" / "easy" / "dummy" / "metadata.json").read_text())
    assert record["split"] == "test_seen" and record["dataset_revision"] == DATASET_VERSION and len(record["manifest_sha256"]) == 64
    meta.write_text("model_name: [unclosed")
    assert main([*args, "--force"]) == 2


# -- hostile metadata --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"notes": dt.date(2024, 1, 1)}, "notes must be text, not a date"),
        ({"contact": dt.date(2024, 1, 1)}, "contact must be text, not a date"),
        ({"n_parameters": 10**5000 - 1}, "n_parameters must be a non-negative integer below 10\\*\\*15"),
        ({"n_parameters": 10**15}, "below 10\\*\\*15"),
        ({"n_parameters": True}, "n_parameters must be"),
        ({"seeds": [0, 10**5000 - 1]}, "seeds must be integers below 2\\*\\*64"),
        ({"model_name": "evil\n| injected | row |"}, "model_name must be one line of text"),
        ({"model_name": "tab\there"}, "model_name must be one line"),
        ({"training_data": "nul\x00"}, "training_data must be one line"),
        ({"hardware": "del\x7f"}, "hardware must be one line"),
        ({"contact": "line\u2028separator"}, "contact must be one line"),
        ({"model_version": "para\u2029graph"}, "model_version must be one line"),
        ({"model_name": "next\x85line"}, "model_name must be one line"),
        ({"model_name": "bidi\u202eoverride"}, "model_name must be one line"),
        ({"authors": ["ok", "two\nlines"]}, "authors must be one line of text each"),
        ({"notes": "bell\x07"}, "notes must be text without control characters"),
        ({"model_version": ["1", "2"]}, "model_version must be text, not a list"),
        ({"hardware": {"gpu": 1}}, "hardware must be text, not a mapping"),
        ({"code_url": "https://example.org/x\n"}, "code_url must be one line"),
        ({"code_url": "javascript:alert(1)"}, "code_url must be an http"),
        ({"code_url": "atom-bench:../outside.py"}, "code_url must be an http"),
        ({"code_url": "atom-bench:baselines/notes.txt"}, "code_url must be an http"),
        ({"paper_url": "https://a b"}, "paper_url must be an http"),
        ({"contact": None}, "contact is empty"),
        ({1: "x", "zz": 2}, "unknown field\\(s\\) 1, 'zz'"),
        ({"x" * 10_000: 1}, "unknown field\\(s\\) 'x{60}'\\.\\.\\. \\(10000 characters\\)"),
    ],
)
def test_metadata_fields_are_type_checked(change: dict, pattern: str) -> None:
    with pytest.raises(SubmissionError, match=pattern) as info:
        check_metadata({**META, **change})
    assert len(str(info.value)) < 600 and "\n" not in str(info.value)


def test_metadata_that_stays_valid() -> None:
    ok = check_metadata({**META, "notes": "line one\nline two\twith a tab", "model_version": 2, "contact": "a@b.org", "external_data": False})
    assert ok["notes"] == "line one\nline two\twith a tab" and ok["model_version"] == 2
    assert check_metadata({**META, "n_parameters": 10**15 - 1, "seeds": [-1, 2**63]})["seeds"] == [-1, 2**63]
    assert check_metadata({**META, "model_name": "<script>alert(1)</script> | [x](javascript:y)"})  # escaped when rendered


BOMB = yaml.safe_dump(META) + "notes:\n  a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n" + "".join(
    f"  {c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (BOMB.encode(), "YAML anchors and aliases \\(& and \\*\\) are not allowed in metadata \\(line \\d+\\)"),
        (b"model_name: &n TinyNet\n", "anchors and aliases"),
        (yaml.safe_dump(META).encode() + b"notes: *undefined\n", "anchors and aliases"),
        (b"model_name: x\n" + b"# padding\n" * 7000, "larger than 64 KiB"),
        (yaml.safe_dump(META).encode() + b"notes: caf\xe9\n", "not UTF-8 text \\(byte \\d+\\)"),
        (yaml.safe_dump({k: v for k, v in META.items() if k != "n_parameters"}).encode() + b"n_parameters: " + b"9" * 5000 + b"\n",
         "a number of 5000 characters is too large"),
        (b"[" * 20_000 + b"]" * 20_000, "nested too deeply|not valid YAML"),
        (yaml.safe_dump(META).encode() + b"notes: 2024-01-01\n", "notes must be text, not a date \\(quote it\\)"),
        (yaml.safe_dump(META).encode() + b'contact: "x\\u2028y"\n', "contact must be one line"),
    ],
)
def test_hostile_metadata_files(tmp_path: Path, content: bytes, pattern: str) -> None:
    path = tmp_path / "META.yaml"
    path.write_bytes(content)
    with pytest.raises(SubmissionError, match=pattern) as info:
        load_metadata(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 600
    assert path.read_bytes() == content


def test_metadata_file_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(SubmissionError, match="cannot read the metadata file"):
        load_metadata(tmp_path)


class _MustNotScore:
    def __init__(self) -> None:
        self.info = {"dataset_revision": "1.0", "manifest_sha256": "ef" * 32}

    def evaluate_file(self, path):
        raise AssertionError("scored before the metadata was checked")


def test_metadata_is_checked_before_scoring(tmp_path: Path) -> None:
    meta = tmp_path / "META.yaml"
    meta.write_text(yaml.safe_dump(META) + "notes: 2024-01-01\n")
    with pytest.raises(SubmissionError, match="notes must be text"):
        submit(_pred_file(tmp_path), name="m", meta=meta, evaluator=_MustNotScore(), submissions_dir=tmp_path / "subs")
    assert not (tmp_path / "subs").exists()


@pytest.mark.parametrize("name", ["evil\n", "a\tb", "ok\u2028", "x" * 10_000, 5, None])
def test_names_are_matched_whole(tmp_path: Path, name) -> None:
    with pytest.raises(SubmissionError, match="invalid name") as info:
        submit(_pred_file(tmp_path), name=name, meta=META, evaluator=_MustNotScore(), submissions_dir=tmp_path / "subs")
    assert len(str(info.value)) < 300
    assert not (tmp_path / "subs").exists()


@pytest.mark.parametrize(("suffix", "fmt"), [(".txt", "parquet"), (".csv", "parquet"), (".pq", "parquet"), (".csv", "csv")])
def test_stored_by_content_not_by_suffix(tmp_path: Path, suffix: str, fmt: str) -> None:
    source = _pred_file(tmp_path, suffix=f".{fmt}")
    pred = source.rename(tmp_path / f"renamed{suffix}")
    out = submit(pred, name="m", meta=META, evaluator=_evaluator(), submissions_dir=tmp_path / "subs")
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", f"predictions.{fmt}", "scores.json"]
    assert json.loads((out / "metadata.json").read_text())["predictions_file"] == f"predictions.{fmt}"
    assert (out / f"predictions.{fmt}").read_bytes() == pred.read_bytes()


@pytest.mark.parametrize("track", ["../../escape", "easy/sub", ".hidden", "x" * 100])
def test_track_from_the_file_must_be_a_plain_name(tmp_path: Path, track: str) -> None:
    labels = make_tables(n=200, n_volumes=3, seed=4)[0]
    pred = P.write_predictions(make_predictions(labels, meta={**TRACK_META, "track": track}), tmp_path / "p.parquet")
    with pytest.raises(atom_bench.AtomBenchError, match="not a track/split name") as info:
        submit(pred, name="m", meta=META, evaluator=_MustNotScore(), submissions_dir=tmp_path / "subs")
    assert len(str(info.value)) < 300
    assert not (tmp_path / "subs").exists() and not (tmp_path / "escape").exists()


def test_a_file_changed_while_submitted_is_refused(tmp_path: Path, monkeypatch) -> None:
    import shutil

    pred = _pred_file(tmp_path)
    real = shutil.copyfile

    def copy_then_tamper(src, dst, **kw):
        real(src, dst, **kw)
        Path(dst).write_bytes(Path(dst).read_bytes() + b"\0")
        return dst

    monkeypatch.setattr(shutil, "copyfile", copy_then_tamper)
    with pytest.raises(SubmissionError, match="changed while it was being submitted"):
        submit(pred, name="m", meta=META, evaluator=_evaluator(), submissions_dir=tmp_path / "subs")
    assert list((tmp_path / "subs" / "easy").iterdir()) == []


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_records_honour_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    import os

    old = os.umask(umask)
    try:
        out = submit(_pred_file(tmp_path), name="m", meta=META, evaluator=_evaluator(), submissions_dir=tmp_path / "subs")
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == dict.fromkeys(("metadata.json", "predictions.parquet", "scores.json"), mode)
    assert out.stat().st_mode & 0o777 == mode | ((mode & 0o444) >> 2)  # directories: x where r


@pytest.mark.parametrize("content", ["[1, 2]", '{"track": "easy"}', "[" * 100_000])
def test_broken_records_are_one_line_errors(tmp_path: Path, content: str) -> None:
    out = submit(_pred_file(tmp_path), name="m", meta=META, evaluator=_evaluator(), submissions_dir=tmp_path / "subs")
    (out / "metadata.json").write_text(content)
    with pytest.raises(SubmissionError, match="submit it again|the folder must match") as info:
        load_records(tmp_path / "subs")
    assert len(str(info.value)) < 400


def test_code_url_may_name_a_file_of_the_toolkit_source_tree() -> None:
    from atom_bench.board.tables import code_href

    assert check_metadata({**META, "code_url": "atom-bench:baselines/regismcan.py"})["code_url"] == "atom-bench:baselines/regismcan.py"
    assert code_href("atom-bench:baselines/regismcan.py") == "../baselines/regismcan.py"  # leaderboards/ -> source tree
    assert code_href("https://example.org/code") == "https://example.org/code"
    for not_a_link in ("javascript:alert(1)", "atom-bench:a/../../b.py", "atom-bench:/etc/x.py", "data:text/html,x", None, 3):
        assert code_href(not_a_link) is None
