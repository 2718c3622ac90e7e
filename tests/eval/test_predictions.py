"""Prediction files: round trips, the validator on malformed files (hand-written and generated
with hypothesis), chunked reading, dummy predictions and the ``validate`` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import atom_bench
from atom_bench.errors import PredictionError
from atom_bench.data.benchmark import Benchmark
from atom_bench.eval import predictions as P
from tests.eval.fixtures import make_predictions, make_tables

MANIFEST = "ab" * 32
META = P.make_meta("easy", "validation", MANIFEST, "1.0")
LABELS, _, _ = make_tables(n=40, n_volumes=2, seed=3)
IDS = LABELS["sample_id"].to_numpy()


def valid_frame(pose: bool = True) -> pd.DataFrame:
    return make_predictions(LABELS, seed=5, accuracy=0.5, pose=pose, meta=META)


def read(path: Path, **kw) -> pd.DataFrame:
    args = {"track": "easy", "split": "validation", "sample_ids": IDS, "manifest_sha256": MANIFEST, "dataset_revision": "1.0"}
    return P.read_predictions(path, **{**args, **kw})


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    frame = valid_frame()
    path = P.write_predictions(frame, tmp_path / f"p{suffix}")
    back = read(path)
    assert back.attrs["atom_bench"]["track"] == "easy"
    a, b = P.frame_arrays(frame), P.frame_arrays(back)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key]) if key != "center_mm" else np.testing.assert_allclose(a[key], b[key])


def test_chunked_reading_counts_across_chunks(tmp_path: Path) -> None:
    frame = valid_frame()
    frame.loc[[1, 20, 39], "high"] = 99
    for suffix in (".parquet", ".csv"):
        path = P.write_predictions(frame, tmp_path / f"p{suffix}")
        with pytest.raises(PredictionError, match=r"3 high values outside 0..26 \(e.g. 's0000001', 's0000020', 's0000039'\)"):
            read(path, chunk_rows=7)


def test_csv_accepts_brackets_and_commas(tmp_path: Path) -> None:
    path = P.write_predictions(valid_frame(pose=False), tmp_path / "p.csv")
    text = path.read_text().splitlines()
    fixed = [text[0], text[1]] + [",".join(p if i < 3 else f'"[{", ".join(p.split())}]"' for i, p in enumerate(line.split(","))) for line in text[2:]]
    path.write_text("\n".join(fixed) + "\n")
    assert len(read(path)) == len(IDS)


def _expect(tmp_path: Path, frame: pd.DataFrame, suffix: str, pattern: str, meta: dict | None = META) -> str:
    path = P.write_predictions(frame, tmp_path / f"p{suffix}", meta=meta)
    with pytest.raises(PredictionError, match=pattern) as info:
        read(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"p{suffix}: ")
    return message


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_every_problem_is_reported_in_one_message(tmp_path: Path, suffix: str) -> None:
    frame = valid_frame()
    frame = pd.concat([frame, frame.iloc[[3]]], ignore_index=True)  # a duplicate
    frame = frame.drop(index=[0, 1])  # two missing ids
    frame.loc[5, "low"] = 5  # low // 27 != high
    frame.loc[6, "high"] = -1
    message = _expect(tmp_path, frame, suffix, "problems")
    for part in ("2 missing sample ids (e.g. 's0000000', 's0000001')", "1 duplicated sample ids (e.g. 's0000003')",
                 "rows with low // 27 != high", "high values outside 0..26"):  # fmt: skip
        assert part in message, part


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
@pytest.mark.parametrize(
    ("column", "row", "value", "pattern"),
    [
        ("high_top5", 2, [1, 2, 3, 4], "without exactly 5 entries"),
        ("high_top5", 2, None, "repeated entries|first entry"),  # filled below
        ("low_top5", 4, [0, 1, 2, 3, 4, 5], "without exactly 5 entries"),
        ("center_mm", 1, [0.0, float("nan"), 1.0], "NaN or infinite"),
        ("center_mm", 1, [0.0, 1.0], "without exactly 3"),
        ("normal_mm", 1, [0.0, 0.0, 2.0], "not unit length"),
        ("normal_mm", 1, [0.0, float("inf"), 0.0], "NaN or infinite"),
    ],
)
def test_list_problems(tmp_path: Path, suffix: str, column: str, row: int, value, pattern: str) -> None:
    frame = valid_frame()
    cells = frame[column].tolist()
    if value is None:
        first = int(frame.loc[row, "high"])
        value = [first, first, (first + 1) % 27, (first + 2) % 27, (first + 3) % 27]
    cells[row] = value
    frame[column] = pd.Series(cells, dtype=object)
    _expect(tmp_path, frame, suffix, pattern)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_top5_must_start_with_top1(tmp_path: Path, suffix: str) -> None:
    frame = valid_frame()
    cells = frame["low_top5"].tolist()
    cells[0] = list(cells[0][1:]) + [cells[0][0]]
    frame["low_top5"] = pd.Series(cells, dtype=object)
    _expect(tmp_path, frame, suffix, "whose first entry is not low")


@pytest.mark.parametrize(
    ("meta", "pattern"),
    [
        (P.make_meta("hard", "validation", MANIFEST, "1.0"), "made for track 'hard', checked against 'easy'"),
        (P.make_meta("easy", "test_seen", MANIFEST, "1.0"), "made for split 'test_seen'"),
        (P.make_meta("easy", "validation", "cd" * 32, "0.9"), "made for dataset cdcdcdcdcdcd but this benchmark is abababababab"),
    ],
)
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_wrong_track_split_or_dataset(tmp_path: Path, suffix: str, meta: dict, pattern: str) -> None:
    _expect(tmp_path, valid_frame(), suffix, pattern, meta=meta)


def test_types(tmp_path: Path) -> None:
    frame = valid_frame()
    frame["high"] = frame["high"].astype(float)
    _expect(tmp_path, frame, ".parquet", "column high has type double; write integers")
    frame = valid_frame()
    frame["low"] = frame["low"].astype(str)
    frame.loc[3, "low"] = "3.5"
    _expect(tmp_path, frame, ".csv", r"1 low values that are not integers \(e.g. 's0000003'\)")
    frame = valid_frame()
    frame["high_top5"] = "x"
    _expect(tmp_path, frame, ".parquet", "column high_top5 has type (large_)?string")
    frame = valid_frame()
    frame["extra"] = 1
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata({"atom_bench": json.dumps(META)})
    pq.write_table(table, tmp_path / "x.parquet")
    with pytest.raises(PredictionError, match="unknown column\\(s\\) 'extra'"):
        read(tmp_path / "x.parquet")


def test_numbers_that_do_not_fit(tmp_path: Path) -> None:
    frame = valid_frame()
    frame["high"] = frame["high"].astype(str)
    frame.loc[0, "high"] = "99999999999999999999999"
    frame.loc[1, "high"] = "+5"
    _expect(tmp_path, frame, ".csv", r"2 high values that are not integers")
    frame = valid_frame()
    frame["low"] = frame["low"].astype("uint64")
    frame.loc[4, "low"] = 2**63 + 5
    _expect(tmp_path, frame, ".parquet", r"1 low values outside 0..728 \(e.g. 's0000004'\)")
    frame = valid_frame()
    cells = frame["high_top5"].tolist()
    cells[2] = [cells[2][0], 10**30, 1, 2, 3]
    frame["high_top5"] = pd.Series(cells, dtype=object)
    _expect(tmp_path, frame, ".csv", "high_top5 entries that are not integers")


def test_missing_column_and_missing_values(tmp_path: Path) -> None:
    _expect(tmp_path, valid_frame().drop(columns=["low"]), ".csv", "missing required column")
    frame = valid_frame()
    frame["high"] = frame["high"].astype("Int64")
    frame.loc[2, "high"] = pd.NA
    _expect(tmp_path, frame, ".parquet", r"1 missing high values \(e.g. 's0000002'\)")


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("p.parquet", b"", "the file is empty"),
        ("p.csv", b"", "the file is empty"),
        ("p.parquet", b"sample_id,high,low\n", "not a parquet file"),
        ("p.txt", b"sample_id,high,low\n", "must be a .parquet or .csv"),
        ("p.csv", b"PAR1\x00\x00", "truncated parquet"),
        ("p.csv", b"\x00\x01\x02binary", "binary"),
        ("p.csv", b"# something else\n", "first line must be"),
        ("p.csv", b'# atom_bench {"track": \n', "not valid JSON"),
        ("p.csv", b'# atom_bench {"track": "easy"}\n', "no header line"),
    ],
)
def test_broken_files(tmp_path: Path, name: str, content: bytes, pattern: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PredictionError, match=pattern):
        read(path)


def test_truncated_files(tmp_path: Path) -> None:
    for suffix in (".parquet", ".csv"):
        path = P.write_predictions(valid_frame(), tmp_path / f"p{suffix}")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])
        with pytest.raises(PredictionError):
            read(path)


def test_no_metadata(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    valid_frame(pose=False)[["sample_id", "high", "low"]].to_csv(path, index=False)
    with pytest.raises(PredictionError, match="records no track/split/dataset"):
        read(path)


MUTATIONS = ("drop", "duplicate", "extra", "high", "low", "mismatch", "top5_len", "top5_repeat", "pose_nan", "normal", "null_id")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mutation=st.sampled_from(MUTATIONS),
    row=st.integers(0, len(IDS) - 1),
    bad=st.one_of(st.integers(-10**6, -1), st.integers(729, 10**6)),
    suffix=st.sampled_from([".parquet", ".csv"]),
)
def test_generated_malformed_files_are_rejected(tmp_path: Path, mutation: str, row: int, bad: int, suffix: str) -> None:
    frame = valid_frame()
    if mutation == "drop":
        frame = frame.drop(index=row)
    elif mutation == "duplicate":
        frame = pd.concat([frame, frame.iloc[[row]]], ignore_index=True)
    elif mutation == "extra":
        extra = frame.iloc[[row]].copy()
        extra["sample_id"] = f"unknown-{bad}"
        frame = pd.concat([frame, extra], ignore_index=True)
    elif mutation in ("high", "low"):
        frame.loc[row, mutation] = bad
    elif mutation == "mismatch":
        frame.loc[row, "low"] = (int(frame.loc[row, "low"]) + 27 * (1 + abs(bad) % 20)) % 729
    elif mutation.startswith("top5"):
        cells = frame["high_top5"].tolist()
        cells[row] = list(cells[row][:4]) if mutation == "top5_len" else [cells[row][0]] * 5
        frame["high_top5"] = pd.Series(cells, dtype=object)
    elif mutation == "pose_nan":
        cells = frame["center_mm"].tolist()
        cells[row] = [float("nan"), 0.0, float(bad)]
        frame["center_mm"] = pd.Series(cells, dtype=object)
    elif mutation == "normal":
        cells = frame["normal_mm"].tolist()
        cells[row] = [float(bad), 1.0, 0.0]
        frame["normal_mm"] = pd.Series(cells, dtype=object)
    elif mutation == "null_id":
        frame.loc[row, "sample_id"] = None
    path = P.write_predictions(frame, tmp_path / f"gen{suffix}")
    with pytest.raises(PredictionError):
        read(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".parquet", ".csv"]), cut=st.floats(0, 0.99))
def test_arbitrary_bytes_never_crash(tmp_path: Path, data: bytes, suffix: str, cut: float) -> None:
    base = P.write_predictions(valid_frame(), tmp_path / f"base{suffix}").read_bytes()
    for content in (data, base[: int(len(base) * cut)] + data):
        path = tmp_path / f"x{suffix}"
        path.write_bytes(content)
        with pytest.raises(PredictionError):
            read(path)


def test_check_frame_in_memory() -> None:
    frame = valid_frame()
    assert len(P.check_frame(frame, sample_ids=IDS, track="easy", split="validation", manifest_sha256=MANIFEST)) == len(IDS)
    with pytest.raises(PredictionError, match="made for split"):
        P.check_frame(frame, sample_ids=IDS, split="test_seen")
    with pytest.raises(PredictionError, match="expected a pandas DataFrame"):
        P.check_frame([1, 2], sample_ids=IDS)  # type: ignore[arg-type]


def test_dummy_prediction_on_atom_mini(tmp_path: Path) -> None:
    frame = atom_bench.dummy_prediction("easy", "validation", seed=1)
    path = P.write_predictions(frame, tmp_path / "dummy.csv")
    back = P.validate_predictions(path, "easy", "validation")
    assert len(back) == len(frame) > 0
    assert set(frame.columns) == {"sample_id", "high", "low", "high_top5", "low_top5"}


def test_validate_command_exit_code(tmp_path: Path) -> None:
    frame = atom_bench.dummy_prediction("easy", "validation")
    good = P.write_predictions(frame, tmp_path / "good.parquet")
    bad = P.write_predictions(frame.iloc[:-3], tmp_path / "bad.parquet")
    cmd = [sys.executable, "-m", "atom_bench.cli", "validate"]
    ok = subprocess.run([*cmd, str(good), "--track", "easy", "--split", "validation"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    fail = subprocess.run([*cmd, str(bad), "--track", "easy", "--split", "validation"], capture_output=True, text=True)
    assert fail.returncode == 2
    assert "3 missing sample ids" in fail.stderr and "Traceback" not in fail.stderr + fail.stdout


# -- hostile files -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
@pytest.mark.parametrize("value", [2**53 + 1, 10**18 - 1, -(2**53) - 7])
def test_top5_entries_beyond_float_precision(tmp_path: Path, suffix: str, value: int) -> None:
    frame = valid_frame()
    cells = [list(c) for c in frame["low_top5"].tolist()]
    cells[1] = [cells[1][0], value, 1, 2, 3]
    frame["low_top5"] = pd.Series(pd.arrays.ArrowExtensionArray(pa.array(cells, pa.list_(pa.int64()))))
    _expect(tmp_path, frame, suffix, r"1 low_top5 lists with entries outside 0..728 \(e.g. 's0000001'\)")


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"track": ["easy"]}, "in the atom_bench metadata, track must be text, not list"),
        ({"split": {"a": 1}}, "split must be text, not dict"),
        ({"manifest_sha256": 5}, "manifest_sha256 must be text, not int"),
        ({"track": "easy" * 10_000}, r"made for track 'easy.*\.\.\. \(40000 characters\), checked against 'easy'"),
    ],
)
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_metadata_of_the_wrong_type(tmp_path: Path, suffix: str, change: dict, pattern: str) -> None:
    if suffix == ".csv" and len(json.dumps(change)) > 4000:
        pytest.skip("a CSV's metadata line is read from its first 4 KiB")
    message = _expect(tmp_path, valid_frame(), suffix, pattern, meta={**META, **change})
    assert len(message) < 500
    with pytest.raises(PredictionError, match=pattern if "text" in pattern else "not a track/split name"):
        P.file_target(tmp_path / f"p{suffix}")


def test_absurdly_nested_metadata(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("# atom_bench " + "[" * 3000 + "\nsample_id,high,low\n")
    with pytest.raises(PredictionError, match="not valid JSON"):
        read(path)
    frame = valid_frame()
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata({"atom_bench": "[" * 200_000})
    pq.write_table(table, tmp_path / "p.parquet")
    with pytest.raises(PredictionError, match="not valid JSON"):
        read(tmp_path / "p.parquet")


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_long_user_values_are_quoted_short(tmp_path: Path, suffix: str) -> None:
    frame = valid_frame()
    ids = frame["sample_id"].tolist()
    ids[0], ids[1], ids[2] = "x" * 5_000_000, "[/red]", "[link=https://evil.example]y[/link]\u2028\x1b[2J"
    frame["sample_id"] = pd.array(ids, dtype="string[pyarrow]")
    message = _expect(tmp_path, frame, suffix, r"3 sample ids not in the split \(e.g. 'x{60}'\.\.\. \(5000000 characters\), '\[/red\]'")
    assert len(message) < 1000 and "\\u2028" in message and "\\x1b" in message and "\x1b" not in message


def test_long_and_many_column_names_are_quoted_short(tmp_path: Path) -> None:
    frame = valid_frame()
    for i in range(30):
        frame[f"{i}" + "c" * 100_000] = 1
    message = _expect(tmp_path, frame, ".parquet", r"unknown column\(s\) '0c{59}'\.\.\. \(100001 characters\), .* and 20 more")
    assert len(message) < 2000
    frame = valid_frame().drop(columns=["high"])
    frame["z" * 100_000] = 1
    assert len(_expect(tmp_path, frame, ".csv", "missing required column\\(s\\) high; found 'sample_id'")) < 1000


def test_quote() -> None:
    from atom_bench.eval.checks import quote, quote_all

    assert quote("abc") == "'abc'" and quote(5) == "5" and quote(["a"]) == "['a']"
    assert quote("a\nb\u2028") == "'a\\nb\\u2028'"
    assert quote("y" * 100) == repr("y" * 60) + "... (100 characters)"
    assert quote(10**5000) == "a int too long to show"
    assert quote_all(range(12), show=3) == "0, 1, 2 and 9 more"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_written_predictions_honour_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    import os

    old = os.umask(umask)
    try:
        paths = [P.write_predictions(valid_frame(), tmp_path / f"p{s}") for s in (".parquet", ".csv")]
    finally:
        os.umask(old)
    assert [p.stat().st_mode & 0o777 for p in paths] == [mode, mode]


# -- a user's own plain file: track and split from the caller -----------------------------------


def _plain(tmp_path, suffix=".csv", track="hard", split="test_unseen"):
    import atom_bench

    ids = atom_bench.load_split(track, split)["sample_id"]
    rng = np.random.default_rng(0)
    high = rng.integers(0, 27, len(ids))
    frame = pd.DataFrame({"sample_id": ids, "high": high, "low": 27 * high + rng.integers(0, 27, len(ids))})
    path = tmp_path / f"plain{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_plain_pandas_file_is_scored_when_track_and_split_are_given(tmp_path, suffix):
    from atom_bench.eval.scoring import score_file

    path = _plain(tmp_path, suffix)
    with pytest.raises(PredictionError, match="records no split it was made for; pass track and split"):
        score_file(path)
    result = score_file(path, track="hard", split="test_unseen")
    n = len(Benchmark.open().sample_ids("hard", "test_unseen"))
    assert result["n_samples"] == n and result["dataset_revision"] and len(result["manifest_sha256"]) == 64
    assert len(P.validate_predictions(path, "hard", "test_unseen")) == n


def test_metadata_a_file_records_must_agree_with_the_given_split(tmp_path):
    import atom_bench
    from atom_bench.eval.scoring import score_file

    path = P.write_predictions(atom_bench.dummy_prediction("easy", "test_seen"), tmp_path / "p.csv")
    with pytest.raises(PredictionError, match="records split 'test_seen' but split 'test_unseen' was given"):
        score_file(path, track="easy", split="test_unseen")
    assert score_file(path, track="easy", split="test_seen")["n_samples"] > 0


def test_the_toolkits_own_csv_round_trips_through_pandas(tmp_path):
    import atom_bench
    from atom_bench.eval.scoring import score_file

    path = P.write_predictions(atom_bench.dummy_prediction("easy", "test_seen"), tmp_path / "p.csv")
    frame = pd.read_csv(path, comment="#")  # the metadata line is a comment
    assert list(frame.columns[:3]) == ["sample_id", "high", "low"]
    frame.to_csv(tmp_path / "again.csv", index=False)
    assert score_file(tmp_path / "again.csv", track="easy", split="test_seen")["n_samples"] == len(frame)


def test_cli_submit_of_a_plain_file(tmp_path, capsys):
    import yaml

    from atom_bench.cli import main

    path = _plain(tmp_path)
    meta = tmp_path / "meta.yaml"
    meta.write_text(yaml.safe_dump({"model_name": "mine", "authors": ["A. Person"], "code_url": "https://example.org/mine",
                                    "n_parameters": 1, "training_data": "atom-mini train", "seeds": [0], "hardware": "cpu"}))  # fmt: skip
    args = ["submit", str(path), "--name", "mine", "--meta", str(meta), "--submissions", str(tmp_path / "subs")]
    assert main(args) == 2 and "pass --track and --split" in capsys.readouterr().err
    assert main([*args, "--track", "hard", "--split", "test_unseen"]) == 0
    record = json.loads((tmp_path / "subs" / "hard" / "mine" / "metadata.json").read_text())
    assert record["split"] == "test_unseen" and record["dataset_revision"]
