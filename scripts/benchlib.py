"""Shared pieces of the benchmark scripts: build a trainer from overrides, time steps
interleaved, report medians. Benchmarks print ratios measured side by side in one process;
these machines are shared and noisy, so medians over interleaved rounds are what count.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")


def make_job(overrides: list[str], run_dir: Path | None = None):
    """A :class:`mltrain.job.Job` (one process) for ``mltrain <overrides> logger=none``."""
    from mltrain.config import compose
    from mltrain.job import Job
    from mltrain.train.distributed import init

    cfg = compose([*overrides, "logger=none", "train.progress=false"])
    run_dir = run_dir or Path(tempfile.mkdtemp(prefix="mltrain-bench-")) / "run"
    # the CLI's set-up (device, TF32 on CUDA), so both sides of a comparison run alike
    return Job(cfg, run_dir, init(cfg.train.device))


def sync(device) -> None:
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], n: int, device=None, clock=time.perf_counter) -> float:
    """Seconds per call of ``fn``, over ``n`` calls, by ``clock`` (wall time by default;
    ``time.process_time`` for the process's CPU time, which other jobs' load does not lengthen
    on a single-threaded CPU run)."""
    sync(device)
    t0 = clock()
    for _ in range(n):
        fn()
    sync(device)
    return (clock() - t0) / n


def interleaved(
    fns: dict[str, Callable[[], None]],
    rounds: int,
    per_round: int,
    warmup: int = 2,
    device=None,
    clock=time.perf_counter,
) -> dict[str, float]:
    """Median seconds per call of each function, measured in alternating rounds so that load
    changes on a shared machine hit all of them alike; the order rotates from round to round,
    so that no function always runs right after the same other one (allocator and cache
    state left by the previous function)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            samples[k].append(timed(fns[k], per_round, device, clock))
    return {k: statistics.median(v) for k, v in samples.items()}
