#!/usr/bin/env bash
# The experiments behind docs/results.md, in order of importance. Each section is one or more
# Hydra multiruns into $OUT/<name>; a finished section is skipped when the script is re-run.
# Usage: bash scripts/results.sh [OUT_DIR]   (default outputs/results; about 2 CPU-hours on 2 idle cores)
set -euo pipefail
OUT=${1:-outputs/results}
SEEDS=0,1,2
COMMON="logger=none train.progress=false"
mkdir -p "$OUT"

sweep() {  # sweep NAME OVERRIDES...
  local name=$1; shift
  if [ -e "$OUT/$name/.done" ]; then echo "== $name: done"; return; fi
  echo "== $name: mltrain -m $* $COMMON"
  mltrain -m "$@" $COMMON "hydra.sweep.dir=$OUT/$name" || echo "!! $name: some jobs failed"
  touch "$OUT/$name/.done"
}

budget() { python "$(dirname "$0")/flops_budget.py" --total "$@"; }

# 1. The paper's comparison at CPU scale, SGD: multilevel vs single-level with the same fine
#    steps (the paper's protocol) and with the same total FLOPs (the fair one).
B=$(budget experiment=paper_small)
sweep sgd_multilevel experiment=paper_small train.seed=$SEEDS
sweep sgd_single_same_steps experiment=paper_small coarsening=none train.seed=$SEEDS
sweep sgd_single_iso_flops experiment=paper_small coarsening=none train.target_flops=$B train.seed=$SEEDS

# 2. The same with AdamW (2 seeds), once per optimizer-state policy across levels.
SEEDS2=0,1
sweep adamw_multilevel experiment=paper_small optimizer=adamw coarsening.optimizer_state=separate,shared,reset train.seed=$SEEDS2
sweep adamw_single_same_steps experiment=paper_small optimizer=adamw coarsening=none train.seed=$SEEDS2
sweep adamw_single_iso_flops experiment=paper_small optimizer=adamw coarsening=none train.target_flops=$B train.seed=$SEEDS2

# 3. Knobs of the scheme (seed 0): delta, coarse steps x window, one vs two coarse networks.
sweep sweep_delta experiment=sweep_delta
sweep sweep_steps_window experiment=paper_small coarsening.coarse_steps=10,40 coarsening.window=2,10
sweep ablation_single_coarse experiment=ablation_single_coarse coarsening=even,odd

# 4. Tables and plots (docs/results/<name>/): each comparison against both single-level baselines.
D=${DOCS:-docs/results}
mltrain-compare "$OUT"/sgd_multilevel "$OUT"/sgd_single_same_steps "$OUT"/sgd_single_iso_flops --out "$D/sgd"
mltrain-compare "$OUT"/adamw_multilevel "$OUT"/adamw_single_same_steps "$OUT"/adamw_single_iso_flops --out "$D/adamw"
for s in sweep_delta sweep_steps_window ablation_single_coarse; do
  mltrain-compare "$OUT/$s" "$OUT"/sgd_single_same_steps "$OUT"/sgd_single_iso_flops --out "$D/$s"
done
echo "all sections done: $D"
