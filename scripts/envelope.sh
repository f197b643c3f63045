#!/usr/bin/env bash
# The frontiers of a model-size family built with warmup-stable-decay branches
# (conf/experiment/envelope.yaml, mltrain/train/branch.py), resumable:
#
#   OMP_NUM_THREADS=1 bash scripts/envelope.sh OUT [OVERRIDES...]
#
# For each size x lr: one trunk at the largest budget (OUT/<size>_lr<lr>_trunk, flops_scale
# $TOP, keeping its state at each budget of $POINTS), then one short decay per smaller budget
# off it (OUT/<size>_lr<lr>_s<scale>, train.branch_from). Then:
#   mltrain-compare METHOD_RUNS --frontier OUT
# Settings (environment): FAMILY=depth|width, SIZES (overrides, one per size), LRS, TOP, POINTS,
# SEEDS; OVERRIDES go to every run (e.g. model=tiny train.target_flops=4e9 for a quick check).
set -euo pipefail
OUT=${1:?usage: scripts/envelope.sh OUT [OVERRIDES...]}; shift
FAMILY=${FAMILY:-depth}
if [ "$FAMILY" = width ]; then
  SIZES=${SIZES:-"model=width64 model=width96 model=width128 model=width192 model=width256"}
else
  SIZES=${SIZES:-"model.n_layer=2 model.n_layer=3 model.n_layer=4 model.n_layer=6 model.n_layer=12"}
fi
LRS=${LRS:-"1e-3 2e-3 4e-3"}
TOP=${TOP:-2}
POINTS=${POINTS:-"0.25 0.5 1"}
SEEDS=${SEEDS:-0}
COMMON="$*"
mkdir -p "$OUT"
source "$(dirname "$0")/runlib.sh"
points="[$(echo $POINTS | tr ' ' ',')]"
for size in $SIZES; do
  for lr in $LRS; do
    for seed in $SEEDS; do
      tag="$(echo "$size" | tr -c 'a-zA-Z0-9\n' '_' | sed 's/^model_//')_lr${lr}_seed${seed}"
      run "${tag}_trunk" experiment=envelope "$size" optimizer.lr="$lr" train.seed="$seed" \
        train.flops_scale="$TOP" "train.branch_points=$points"
      for s in $POINTS; do
        run "${tag}_s${s}" experiment=envelope "$size" optimizer.lr="$lr" train.seed="$seed" \
          train.flops_scale="$s" "train.branch_points=[]" "train.branch_from=$OUT/${tag}_trunk"
      done
    done
  done
done
echo "judge: mltrain-compare METHOD_RUNS --frontier $OUT"
