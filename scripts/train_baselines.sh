#!/usr/bin/env bash
# Reproduce the shipped baseline weights in baselines/weights/ (CPU, two runs at a time, one
# torch thread each, at most MINUTES of wall time per run). What is trained comes from the model
# registry (`atom-bench models`): every trainable model on every track whose cube it can be built
# for, and every count-built model (the prior), each with the loss its shipped weights record
# (regismcan and released: the paper's asymmetric loss; cnn and vit: cross-entropy; see
# MODEL_CARDS.md). Runs go to runs/<model>-<track>/; the best validation checkpoint of each is
# exported as float16 to baselines/weights/.
#   bash scripts/train_baselines.sh            # everything
#   MODELS="cnn" TRACKS="easy" bash scripts/train_baselines.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
MINUTES=${MINUTES:-9}
EPOCHS=${EPOCHS:-1000}
STEPS=${STEPS:-40}
SEED=${SEED:-0}
MODELS=${MODELS:-}  # default: every trainable and count-built model of the registry
TRACKS=${TRACKS:-"paper easy hard histology"}
RUNS=${RUNS:-runs}
WEIGHTS=baselines/weights

plan() {  # one line "model track loss" per run ("counts" for a count-built model)
  python - "$MODELS" $TRACKS <<'EOF'
import sys

from atom_bench.data.benchmark import Benchmark
from atom_bench.models.registry import list_models

wanted, tracks = sys.argv[1].split(), sys.argv[2:]
bench = Benchmark.open()
for entry in list_models():
    capabilities = entry.capabilities
    if (wanted and entry.name not in wanted) or not (capabilities.trainable or capabilities.needs_train_counts):
        continue
    for track in tracks:
        if not capabilities.fits(bench.spec(track).size):
            continue
        shipped = entry.weights_for(track)
        loss = (shipped.metadata.get("loss") if shipped and shipped.path.is_file() else None) or "ce"
        print(entry.name, track, "counts" if capabilities.needs_train_counts else loss)
EOF
}

learned() {  # model track loss
  local m=$1 t=$2 loss=$3 dir="$RUNS/$1-$2"
  atom-bench train --model "$m" --track "$t" --epochs "$EPOCHS" --steps-per-epoch "$STEPS" --loss "$loss" \
    --seed "$SEED" --max-minutes "$MINUTES" --out "$dir" > "$dir.txt" 2>&1
  python -c "from atom_bench.models.train import export_weights as e; print(e('$m', '$t', '$dir/best.safetensors', '$WEIGHTS/$m-$t.safetensors'))" >> "$dir.txt"
}

counted() {  # model track: "training" is counting the train split's labels
  local m=$1 t=$2 dir="$RUNS/$1-$2"
  atom-bench train --model "$m" --track "$t" --out "$dir" > "$dir.txt" 2>&1
  cp "$dir/best.safetensors" "$WEIGHTS/$m-$t.safetensors"
}

mkdir -p "$RUNS" "$WEIGHTS"
plan > "$RUNS/plan.txt"  # a file, not a process substitution: a failing plan stops the script
mapfile -t queue < "$RUNS/plan.txt"
for job in "${queue[@]}"; do  # two learned runs at a time: start the next as soon as one finishes
  read -r m t loss <<< "$job"
  if [[ $loss != counts ]]; then
    while (($(jobs -rp | wc -l) >= 2)); do wait -n; done
    learned "$m" "$t" "$loss" &
  fi
done
wait
for job in "${queue[@]}"; do
  read -r m t loss <<< "$job"
  if [[ $loss == counts ]]; then
    counted "$m" "$t"
  fi
done
python scripts/write_model_cards.py --runs "$RUNS" --minutes "$MINUTES" --epochs "$EPOCHS" --steps "$STEPS" \
  --machine "${MACHINE:-$(uname -m) CPU, one torch thread per run, two runs at a time}"
