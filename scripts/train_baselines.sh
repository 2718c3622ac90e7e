#!/usr/bin/env bash
# Reproduce the shipped baseline weights in baselines/weights/ (CPU, two runs at a time, one
# torch thread each, at most MINUTES of wall time per run; regismcan and released use the
# asymmetric loss of the paper, cnn and vit cross-entropy: see MODEL_CARDS.md). Runs go to runs/<model>-<track>/;
# the best validation checkpoint of each is exported as float16 to baselines/weights/.
#   bash scripts/train_baselines.sh            # everything
#   MODELS="cnn" TRACKS="easy" bash scripts/train_baselines.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
MINUTES=${MINUTES:-9}
EPOCHS=${EPOCHS:-1000}
STEPS=${STEPS:-40}
SEED=${SEED:-0}
MODELS=${MODELS:-"regismcan cnn vit"}
TRACKS=${TRACKS:-"paper easy hard histology"}
RUNS=${RUNS:-runs}
WEIGHTS=baselines/weights

loss_of() {  # the loss each baseline is trained with (model cards repeat it)
  case $1 in regismcan | released) echo asl ;; *) echo ce ;; esac
}

one() {  # model track
  local m=$1 t=$2 dir="$RUNS/$1-$2"
  atom-bench train --model "$m" --track "$t" --epochs "$EPOCHS" --steps-per-epoch "$STEPS" --loss "$(loss_of "$m")" \
    --seed "$SEED" --max-minutes "$MINUTES" --out "$dir" > "$dir.txt" 2>&1
  python -c "from atom_bench.models.train import export_weights as e; print(e('$m', '$t', '$dir/best.safetensors', '$WEIGHTS/$m-$t.safetensors'))" >> "$dir.txt"
}

mkdir -p "$RUNS" "$WEIGHTS"
queue=()
for t in $TRACKS; do for m in $MODELS; do queue+=("$m $t"); done; done
[[ -z "${SKIP_RELEASED:-}" ]] && queue+=("released paper")
for job in "${queue[@]}"; do  # two runs at a time: start the next as soon as one finishes
  while (($(jobs -rp | wc -l) >= 2)); do wait -n; done
  one $job &
done
wait
for t in $TRACKS; do  # the prior: label counts of the train split
  atom-bench train --model prior --track "$t" --out "$RUNS/prior-$t" > "$RUNS/prior-$t.txt" 2>&1
  cp "$RUNS/prior-$t/best.safetensors" "$WEIGHTS/prior-$t.safetensors"
done
python scripts/write_model_cards.py --runs "$RUNS" --minutes "$MINUTES" --epochs "$EPOCHS" --steps "$STEPS" \
  --machine "${MACHINE:-$(uname -m) CPU, one torch thread per run, two runs at a time}"
