#!/usr/bin/env bash
# The experiments behind docs/results.md (second edition: every scheme against the tuned
# single-level frontier, DESIGN.md section 8). Each part is one or more Hydra multiruns into
# $OUT/<name>; a finished one is skipped when the script runs again, an interrupted one continues
# (train.resume=auto). Run from the repository root, single-threaded, two parts at a time:
#   OMP_NUM_THREADS=1 bash scripts/study.sh OUT part1 part2 ... &
#   OMP_NUM_THREADS=1 bash scripts/study.sh OUT part3 ... &
# `bash scripts/study.sh OUT list` prints the parts. CPU runs repeat bit for bit only at the same
# thread count: the committed numbers were measured with OMP_NUM_THREADS=1.
# (bash reads a script while it runs: run a copy if you edit this file meanwhile.)
set -euo pipefail
OUT=${1:-outputs/study}
shift || true
COMMON="logger=none train.progress=false"
mkdir -p "$OUT"

sweep() {  # sweep NAME OVERRIDES...
  local name=$1; shift
  if [ -e "$OUT/$name/.done" ]; then echo "== $name: done"; return; fi
  echo "== $name: mltrain -m $* $COMMON ($(date +%H:%M))"
  if mltrain -m "$@" $COMMON "hydra.sweep.dir=$OUT/$name" train.resume=auto; then
    touch "$OUT/$name/.done"
  else
    echo "!! $name: some jobs failed, diverged or were interrupted; run again to continue"
  fi
}

# Reference budget: the paper recipe's training FLOPs at CPU scale (experiment=paper_small,
# multilevel even_odd m=20 w=5, 300 fine steps): 19971597926400 FLOPs with head.
B=19971597926400
Q=$((B / 4)); H=$((B / 2)); D=$((B * 2)); F=$((B * 4))
# Frontier runs: single-level, cosine schedule completed at each run's own budget, 10 warm-up
# steps, validation every 25 fine steps (evaluation does not change training).
FR="experiment=paper_small coarsening=none train.eval_every=25"
SGD_LRS=0.25,0.5,1.0
ADAMW_LRS=2e-3,4e-3,8e-3
# Coarse-to-fine training and random sub-paths (issue 16): AdamW lr 2e-3, warmup-stable-decay
# over the iterations of all stages, the reference budget, no V-cycle (the presets grow,
# grow_recursive and raptr set coarsening.window=0), 3 seeds. Each run takes about as long as a
# single-level run at the reference budget.
GR="optimizer.lr=2e-3 train.target_flops=$B train.seed=0,1,2"

for part in "$@"; do
  case $part in
  list) grep -E '^  [a-z0-9_]+\)' "$0" | sed 's/).*//' ;;
  frontier_sgd_tune)  # SGD: 4 budgets x 3 learning rates, seed 0
    for b in $B $H $Q $D; do sweep frontier_sgd_tune_$b $FR optimizer=sgd train.target_flops=$b optimizer.lr=$SGD_LRS; done ;;
  frontier_adamw_tune)  # AdamW: 4 budgets x 3 learning rates, seed 0
    for b in $B $H $Q $D; do sweep frontier_adamw_tune_$b $FR optimizer=adamw train.target_flops=$b optimizer.lr=$ADAMW_LRS; done ;;
  frontier_sgd_ext)  # the tuning found lr 0.25 (the grid's edge) best at the reference budget
    for b in $B $H $Q $D; do sweep frontier_sgd_ext_$b $FR optimizer=sgd train.target_flops=$b optimizer.lr=0.125; done ;;
  frontier_adamw_ext)  # ... and AdamW lr 2e-3 (the edge): one more value below
    for b in $B $H $Q $D; do sweep frontier_adamw_ext_$b $FR optimizer=adamw train.target_flops=$b optimizer.lr=1e-3; done ;;
  recipe_sgd)  # the paper's recipe at CPU scale (SGD lr 0.5), 3 seeds
    sweep recipe_sgd experiment=paper_small train.seed=0,1,2 ;;
  recipe_adamw)  # the same with AdamW (its default lr 1e-3), 3 seeds
    sweep recipe_adamw experiment=paper_small optimizer=adamw train.seed=0,1,2 ;;
  grow_init)  # the growth operators: coarse_b (6 blocks, h=2) for 80 % of the budget, then all 12
    sweep grow_init experiment=grow $GR coarsening.grow_init=zero,ode,stack,keep ;;
  grow_shares)  # the coarse stage's share: 0.5, 0.6, 0.7, 0.9 (0.8 is in grow_init)
    sweep grow_shares experiment=grow $GR coarsening.grow_init=zero 'coarsening.stage_shares=[0.5,0.5],[0.6,0.4],[0.7,0.3],[0.9,0.1]' ;;
  grow_recursive)  # 3 -> 6 -> 12 blocks, a growth at each change: shares 0.4/0.4/0.2 and 0.3/0.3/0.4
    sweep grow_recursive experiment=grow_recursive $GR coarsening.grow_init=zero 'coarsening.stage_shares=[0.4,0.4,0.2],[0.3,0.3,0.4]'
    sweep grow_recursive_ode experiment=grow_recursive $GR coarsening.grow_init=ode ;;
  small_models)  # the control: is it only a smaller model? single-level 6 and 3 blocks, wsd
    sweep small_models $FR optimizer=adamw schedule=wsd $GR model.n_layer=6,3 ;;
  raptr)  # random paths of 6, 8, 10, 12 blocks (RaPTr), middle blocks scaled by (N-2)/(p-2) or not
    sweep raptr experiment=raptr $GR coarsening.raptr_scale=inverse,none ;;
  grow_cosine)  # the schedule: cosine over the iterations of both stages instead of wsd
    sweep grow_cosine experiment=grow $GR schedule=cosine ;;
  grow_warmup)  # LR re-warm-up of the new blocks over 10 iterations after the growth
    sweep grow_warmup experiment=grow $GR coarsening.grow_warmup=10 ;;
  frontier_adamw_wsd)  # the schedule control: single-level AdamW with wsd at the 4 budgets, seed 0
    for b in $B $H $Q $D; do sweep frontier_adamw_wsd_$b $FR optimizer=adamw schedule=wsd train.target_flops=$b optimizer.lr=1e-3,2e-3,4e-3; done ;;
  frontier_adamw_wsd_seeds)  # ... seeds 1, 2 at lr 2e-3
    for b in $B $H $Q $D; do sweep frontier_adamw_wsd_seeds_$b $FR optimizer=adamw schedule=wsd train.target_flops=$b optimizer.lr=2e-3 train.seed=1,2; done ;;
  *) echo "unknown part: $part ($0 OUT list)"; exit 2 ;;
  esac
done
