"""Write one benchmark's section into BENCHMARKS.md (replacing the previous run's section)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

from atom_bench._io import write_text_atomic

REPORT = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nEvery section is written by the script it names; rerun it to refresh the numbers.\n"


def machine() -> str:
    """One line describing the machine: CPU model, cores, Python and torch versions."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import numpy
    import torch

    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {numpy.__version__}, torch {torch.__version__}"


def update_section(title: str, body: str) -> None:
    """Replace (or append) the ``## title`` section of BENCHMARKS.md with ``body``."""
    command = "python " + " ".join([os.path.relpath(sys.argv[0], REPORT.parent), *sys.argv[1:]])
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPORT.parent).stdout.strip()
    except OSError:
        commit = "unknown"
    section = f"## {title}\n\nCommand: `{command}` (commit {commit})  \nMachine: {machine()}\n\n{body.strip()}\n"
    text = REPORT.read_text(encoding="utf-8") if REPORT.exists() else HEADER
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    write_text_atomic(REPORT, text)
