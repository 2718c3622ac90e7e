"""Run every benchmark and refresh its section of BENCHMARKS.md (`make bench`)."""

from __future__ import annotations

import subprocess
import sys

SCRIPTS = ("bench_slicing", "bench_build", "bench_refusal", "bench_scoring", "bench_models", "bench_evaluate", "bench_search", "bench_synthetic")


def main() -> int:
    for name in SCRIPTS:
        print(f"== {name}", flush=True)
        code = subprocess.call([sys.executable, "-m", f"benchmarks.{name}", "--write"])
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
