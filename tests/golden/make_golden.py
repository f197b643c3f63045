"""Write the golden metrics of fixed-seed runs (tests/test_golden.py compares against them).

Run from the repository root, only when a change is *meant* to alter training:

    OMP_NUM_THREADS=1 .venv/bin/python -m tests.golden.make_golden

The records are what ``metrics.jsonl`` holds, minus the wall-clock keys. The goldens were first
written by the code before the "one plan of the run" refactor, so the test shows
that refactor left training bit for bit unchanged (CPU, one thread). Recording them writes this
machine's fingerprint to exact_on.json: the test is bitwise here and within the float32
tolerance of tolerance.py on any other CPU.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# name -> overrides on top of tests.helpers.TINY
CASES = {
    "even_odd_sgd": [
        "train.steps=12",
        "coarsening=even_odd",
        "coarsening.vcycle.coarse_steps=3",
        "coarsening.vcycle.window=3",
        "train.eval_every=4",
        "schedule.warmup_steps=2",
    ],
    "recursive_adamw_summed": [
        "model.n_layer=8",
        "coarsening=recursive",
        "coarsening.hierarchy.depth=2",
        "optimizer=adamw",
        "coarsening.vcycle.combine=summed",
        "coarsening.vcycle.fine_step=after",
        "coarsening.hierarchy.optimizer_state=reset",
        "coarsening.vcycle.coarse_lr_scale=0.5",
        "train.steps=8",
        "coarsening.vcycle.window=2",
        "coarsening.vcycle.coarse_steps=2",
        "train.grad_accum=2",
        "train.eval_every=3",
    ],
    "single_level_budget": [
        "coarsening=none",
        "train.target_flops=2e10",
        "schedule.warmup_steps=2",
        "train.eval_every=5",
        "train.max_grad_norm=0.5",
    ],
    # added before the house refactor (subpackages, one trainer/scheme seam): one golden per
    # scheme family that had none
    "grow_recursive": [
        "model.n_layer=8",
        "coarsening=grow_recursive",
        "optimizer=adamw",
        "schedule=wsd",
        "train.steps=12",
        "train.eval_every=4",
    ],
    "raptr": [
        "model.n_layer=6",
        "coarsening=raptr",
        "coarsening.raptr.blocks=[3,4]",
        "coarsening.stages.levels=[raptr_3,raptr_4,fine]",
        "coarsening.stages.shares=[0.4,0.3,0.3]",
        "optimizer=adamw",
        "train.steps=12",
        "train.eval_every=4",
    ],
    "patch_stage": [
        "coarsening=patch",
        "coarsening.scheme=stages",
        "coarsening.patch.size=2",
        "coarsening.vcycle.window=0",
        "coarsening.stages.levels=[patch,fine]",
        "coarsening.stages.shares=[0.5,0.5]",
        "coarsening.stages.grow_init=keep",
        "optimizer=adamw",
        "train.steps=10",
        "train.eval_every=4",
    ],
    "corrections": [
        "coarsening=even_odd",
        "coarsening.vcycle.coarse_steps=2",
        "coarsening.vcycle.window=4",
        "coarsening.corrections.tau=exact",
        "coarsening.corrections.momentum=0.5",
        "coarsening.corrections.line_search=grid",
        "coarsening.corrections.line_search_batch=4",
        "train.steps=8",
        "train.eval_every=4",
    ],
}
VOLATILE = ("perf/tok_per_s", "perf/wall_s", "perf/mfu")


def clean(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def run_case(name: str, workdir: Path) -> list[dict]:
    from tests.helpers import read_jsonl, run_job

    run_job(workdir / name, *CASES[name])
    return clean(read_jsonl(workdir / name / "metrics.jsonl"))


def main() -> None:
    import torch

    torch.set_num_threads(1)
    os.environ["WANDB_MODE"] = "disabled"
    with tempfile.TemporaryDirectory() as tmp:
        for name in CASES:
            recs = run_case(name, Path(tmp))
            (HERE / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
            print(f"{name}: {len(recs)} records", file=sys.stderr)
    # the goldens now match bit for bit on this machine only (tests/golden/tolerance.py)
    from tests.golden.tolerance import EXACT_ON, machine

    EXACT_ON.write_text(json.dumps([machine()], indent=1) + "\n")


if __name__ == "__main__":
    main()
