"""The command line: exit codes, one-line errors, and the data commands on real builds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from atom_bench.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "atom_bench.cli", *args], capture_output=True, text=True, timeout=300)


def test_info_on_the_embedded_default(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "atom-mini" in out and "verified" in out and "colin27_t1" in out


def test_show_writes_a_png(tmp_path, small_bench):
    out = tmp_path / "sample.png"
    assert main(["show", "hard-train-t1_crop-00001", "--out", str(out), "--root", str(small_bench)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["show", "not-an-id", "--out", "x.png"], "is not a sample id"),
        (["show", "easy-train-nobody-00001", "--out", "x.png"], "is not in easy/train"),
        (["build", "--volumes", "/does/not/exist", "--out", "x"], "neither a directory"),
        (["build", "--volumes", ".", "--out", "x", "--track", "medium"], "unknown track"),
        (["build", "--volumes", ".", "--out", "x", "--size", "8"], "out of range"),
        (["info", "/"], "not a built benchmark"),
        (["train", "--model", "search", "--track", "paper", "--out", "x"], "nothing to train"),
        (["train", "--model", "cnn", "--track", "paper", "--volumes-per-batch", "0", "--out", "x"], "--volumes-per-batch must be"),
        (["train", "--model", "cnn", "--track", "paper", "--loss", "mse", "--out", "x"], "unknown loss"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, message, tmp_path):
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_build_from_a_folder_reports_bad_volume_and_leaves_nothing(tmp_path: Path, nibabel_data):
    vols = tmp_path / "vols"
    vols.mkdir()
    (vols / "a.nii").write_bytes((nibabel_data / "anatomical.nii").read_bytes())
    (vols / "b_4d.nii.gz").write_bytes((nibabel_data / "example4d.nii.gz").read_bytes())
    result = run_cli("build", "--volumes", str(vols), "--out", str(tmp_path / "out"), "--track", "easy")
    assert result.returncode == 2
    assert "b_4d.nii.gz" in result.stderr and "--frame" in result.stderr
    assert not (tmp_path / "out").exists()


def test_build_then_info_end_to_end(tmp_path, nibabel_volumes):
    out = tmp_path / "bench"
    result = run_cli("build", "--volumes", str(nibabel_volumes), "--out", str(out), "--track", "easy", "--track", "paper",
                     "--size", "32", "--slice-size", "8", "--workers", "2")
    assert result.returncode == 0, result.stderr
    info = run_cli("info", str(out))
    assert info.returncode == 0 and "32^3" in info.stdout and "8x8" in info.stdout and "20^3" in info.stdout
