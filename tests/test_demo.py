"""scripts/demo.sh's own words, with stand-ins for ``mltrain`` and ``mltrain-compare`` (the
real runs take minutes: docs/operations.md): what it says of the threads comes from run.json."""

from __future__ import annotations

import json
import os
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
