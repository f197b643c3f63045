#!/usr/bin/env bash
# scripts/gpu_check.sh OUTDIR [--dry-run]
#
# Everything that needs a GPU, in one run of at most ~8 minutes on one CUDA device, written
# to OUTDIR (logs, metrics, plots, summary):
#   1. the `gpu` tests (pytest -m gpu: bf16 multilevel smoke, inductor-compiled losses);
#   2. throughput of the paper model (d 256, 12 blocks, GPT-2 vocabulary) with bf16 and
#      torch.compile: tokens/s, MFU, mltrain's step over a plain PyTorch loop, coarse/fine;
#   3. a shortened paper-model comparison at equal FLOPs (GPT-2 vocabulary, embedded corpus):
#      the paper recipe (multilevel), the best scheme of docs/results.md, and single-level runs
#      with the same FLOPs (the recipe's optimizer, and the best scheme's), then mltrain-compare.
# --dry-run runs the same steps on the CPU with the tiny model and a few steps: it checks the
# script end to end (tests/test_gpu_script.py); its numbers mean nothing.
# Edit the BEST line when docs/results.md names another best scheme.
set -euo pipefail
OUT=${1:?usage: scripts/gpu_check.sh OUTDIR [--dry-run]}
DRY=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { echo "== $* ($(date +%H:%M:%S))" | tee -a "$OUT/gpu_check.log"; }

# The best scheme of docs/results.md (coarse-to-fine growth, see its headline table).
# Recursive growth 3 -> 6 -> 12 blocks (coarsening=grow_recursive: shares 0.4/0.4/0.2, zero
# growth), AdamW lr 2e-3 with warmup-stable-decay; its single-level control gets the same
# optimizer and schedule (the frontier's best at the CPU budgets).
BEST="coarsening=grow_recursive coarsening.stages.grow_init=zero optimizer=adamw optimizer.lr=2e-3 schedule=wsd"
SL_BEST="coarsening=none optimizer=adamw optimizer.lr=2e-3 schedule=wsd"
if [ "$DRY" = "--dry-run" ]; then
  SIZE="model=tiny data.batch_size=4 train.eval_batches=2 train.device=cpu schedule.warmup_steps=0"
  STEPS=8; COARSE=2; WINDOW=2; EVAL=4
  BENCH=(--models small --rounds 1 --per-round 1 --device cpu --batch 4)
  TIMEOUT=300; RUN_TIMEOUT=300
else
  SIZE="experiment=paper train.device=cuda train.precision=bf16 train.compile=true schedule.warmup_steps=50"
  STEPS=3000; COARSE=20; WINDOW=10; EVAL=250
  BENCH=(--models paper --rounds 5 --per-round 10 --device cuda --precision bf16 --compile --batch 32)
  TIMEOUT=150; RUN_TIMEOUT=100  # 4 runs: about 7 minutes in all with the tests and benchmark
fi
COMMON="$SIZE logger=none train.progress=false train.steps=$STEPS train.eval_every=$EVAL train.checkpoint_every=0"

log "1/3 gpu tests"
if [ "$DRY" = "--dry-run" ]; then
  echo "(dry run: the gpu tests are not run on the CPU)" | tee "$OUT/pytest_gpu.log"
else
  WANDB_MODE=disabled timeout 240 python -m pytest -q -m gpu -p no:cacheprovider 2>&1 | tee "$OUT/pytest_gpu.log" || true
fi

log "2/3 throughput"
timeout $TIMEOUT python "$here/bench_throughput.py" "${BENCH[@]}" 2>&1 | tee "$OUT/throughput.txt" || true

log "3/3 comparison at equal FLOPs"
RECIPE="coarsening=even_odd coarsening.vcycle.delta=0.25 coarsening.vcycle.coarse_steps=$COARSE coarsening.vcycle.window=$WINDOW"
budget=$(python "$here/flops_budget.py" --total $COMMON $RECIPE)
echo "budget (the paper recipe's training FLOPs with head): $budget" | tee -a "$OUT/gpu_check.log"
run() {  # run NAME OVERRIDES...
  local name=$1; shift
  timeout $RUN_TIMEOUT mltrain $COMMON "$@" "hydra.run.dir=$OUT/runs/$name" 2>&1 | tail -n 3 || echo "!! $name stopped"
}
run paper_recipe $RECIPE
run best_scheme $BEST "train.target_flops=$budget"
run single_level_same_flops coarsening=none "train.target_flops=$budget"
run single_level_same_flops_wsd $SL_BEST "train.target_flops=$budget"
mltrain-compare "$OUT/runs" --out "$OUT/compare" --dpi 80 2>&1 | tee "$OUT/compare.txt" | head -n 20
log "done: $OUT (gpu_check.log, pytest_gpu.log, throughput.txt, runs/, compare/)"
