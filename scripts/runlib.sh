# Sourced by scripts/results.sh, results_third.sh and scripts/archive/study.sh: resumable runs
# into $OUT, with the overrides in $COMMON added to each. A finished run or sweep is marked
# $OUT/NAME/.done and skipped next time; an interrupted one continues (train.resume=auto). Where
# $RECORDS is set, a run whose committed record $RECORDS/NAME/.done exists is done too (a fresh
# machine continues a study from its committed records).

sweep() {  # sweep NAME OVERRIDES...: one resumable Hydra multirun into $OUT/NAME
  local name=$1; shift
  if [ -e "$OUT/$name/.done" ]; then echo "== $name: done"; return; fi
  echo "== $name: mltrain -m $* $COMMON ($(date +%H:%M))"
  if mltrain -m "$@" $COMMON "hydra.sweep.dir=$OUT/$name" train.resume=auto; then
    touch "$OUT/$name/.done"
  else
    echo "!! $name: some jobs failed, diverged or were interrupted; run again to continue"
  fi
}

run() {  # run NAME OVERRIDES...: one resumable run into $OUT/NAME, its log in $OUT/NAME.log
  local name=$1; shift
  if [ -e "$OUT/$name/.done" ]; then echo "== $name: done"; return; fi
  if [ -n "${RECORDS:-}" ] && [ -e "$RECORDS/$name/.done" ]; then echo "== $name: done (recorded)"; return; fi
  # one stream at a time per run: a run another stream holds (flock on OUT/NAME.lock, held by
  # that shell and its mltrain, released when they end, however they end) is skipped here
  local rc=0 fd
  exec {fd}> "$OUT/$name.lock"
  if ! flock -n "$fd"; then echo "== $name: running in another stream, skipped"; exec {fd}>&-; return; fi
  echo "== $name: mltrain $* $COMMON ($(date +%H:%M))"
  mltrain "$@" $COMMON "hydra.run.dir=$OUT/$name" train.resume=auto > "$OUT/$name.log" 2>&1 || rc=$?
  exec {fd}>&-
  if [ $rc -eq 0 ]; then
    touch "$OUT/$name/.done"; grep -o 'final val/loss [0-9.]*' "$OUT/$name.log" || true
  else
    echo "!! $name failed or was interrupted (run again to continue): $OUT/$name.log"
  fi
}
