"""A hostile user at the command line: metadata bombs, markup and control characters in what
others read, values that used to crash, faults while writing.

Every refusal goes through the real CLI (``atom_bench.cli.main``; one probe through the console
entry point) and must be exit code 2 with exactly one stderr line ``error: ...``, no traceback,
the inputs byte-identical and nothing (half-)written beside them. Inputs are real: the embedded
atom-mini's dummy predictions, and a benchmark built from nibabel's scans for volume metadata.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

import atom_bench
from atom_bench.cli import main

META = {
    "model_name": "TinyNet",
    "authors": ["A. Author"],
    "code_url": "https://example.org/tinynet",
    "n_parameters": 1234,
    "training_data": "atom-mini easy/train",
    "seeds": [0],
    "hardware": "1x CPU",
}
BOMB = yaml.safe_dump(META) + "notes:\n  a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n" + "".join(
    f"  {c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)  # 1 KB that a plain safe_load expands to 9**9 strings


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(capsys, args: list, *fragments: str) -> str:
    """Run the CLI; assert a one-line refusal with exit code 2; return that line."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def dummy() -> object:
    return atom_bench.dummy_prediction("easy", "test_seen")


@pytest.fixture()
def work(tmp_path: Path, dummy) -> Path:
    """A folder with valid inputs: predictions (parquet and CSV) and a META.yaml."""
    atom_bench.write_predictions(dummy, tmp_path / "p.parquet")
    atom_bench.write_predictions(dummy, tmp_path / "p.csv")
    (tmp_path / "META.yaml").write_text(yaml.safe_dump(META))
    return tmp_path


def _meta_file(work: Path, content: bytes) -> list:
    (work / "META.yaml").write_bytes(content)
    return ["submit", work / "p.parquet", "--name", "m", "--meta", work / "META.yaml", "--submissions", work / "subs"]


def _without(key: str) -> bytes:
    return yaml.safe_dump({k: v for k, v in META.items() if k != key}).encode()


SUBMIT_META_PROBES: dict[str, tuple[bytes, str]] = {
    "alias bomb": (BOMB.encode(), "anchors and aliases"),
    "anchor": (yaml.safe_dump(META).encode() + b"notes: &x hello\n", "anchors and aliases"),
    "larger than 64 KiB": (yaml.safe_dump(META).encode() + b"#" * (64 * 1024), "larger than 64 KiB"),
    "date in notes": (yaml.safe_dump(META).encode() + b"notes: 2024-01-01\n", "notes must be text, not a date"),
    "date in contact": (yaml.safe_dump(META).encode() + b"contact: 2024-01-01\n", "contact must be text, not a date"),
    "5000-digit n_parameters": (_without("n_parameters") + b"n_parameters: " + b"9" * 5000 + b"\n", "too large"),
    "n_parameters 10**15": (_without("n_parameters") + b"n_parameters: 1000000000000000\n", "below 10**15"),
    "not UTF-8": (yaml.safe_dump(META).encode() + b"notes: \xff\xfe\n", "not UTF-8"),
    "newline in model_name": (_without("model_name") + b'model_name: "Net\\n| x | y |"\n', "model_name must be one line"),
    "tab in training_data": (_without("training_data") + b'training_data: "a\\tb"\n', "training_data must be one line"),
    "line separator in an author": (_without("authors") + b'authors: ["A\\u2028B"]\n', "authors must be one line"),
    "NUL in hardware": (_without("hardware") + b'hardware: "x\\0"\n', "hardware must be one line"),
    "javascript code_url": (_without("code_url") + b"code_url: javascript:alert(1)\n", "code_url must be an http(s) URL"),
}


@pytest.mark.parametrize("probe", SUBMIT_META_PROBES)
def test_submit_refuses_hostile_metadata(capsys, work: Path, probe: str) -> None:
    content, fragment = SUBMIT_META_PROBES[probe]
    args = _meta_file(work, content)
    before = _snapshot(work)
    line = _refused(capsys, args, fragment)
    assert len(line) < 600
    assert _snapshot(work) == before and not (work / "subs").exists()


@pytest.mark.parametrize("name", ["evil\n", "evil\r", "a\u2028b", "a|b", "x" * 5000, "../up"])
def test_submit_refuses_names_that_are_not_plain(capsys, work: Path, name: str) -> None:
    before = _snapshot(work)
    line = _refused(capsys, ["submit", work / "p.parquet", "--name", name, "--meta", work / "META.yaml", "--submissions", work / "subs"],
                    "invalid --name")  # fmt: skip
    assert len(line) < 300
    assert _snapshot(work) == before and not (work / "subs").exists()


def _with_ids(work: Path, dummy, suffix: str, ids: dict[int, str]) -> Path:
    import pandas as pd

    frame = dummy.copy()
    values = frame["sample_id"].tolist()
    for row, value in ids.items():
        values[row] = value
    frame["sample_id"] = pd.array(values, dtype="string[pyarrow]")
    return atom_bench.write_predictions(frame, work / f"ids{suffix}")


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_validate_prints_markup_in_ids_as_text(capsys, work: Path, dummy, suffix: str) -> None:
    path = _with_ids(work, dummy, suffix, {0: "[/red]", 1: "[link=https://evil.example]click[/link]", 2: "[bold]x"})
    before = _snapshot(work)
    line = _refused(capsys, ["validate", path, "--track", "easy", "--split", "test_seen"],
                    "'[/red]'", "'[link=https://evil.example]click[/link]'")  # fmt: skip
    assert "3 sample ids not in the split" in line
    assert _snapshot(work) == before


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_huge_id_gives_a_short_error(capsys, work: Path, dummy, suffix: str) -> None:
    path = _with_ids(work, dummy, suffix, {0: "y" * 20_000_000})
    line = _refused(capsys, ["validate", path, "--track", "easy", "--split", "test_seen"], "(20000000 characters)")
    assert len(line) < 1000


def _csv_with(work: Path, edit: Callable[[list[str]], None]) -> Path:
    lines = (work / "p.csv").read_text().splitlines()
    edit(lines)
    path = work / "edited.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_top5_entries_above_2_to_the_53(capsys, work: Path) -> None:
    def edit(lines: list[str]) -> None:
        cells = next(csv.reader([lines[2]]))
        cells[4] = f"{cells[4].split()[0]} {2**53 + 10} 1 2 3"
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(cells)
        lines[2] = buf.getvalue()

    path = _csv_with(work, edit)
    before = _snapshot(work)
    _refused(capsys, ["validate", path, "--track", "easy", "--split", "test_seen"], "low_top5 lists with entries outside 0..728")
    _refused(capsys, ["score", path], "low_top5 lists with entries outside 0..728")
    assert _snapshot(work) == before


@pytest.mark.parametrize("track", [["hard"], {"x": 1}, 7, "../../outside", "x" * 100_000])
@pytest.mark.parametrize("command", ["validate", "score", "submit"])
def test_prediction_metadata_of_the_wrong_type(capsys, work: Path, command: str, track) -> None:
    def edit(lines: list[str]) -> None:
        meta = json.loads(lines[0].removeprefix("# atom_bench "))
        lines[0] = "# atom_bench " + json.dumps({**meta, "track": track})

    path = _csv_with(work, edit)
    if len(path.read_text().splitlines()[0]) > 4000:  # a CSV's metadata line is read from its first 4 KiB
        atom_bench.write_predictions(atom_bench.dummy_prediction("easy", "test_seen"), path.with_suffix(".parquet"),
                                     meta={**atom_bench.dummy_prediction("easy", "test_seen").attrs["atom_bench"], "track": track})  # fmt: skip
        path = path.with_suffix(".parquet")
    args = {
        "validate": ["validate", path, "--track", "easy", "--split", "test_seen"],
        "score": ["score", path],
        "submit": ["submit", path, "--name", "m", "--meta", work / "META.yaml", "--submissions", work / "subs"],
    }[command]
    before = _snapshot(work)
    line = _refused(capsys, args)
    assert len(line) < 500
    assert _snapshot(work) == before and not (work / "subs").exists() and not (work.parent / "outside").exists()


@pytest.mark.parametrize("suffix", [".txt", ".csv"])
def test_parquet_bytes_under_another_name_are_stored_as_parquet(capsys, work: Path, suffix: str) -> None:
    path = work / f"really-parquet{suffix}"
    path.write_bytes((work / "p.parquet").read_bytes())
    assert main(["submit", str(path), "--name", "m", "--meta", str(work / "META.yaml"), "--submissions", str(work / "subs")]) == 0
    stored = work / "subs" / "easy" / "m"
    assert sorted(p.name for p in stored.iterdir()) == ["metadata.json", "predictions.parquet", "scores.json"]
    assert (stored / "predictions.parquet").read_bytes() == path.read_bytes()


def test_markup_in_metadata_reaches_the_leaderboards_inert(capsys, work: Path) -> None:
    meta = {**META, "model_name": "<script>alert(1)</script>", "authors": ["=HYPERLINK(\"https://evil.example\")"],
            "training_data": "<img src=x onerror=alert(1)>", "hardware": "| a | b |"}  # fmt: skip
    (work / "META.yaml").write_text(yaml.safe_dump(meta))
    assert main(["submit", str(work / "p.parquet"), "--name", "m", "--meta", str(work / "META.yaml"), "--submissions", str(work / "subs")]) == 0
    assert main(["leaderboard", "--submissions", str(work / "subs"), "--out", str(work / "lb")]) == 0
    md, page, table = ((work / "lb" / n).read_text() for n in ("easy.md", "index.html", "easy.csv"))
    assert "<script>alert" not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert page.count("<script") == 1 and "<img" not in page
    [row] = [r for r in csv.DictReader(io.StringIO(table)) if r["kind"] == "submission"]
    assert row["authors"].startswith("'=") and row["hardware"] == "| a | b |"
    assert main(["leaderboard", "--check", "--submissions", str(work / "subs"), "--out", str(work / "lb")]) == 0


def test_a_full_disk_leaves_the_leaderboards_as_they_were(capsys, work: Path, monkeypatch) -> None:
    import builtins

    args = ["submit", str(work / "p.parquet"), "--meta", str(work / "META.yaml"), "--submissions", str(work / "subs")]
    assert main([*args, "--name", "first"]) == 0
    assert main(["leaderboard", "--submissions", str(work / "subs"), "--out", str(work / "lb")]) == 0
    assert main([*args, "--name", "second"]) == 0
    capsys.readouterr()
    before = _snapshot(work / "lb")
    real_open = builtins.open

    def full_disk(file, mode="r", *a, **kw):
        if "w" in mode and Path(file).name == "index.html":  # the .md and .csv are written first
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *a, **kw)

    monkeypatch.setattr(builtins, "open", full_disk)
    _refused(capsys, ["leaderboard", "--submissions", work / "subs", "--out", work / "lb"], "No space left on device")
    monkeypatch.undo()
    assert _snapshot(work / "lb") == before and sorted(p.name for p in (work / "lb").iterdir()) == ["easy.csv", "easy.md", "index.html"]


@pytest.fixture(scope="module")
def markup_bench(tmp_path_factory, nibabel_data) -> Path:
    """A real benchmark whose volumes table holds rich markup as modality names."""
    folder = tmp_path_factory.mktemp("markup")
    for i in (1, 2, 3):
        shutil.copyfile(nibabel_data / "anatomical.nii", folder / f"v{i}.nii")
    (folder / "volumes.csv").write_text("path,subject,modality,group\nv1.nii,s1,[/],train\nv2.nii,s2,[link=https://evil.example]T1,train\n"
                                        "v3.nii,s3,[/],unseen\n")  # fmt: skip
    out = folder / "bench"
    assert main(["build", "--volumes", str(folder / "volumes.csv"), "--out", str(out), "--track", "easy", "--size", "32", "--slice-size", "8"]) == 0
    return out


def test_score_prints_markup_in_volume_metadata_as_text(capsys, markup_bench: Path, tmp_path: Path, monkeypatch) -> None:
    from atom_bench import cli

    monkeypatch.setattr(cli.console, "width", 300)  # one table row per line
    pred = atom_bench.write_predictions(atom_bench.dummy_prediction("easy", "test_seen", root=markup_bench), tmp_path / "p.parquet")
    capsys.readouterr()
    assert main(["score", str(pred), "--root", str(markup_bench)]) == 0  # MarkupError before
    out = capsys.readouterr().out
    assert "modality=[/]" in out and "modality=[link=https://evil.example]T1" in out


def test_the_console_entry_point_refuses_an_alias_bomb(work: Path) -> None:
    exe = shutil.which("atom-bench", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the atom-bench console script is not installed beside this interpreter")
    args = _meta_file(work, BOMB.encode())
    before = _snapshot(work)
    result = subprocess.run([exe, *map(str, args)], check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "anchors and aliases" in lines[0]
    assert _snapshot(work) == before and not (work / "subs").exists()
