"""Build time of atom-mini, and peak memory of builds over growing numbers of volumes.

Each measurement runs `atom-bench build` in a fresh subprocess and reads its peak resident
memory (ru_maxrss of the process and its workers), so the numbers are independent.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCES = Path(__file__).resolve().parent.parent / "atom_bench" / "data" / "sources" / "sources.csv"


def run_build(volumes: Path, out: Path, *extra: str) -> tuple[float, float]:
    """Seconds and peak MiB (largest of parent and any worker) of one build."""
    code = (
        "import resource, sys; from atom_bench.cli import main; rc = main(sys.argv[1:]); "
        "print('PEAK', max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(rc)"
    )
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code, "build", "--volumes", str(volumes), "--out", str(out), *extra],
                            capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    peak_kib = int(next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("PEAK")))
    return seconds, peak_kib / 1024


def replicated_csv(directory: Path, copies: int) -> Path:
    """A volumes CSV listing the atom-mini sources ``copies`` times as distinct subjects."""
    rows = list(csv.DictReader(open(SOURCES, newline="")))
    path = directory / f"x{copies}.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "volume_id", "subject", "modality", "group"])
        writer.writeheader()
        for copy in range(copies):
            for row in rows:
                writer.writerow({"path": str(SOURCES.parent / row["path"]), "volume_id": f"{row['volume_id']}_{copy}",
                                 "subject": f"{row['subject']}_{copy}", "modality": row["modality"], "group": row["group"]})
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 4, 16], help="replications of the 7 sources")
    parser.add_argument("--write", action="store_true", help="write the tables into BENCHMARKS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        seconds, peak = run_build(SOURCES, tmp / "atom-mini", "--preset", "atom-mini", "--workers", "2")
        first = f"Building all of atom-mini (7 volumes, 4 tracks, 6656 samples, `--workers 2`): **{seconds:.1f} s**, peak {peak:.0f} MiB (target: under 60 s)."
        rows = ["| volumes | samples | seconds | peak memory (MiB) |", "|---|---|---|---|"]
        for copies in args.copies:
            csv_path = replicated_csv(tmp, copies)
            seconds, peak = run_build(csv_path, tmp / f"b{copies}", "--track", "hard", "--workers", "2")
            manifest = (tmp / f"b{copies}" / "manifest.json").read_text()
            import json

            samples = sum(s["num_samples"] for s in json.loads(manifest)["tracks"]["hard"]["splits"].values())
            rows.append(f"| {7 * copies} | {samples} | {seconds:.1f} | {peak:.0f} |")
    table = "\n".join(rows)
    print(first)
    print(table)
    if args.write:
        from benchmarks._report import update_section

        update_section("Building", first + "\n\nPeak memory as the collection grows (track `hard`, standard preset, "
                       "`--workers 2`): rows are appended to shards as each volume finishes, so memory stays flat.\n\n" + table)


if __name__ == "__main__":
    main()
