"""Evaluation throughput with one process and with two under torchrun (gloo, sharded by volume).

Both runs evaluate the same model on the same split in fresh subprocesses, one thread per
process (``OMP_NUM_THREADS=1``), without the diagnostic and without the cache; the seconds are
the whole command's wall time (start-up, prediction, writing and scoring), and the two
prediction files are checked to be identical.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def run(command: list[str], cwd: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="search")
    parser.add_argument("--track", default="easy")
    parser.add_argument("--split", default="test_unseen")
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args()
    from atom_bench.data.dataset import load_split

    n = len(load_split(args.track, args.split))
    evaluate = ["-m", "atom_bench.cli", "evaluate", "--model", args.model, "--track", args.track, "--split", args.split,
                "--no-diagnostic", "--no-cache"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one = run([sys.executable, *evaluate, "--out", str(tmp / "one.parquet")], tmp)
        two = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *evaluate,
                   "--out", str(tmp / "two.parquet")], tmp)  # fmt: skip
        same = pd.read_parquet(tmp / "one.parquet").equals(pd.read_parquet(tmp / "two.parquet"))
    rows = ["| processes | slices | seconds | slices per second |", "|---|---|---|---|",
            f"| 1 | {n} | {one:.1f} | {n / one:.2f} |", f"| 2 (torchrun, gloo) | {n} | {two:.1f} | {n / two:.2f} |"]  # fmt: skip
    text = (
        f"`atom-bench evaluate --model {args.model} --track {args.track} --split {args.split} --no-diagnostic --no-cache`, "
        "one thread per process (`OMP_NUM_THREADS=1`); seconds are the whole command (start-up, prediction, writing, scoring). "
        f"Two processes: **{one / two:.2f}x** the throughput of one; prediction files identical: {'yes' if same else 'NO'}.\n\n"
        + "\n".join(rows)
    )
    print(text)
    if args.write:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from benchmarks._report import update_section

        update_section("Evaluation across processes", text)


if __name__ == "__main__":
    main()
