#!/usr/bin/env bash
# The experiments behind docs/results.md. Each part is one or more Hydra multiruns into
# $OUT/<name>; a finished one is skipped when the script is run again.
#   bash scripts/results.sh [OUT] [sgd] [adamw] [adamw_seeds] [adamw_iso_seeds] [sweeps] [controls]
#   [lr025_seeds] [lr025_iso_seeds] [compare]
#   (default: all)
# The measured run used two single-threaded streams in parallel on 2 cores:
#   OMP_NUM_THREADS=1 bash scripts/results.sh OUT sgd adamw &  OMP_NUM_THREADS=1 bash scripts/results.sh OUT sweeps &
#   wait; bash scripts/results.sh OUT compare
set -euo pipefail
OUT=${1:-outputs/results}
shift || true
PARTS=${*:-sgd adamw adamw_seeds adamw_iso_seeds sweeps controls lr025_seeds lr025_iso_seeds compare}
COMMON="logger=none train.progress=false"
mkdir -p "$OUT"

sweep() {  # sweep NAME OVERRIDES...
  local name=$1; shift
  if [ -e "$OUT/$name/.done" ]; then echo "== $name: done"; return; fi
  echo "== $name: mltrain -m $* $COMMON"
  mltrain -m "$@" $COMMON "hydra.sweep.dir=$OUT/$name" || echo "!! $name: some jobs failed"
  touch "$OUT/$name/.done"
}

# the exact training FLOPs of the multilevel recipe: the budget of the iso-FLOP baselines
B=$(python "$(dirname "$0")/flops_budget.py" --total experiment=paper_small)

for part in $PARTS; do
  case $part in
  sgd)  # the paper's comparison at CPU scale, SGD, 3 seeds: multilevel vs single-level with the
        # same fine steps (the paper's protocol) and with the same total FLOPs (the fair one)
    sweep sgd_multilevel experiment=paper_small train.seed=0,1,2
    sweep sgd_single_same_steps experiment=paper_small coarsening=none train.seed=0,1,2
    sweep sgd_single_iso_flops experiment=paper_small coarsening=none train.target_flops=$B train.seed=0,1,2
    ;;
  adamw)  # the same with AdamW (seed 0), once per optimizer-state policy across levels
    sweep adamw_multilevel experiment=paper_small optimizer=adamw coarsening.optimizer_state=separate,shared,reset
    sweep adamw_single_same_steps experiment=paper_small optimizer=adamw coarsening=none
    sweep adamw_single_iso_flops experiment=paper_small optimizer=adamw coarsening=none train.target_flops=$B
    ;;
  adamw_seeds)  # seeds 1 and 2 of the AdamW comparison (default policy, separate) and its same-steps baseline
    sweep adamw_multilevel_seeds experiment=paper_small optimizer=adamw train.seed=1,2
    sweep adamw_single_same_steps_seeds experiment=paper_small optimizer=adamw coarsening=none train.seed=1,2
    ;;
  adamw_iso_seeds)  # seeds 1 and 2 of the AdamW iso-FLOP baseline
    sweep adamw_single_iso_flops_seeds experiment=paper_small optimizer=adamw coarsening=none train.target_flops=$B train.seed=1,2
    ;;
  sweeps)  # knobs of the scheme (seed 0; delta=0.25, m=20, w=5, even_odd are sgd_multilevel seed 0)
    sweep sweep_delta experiment=paper_small coarsening.delta=0.1,0.5,1.0
    sweep sweep_steps_window experiment=paper_small coarsening.coarse_steps=10,40 coarsening.window=2,10
    sweep ablation_single_coarse experiment=paper_small coarsening=even,odd
    ;;
  controls)  # is the gain the transfer? delta=0 (coarse phases change no parameter, they only
             # consume batches); and the SGD comparison again at half the learning rate
    sweep control_delta0 experiment=paper_small coarsening.delta=0.0
    sweep lr025_multilevel experiment=paper_small optimizer.lr=0.25
    sweep lr025_single_iso_flops experiment=paper_small optimizer.lr=0.25 coarsening=none train.target_flops=$B
    ;;
  lr025_seeds)  # seeds 1 and 2 of the half-learning-rate comparison: multilevel
    sweep lr025_multilevel_seeds experiment=paper_small optimizer.lr=0.25 train.seed=1,2
    ;;
  lr025_iso_seeds)  # ... and its iso-FLOP single-level baseline
    sweep lr025_single_iso_flops_seeds experiment=paper_small optimizer.lr=0.25 coarsening=none train.target_flops=$B train.seed=1,2
    ;;
  compare)  # tables and plots (docs/results/<name>/), each against both single-level baselines
    D=${DOCS:-docs/results}
    mc() { mltrain-compare "$@" --dpi 60; }
    # the job directories of the sweeps NAME* whose train.seed is SEED
    seed_of() { grep -l "^  seed: $2\$" "$OUT"/$1*/*/.hydra/config.yaml | sed 's|/.hydra/config.yaml$||'; }
    S="$OUT/sgd_single_same_steps $OUT/sgd_single_iso_flops"
    mc "$OUT"/sgd_multilevel $S --out "$D/sgd"
    mc "$OUT"/adamw_multilevel "$OUT"/adamw_multilevel_seeds "$OUT"/adamw_single_same_steps \
      "$OUT"/adamw_single_same_steps_seeds "$OUT"/adamw_single_iso_flops "$OUT"/adamw_single_iso_flops_seeds \
      --out "$D/adamw"
    mc "$OUT"/lr025_multilevel "$OUT"/lr025_multilevel_seeds "$OUT"/lr025_single_iso_flops \
      "$OUT"/lr025_single_iso_flops_seeds --out "$D/lr025"
    for s in sweep_delta sweep_steps_window ablation_single_coarse control_delta0; do
      mc "$OUT/$s" "$OUT/sgd_multilevel/0_"* $S --out "$D/$s"
    done
    # paired, one seed at a time (the seed-mean curves above can hide that one run spiked)
    for seed in 0 1 2; do
      mc $(seed_of sgd_ "$seed") --out "$D/per_seed/sgd_seed$seed"
      mc $(seed_of adamw_ "$seed" | grep -v 'optimizer_state=shared\|optimizer_state=reset') \
        --out "$D/per_seed/adamw_seed$seed"
      mc $(seed_of lr025_ "$seed") --out "$D/per_seed/lr025_seed$seed"
    done
    rm -f "$D"/*/*.svg "$D"/per_seed/*/*.svg  # the PNGs are committed; the SVGs are large
    ;;
  *) echo "unknown part: $part (sgd, adamw, adamw_seeds, adamw_iso_seeds, sweeps, controls, lr025_seeds, lr025_iso_seeds, compare)"; exit 2 ;;
  esac
done
