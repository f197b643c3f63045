"""Checkpoint cost: write time and size for the paper model, and the overhead of
checkpointing every N fine steps on a default run.

    python scripts/bench_checkpoint.py [--every 10] [--steps 50] [--rounds 4]
    python scripts/bench_checkpoint.py --smoke --steps 4 --every 2 --rounds 1   # a smoke check

(1) The paper model (d=256, 12 blocks, GPT-2 vocabulary) after one multilevel V-cycle, so
    every level's optimizer state is in the checkpoint: median write time (atomic: temp
    file, fsync, rename, directory fsync) and size.
(2) The default model, single-level: ``--steps`` fine steps with a checkpoint every
    ``--every`` steps against the same steps without periodic checkpoints, interleaved over
    ``--rounds`` rounds; prints the median time ratio.
``--smoke`` uses the tiny model (d=32, 4 blocks) in both parts: it checks the script in
seconds; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import make_job  # noqa: E402

TINY = ["model=tiny", "data.batch_size=4", "train.eval_sequences=8", "schedule.warmup_steps=0"]


def paper_checkpoint(rounds: int, smoke: bool = False) -> None:
    size = TINY if smoke else ["experiment=paper", "data.batch_size=2", "model.seq_len=64"]
    job = make_job(
        [
            *size,
            "coarsening.vcycle.coarse_steps=1",
            "coarsening.vcycle.window=1",
            "train.steps=2",
            "train.checkpoint_every=0",
            "train.eval_sequences=4",
        ]
    )
    t = job.trainer
    t.run_ops(t.plan.ops(0))  # one V-cycle: every level's optimizer has state
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        path = t.save()
        times.append(time.perf_counter() - t0)
    n_params = sum(p.numel() for p in job.model.parameters())
    print(
        f"{'tiny' if smoke else 'paper'} model ({n_params / 1e6:.1f} M parameters, optimizers of 3 levels): checkpoint "
        f"{path.stat().st_size / 2**20:.1f} MiB, write {statistics.median(times):.3f} s (median of {rounds})"
    )
    job.close()


def overhead(every: int, steps: int, rounds: int, smoke: bool = False) -> None:
    def run(ckpt_every: int) -> float:
        job = make_job(
            [
                *(TINY if smoke else []),
                "coarsening=none",
                f"train.steps={steps}",
                f"train.checkpoint_every={ckpt_every}",
                f"train.eval_every={steps}",
                "schedule.warmup_steps=0",
            ]
        )
        t0 = time.perf_counter()
        job.run()
        job.close()
        return time.perf_counter() - t0

    with_ck, without = [], []
    for r in range(rounds):  # alternate which goes first, so that neither always runs cold
        if r % 2:
            without.append(run(0))
            with_ck.append(run(every))
        else:
            with_ck.append(run(every))
            without.append(run(0))
    ratio = statistics.median(a / b for a, b in zip(with_ck, without))
    print(
        f"{'tiny' if smoke else 'default'} model, {steps} fine steps: checkpoint every {every} steps / only at the end = {ratio:.3f} "
        f"(medians {statistics.median(with_ck):.3f} s / {statistics.median(without):.3f} s)"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--smoke", action="store_true", help="the tiny model: checks the script")
    a = p.parse_args(argv)
    paper_checkpoint(a.rounds, a.smoke)
    overhead(a.every, a.steps, a.rounds, a.smoke)


if __name__ == "__main__":
    main()
