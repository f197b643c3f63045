#!/usr/bin/env bash
# ARCHIVED: chained scripts/archive/study.sh streams from a frozen worktree while the code changed; kept with study.sh.
# queue.sh PID CODE_DIR OUT PART...: wait until process PID has ended, then run
# scripts/archive/study.sh OUT PART... from the frozen code in CODE_DIR (a git worktree of a commit),
# single-threaded. Lets long experiment streams be chained while the code keeps changing.
set -euo pipefail
pid=$1 code=$2 out=$3; shift 3
while kill -0 "$pid" 2>/dev/null; do sleep 30; done
PYTHONPATH="$code" OMP_NUM_THREADS=1 exec bash "$code/scripts/archive/study.sh" "$out" "$@"
