#!/usr/bin/env bash
# `make demo`: the main job on the embedded corpus (timings: docs/operations.md).
# The third edition's best scheme against the best single-level model size (docs/results.md,
# "Third edition"), at 1/8 of its largest budget: 4.0e12 FLOPs (3.2e13 x 0.125, with head),
# the depth family at d = 48 (model=third_d48, a 2,048-entry BPE, 16 x 128 tokens per step):
#   1. growth that ends at 2 blocks: block 0 alone at step 2 for 80 % of the FLOPs, then both
#      blocks for the last 20 % (the decay at full depth); AdamW lr 4e-3, warmup-stable-decay
#   2. the envelope's best size at this budget: 1 block, AdamW lr 4e-3, warmup-stable-decay,
#      the same total FLOPs
# The two runs go side by side, one thread each (the committed runs' thread count), then
# mltrain-compare on the two: headline, table, FLOPs-to-target, plots.
# Extra arguments are Hydra overrides given to both runs (e.g. train.seed=1).
set -euo pipefail
out=${DEMO_DIR:-outputs/demo/$(date +%Y-%m-%d_%H-%M-%S)}
mkdir -p "$out"
family=(model=third_d48 data.bpe_vocab_size=2048 data.batch_size=16 train.target_flops=3.2e13
        train.flops_scale=0.125 train.eval_sequences=128 train.eval_every=100 optimizer.lr=4e-3
        train.threads=1 train.progress=false)
growth=(experiment=grow model.n_layer=2 coarsening.hierarchy.name=custom
        "coarsening.hierarchy.blocks=[[0]]" "coarsening.stages.levels=[coarse_1,fine]"
        "coarsening.stages.shares=[0.8,0.2]" schedule.decay_fraction=0.2)
single=(experiment=third_envelope model.n_layer=1 "train.branch_points=[]")

echo "== 4.0e12 FLOPs each, side by side (about 3 minutes; logs: $out/{growth,single_best_size}.log)"
echo "   1/2 growth 1 -> 2 blocks    2/2 single-level 1 block (the envelope's best size here)"
mltrain "${growth[@]}" "${family[@]}" "$@" "hydra.run.dir=$out/growth" > "$out/growth.log" 2>&1 &
g=$!
mltrain "${single[@]}" "${family[@]}" "$@" "hydra.run.dir=$out/single_best_size" > "$out/single_best_size.log" 2>&1 &
s=$!
# background runs ignore Ctrl-C in a script: stop both with the demo
trap 'kill $g $s 2> /dev/null; exit 130' INT TERM
declare -A rc
wait $g && rc[growth]=0 || rc[growth]=$?
wait $s && rc[single_best_size]=0 || rc[single_best_size]=$?
trap - INT TERM
failed=0
for n in growth single_best_size; do
  if [ "${rc[$n]}" = 0 ]; then
    echo "-- $n: $(grep -E 'final val/loss' "$out/$n.log" | tail -1)"
  else
    failed=${rc[$n]}
    echo "-- $n failed (exit ${rc[$n]}); the end of $out/$n.log:"
    tail -n 5 "$out/$n.log" | sed 's/^/     /'
  fi
done
if [ "$failed" != 0 ]; then exit "$failed"; fi
echo "== mltrain-compare"
mltrain-compare "$out" --out "$out/compare"
echo
echo "runs: $out/{growth,single_best_size} (metrics.jsonl; W&B offline runs in wandb/)"
echo "plots: $out/compare/frontier.png (both runs: the 1-block run is the frontier),"
echo "       $out/compare/loss_vs_flops.png (the growth's curves)   table: $out/compare/summary.md"
# the thread counts the runs recorded (run.json), not a guess: CPU runs repeat bit for bit
# only at the same thread count (and on the same kind of CPU)
threads=$(python3 -c 'import json, sys
print(",".join(sorted({str(json.load(open(f))["threads"]) for f in sys.argv[1:]})))' \
  "$out/growth/run.json" "$out/single_best_size/run.json")
if [ "$threads" = 1 ]; then
  echo "This is one seed at one budget (1 thread, as in the committed runs: on the same kind of"
  echo "CPU, seed 0, the default, repeats their final losses)."
else
  echo "This is one seed at one budget ($threads threads here, from run.json; the committed runs"
  echo "used 1, so the last digits differ)."
fi
echo "mltrain-compare above judges this one seed: the 1-block run is the tuned frontier it"
echo "measures the growth against (one budget, so r is a bound)."
echo "The committed rows it corresponds to (docs/results.md, \"Third edition\"; 3 seeds each,"
echo "single-threaded; docs/results/third_edition/headline.md and envelope/summary.md):"
echo "  growth 1 -> 2 blocks (growbest, 1/8): final val loss 4.031 (4.026-4.039), seed 0 4.0391;"
echo "    r_env 0.92 (0.90-0.95) with head, 1.01 (1.00-1.05) non-embedding; gap -0.021 nats"
echo "  the envelope's best size at 1/8, 1 block at lr 4e-3: 4.052 (4.032-4.062), seed 0 4.0322"
echo "So at this budget the growth ends 0.021 nats below the best single-level size on the mean"
echo "over seeds, inside that size's own seed spread (0.030): level with it, not a clear win; at"
echo "seed 0 the single-level run is the lower (so r above is a bound, about 1 or more: the growth"
echo "never reached its loss). At the larger budgets, where larger sizes are best, the same growth"
echo "to the best size is behind: +0.015 nats at 1/4 (3 seeds) and +0.072 at 1x (3 -> 6 blocks,"
echo "3 seeds); no scheme beats the best single-level size at any budget measured (docs/results.md)."
