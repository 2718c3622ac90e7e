#!/usr/bin/env bash
# Reproduce the shipped baseline weights in baselines/weights/ (CPU, two runs at a time, one torch
# thread each). Each line of a phase is one training run:
#   run  model  track-trained-on  source  loss  batch  minutes  lr  seed  start  options  tracks-shipped-for
# run names the run's directory, runs/<run>/ (its exact command in command.txt). start is "-" (the
# seed's random weights), a weights file of the same model to warm-start from (shipped, or an
# earlier run's best checkpoint; `--init-from`, copied first to runs/<run>-init.safetensors: the
# script may overwrite the shipped file), or "match": regismcan-match from the matcher's shipped
# weights of that track (scripts/warm_start_regismcan_match.py). The phases run in order, each from the weights the
# phases before it shipped, so a chain of warm starts is one line per phase. Every run is at most
# 30 minutes; a shipped file's training is its whole chain (the model cards add it up).
# A run's best validation checkpoint is offered as float16 to
# baselines/weights/<model>-<shipped track>.safetensors for every shipped track (one checkpoint
# may serve several tracks of the same cube: validation is recomputed on each, `trained_on_track`
# records where it was chosen) and replaces the shipped file only when it wins a paired
# comparison on that track's validation slices (atom_bench/models/shipping.py: ship). Count-built models (the prior) are recounted on every track.
# MODEL_CARDS.md is rewritten at the end (it finds a run from its init file's name).
#   bash scripts/train_baselines.sh                       # every recipe
#   ONLY="matcher" bash scripts/train_baselines.sh        # the recipes of some models
# Shipped weights not listed here were trained by an earlier recipe: regismcan, cnn, vit (but
# hard) and released with `--source stream --loss asl|ce --batch-size 32 --steps-per-epoch 40` for 7 minutes
# per track on atom-mini 1.0 (their cards give the commands; re-stamped for 1.2 by
# scripts/restamp_weights.py, the train split being byte-identical).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
ONLY=${ONLY:-}
RUNS=${RUNS:-runs}
WEIGHTS=baselines/weights
PHASE_1=(
  "matcher-hard matcher hard synthetic ce 64 30 0.001 0 - - easy hard"
  "vit-hard vit hard synthetic ce 64 30 0.001 0 - - hard"
)
PHASE_2=(
  "regismcan-match-hard regismcan-match hard synthetic asl 64 30 0.0005 0 match - easy hard"
)
PHASE_3=(
  "regismcan-match-hard2 regismcan-match hard synthetic asl 64 30 0.0003 1 $WEIGHTS/regismcan-match-hard.safetensors - hard"
  "matcher-hard2 matcher hard synthetic ce 64 30 0.0005 1 $WEIGHTS/matcher-hard.safetensors - easy hard"
)
PHASE_4=(  # from the float32 best checkpoints of phase 3's runs
  "regismcan-match-easy2 regismcan-match easy synthetic asl 64 30 0.0003 2 $RUNS/regismcan-match-hard2/best.safetensors - easy"
  "matcher-hard3 matcher hard synthetic ce 64 30 0.0003 3 $RUNS/matcher-hard2/best.safetensors - easy hard"
  "matcher-histology3 matcher histology synthetic ce 64 30 0.0005 3 $RUNS/matcher-hard2/best.safetensors --slice-contrast=same histology"
)
PHASE_5=(  # from the files phase 4 shipped; the histology run is a curriculum (it did not win: the file stays)
  "matcher-hard4 matcher hard synthetic ce 64 30 0.0002 4 $WEIGHTS/matcher-hard.safetensors - easy hard"
  "matcher-histology4 matcher histology synthetic ce 64 30 0.0003 4 $WEIGHTS/matcher-hard.safetensors --slice-contrast=same,--severity-ramp=800 histology"
)
PHASE_6=(  # regismcan-match composed again from the matcher phase 5 shipped, and the shipped file continued (neither won: the file stays)
  "regismcan-match-hard3 regismcan-match hard synthetic asl 64 30 0.0005 5 match - hard"
  "regismcan-match-hard4 regismcan-match hard synthetic asl 64 25 0.0002 6 $WEIGHTS/regismcan-match-hard.safetensors - hard"
)
PHASE_7=(  # experiments from the shipped hard matcher (neither won; PROTOCOL section 9): the matcher widened with
  # ring means ("rings": scripts/warm_start_matcher_rings.py; not registered, so nothing to ship), and a
  # histology run whose subjects each draw their degradations' strength from U(0, 1)
  "matcher-rings-hard baselines.matcher:create_rings hard synthetic ce 64 30 0.0003 7 rings -"
  "matcher-histology-mix matcher histology synthetic ce 64 30 0.0003 8 $WEIGHTS/matcher-hard.safetensors --slice-contrast=same,--severity-mix histology"
)

learned() {  # run model track source loss batch minutes lr seed start options shipped-tracks...
  local run=$1 m=$2 t=$3 source=$4 loss=$5 batch=$6 minutes=$7 lr=$8 seed=$9 start=${10} options=${11} dir="$RUNS/$1" extra=""
  shift 11
  mkdir -p "$dir"
  if [[ $start == rings ]]; then
    python scripts/warm_start_matcher_rings.py --matcher "$WEIGHTS/matcher-$t.safetensors" --out "$RUNS/$run-init.safetensors"
    extra=" --init-from $RUNS/$run-init.safetensors"
  elif [[ $start == match ]]; then
    python scripts/warm_start_regismcan_match.py --matcher "$WEIGHTS/matcher-$t.safetensors" --out "$RUNS/$run-init.safetensors" --seed "$seed"
    extra=" --init-from $RUNS/$run-init.safetensors"
  elif [[ $start != - ]]; then
    cp "$start" "$RUNS/$run-init.safetensors"
    extra=" --init-from $RUNS/$run-init.safetensors"
  fi
  if [[ $options != - ]]; then
    extra="$extra ${options//,/ }"
  fi
  local cmd="atom-bench train --model $m --track $t --source $source --loss $loss --batch-size $batch --epochs 1000 --steps-per-epoch 50 --lr $lr --seed $seed --max-minutes $minutes$extra --out $dir"
  echo "OMP_NUM_THREADS=1 $cmd" > "$dir/command.txt"
  $cmd > "$dir.txt" 2>&1
  for shipped in "$@"; do
    python -c "from atom_bench.models.shipping import ship; print('$shipped:', ship('$m', '$shipped', '$dir/best.safetensors', '$WEIGHTS/$m-$shipped.safetensors') or 'written (nothing shipped before)')" >> "$dir.txt"
  done
}

run_all() {  # recipes...: two learned runs at a time, the next as soon as one finishes
  local recipe
  for recipe in "$@"; do
    read -r -a fields <<< "$recipe"
    if [[ -n $ONLY && " $ONLY " != *" ${fields[1]} "* ]]; then
      continue
    fi
    while (($(jobs -rp | wc -l) >= 2)); do wait -n; done
    learned "${fields[@]}" &
  done
  wait
}

mkdir -p "$RUNS" "$WEIGHTS"
run_all "${PHASE_1[@]}"
run_all "${PHASE_2[@]}"  # from the weights the first phase shipped
run_all "${PHASE_3[@]}"
run_all "${PHASE_4[@]}"
run_all "${PHASE_5[@]}"
run_all "${PHASE_6[@]}"
run_all "${PHASE_7[@]}"
if [[ -z $ONLY || " $ONLY " == *" prior "* ]]; then
  for t in paper easy hard histology; do  # "training" the prior is counting the train split's labels
    atom-bench train --model prior --track "$t" --out "$RUNS/prior-$t" > "$RUNS/prior-$t.txt" 2>&1
    cp "$RUNS/prior-$t/best.safetensors" "$WEIGHTS/prior-$t.safetensors"
  done
fi
python scripts/write_model_cards.py --runs "$RUNS" --machine "${MACHINE:-$(uname -m) CPU, one torch thread per run, two runs at a time}"
