"""Coarse vs fine step cost and the memory of multilevel training.

    python scripts/bench_levels.py [--models small,paper] [--rounds 5]
    python scripts/bench_levels.py --models tiny --rounds 1 --steps 3   # a smoke check

For each model, in one process and interleaved: the median wall time of a coarse step
over a fine step, next to the analytic FLOP ratio (DESIGN.md section 3); and, in separate
processes, the peak resident memory of a multilevel run over a single-level run of the same
number of optimizer steps (goal <= 1.05: restriction is injection, only the snapshot of a
phase's parameters and the coarse levels' optimizer state are extra).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import interleaved, make_job  # noqa: E402

MODELS = {
    "tiny": ["model=tiny", "data.batch_size=4", "train.eval_sequences=8"],  # checks the script
    "small": ["model=small"],  # the CPU default: d=128, 12 blocks, BPE 8192, batch 16 x 128
    "paper": ["experiment=paper", "data.batch_size=4"],  # d=256, GPT-2 vocab; batch 4 on CPU
}


def step_ratio(model: str, rounds: int) -> dict:
    job = make_job([*MODELS[model], "coarsening=even_odd"])
    t = job.trainer
    fine, coarse = t.levels["fine"], t.levels["coarse_a"]
    med = interleaved(
        {"fine": lambda: t.train_step(fine), "coarse": lambda: t.train_step(coarse)},
        rounds=rounds,
        per_round=3,
        device=job.ctx.device,
    )
    analytic = t.plan.step_flops["coarse_a"].total / t.plan.step_flops["fine"].total
    return {
        "model": model,
        "fine_s": med["fine"],
        "coarse_s": med["coarse"],
        "measured_ratio": med["coarse"] / med["fine"],
        "analytic_flop_ratio": analytic,
        "analytic_nonembed_ratio": t.plan.step_flops["coarse_a"].nonembed
        / t.plan.step_flops["fine"].nonembed,
    }


def worker(model: str, coarsening: str, steps: int) -> None:
    """Run ``steps`` optimizer steps (multilevel: one V-cycle after each fine step) and print
    the peak RSS in MiB."""
    if coarsening == "none":
        over = ["coarsening=none", f"train.steps={steps}"]
    else:  # same number of optimizer steps: 1 fine step + 2 phases of (steps-1)/2
        over = [
            "coarsening=even_odd",
            "train.steps=1",
            f"coarsening.vcycle.coarse_steps={(steps - 1) // 2}",
            "coarsening.vcycle.window=1",
        ]
    job = make_job(
        [
            *MODELS[model],
            *over,
            "schedule.warmup_steps=0",
            "train.eval_every=1000",
            "train.checkpoint_every=0",
        ]
    )
    job.run()
    job.close()
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def peak_memory(model: str, steps: int) -> dict:
    out = {}
    for c in ("none", "even_odd"):
        res = subprocess.run(
            [sys.executable, __file__, "--worker", model, c, str(steps)],
            capture_output=True,
            text=True,
            check=True,
        )
        out[c] = json.loads(res.stdout.strip().splitlines()[-1])["peak_rss_mib"]
    return {
        "model": model,
        "single_level_mib": out["none"],
        "multilevel_mib": out["even_odd"],
        "ratio": out["even_odd"] / out["none"],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="small,paper", help=f"of {', '.join(MODELS)}")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=9, help="optimizer steps per memory run")
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        worker(a.worker[0], a.worker[1], int(a.worker[2]))
        return
    bad = sorted(set(a.models.split(",")) - set(MODELS))
    if bad:
        p.error(f"--models {bad[0]} is not allowed: choose from {', '.join(MODELS)}")
    for model in a.models.split(","):
        r = step_ratio(model, a.rounds)
        print(
            f"{model}: coarse/fine step time {r['measured_ratio']:.3f} (median {r['coarse_s'] * 1e3:.1f} / "
            f"{r['fine_s'] * 1e3:.1f} ms), analytic FLOP ratio {r['analytic_flop_ratio']:.3f} with head, "
            f"{r['analytic_nonembed_ratio']:.3f} non-embedding; "
            f"measured/analytic {r['measured_ratio'] / r['analytic_flop_ratio']:.3f}"
        )
        m = peak_memory(model, a.steps)
        print(
            f"{model}: peak RSS multilevel {m['multilevel_mib']:.0f} MiB / single-level "
            f"{m['single_level_mib']:.0f} MiB = {m['ratio']:.3f}"
        )


if __name__ == "__main__":
    main()
