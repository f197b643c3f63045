#!/usr/bin/env bash
# scripts/gpu_check.sh OUTDIR [--dry-run]
#
# Everything that needs a GPU, in one run of at most 8 minutes on one CUDA device (the time
# limits below add up to 465 s; a first run also installs, see below), written to OUTDIR
# (logs, metrics, plots, summary):
#   1. the `gpu` tests (pytest -m gpu: bf16 multilevel smoke with MFU, inductor-compiled losses);
#   2. throughput of the paper model (d 256, 12 blocks, GPT-2 vocabulary) with bf16 and
#      torch.compile: tokens/s, MFU, mltrain's step over a plain PyTorch loop, coarse/fine;
#   3. a shortened paper-model comparison at equal FLOPs (GPT-2 vocabulary, embedded corpus):
#      the paper recipe (multilevel), the best scheme of docs/results.md, and single-level runs
#      with the same FLOPs (the recipe's optimizer, and the best scheme's), then mltrain-compare.
# --dry-run runs the same steps on the CPU with the tiny model and a few steps: it checks the
# script end to end (tests/test_gpu_script.py); its numbers mean nothing.
#
# Set-up: the script runs from the repository root, whatever the caller's directory. Its
# Python is $PYTHON when set; else .venv-gpu/bin/python of the repository; else `python` on
# the PATH when its torch sees a GPU; else it makes .venv-gpu once with
# `make install VENV=.venv-gpu TORCH_SPEC=torch` (PyPI's Linux torch is a CUDA build; this
# needs the network; set TORCH_SPEC for another build). Where no CUDA device is usable it
# stops at once with one line and writes nothing. Each step writes its log to OUTDIR; the
# first step that fails (or runs past its time limit) stops the script with the end of its log.
# Edit the BEST line when docs/results.md names another best scheme.
set -euo pipefail
OUT=${1:?usage: scripts/gpu_check.sh OUTDIR [--dry-run]}
DRY=${2:-}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
cd "$root"

say() { echo "gpu_check: $*" >&2; }
cuda_python() {  # cuda_python PY: prints the device line, or fails with one line
  "$1" - <<'EOF'
import sys
try:
    import torch
except ImportError as e:
    sys.exit(f"gpu_check: {sys.executable} cannot import torch ({e})")
if not torch.cuda.is_available():
    sys.exit(
        f"gpu_check: torch {torch.__version__} of {sys.executable} sees no CUDA device "
        f"(built for CUDA {torch.version.cuda}); nothing run"
    )
print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
}

if [ "$DRY" = "--dry-run" ]; then
  PY=${PYTHON:-$(command -v python)}
  DEVICE="the CPU (dry run)"
  mkdir -p "$OUT"
else
  if ! nvidia-smi -L >/dev/null 2>&1; then
    say "no CUDA device here (nvidia-smi lists none); nothing run (scripts/gpu_check.sh OUTDIR --dry-run checks the script on the CPU)"
    exit 1
  fi
  if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
  elif [ -x .venv-gpu/bin/python ]; then
    PY=$root/.venv-gpu/bin/python
  elif command -v python >/dev/null && cuda_python python >/dev/null 2>&1 \
    && python -c "import mltrain" 2>/dev/null; then
    PY=$(command -v python)
  else
    mkdir -p "$OUT"
    say "installing a CUDA build of torch and mltrain into $root/.venv-gpu (log: $OUT/install.log)"
    if ! make -C "$root" install VENV=.venv-gpu TORCH_SPEC="${TORCH_SPEC:-torch}" >"$OUT/install.log" 2>&1; then
      say "the install failed; the end of $OUT/install.log:"
      tail -n 15 "$OUT/install.log" >&2
      exit 1
    fi
    PY=$root/.venv-gpu/bin/python
  fi
  DEVICE=$(cuda_python "$PY") || exit 1
  mkdir -p "$OUT"
fi
BIN=$(dirname "$PY")
export WANDB_MODE=disabled
log() { echo "== $* ($(date +%H:%M:%S))" | tee -a "$OUT/gpu_check.log"; }
step() {  # step NAME LIMIT_S LOG CMD...: run CMD from the repository root; stop on failure
  local name=$1 limit=$2 out=$3 rc=0
  shift 3
  timeout "$limit" "$@" >"$out" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    local why="exit status $rc"
    [ "$rc" -eq 124 ] && why="ran past its limit of $limit s"
    { echo "!! $name failed ($why); the end of $out:"; tail -n 25 "$out"; } | tee -a "$OUT/gpu_check.log" >&2
    exit 1
  fi
}
log "device: $DEVICE; python: $PY"

# The best scheme of docs/results.md (coarse-to-fine growth, see its headline table).
# Recursive growth 3 -> 6 -> 12 blocks (coarsening=grow_recursive: shares 0.4/0.4/0.2, zero
# growth), AdamW lr 2e-3 with warmup-stable-decay; its single-level control gets the same
# optimizer and schedule (the frontier's best at the CPU budgets).
BEST="coarsening=grow_recursive coarsening.stages.grow_init=zero optimizer=adamw optimizer.lr=2e-3 schedule=wsd"
SL_BEST="coarsening=none optimizer=adamw optimizer.lr=2e-3 schedule=wsd"
if [ "$DRY" = "--dry-run" ]; then
  SIZE="model=tiny data.batch_size=4 train.eval_sequences=8 train.device=cpu schedule.warmup_steps=0"
  STEPS=8; COARSE=2; WINDOW=2; EVAL=4
  BENCH=(--models tiny --rounds 1 --per-round 1 --device cpu)
  T_TESTS=300; T_BENCH=300; T_RUN=300; T_TOOL=300
else
  SIZE="experiment=paper train.device=cuda train.precision=bf16 train.compile=true schedule.warmup_steps=50"
  STEPS=2000; COARSE=20; WINDOW=10; EVAL=250
  BENCH=(--models paper --rounds 5 --per-round 10 --device cuda --precision bf16 --compile --batch 32)
  # 90 + 75 + 4 x 60 + 3 x 20 = 465 s
  T_TESTS=90; T_BENCH=75; T_RUN=60; T_TOOL=20
fi
COMMON="$SIZE logger=none train.progress=false train.steps=$STEPS train.eval_every=$EVAL train.checkpoint_every=0"

log "1/3 gpu tests"
if [ "$DRY" = "--dry-run" ]; then
  echo "(dry run: the gpu tests are not run on the CPU)" | tee "$OUT/pytest_gpu.log"
else
  step "the gpu tests" $T_TESTS "$OUT/pytest_gpu.log" "$PY" -m pytest -q -m gpu -p no:cacheprovider tests
  tail -n 1 "$OUT/pytest_gpu.log"
fi

log "2/3 throughput"
step "the throughput benchmark" $T_BENCH "$OUT/throughput.txt" "$PY" scripts/bench_throughput.py "${BENCH[@]}"
cat "$OUT/throughput.txt"

log "3/3 comparison at equal FLOPs"
RECIPE="coarsening=even_odd coarsening.vcycle.delta=0.25 coarsening.vcycle.coarse_steps=$COARSE coarsening.vcycle.window=$WINDOW"
# shellcheck disable=SC2086  # the override lists split on spaces
step "the FLOPs budget" $T_TOOL "$OUT/budget.txt" "$PY" scripts/flops_budget.py --total $COMMON $RECIPE
budget=$(tail -n 1 "$OUT/budget.txt")
echo "budget (the paper recipe's training FLOPs with head): $budget" | tee -a "$OUT/gpu_check.log"
mkdir -p "$OUT/runs" "$OUT/logs"
run() {  # run NAME OVERRIDES...
  local name=$1
  shift
  # shellcheck disable=SC2086
  step "run $name" $T_RUN "$OUT/logs/$name.log" "$BIN/mltrain" $COMMON "$@" "hydra.run.dir=$OUT/runs/$name"
  tail -n 2 "$OUT/logs/$name.log"
}
# shellcheck disable=SC2086
run paper_recipe $RECIPE
# shellcheck disable=SC2086
run best_scheme $BEST "train.target_flops=$budget"
run single_level_same_flops coarsening=none "train.target_flops=$budget"
# shellcheck disable=SC2086
run single_level_same_flops_wsd $SL_BEST "train.target_flops=$budget"
step "mltrain-compare" $T_TOOL "$OUT/compare.txt" "$BIN/mltrain-compare" "$OUT/runs" --out "$OUT/compare" --dpi 80
head -n 20 "$OUT/compare.txt"
log "done: $OUT (gpu_check.log, pytest_gpu.log, throughput.txt, runs/, logs/, compare/)"
