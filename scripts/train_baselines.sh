#!/usr/bin/env bash
# Reproduce the shipped baseline weights in baselines/weights/ (CPU, two runs at a time, one
# torch thread each, at most MINUTES of wall time per run). Runs go to runs/<model>-<track>/;
# the best validation checkpoint of each is exported as float16 to baselines/weights/.
#   bash scripts/train_baselines.sh            # everything
#   MODELS="cnn" TRACKS="easy" bash scripts/train_baselines.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
MINUTES=${MINUTES:-2.5}
EPOCHS=${EPOCHS:-100}
STEPS=${STEPS:-20}
SEED=${SEED:-0}
MODELS=${MODELS:-"regismcan cnn vit"}
TRACKS=${TRACKS:-"paper easy hard histology"}
RUNS=${RUNS:-runs}
WEIGHTS=baselines/weights

one() {  # model track
  local m=$1 t=$2 dir="$RUNS/$1-$2"
  atom-bench train --model "$m" --track "$t" --epochs "$EPOCHS" --steps-per-epoch "$STEPS" \
    --seed "$SEED" --max-minutes "$MINUTES" --out "$dir" > "$dir.txt" 2>&1
  python -c "from atom_bench.train import export_weights as e; print(e('$m', '$t', '$dir/best.safetensors', '$WEIGHTS/$m-$t.safetensors'))" >> "$dir.txt"
}

mkdir -p "$RUNS" "$WEIGHTS"
jobs=()
for t in $TRACKS; do for m in $MODELS; do jobs+=("$m $t"); done; done
[[ -z "${SKIP_RELEASED:-}" ]] && jobs+=("released paper")
for ((i = 0; i < ${#jobs[@]}; i += 2)); do
  one ${jobs[i]} &
  if ((i + 1 < ${#jobs[@]})); then one ${jobs[i + 1]} & fi
  wait
done
for t in $TRACKS; do  # the prior: label counts of the train split
  atom-bench train --model prior --track "$t" --out "$RUNS/prior-$t" > "$RUNS/prior-$t.txt" 2>&1
  cp "$RUNS/prior-$t/best.safetensors" "$WEIGHTS/prior-$t.safetensors"
done
python scripts/write_model_cards.py --runs "$RUNS" --minutes "$MINUTES" --epochs "$EPOCHS" --steps "$STEPS" \
  --machine "${MACHINE:-$(uname -m) CPU, one torch thread per run, two runs at a time}"
