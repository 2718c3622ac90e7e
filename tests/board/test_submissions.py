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
from atom_bench.eval import predictions as P
from atom_bench.cli import main
from atom_bench.eval.scoring import Evaluator
from atom_bench.board.submissions import SubmissionError, check_metadata, load_records, submit
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
    assert record["split"] == "test_seen" and record["dataset_revision"] == "1.0" and len(record["manifest_sha256"]) == 64
    meta.write_text("model_name: [unclosed")
    assert main([*args, "--force"]) == 2
