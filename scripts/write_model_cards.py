"""Write baselines/weights/MODEL_CARDS.md from the shipped weights' metadata and the run logs.

    python scripts/write_model_cards.py [--runs runs] [--machine "..."] [--out MODEL_CARDS.md]

The weights files are those the registry's entries declare (``atom-bench models``). Every number
in a card comes from the weights file's safetensors metadata (validation scores of the exported
weights, seed, step, ...) or from the run's ``log.csv`` (steps and wall time).
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import os
import platform
import re
from pathlib import Path

from safetensors import safe_open

from atom_bench.core.labels import N_HIGH, N_LOW
from atom_bench.core.tracks import TRACK_NAMES
from atom_bench.models.registry import ModelEntry, list_models
from atom_bench.models.weights import Weights

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "baselines" / "weights"
CHANCE_HIGH, CHANCE_LOW = 1 / N_HIGH, 1 / N_LOW
# Presentation only: the order of the cards within a track (other models follow, in registry order).
CARD_ORDER = ("matcher", "regismcan-match", "regismcan", "cnn", "vit", "released", "prior")
# The chain of 30-minute runs behind each warm-started file (scripts/train_baselines.sh phases).
CHAINS = {
    "matcher-easy.safetensors": ("matcher-hard", "matcher-hard2", "matcher-hard3", "matcher-hard4"),
    "matcher-hard.safetensors": ("matcher-hard", "matcher-hard2", "matcher-hard3", "matcher-hard4"),
    "matcher-histology.safetensors": ("matcher-hard", "matcher-hard2", "matcher-histology3"),
    "regismcan-match-hard.safetensors": ("matcher-hard", "regismcan-match-hard", "regismcan-match-hard2"),
    "regismcan-match-easy.safetensors": ("matcher-hard", "regismcan-match-hard", "regismcan-match-hard2", "regismcan-match-easy2"),
}
# Prose a card adds for one model (what the metadata cannot say).
NOTES = {
    "matcher": (
        "- Trained on synthetic subjects only (`--source synthetic`: new anatomy, contrast, bias and noise per draw "
        "from the four training volumes), so the learned part is the matching, not the anatomy; checkpoint chosen on "
        "the real validation volumes. Every block score is a comparison of the slice with the volume (no position "
        "term): a blank volume gives uniform scores. The `hard` chain's best validation score per run: 0.449, 0.484, "
        "0.527, 0.555 (the fourth run's epochs sit between 0.49 and 0.55: it has levelled off at this learning rate). "
        "On `histology` no run has learned to match: from scratch with "
        "independent slice contrasts (580 steps, best validation 0.297), warm-started from the first `hard` run with "
        "independent contrasts (1,210 steps, 0.293) or with the volume's own contrast (0.305), that run continued for "
        "30 more minutes (0.309 / 0.012) and a run from the second `hard` run with the volume's own contrast (the "
        "shipped file, 0.309 / 0.020: it ties on the coarse level and wins on the fine one) all stayed at the prior's "
        "level (0.297); so did a curriculum from the third `hard` run (`--severity-ramp 800`: degradations grown from "
        "none to full strength over 800 batches; 0.285 / 0.016, kept out by the shipping rule)."
    ),
    "regismcan-match": (
        "- RegisMCAN (the paper's co-attention and asymmetric loss) plus a matching term: the block logits of "
        "`baselines.matcher` added to every block logit (`baselines/regismcan.py`, point 6). Started from the matcher's "
        "shipped weights of the first `hard` run in `matcher.*` and the co-attention at its seed-0 initialisation "
        "(`scripts/warm_start_regismcan_match.py`), then trained as a whole on `hard` for two runs; the `easy` file "
        "continues the second of them on the `easy` stream (axis-aligned poses), which took its easy validation score "
        "from 0.383 to 0.492 (on `hard` validation that checkpoint scores 0.383, below the `hard` file's 0.465). Most "
        "of what it localises comes from the matching term (compare the `matcher` rows of the leaderboards). Composed "
        "again from the fourth `hard` matcher (validation 0.555) and trained 30 minutes on `hard` "
        "(`runs/regismcan-match-hard3`, lr 0.0005, seed 5: from 0.398 to 0.453), it did not win the shipping "
        "comparison (+4 / -7 of 256 validation slices); nor did 25 more minutes of the shipped `hard` file at lr 0.0002 "
        "(`runs/regismcan-match-hard4`, seed 6: 0.469, +4 / -4), so the `hard` file is still the one above."
    ),
    "cnn": (
        "- Retrained on synthetic subjects for atom-mini 1.2: a 30-minute run on the `hard` synthetic stream "
        "(`--source synthetic --loss ce --batch-size 64`, 1,787 steps) reached a best validation top-1 of 0.332, below "
        "the shipped `hard` weights' 0.344, so no cnn weights were replaced."
    ),
    "vit": (
        "- Retrained on synthetic subjects for atom-mini 1.2: a 30-minute run on the `hard` synthetic stream "
        "(`--source synthetic --loss ce --batch-size 64`, 621 steps) reached a best validation top-1 of 0.352 on `hard`, "
        "above the 7-minute stream weights' 0.336, so it is the shipped `vit-hard` (its fine top-1 of 0.023 says it is "
        "close to the constant answer); on `easy` it scored 0.285 against 0.402, so the other tracks keep the stream weights."
    ),
    "released": (
        "- Only `paper`: the released architecture is defined for S = 20 and 4 x 4 slices. Our generalisation "
        "keeps its patch at half the cube (P = S/2, embedding width P^3), so the parameter count grows as S^6: "
        "11.65 M at S = 20, about 705 M at S = 40 and 12.5 billion at S = 64 (the easy, hard and histology "
        "tracks), which neither trains on a CPU nor makes a shippable file. It is also the largest file here "
        "(11.65 M parameters, float16). Its logits do not depend on the volume (cls-token readout, see "
        "`baselines/released.py`), so at best it learns the label prior."
    ),
}

HEADER = """# Model cards: shipped baseline weights

Every file below was trained on the embedded **atom-mini** benchmark (dataset hash in each file's
metadata) on CPU, by `scripts/train_baselines.sh` or the exact command its card gives (the
command is recorded in the run directory as `command.txt`). Training draws from the four
training volumes only: `--source stream` renders fresh slices of the real volumes (each under a
random cube symmetry), `--source synthetic` renders them from synthetic subjects made from those
volumes (`docs/PROTOCOL.md` section 10). The checkpoint kept is the epoch with the best
validation top-1 (coarse, then fine). One checkpoint may serve several tracks of the same cube:
such a card says which track it was trained and selected on (`trained_on_track`), and its
validation scores are recomputed on the track it is shipped for. Weights are stored in float16;
the validation scores listed are recomputed with those float16 weights (the float32
checkpoint's are in the metadata as `run_val_top1_*`). **Validation scores are those the
checkpoint was selected on, so they are optimistic; the test splits were never used.** {validation}

Chance floor: top-1 high 1/27 = {chance_high:.4f}, low 1/729 = {chance_low:.4f}.

A second, stronger floor matters more here: the **constant answer**, always the most frequent
validation label (the central block for the S = 64 tracks), scores the "majority" column; a model
that only learned where tissue usually is reaches it without looking at the slice.

| weights | params | steps | wall s | val top-1 high | val top-1 low | majority high / low | beats chance (high / low) | beats majority (high / low) |
|---|---|---|---|---|---|---|---|---|
"""


def _meta(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as fh:
        return dict(fh.metadata() or {})


def _n_params(path: Path) -> int:
    n = 0
    with safe_open(str(path), "pt") as fh:
        for key in fh.keys():
            n += math.prod(fh.get_slice(key).get_shape())
    return n


@functools.cache  # one read of each track's validation labels, not one per weights file
def _majority(track: str) -> tuple[float, float]:
    """Top-1 of the constant answer: the most frequent validation label (high, low)."""
    import numpy as np
    import pyarrow.parquet as pq

    from atom_bench.data.benchmark import Benchmark

    labels = {"high_label": [], "low_label": []}
    for path in Benchmark.open().split_files(track, "validation"):
        table = pq.read_table(path, columns=list(labels))
        for key in labels:
            labels[key].append(table.column(key).to_numpy())
    high, low = (np.concatenate(labels[k]) for k in ("high_label", "low_label"))
    return np.bincount(high).max() / len(high), np.bincount(low).max() / len(low)


def _previous_sections(path: Path) -> dict[str, dict[str, str]]:
    """The earlier card's lines about each file's training run (command, seed/steps/wall time,
    training log), keyed by file name: weights that were not retrained keep them, since their run
    directories are not part of the repository."""
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    sections: dict[str, dict[str, str]] = {}
    for block in text.split("\n## ")[1:]:
        name, *lines = block.splitlines()
        keep = {}
        for line in lines:
            for key in ("- Command:", "- Seed", "- Training log"):
                if line.startswith(key):
                    keep[key] = line
        sections[name.strip()] = keep
    for name, wall in re.findall(r"^\| `([^`]+)` \|[^|]*\|[^|]*\| ([^|]+?) \|", text, flags=re.M):  # the summary table's wall time
        sections.setdefault(name, {})["wall"] = wall
    return sections


def _validation_text() -> str:
    """What the validation split is, from the benchmark (volumes and slices per track)."""
    from atom_bench.data.benchmark import Benchmark

    bench = Benchmark.open()
    volumes = sorted(v for v, group in bench.volume_groups.items() if group == "validation")
    n = len(bench.sample_ids("easy", "validation"))
    return (f"The validation split is {n} slices per track of {len(volumes)} held-out volumes ({', '.join(volumes)}), "
            f"so one slice is {100 / n:.2f} points.")


def _slice_contrast(meta: dict[str, str]) -> str:
    """What a synthetic histology run cut its slices from (nothing for other runs)."""
    if meta.get("source") != "synthetic" or meta.get("track") != "histology":
        return ""
    contrast = json.loads(meta.get("synthetic") or "{}").get("slice_contrast", "independent")
    return ", slices cut from " + ("the volume itself" if contrast == "same" else "an independent contrast")


def _run_name(meta: dict[str, str], default: str) -> str:
    """The run directory's name: a warm-started run's start was copied to ``runs/<run>-init.safetensors``
    (``scripts/train_baselines.sh``), so its name says which run it began; others are ``<model>-<track>``."""
    start = json.loads(meta.get("init_from") or "{}").get("file", "")
    return start.removesuffix("-init.safetensors") if start.endswith("-init.safetensors") else default


def _log(runs: Path, stem: str) -> list[dict[str, str]]:
    path = runs / stem / "log.csv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def shipped_weights() -> list[tuple[ModelEntry, Weights]]:
    """Every registered model's shipped weights, by track, then in card order."""
    entries = list_models()
    rank = {e.name: (CARD_ORDER.index(e.name) if e.name in CARD_ORDER else len(CARD_ORDER), i) for i, e in enumerate(entries)}
    pairs = [(entry, weights) for entry in entries for weights in entry.weights]
    return sorted(pairs, key=lambda pair: (TRACK_NAMES.index(pair[1].track), rank[pair[0].name]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument("--machine", default=f"{platform.machine()} CPU, {platform.system()}")
    parser.add_argument("--minutes", default=os.environ.get("MINUTES", "2.5"))
    parser.add_argument("--epochs", default=os.environ.get("EPOCHS", "100"))
    parser.add_argument("--steps", default=os.environ.get("STEPS", "20"))
    parser.add_argument("--out", type=Path, default=WEIGHTS / "MODEL_CARDS.md")
    args = parser.parse_args()

    files = shipped_weights()
    previous = _previous_sections(args.out)
    table, sections, learned, above, over_chance = [], [], 0, 0, 0
    for entry, weights in files:
        model, track, path = entry.name, weights.track, weights.path
        counted = entry.capabilities.needs_train_counts  # built from label counts, not optimised
        meta = _meta(path)
        trained_on = meta.get("trained_on_track", track)
        stem = _run_name(meta, f"{model}-{trained_on}")
        rows = _log(args.runs, stem)
        recorded = args.runs / stem / "command.txt"
        earlier = previous.get(path.name, {}) if not rows else {}
        high, low = float(meta["val_top1_high"]), float(meta["val_top1_low"])
        beats = f"{'yes' if high > CHANCE_HIGH else 'NO'} / {'yes' if low > CHANCE_LOW else 'NO'}"
        maj_high, maj_low = _majority(track)
        if not counted:
            learned += 1
            above += high > maj_high
            over_chance += high > CHANCE_HIGH
        beats_majority = f"{'yes' if high > maj_high else 'no'} / {'yes' if low > maj_low else 'no'}"
        n_params = _n_params(path)
        if counted:
            steps, wall = "-", f"{float(rows[-1]['seconds']):.1f}" if rows else earlier.get("wall", "-")
            command = f"atom-bench train --model {model} --track {track} --out runs/{model}-{track}"
            how = "label counts of the `train` split (no optimisation)"
        else:
            steps, wall = (rows[-1]["step"], f"{float(rows[-1]['seconds']):.1f}") if rows else (meta.get("step", "?"), meta.get("seconds", "?"))
            if "- Seed" in earlier:  # the earlier card knew the whole run, not only the kept epoch
                found = re.search(r"steps (\S+); wall time (\S+) s", earlier["- Seed"])
                steps, wall = found.groups() if found else (steps, wall)
            command = recorded.read_text(encoding="utf-8").strip() if recorded.is_file() else earlier.get("- Command:", "").removeprefix("- Command: `").removesuffix("`") or (
                f"OMP_NUM_THREADS=1 atom-bench train --model {model} --track {trained_on} --epochs {args.epochs} "
                f"--steps-per-epoch {args.steps} --loss {meta.get('loss')} --seed {meta['seed']} --max-minutes {args.minutes} "
                f"--out runs/{stem}"
            )
            how = (
                f"AdamW lr {meta.get('lr')}, loss {meta.get('loss')}, batch {meta.get('batch_size')}, source {meta.get('source')}{_slice_contrast(meta)} "
                f"(cube symmetries {meta.get('augment', 'False')}, {meta.get('volumes_per_batch', '1')} volumes per batch); "
                f"best epoch {meta.get('epoch')} at step {meta.get('step')} of {steps} steps run"
            )
        shown_params = f"{n_params:,} counts" if counted else f"{n_params:,}"
        table.append(f"| `{path.name}` | {shown_params} | {steps} | {wall} | {high:.4f} | {low:.4f} | {maj_high:.4f} / {maj_low:.4f} | {beats} | {beats_majority} |")
        verdict = []
        if high <= CHANCE_HIGH:
            verdict.append("does **not** beat chance on the coarse labels within this budget")
        if low <= CHANCE_LOW:
            verdict.append("does **not** beat chance on the fine labels within this budget")
        notes = [f"- Result: {'; '.join(verdict)}." if verdict else "- Result: above chance on both levels."]
        if high <= maj_high and not counted:
            notes.append(
                f"- Not above the constant answer ({maj_high:.4f} coarse / {maj_low:.4f} fine on validation): within this "
                "CPU budget the model has learned at most where slices usually are, not to match the slice to the volume."
            )
        if meta.get("init_from"):
            start = json.loads(meta["init_from"])
            spent = f", {float(start['seconds']):.0f} s" if start.get("seconds") else ""
            notes.append(
                f"- Warm start (`--init-from`): began from `{start['file']}` (sha256 `{start['sha256'][:16]}...`; trained on "
                f"{start['trained_on']}{spent}), so its training is that run's and this one's together."
            )
        if path.name in CHAINS:
            chain = CHAINS[path.name]
            notes.append(
                f"- Training chain: {' -> '.join(f'`runs/{run}`' for run in chain)}, {len(chain)} runs of at most 30 minutes, each "
                f"warm-started from the one before "
                f"({30 * len(chain)} CPU minutes in all; the command, steps and wall time above are the last run's)."
            )
        if model in NOTES:
            notes.append(NOTES[model])
        if not counted:
            notes.append("- Training log (per epoch): " + ", ".join(
                f"{r['epoch']}: {float(r['val_top1_high']):.3f}/{float(r['val_top1_low']):.3f}" for r in rows
            ) + " (val top-1 high/low)." if rows else earlier.get("- Training log", "- Training log: not available."))  # fmt: skip
        sections.append("\n".join([
            f"## {path.name}", "",
            f"- Model `{model}`, track `{track}`" + (f" (trained and selected on `{trained_on}`)" if trained_on != track else "")
            + f", {shown_params} {'' if counted else 'parameters'}; {how}.".replace("  ", " "),
            *([f"- Data note: {meta['dataset_note']}"] if meta.get("dataset_note") else []),
            f"- Command: `{command}`",
            earlier.get("- Seed") or f"- Seed {meta['seed']}; steps {steps}; wall time {wall} s; machine: {args.machine}.",
            f"- Validation top-1 high **{high:.4f}**, low **{low:.4f}** "
            f"(chance {CHANCE_HIGH:.4f} / {CHANCE_LOW:.4f}; float32 checkpoint {float(meta.get('run_val_top1_high') or high):.4f} / "
            f"{float(meta.get('run_val_top1_low') or low):.4f}).",
            f"- Toolkit {meta.get('toolkit_version')}, dataset hash `{meta.get('dataset_hash', '')[:16]}...`.",
            *notes, "",
        ]))  # fmt: skip
    summary = (
        f"\n\n**Summary.** {above} of {learned} learned checkpoints score above the constant answer on the coarse "
        f"validation labels and {over_chance} of {learned} above the uniform chance floor. Validation was used to pick "
        "the checkpoint, so read these numbers as optimistic and noisy; "
        "the test scores (seen and unseen volumes, with intervals and the volume-swap drop) are on the leaderboards "
        "(`leaderboards/`). `released` ignores the volume by construction: whatever it scores comes from the slice's "
        "appearance alone. "
        "These are CPU-budget baselines, not converged ones: a longer `--max-minutes` or a GPU gives better numbers.\n\n"
    )
    text = HEADER.format(chance_high=CHANCE_HIGH, chance_low=CHANCE_LOW, validation=_validation_text()) + "\n".join(table) + summary + "\n".join(sections)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(files)} files)")


if __name__ == "__main__":
    main()
