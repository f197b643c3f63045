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
  frontier_adamw_seeds)  # seeds 1, 2 at the best lr (2e-3) of budgets 1/4, 1/2, 1
    for b in $Q $H $B; do sweep frontier_adamw_seeds_$b $FR optimizer=adamw train.target_flops=$b optimizer.lr=2e-3 train.seed=1,2; done ;;
  frontier_adamw_wsd)  # the schedule is tuned too: warmup-stable-decay single-level runs
    for b in $Q $B $H $D; do sweep frontier_adamw_wsd_$b $FR optimizer=adamw schedule=wsd train.target_flops=$b optimizer.lr=2e-3,4e-3; done ;;
  recipe_sgd)  # the paper's recipe at CPU scale (SGD lr 0.5), 3 seeds
    sweep recipe_sgd experiment=paper_small train.seed=0,1,2 ;;
  recipe_adamw)  # the same with AdamW (its default lr 1e-3), 3 seeds
    sweep recipe_adamw experiment=paper_small optimizer=adamw train.seed=0,1,2 ;;
  patch_stage)  # issue 17: patch level (all blocks, K tokens per position) for a FLOPs share lambda, then token level (keep), AdamW lr 2e-3, K 2,4 x lambda 0.5,0.67 x 3 seeds (12 runs)
    for l in 0.5,0.5 0.67,0.33; do sweep patch_stage_l${l%%,*} experiment=patch_stage optimizer.lr=2e-3 train.target_flops=$B coarsening.patch_size=2,4 "coarsening.stage_shares=[$l]" train.seed=0,1,2; done ;;
  patch_depth)  # issue 17: patch x half depth (coarse_b: blocks 0,2,..,10, h=2, K=4) for lambda 0.5,0.67, then fine (ode growth), AdamW lr 2e-3, 3 seeds (6 runs)
    for l in 0.5,0.5 0.67,0.33; do sweep patch_depth_l${l%%,*} experiment=patch_depth optimizer.lr=2e-3 train.target_flops=$B "coarsening.stage_shares=[$l]" train.seed=0,1,2; done ;;
  patch_short)  # issue 17: short patch stages, the least bad in the probes: K 2,4 at lambda 0.2 of the FLOPs, and K=4 at 0.33 (the paper's 2/3 of the data), 3 seeds (9 runs)
    sweep patch_short_l0.2 experiment=patch_stage optimizer.lr=2e-3 train.target_flops=$B coarsening.patch_size=2,4 "coarsening.stage_shares=[0.2,0.8]" train.seed=0,1,2
    sweep patch_paper_k4 experiment=patch_stage optimizer.lr=2e-3 train.target_flops=$B coarsening.patch_size=4 "coarsening.stage_shares=[0.33,0.67]" train.seed=0,1,2 ;;
  patch_wsd)  # issue 17: the same with the warmup-stable-decay schedule (the token stage starts at the peak lr), K=2 lambda 0.2,0.5, and its single-level control (not a frontier run), 3 seeds (9 runs)
    for l in 0.2,0.8 0.5,0.5; do sweep patch_wsd_l${l%%,*} experiment=patch_stage schedule=wsd optimizer.lr=2e-3 train.target_flops=$B coarsening.patch_size=2 "coarsening.stage_shares=[$l]" train.seed=0,1,2; done
    sweep single_wsd experiment=paper_small coarsening=none optimizer=adamw schedule=wsd optimizer.lr=2e-3 train.target_flops=$B train.eval_every=25 train.seed=0,1,2 ;;
  *) echo "unknown part: $part ($0 OUT list)"; exit 2 ;;
  esac
done
