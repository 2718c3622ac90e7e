"""Print compact test_unseen leaderboard tables (markdown) for the README from submissions/."""

from __future__ import annotations

from atom_bench.submissions import load_records


def pct(cell: dict | None) -> str:
    return "-" if not cell or cell.get("value") is None else f"{100 * cell['value']:.1f}"


def main(split: str = "test_unseen") -> None:
    records = [r for r in load_records() if r["metadata"]["split"] == split]
    for track in sorted({r["metadata"]["track"] for r in records}, key=["paper", "easy", "hard", "histology"].index):
        rows = sorted((r for r in records if r["metadata"]["track"] == track), key=lambda r: -(r["scores"]["metrics"]["top1_high"]["value"] or 0))
        print(f"**{track}** ({split}, {rows[0]['scores']['metrics']['top1_high']['n']} slices)\n")
        print("| model | top-1 coarse % | top-1 fine % | median error mm | volume-swap drop (coarse, points) |")
        print("|---|---|---|---|---|")
        for r in rows:
            m = r["scores"]["metrics"]
            med = m.get("dist_mm_median") or {}
            print(f"| {r['metadata']['model_name']} | {pct(m['top1_high'])} | {pct(m['top1_low'])} | "
                  f"{med.get('value', float('nan')):.1f} | {pct(m.get('volume_swap_drop_high'))} |")
        floors = rows[0]["scores"].get("floors", {})
        for name in ("chance", "prior"):
            if name in floors:
                f = floors[name]["metrics"]
                print(f"| *{name} floor* | {pct(f['top1_high'])} | {pct(f['top1_low'])} | {(f.get('dist_mm_median') or {}).get('value', float('nan')):.1f} | - |")
        print()


if __name__ == "__main__":
    main()
