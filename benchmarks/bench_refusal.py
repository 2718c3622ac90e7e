"""Peak memory of refusing a volume whose header declares 800^3 voxels, next to a normal build.

Before the header check, a 118 KB ``.nii.gz`` declaring 800^3 float32 voxels made the reader
allocate about 2.2 GB before it failed. Each measurement is a fresh `atom-bench build`
subprocess; its peak resident memory is read from ru_maxrss.
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

SOURCES = Path(__file__).resolve().parent.parent / "atom_bench" / "data" / "sources"
CODE = (
    "import resource, sys; from atom_bench.cli import main; rc = main(sys.argv[1:]); "
    "print('PEAK', max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(rc)"
)


def peak_build(volumes: Path, out: Path) -> tuple[int, float, str]:
    """Exit code, peak MiB and stderr of ``atom-bench build --track easy`` on ``volumes``."""
    result = subprocess.run([sys.executable, "-c", CODE, "build", "--volumes", str(volumes), "--out", str(out), "--track", "easy"],
                            capture_output=True, text=True)  # fmt: skip
    peak = int(next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("PEAK")))
    return result.returncode, peak / 1024, result.stderr.strip()


def lying_header(path: Path, shape: tuple[int, int, int]) -> Path:
    img = nib.Nifti1Image(np.zeros((8, 8, 8), dtype=np.float32), np.eye(4))
    img.header.set_data_shape(shape)
    path.write_bytes(gzip.compress(img.header.binaryblock + b"\0" * 4 + np.zeros(8**3, dtype=np.float32).tobytes()))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "bomb").mkdir()
        lying_header(tmp / "bomb" / "bomb.nii.gz", (800, 800, 800))
        (tmp / "real").mkdir()
        (tmp / "real" / "colin27_t1.nii.gz").write_bytes((SOURCES / "colin27_t1.nii.gz").read_bytes())
        rows = ["| input | file size | exit code | peak memory (MiB) |", "|---|---|---|---|"]
        for name, folder in (("header declaring 800^3 float32 voxels", tmp / "bomb"), ("real T1 (colin27), normal build", tmp / "real")):
            size = sum(p.stat().st_size for p in folder.iterdir())
            code, peak, err = peak_build(folder, tmp / f"out-{folder.name}")
            rows.append(f"| {name} | {size:,} bytes | {code} | {peak:.0f} |")
            print(name, code, f"{peak:.0f} MiB", err[:160])
    table = "\n".join(rows)
    print(table)
    if args.write:
        from benchmarks._report import update_section

        update_section("Refusing oversized headers", "The header is checked against `MAX_VOXELS` (512^3 per volume) and against "
                       "the bytes the file really holds before any voxel is read (`atom_bench/core/volumes.py`).\n\n" + table)


if __name__ == "__main__":
    main()
