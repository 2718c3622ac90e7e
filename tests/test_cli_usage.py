"""Command-line usage errors: every subcommand answers an unknown option, a missing argument and a
bad value with one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer

from atom_bench.cli import app, main

COMMANDS = sorted(typer.main.get_command(app).commands)

# The smallest call that is missing something the command requires.
MISSING = {
    "build": (["build", "--volumes", "x"], "Missing option '--out'"),
    "publish": (["publish", "somewhere"], "Missing option '--repo'"),
    "show": (["show", "--out", "x.png"], "Missing argument 'sample_id'"),
    "train": (["train", "--model", "cnn"], "Missing option '--track'"),
    "validate": (["validate", "p.csv", "--track", "hard"], "Missing option '--split'"),
    "score": (["score"], "Missing argument 'predictions'"),
    "submit": (["submit", "p.csv", "--meta", "m.yaml"], "Missing option '--name'"),
    "compare": (["compare", "a.parquet"], "Missing argument 'b'"),
}
# Commands whose every parameter has a default: nothing can be missing.
NOTHING_REQUIRED = {"info", "download", "evaluate", "leaderboard", "version", "models"}

# A value of the wrong type for an option of each command that takes a typed value.
BAD_VALUE = {
    "build": ["build", "--volumes", "x", "--out", "y", "--size", "abc"],
    "info": ["info", "--verify=maybe"],
    "download": ["download", "--repo"],  # an option without its value
    "publish": ["publish", "p", "--repo", "r", "--private=maybe"],
    "evaluate": ["evaluate", "--batch-size", "abc"],
    "show": ["show", "x", "--out"],
    "train": ["train", "--model", "cnn", "--track", "easy", "--epochs", "1.5"],
    "version": ["version", "extra-argument"],
    "validate": ["validate", "p.csv", "--track"],
    "score": ["score", "p.csv", "--labels"],
    "submit": ["submit", "p.csv", "--name", "n", "--meta"],
    "leaderboard": ["leaderboard", "--check=maybe"],
    "models": ["models", "extra-argument"],
    "compare": ["compare", "a.parquet", "b.parquet", "--out"],
}


def _one_line_exit_2(capsys, args: list[str]) -> str:
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, (args, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, (args, err)
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_option(command, capsys):
    line = _one_line_exit_2(capsys, [command, "--no-such-option"])
    assert "No such option: --no-such-option" in line and f"atom-bench {command} --help" in line


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_argument(command, capsys):
    if command in NOTHING_REQUIRED:
        assert command not in MISSING
        return
    args, message = MISSING[command]
    assert message in _one_line_exit_2(capsys, args)


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_value(command, capsys):
    line = _one_line_exit_2(capsys, BAD_VALUE[command])
    assert any(word in line for word in ("Invalid value", "requires an argument", "does not take a value", "unexpected extra argument", "Got unexpected")), line


def test_unknown_command_and_bare_call(capsys):
    assert "No such command 'frobnicate'" in _one_line_exit_2(capsys, ["frobnicate"])
    assert "No such option: --bogus" in _one_line_exit_2(capsys, ["--bogus"])
    assert main([]) == 2  # the bare command prints its help
    captured = capsys.readouterr()
    assert "Usage" in captured.out + captured.err and "Traceback" not in captured.err


def test_library_parameters_become_flags(capsys):
    line = _one_line_exit_2(capsys, ["build", "--volumes", ".", "--out", "x", "--size", "8"])
    assert line == "error: --size 8 is out of range; use a cube side from 16 to 256"


def test_user_data_in_an_error_is_not_markup(capsys, tmp_path):
    line = _one_line_exit_2(capsys, ["info", str(tmp_path / "[/red][link=evil]x")])
    assert "[/red][link=evil]x" in line


def test_console_script_exit_code_without_traceback():
    result = subprocess.run([sys.executable, "-m", "atom_bench.cli", "score", "p.csv", "--trakc", "hard"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: No such option: --trakc")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_flags_without_a_value_placeholder(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "<bool>" not in out, command


def test_evaluate_help_lists_the_registered_models(capsys):
    from atom_bench.models.registry import list_models

    assert main(["evaluate", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps the epilog to the terminal width
    names = [entry.name for entry in list_models()]
    assert "search" in names and "regismcan" in names
    assert "Registered models: " + ", ".join(names) + "." in out
