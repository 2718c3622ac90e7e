#!/usr/bin/env bash
# Reproduce the shipped baseline weights in baselines/weights/ (CPU, two runs at a time, one torch
# thread each). Each line of RECIPES is one training run:
#   model  track-trained-on  source  loss  batch  minutes  lr  start  options  tracks-shipped-for
# start is "-" (the seed's random weights), a shipped weights file of the same model to warm-start
# from (`--init-from`), or "match": regismcan-match from the matcher's shipped weights of that
# track (scripts/warm_start_regismcan_match.py). Warm starts run after the first phase
# (WARM_RECIPES). options: "-" or extra `atom-bench train` flags, comma-separated.
# A run goes to runs/<model>-<track>/ (its exact command in command.txt); its best validation
# checkpoint is exported as float16 to baselines/weights/<model>-<shipped track>.safetensors for
# every shipped track (one checkpoint may serve several tracks of the same cube: validation is
# recomputed on each, `trained_on_track` records where it was chosen). Count-built models (the
# prior) are recounted on every track. MODEL_CARDS.md is rewritten at the end.
#   bash scripts/train_baselines.sh                       # every recipe
#   ONLY="matcher" bash scripts/train_baselines.sh        # the recipes of some models
# Shipped weights not listed here were trained by an earlier recipe: regismcan, cnn, vit (but
# hard) and released with `--source stream --loss asl|ce --batch-size 32 --steps-per-epoch 40` for 7 minutes
# per track on atom-mini 1.0 (their cards give the commands; re-stamped for 1.2 by
# scripts/restamp_weights.py, the train split being byte-identical).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
SEED=${SEED:-0}
ONLY=${ONLY:-}
RUNS=${RUNS:-runs}
WEIGHTS=baselines/weights
RECIPES=(
  "matcher hard synthetic ce 64 30 0.001 - - easy hard"
  "vit hard synthetic ce 64 30 0.001 - - hard"
)
WARM_RECIPES=(
  "matcher histology synthetic ce 64 30 0.0005 $WEIGHTS/matcher-hard.safetensors --slice-contrast=same histology"
  "regismcan-match hard synthetic asl 64 30 0.0005 match - easy hard"
)

learned() {  # model track source loss batch minutes lr start options shipped-tracks...
  local m=$1 t=$2 source=$3 loss=$4 batch=$5 minutes=$6 lr=$7 start=$8 options=$9 dir="$RUNS/$1-$2" extra=""
  shift 9
  mkdir -p "$dir"
  if [[ $start == match ]]; then
    python scripts/warm_start_regismcan_match.py --matcher "$WEIGHTS/matcher-$t.safetensors" --out "$RUNS/$m-$t-init.safetensors" --seed "$SEED"
    extra=" --init-from $RUNS/$m-$t-init.safetensors"
  elif [[ $start != - ]]; then
    cp "$start" "$RUNS/$m-$t-init.safetensors"  # the start is shipped weights this script may overwrite
    extra=" --init-from $RUNS/$m-$t-init.safetensors"
  fi
  if [[ $options != - ]]; then
    extra="$extra ${options//,/ }"
  fi
  local cmd="atom-bench train --model $m --track $t --source $source --loss $loss --batch-size $batch --epochs 1000 --steps-per-epoch 50 --lr $lr --seed $SEED --max-minutes $minutes$extra --out $dir"
  echo "OMP_NUM_THREADS=1 $cmd" > "$dir/command.txt"
  $cmd > "$dir.txt" 2>&1
  for shipped in "$@"; do
    python -c "from atom_bench.models.train import export_weights as e; print('$shipped', e('$m', '$shipped', '$dir/best.safetensors', '$WEIGHTS/$m-$shipped.safetensors'))" >> "$dir.txt"
  done
}

run_all() {  # recipes...: two learned runs at a time, the next as soon as one finishes
  local recipe
  for recipe in "$@"; do
    read -r -a fields <<< "$recipe"
    if [[ -n $ONLY && " $ONLY " != *" ${fields[0]} "* ]]; then
      continue
    fi
    while (($(jobs -rp | wc -l) >= 2)); do wait -n; done
    learned "${fields[@]}" &
  done
  wait
}

mkdir -p "$RUNS" "$WEIGHTS"
run_all "${RECIPES[@]}"
run_all "${WARM_RECIPES[@]}"  # from the weights the first phase shipped
if [[ -z $ONLY || " $ONLY " == *" prior "* ]]; then
  for t in paper easy hard histology; do  # "training" the prior is counting the train split's labels
    atom-bench train --model prior --track "$t" --out "$RUNS/prior-$t" > "$RUNS/prior-$t.txt" 2>&1
    cp "$RUNS/prior-$t/best.safetensors" "$WEIGHTS/prior-$t.safetensors"
  done
fi
python scripts/write_model_cards.py --runs "$RUNS" --machine "${MACHINE:-$(uname -m) CPU, one torch thread per run, two runs at a time}"
