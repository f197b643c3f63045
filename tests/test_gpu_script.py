"""scripts/gpu_check.sh end to end in its CPU dry run: the tiny model, a few steps.

Slow (about 2 minutes): `make test-all`. The GPU run itself needs a CUDA device."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_part_and_equal_flops_runs(tmp_path):
    out = tmp_path / "gpu"
    res = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        env={
            **os.environ,
            # the script calls python, mltrain and mltrain-compare: this environment's
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "WANDB_MODE": "disabled",
            "OMP_NUM_THREADS": "1",
        },
    )
    assert res.returncode == 0, res.stderr[-2000:]
    log = (out / "gpu_check.log").read_text()
    assert "done:" in log
    budget = float(re.search(r"training FLOPs with head\): (\S+)", log).group(1))
    for part in ("pytest_gpu.log", "throughput.txt", "compare.txt", "compare/summary.md"):
        assert (out / part).is_file(), part
    runs = {"paper_recipe", "best_scheme", "single_level_same_flops", "single_level_same_flops_wsd"}
    assert {p.name for p in (out / "runs").iterdir()} == runs

    def last(name):
        return [json.loads(x) for x in (out / "runs" / name / "metrics.jsonl").open()][-1]

    # a single-level fine step's FLOPs: a run sized by train.target_flops=budget spends the
    # budget within one such step (single-level: rounded down; stages: each stage's share)
    sl = last("single_level_same_flops")
    fine_step = sl["perf/flops"] / sl["fine_step"]
    for name in runs - {"paper_recipe"}:
        spent = last(name)["perf/flops"]
        assert abs(spent - budget) < fine_step, (name, spent, budget, fine_step)
    assert sl["perf/flops"] <= budget
    recipe = [json.loads(x) for x in (out / "runs" / "paper_recipe" / "metrics.jsonl").open()]
    assert recipe[-1]["perf/flops"] == pytest.approx(budget, rel=1e-9)  # the budget is its FLOPs
