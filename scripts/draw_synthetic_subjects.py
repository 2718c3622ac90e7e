"""Draw docs/images/synthetic_subjects.png: synthetic training subjects beside their real source volume.

    .venv/bin/python scripts/draw_synthetic_subjects.py [--track hard] [--volume colin27_t1] [--count 4] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from atom_bench.viz import render_synthetic_subjects

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--track", default="hard")
    parser.add_argument("--volume", default="colin27_t1", help="a training volume of the track")
    parser.add_argument("--count", type=int, default=4, help="synthetic subjects to draw")
    parser.add_argument("--seed", type=int, default=0, help="subject k uses seed * 1000 + k")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "synthetic_subjects.png")
    args = parser.parse_args()
    print(render_synthetic_subjects(args.out, args.track, args.volume, args.count, args.seed))


if __name__ == "__main__":
    main()
