"""scripts/demo.sh's own words, with stand-ins for ``mltrain`` and ``mltrain-compare`` (the
real runs take minutes: docs/operations.md): what it says of the threads comes from run.json."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "scripts" / "demo.sh"

# an mltrain that writes run.json with THREADS threads into its hydra.run.dir
STUB = """#!/usr/bin/env python3
import json, os, sys
d = next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("hydra.run.dir="))
os.makedirs(d, exist_ok=True)
json.dump({"threads": int(os.environ["THREADS"]), "status": "completed"}, open(d + "/run.json", "w"))
"""


@pytest.mark.parametrize("threads", [1, 3])
def test_the_demo_prints_the_thread_count_run_json_records(tmp_path, threads):
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "mltrain").write_text(STUB)
    (bin_ / "mltrain-compare").write_text("#!/bin/sh\necho compared\n")
    for f in bin_.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "THREADS": str(threads)}
    env["DEMO_DIR"] = str(tmp_path / "demo")
    out = subprocess.run(
        ["bash", str(DEMO)], env=env, capture_output=True, text=True, check=True
    ).stdout
    recorded = json.loads((tmp_path / "demo" / "growth" / "run.json").read_text())["threads"]
    assert recorded == threads
    if threads == 1:
        assert "(1 thread, as in the committed runs: on the same kind of" in out
    else:
        assert "(3 threads here, from run.json; the committed runs" in out
    assert "2 threads here" not in out


def test_a_failed_run_is_named_with_its_log_and_the_demo_exits_non_zero(tmp_path):
    """The growth run fails (exit 3, after writing an error line): the demo names it, shows the
    end of its log, still reports the other run, and exits 3 without running mltrain-compare."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "mltrain").write_text(
        STUB
        + 'if "experiment=grow" in sys.argv[1:]:\n'
        + '    print("mltrain: error: coarsening.stages.shares must sum to 1")\n'
        + "    sys.exit(3)\n"
        + 'print("final val/loss 4.0322")\n'
    )
    (bin_ / "mltrain-compare").write_text("#!/bin/sh\necho compared\n")
    for f in bin_.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "THREADS": "1"}
    env["DEMO_DIR"] = str(tmp_path / "demo")
    res = subprocess.run(["bash", str(DEMO)], env=env, capture_output=True, text=True)
    assert res.returncode == 3
    out = res.stdout.splitlines()
    i = out.index(f"-- growth failed (exit 3); the end of {tmp_path}/demo/growth.log:")
    assert out[i + 1] == "     mltrain: error: coarsening.stages.shares must sum to 1"
    assert "-- single_best_size: final val/loss 4.0322" in out
    assert "compared" not in res.stdout


def test_the_rows_the_demo_prints_are_the_committed_headline_rows():
    """The numbers the demo quotes come from docs/results/third_edition/headline.md (the
    third_headline output of the committed records): growth 1 -> 2 blocks at 1/8 (final loss,
    r_env with head and non-embedding, gap) and the envelope's best point at 1/8."""
    root = DEMO.parents[1]
    head = (root / "docs/results/third_edition/headline.md").read_text()
    head = head.replace("–", "-").splitlines()  # the table's ranges use an en dash, the demo not
    demo = DEMO.read_text()
    (growth,) = [r for r in head if r.startswith("| growbest | 1/8 |")]
    cells = [c.strip() for c in growth.strip("|").split("|")]
    loss, r_env, r_env_ne, gap = cells[2].rsplit(" (", 1)[0], cells[4], cells[5], cells[6]
    assert f"final val loss {loss}" in demo
    assert f"r_env {r_env} with head, {r_env_ne} non-embedding" in demo
    assert f"gap {gap.split(' ')[0]} nats" in demo
    (env,) = [r for r in head if r.startswith("| 1/8 | 1 block, lr 4e-3 |")]
    assert f"1 block at lr 4e-3: {env.split('|')[3].strip().rsplit(' (', 1)[0]}" in demo
    # the larger budgets' gaps it quotes: the growbest rows at 1/4 and 1x (gap, its seed count)
    flat = " ".join(re.findall(r'^echo "(.*)"$', demo, re.M))  # the lines it prints, joined
    for budget, words in (("1/4", "at 1/4 (3 seeds)"), ("1", "at 1x (3 -> 6 blocks, 3 seeds)")):
        (row,) = [r for r in head if r.startswith(f"| growbest | {budget} |")]
        gap = row.split("|")[7].strip().split(" ")[0]
        assert row.split("|")[3].strip().endswith("(3)"), row  # the seeds it says
        assert f"{gap} nats {words}" in flat or f"{gap} {words}" in flat, (gap, words)
