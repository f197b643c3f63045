#!/usr/bin/env bash
# The experiments behind docs/results.md (second edition: every scheme against the tuned
# single-level frontier, DESIGN.md section 8). Each item is one run (or one Hydra multirun for the
# frontier's learning-rate grids) into $OUT/<name>; a finished one is skipped when the script
# runs again, an interrupted one continues (train.resume=auto). From the repository root,
# single-threaded, two streams at a time (CPU runs repeat bit for bit only at the same thread
# count; every committed number was measured with OMP_NUM_THREADS=1):
#   OMP_NUM_THREADS=1 bash scripts/results.sh outputs/study frontier_tune recipe_adamw recipe_sgd &
#   OMP_NUM_THREADS=1 bash scripts/results.sh outputs/study frontier_wsd growth controls corrections &
#   wait; bash scripts/results.sh outputs/study compare       # writes docs/results/second_edition
# `bash scripts/results.sh OUT list` prints the parts. Run a copy if you edit this file meanwhile
# (bash reads a script as it runs).
set -euo pipefail
OUT=${1:-outputs/study}
shift || true
DOCS=${DOCS:-docs/results/second_edition}
COMMON="logger=none train.progress=false train.eval_every=25"
mkdir -p "$OUT"
. "$(dirname "$0")/runlib.sh"  # run, sweep

# Reference budget B: the paper recipe's training FLOPs at CPU scale (experiment=paper_small,
# even_odd, 300 fine steps, 20 coarse steps per level in the first 5): 19971597926400 with head.
B=19971597926400
Q=$((B / 4)); H=$((B / 2)); D=$((B * 2))
FR="experiment=paper_small coarsening=none"
WSD="$FR optimizer=adamw schedule=wsd train.target_flops=$B"      # + train.flops_scale
GROW="experiment=grow_recursive coarsening.stages.grow_init=zero optimizer.lr=2e-3"  # 3 -> 6 -> 12 blocks
HINT="experiment=paper_small optimizer=adamw optimizer.lr=2e-3 coarsening.vcycle.delta=1 coarsening.vcycle.window=10 optimizer.weight_decay=0 schedule.warmup_steps=20"

for part in "$@"; do
  case $part in
  list) grep -E '^  [a-z0-9_]+\)' "$0" | sed 's/).*//' ;;
  frontier_tune)  # cosine schedule: SGD lr 0.25,0.5,1 and AdamW lr 2e-3,4e-3,8e-3 at 4 budgets, seed 0
    for b in $B $H $Q $D; do
      sweep frontier_sgd_tune_$b $FR optimizer=sgd train.target_flops=$b optimizer.lr=0.25,0.5,1.0
      sweep frontier_adamw_tune_$b $FR optimizer=adamw train.target_flops=$b optimizer.lr=2e-3,4e-3,8e-3
    done ;;
  frontier_wsd)  # the schedule is tuned too: AdamW warmup-stable-decay, lr 1e-3,2e-3,4e-3, seeds at the best
    run wsd_H_lr2e-3_s0 $WSD train.flops_scale=0.5 optimizer.lr=2e-3 train.seed=0
    for s in 0 1 2; do run wsd_Q_lr2e-3_s$s $WSD train.flops_scale=0.25 optimizer.lr=2e-3 train.seed=$s; done
    run wsd_Q_lr1e-3_s0 $WSD train.flops_scale=0.25 optimizer.lr=1e-3 train.seed=0
    run wsd_Q_lr4e-3_s0 $WSD train.flops_scale=0.25 optimizer.lr=4e-3 train.seed=0
    run wsd_H_lr1e-3_s0 $WSD train.flops_scale=0.5 optimizer.lr=1e-3 train.seed=0
    for s in 1 2; do run wsd_H_lr2e-3_s$s $WSD train.flops_scale=0.5 optimizer.lr=2e-3 train.seed=$s; done
    for s in 0 1 2; do run wsd_B_lr2e-3_s$s $WSD train.flops_scale=1 optimizer.lr=2e-3 train.seed=$s; done
    run wsd_D_lr2e-3_s0 $WSD train.flops_scale=2 optimizer.lr=2e-3 train.seed=0 ;;
  recipe_adamw)  # the paper's recipe at CPU scale with AdamW (lr 1e-3), 3 seeds; and scaled to
                 # 1/4 and 1/2 of B (fine steps and coarse steps per level scaled alike: the
                 # recipe's fixed coarse work does not fit a 1/4 budget sized by target_flops)
    for s in 0 1 2; do run recipe_adamw_s$s experiment=paper_small optimizer=adamw train.seed=$s; done
    run recipe_adamw_Q_s0 experiment=paper_small optimizer=adamw train.steps=75 coarsening.vcycle.coarse_steps=5 train.seed=0
    run recipe_adamw_H_s0 experiment=paper_small optimizer=adamw train.steps=150 coarsening.vcycle.coarse_steps=10 train.seed=0 ;;
  recipe_sgd)  # the same with SGD (lr 0.5), 3 seeds
    for s in 0 1 2; do run recipe_sgd_s$s experiment=paper_small train.seed=$s; done ;;
  growth)  # the best coarse-to-fine scheme: recursive 3 -> 6 -> 12 blocks, 3 seeds at Q and B, H, D
    for s in 0 1 2; do run grow_rec442_Q_s$s $GROW train.flops_scale=0.25 train.seed=$s; done
    for s in 0 1 2; do run grow_rec442_H_s$s $GROW train.flops_scale=0.5 train.seed=$s; done
    for s in 0 1 2; do run grow_rec442_B_s$s $GROW train.flops_scale=1 train.seed=$s; done
    run grow_rec442_D_s0 $GROW train.flops_scale=2 train.seed=0 ;;
  width_probe)  # width schemes (Zou et al. 2024) at Q, one seed each (AdamW lr 2e-3, wsd, as the
                # growth presets): the width V-cycle, width growth, width x depth growth
    run width_vcycle_Q_s0 experiment=width_vcycle train.flops_scale=0.25 train.seed=0
    run grow_width_Q_s0 experiment=grow_width train.flops_scale=0.25 train.seed=0
    run grow_width_depth_Q_s0 experiment=grow_width_depth train.flops_scale=0.25 train.seed=0 ;;
  width_seeds_q)  # the best width probe (width x depth growth) at Q, seeds 1 and 2, then B seed 2
    for s in 1 2; do run grow_width_depth_Q_s$s experiment=grow_width_depth train.flops_scale=0.25 train.seed=$s; done
    run grow_width_depth_B_s2 experiment=grow_width_depth train.flops_scale=1 train.seed=2 ;;
  width_seeds_b)  # (a second stream) the best width probe at B, seeds 0 and 1
    for s in 0 1; do run grow_width_depth_B_s$s experiment=grow_width_depth train.flops_scale=1 train.seed=$s; done ;;
  width_compare)  # the width runs judged against the 12-block frontier and the envelope over sizes
                  # (from the committed second-edition CSVs; docs/results/second_edition/width)
    python scripts/envelope_second_edition.py --out "$DOCS/width" --runs \
      "$OUT"/width_vcycle_Q_s0 "$OUT"/grow_width_Q_s0 "$OUT"/grow_width_depth_Q_s{0,1,2} \
      "$OUT"/grow_width_depth_B_s{0,1,2} ;;
  controls)  # is it only a smaller model? single-level 6 and 3 blocks, wsd, AdamW lr 2e-3
    run small6_wsd_Q_s0 $WSD train.flops_scale=0.25 optimizer.lr=2e-3 model.n_layer=6 train.seed=0
    run small3_wsd_Q_s0 $WSD train.flops_scale=0.25 optimizer.lr=2e-3 model.n_layer=3 train.seed=0
    run small6_wsd_H_s0 $WSD train.flops_scale=0.5 optimizer.lr=2e-3 model.n_layer=6 train.seed=0
    run small3_wsd_B_s0 $WSD train.flops_scale=1 optimizer.lr=2e-3 model.n_layer=3 train.seed=0 ;;
  corrections)  # the suggested recipe (delta 1, window 10, no weight decay, 20 warm-up steps), and the
                # single-level run with the same settings and FLOPs (its 2.593e13)
    run corr_hint_s0 $HINT train.seed=0
    run hint_single_s0 $HINT coarsening=none train.target_flops=25930865049600 train.seed=0 ;;
  compare)  # the judge: every scheme against the AdamW frontier (cosine and wsd), SGD's against SGD's;
            # $OUT/probes holds copies of the schemes' single-seed probes (scripts/archive/study.sh parts)
    mkdir -p "$DOCS"
    F_ADAMW=("$OUT"/frontier_adamw_tune_*/ "$OUT"/wsd_*/)
    mltrain-compare "$OUT"/grow_rec442_*/ "$OUT"/recipe_adamw_*/ --frontier "${F_ADAMW[@]}" --out "$DOCS/adamw"
    mltrain-compare "$OUT"/small*/ --frontier "${F_ADAMW[@]}" --out "$DOCS/controls"
    # the growth against single-level 3-block models (a frontier of one lr and seed: a bound on
    # what a frontier over model depth would say)
    mltrain-compare "$OUT"/grow_rec442_*/ --frontier "$OUT"/small3_*/ --out "$DOCS/vs_3_blocks"
    mltrain-compare "$OUT"/corr_hint_*/ "$OUT"/hint_single_*/ --frontier "${F_ADAMW[@]}" --out "$DOCS/corrections"
    mltrain-compare "$OUT"/recipe_sgd_*/ --frontier "$OUT"/frontier_sgd_tune_*/ --out "$DOCS/sgd"
    if [ -d "$OUT/probes" ]; then
      mltrain-compare "$OUT"/probes/ --frontier "${F_ADAMW[@]}" --out "$DOCS/probes"
      for d in "$OUT"/probes/*/; do echo "$(basename "$d"): $(tr '\n' ' ' < "$d/.hydra/overrides.yaml")"; done > "$DOCS/probes/commands.txt"
    fi
    python scripts/headline_table.py "$DOCS"/{adamw,controls,corrections,sgd}/frontier.csv --runs "$OUT" > "$DOCS/headline.md"
    python scripts/plot_scaling.py "$DOCS"/{adamw,controls}/frontier.csv \
      --schemes grow_rec442 recipe_adamw small3_wsd small6_wsd --out "$DOCS/r_vs_budget.png" ;;
  *) echo "unknown part: $part ($0 OUT list)"; exit 2 ;;
  esac
done
