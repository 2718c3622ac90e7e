"""Print compact leaderboard tables (markdown) for the README from submissions/: test_unseen
metrics, with the same model's test_seen coarse top-1 beside them."""

from __future__ import annotations

from atom_bench.board.submissions import load_records


def pct(cell: dict | None) -> str:
    return "-" if not cell or cell.get("value") is None else f"{100 * cell['value']:.1f}"


def main(split: str = "test_unseen") -> None:
    every = load_records()
    records = [r for r in every if r["metadata"]["split"] == split]
    seen = {(r["metadata"]["track"], r["metadata"]["model_name"]): r for r in every if r["metadata"]["split"] == "test_seen"}
    for track in sorted({r["metadata"]["track"] for r in records}, key=["paper", "easy", "hard", "histology"].index):
        rows = sorted((r for r in records if r["metadata"]["track"] == track), key=lambda r: -(r["scores"]["metrics"]["top1_high"]["value"] or 0))
        print(f"**{track}** ({split}, {rows[0]['scores']['metrics']['top1_high']['n']} slices)\n")
        print("| model | top-1 coarse % | top-1 fine % | median error mm | volume-swap drop (coarse, points) | top-1 coarse %, seen volumes |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            m = r["scores"]["metrics"]
            med = m.get("dist_mm_median") or {}
            print(f"| {r['metadata']['model_name']} | {pct(m['top1_high'])} | {pct(m['top1_low'])} | "
                  f"{med.get('value', float('nan')):.1f} | {pct(m.get('volume_swap_drop_high'))} | {pct(_seen_top1(seen, track, r))} |")
        floors = rows[0]["scores"].get("floors", {})
        seen_floors = next((r["scores"].get("floors", {}) for (t, _), r in seen.items() if t == track), {})
        for name in ("chance", "prior"):
            if name in floors:
                f = floors[name]["metrics"]
                g = seen_floors.get(name, {}).get("metrics", {}).get("top1_high")
                print(f"| *{name} floor* | {pct(f['top1_high'])} | {pct(f['top1_low'])} | "
                      f"{(f.get('dist_mm_median') or {}).get('value', float('nan')):.1f} | - | {pct(g)} |")
        print()


def _seen_top1(seen: dict, track: str, record: dict) -> dict | None:
    other = seen.get((track, record["metadata"]["model_name"]))
    return other["scores"]["metrics"]["top1_high"] if other else None


if __name__ == "__main__":
    main()
