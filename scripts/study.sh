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
. "$(dirname "$0")/runlib.sh"  # run, sweep

# Reference budget: the paper recipe's training FLOPs at CPU scale (experiment=paper_small,
# multilevel even_odd m=20 w=5, 300 fine steps): 19971597926400 FLOPs with head.
B=19971597926400
Q=$((B / 4)); H=$((B / 2)); D=$((B * 2)); F=$((B * 4))
# Frontier runs: single-level, cosine schedule completed at each run's own budget, 10 warm-up
# steps, validation every 25 fine steps (evaluation does not change training).
FR="experiment=paper_small coarsening=none train.eval_every=25"
SGD_LRS=0.25,0.5,1.0
ADAMW_LRS=2e-3,4e-3,8e-3
# Issue 15 (better coarse corrections, mltrain/schemes/corrections.py): AdamW at the frontier's best lr
# at the reference budget; SGD at paper_small's lr 0.5 (the recipe_sgd control's).
ADAMW="optimizer=adamw optimizer.lr=2e-3"
SGD="optimizer=sgd"
# the issue's hint (one seed, lr 3e-3: 5.197 at 2.593e13 FLOPs): delta 1, 20 coarse steps per
# level in each of the first 10 fine iterations, no weight decay, 20 warm-up steps
HINT="experiment=paper_small coarsening.vcycle.delta=1 coarsening.vcycle.window=10 optimizer.weight_decay=0 schedule.warmup_steps=20"
# the best combination of the probes (single seed, see the issue 15 note): on top of the hint,
# delta line-searched on 4 held-aside sequences (7 forwards of 512 tokens per phase) and outer
# momentum 0.5
CORR_BEST="coarsening.corrections.line_search=parabola coarsening.corrections.line_search_max=4 coarsening.corrections.line_search_batch=4 coarsening.corrections.momentum=0.5"
# Coarse-to-fine training and random sub-paths (issue 16): AdamW lr 2e-3, warmup-stable-decay
# over the iterations of all stages, the reference budget, no V-cycle (the presets grow,
# grow_recursive and raptr set coarsening.vcycle.window=0), 3 seeds. Each run takes about as long as a
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
  frontier_adamw_seeds)  # seeds 1, 2 at the best lr (2e-3) of budgets 1/4, 1/2, 1
    for b in $Q $H $B; do sweep frontier_adamw_seeds_$b $FR optimizer=adamw train.target_flops=$b optimizer.lr=2e-3 train.seed=1,2; done ;;
  recipe_sgd)  # the paper's recipe at CPU scale (SGD lr 0.5), 3 seeds
    sweep recipe_sgd experiment=paper_small train.seed=0,1,2 ;;
  recipe_adamw)  # the same with AdamW (its default lr 1e-3), 3 seeds
    sweep recipe_adamw experiment=paper_small optimizer=adamw train.seed=0,1,2 ;;
  patch_stage)  # issue 17: patch level (all blocks, K tokens per position) for a FLOPs share lambda, then token level (keep), AdamW lr 2e-3, K 2,4 x lambda 0.5,0.67 x 3 seeds (12 runs)
    for l in 0.5,0.5 0.67,0.33; do sweep patch_stage_l${l%%,*} experiment=patch_stage optimizer.lr=2e-3 train.target_flops=$B coarsening.patch.size=2,4 "coarsening.stages.shares=[$l]" train.seed=0,1,2; done ;;
  patch_depth)  # issue 17: patch x half depth (coarse_b: blocks 0,2,..,10, h=2, K=4) for lambda 0.5,0.67, then fine (ode growth), AdamW lr 2e-3, 3 seeds (6 runs)
    for l in 0.5,0.5 0.67,0.33; do sweep patch_depth_l${l%%,*} experiment=patch_depth optimizer.lr=2e-3 train.target_flops=$B "coarsening.stages.shares=[$l]" train.seed=0,1,2; done ;;
  patch_short)  # issue 17: short patch stages, the least bad in the probes: K 2,4 at lambda 0.2 of the FLOPs, and K=4 at 0.33 (the paper's 2/3 of the data), 3 seeds (9 runs)
    sweep patch_short_l0.2 experiment=patch_stage optimizer.lr=2e-3 train.target_flops=$B coarsening.patch.size=2,4 "coarsening.stages.shares=[0.2,0.8]" train.seed=0,1,2
    sweep patch_paper_k4 experiment=patch_stage optimizer.lr=2e-3 train.target_flops=$B coarsening.patch.size=4 "coarsening.stages.shares=[0.33,0.67]" train.seed=0,1,2 ;;
  patch_wsd)  # issue 17: the same with the warmup-stable-decay schedule (the token stage starts at the peak lr), K=2 lambda 0.2,0.5, and its single-level control (not a frontier run), 3 seeds (9 runs)
    for l in 0.2,0.8 0.5,0.5; do sweep patch_wsd_l${l%%,*} experiment=patch_stage schedule=wsd optimizer.lr=2e-3 train.target_flops=$B coarsening.patch.size=2 "coarsening.stages.shares=[$l]" train.seed=0,1,2; done
    sweep single_wsd experiment=paper_small coarsening=none optimizer=adamw schedule=wsd optimizer.lr=2e-3 train.target_flops=$B train.eval_every=25 train.seed=0,1,2 ;;
  corr_screen_adamw)  # issue 15, each mechanism's preset sweep with AdamW, seed 0 (14 runs)
    for m in tau placement line_search momentum; do sweep corr_screen_adamw_$m experiment=corrections_$m $ADAMW; done ;;
  corr_screen_sgd)  # the same with SGD (14 runs)
    for m in tau placement line_search momentum; do sweep corr_screen_sgd_$m experiment=corrections_$m $SGD; done ;;
  corr_recipe_adamw)  # control: the paper recipe with AdamW at lr 2e-3, 3 seeds
    sweep corr_recipe_adamw experiment=paper_small $ADAMW train.seed=0,1,2 ;;
  corr_alone_adamw)  # each mechanism alone on the recipe, its probe-chosen setting, 3 seeds (12 runs)
    sweep corr_alone_adamw_tau experiment=paper_small $ADAMW coarsening.corrections.tau=cheap train.seed=0,1,2
    sweep corr_alone_adamw_placement experiment=paper_small $ADAMW coarsening.vcycle.coarse_steps=10 coarsening.vcycle.start=10 coarsening.vcycle.every=30 coarsening.vcycle.window_fraction=1 train.seed=0,1,2
    sweep corr_alone_adamw_line_search experiment=paper_small $ADAMW coarsening.corrections.line_search=parabola coarsening.corrections.line_search_max=4 coarsening.corrections.line_search_batch=4 train.seed=0,1,2
    sweep corr_alone_adamw_momentum experiment=paper_small $ADAMW coarsening.corrections.momentum=0.6 train.seed=0,1,2 ;;
  corr_hint_adamw)  # the issue's hint at lr 2e-3, and with each mechanism added, 3 seeds (15 runs)
    sweep corr_hint_adamw $HINT $ADAMW train.seed=0,1,2
    sweep corr_hint_adamw_line_search $HINT $ADAMW coarsening.corrections.line_search=parabola coarsening.corrections.line_search_max=4 coarsening.corrections.line_search_batch=4 train.seed=0,1,2
    sweep corr_hint_adamw_momentum $HINT $ADAMW coarsening.corrections.momentum=0.5 train.seed=0,1,2
    sweep corr_hint_adamw_tau $HINT $ADAMW coarsening.corrections.tau=cheap train.seed=0,1,2
    sweep corr_hint_adamw_placement $HINT $ADAMW coarsening.vcycle.start=20 coarsening.vcycle.every=2 coarsening.vcycle.window=40 train.seed=0,1,2 ;;
  corr_best_adamw)  # the probes' best combination, 3 seeds
    sweep corr_best_adamw $HINT $ADAMW $CORR_BEST train.seed=0,1,2 ;;
  corr_best_sgd)  # the same combination with SGD, and the hint alone with SGD, 3 seeds each
    sweep corr_hint_sgd $HINT $SGD train.seed=0,1,2
    sweep corr_best_sgd $HINT $SGD $CORR_BEST train.seed=0,1,2 ;;
  grow_init)  # the growth operators: coarse_b (6 blocks, h=2) for 80 % of the budget, then all 12
    sweep grow_init experiment=grow $GR coarsening.stages.grow_init=zero,ode,stack,keep ;;
  grow_shares)  # the coarse stage's share: 0.5, 0.6, 0.7, 0.9 (0.8 is in grow_init)
    sweep grow_shares experiment=grow $GR coarsening.stages.grow_init=zero 'coarsening.stages.shares=[0.5,0.5],[0.6,0.4],[0.7,0.3],[0.9,0.1]' ;;
  grow_recursive)  # 3 -> 6 -> 12 blocks, a growth at each change: shares 0.4/0.4/0.2 and 0.3/0.3/0.4
    sweep grow_recursive experiment=grow_recursive $GR coarsening.stages.grow_init=zero 'coarsening.stages.shares=[0.4,0.4,0.2],[0.3,0.3,0.4]'
    sweep grow_recursive_ode experiment=grow_recursive $GR coarsening.stages.grow_init=ode ;;
  small_models)  # the control: is it only a smaller model? single-level 6 and 3 blocks, wsd
    sweep small_models $FR optimizer=adamw schedule=wsd $GR model.n_layer=6,3 ;;
  raptr)  # random paths of 6, 8, 10, 12 blocks (RaPTr), middle blocks scaled by (N-2)/(p-2) or not
    sweep raptr experiment=raptr $GR coarsening.raptr.scale=inverse,none ;;
  grow_cosine)  # the schedule: cosine over the iterations of both stages instead of wsd
    sweep grow_cosine experiment=grow $GR schedule=cosine ;;
  grow_warmup)  # LR re-warm-up of the new blocks over 10 iterations after the growth
    sweep grow_warmup experiment=grow $GR coarsening.stages.grow_warmup=10 ;;
  frontier_adamw_wsd)  # the schedule control: single-level AdamW with wsd at the 4 budgets, seed 0
    for b in $B $H $Q $D; do sweep frontier_adamw_wsd_$b $FR optimizer=adamw schedule=wsd train.target_flops=$b optimizer.lr=1e-3,2e-3,4e-3; done ;;
  frontier_adamw_wsd_seeds)  # ... seeds 1, 2 at lr 2e-3
    for b in $B $H $Q $D; do sweep frontier_adamw_wsd_seeds_$b $FR optimizer=adamw schedule=wsd train.target_flops=$b optimizer.lr=2e-3 train.seed=1,2; done ;;
  *) echo "unknown part: $part ($0 OUT list)"; exit 2 ;;
  esac
done
