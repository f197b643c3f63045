"""Gradient all-reduce under torchrun: one flat all-reduce after backward against bucketed
asynchronous all-reduces launched from gradient hooks during backward
(:mod:`mltrain.train.grad_sync`), on two gloo processes (CPU), interleaved in one run.

    python scripts/bench_allreduce.py [--model small] [--rounds 7] [--per-round 3] [--bucket-mb 25]

Each rank runs the same training step of ``model=<model>`` (forward, backward with its
micro-batch, gradient averaging; no optimizer step, so every step sees the same parameters)
with the two methods in alternating rounds whose order rotates; rank 0 prints the median
seconds per step of both and their ratio, and checks that both give the same averaged
gradients element for element.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def worker(rank: int, world: int, a, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world)
    )
    os.environ.setdefault("WANDB_MODE", "disabled")
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from mltrain.config import compose, typed
    from mltrain.data import BatchSampler, build_data
    from mltrain.model.transformer import ODETransformer
    from mltrain.train.distributed import all_reduce_grads
    from mltrain.train.grad_sync import BucketedAllReduce

    cfg = typed(compose([f"model={a.model}", "logger=none"]))
    data = build_data(cfg.data, cfg.model.seq_len)
    torch.manual_seed(0)
    model = ODETransformer(cfg.model, data.vocab_size)
    params = list(model.parameters())
    sampler = BatchSampler(data.train, cfg.model.seq_len, seed=1 + rank)
    batch = sampler.next(a.batch)
    sync = BucketedAllReduce(world, int(a.bucket_mb * 2**20))

    def step(bucketed: bool) -> list:
        model.zero_grad(set_to_none=True)
        if bucketed:
            sync.arm(params)
        _, loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        if bucketed:
            sync.finish()
        else:
            all_reduce_grads(params, world)
        return [p.grad.clone() for p in params]

    same = all(torch.equal(x, y) for x, y in zip(step(False), step(True)))
    samples = {"flat": [], "bucketed": []}
    names = list(samples)
    for r in range(a.rounds):
        for name in names[r % 2 :] + names[: r % 2]:
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(a.per_round):
                step(name == "bucketed")
            samples[name].append((time.perf_counter() - t0) / a.per_round)
    if rank == 0:
        flat, bucketed = (statistics.median(samples[k]) for k in names)
        n = sum(p.numel() for p in params)
        print(
            f"{a.model} ({n / 1e6:.1f} M parameters, batch {a.batch}, 2 gloo processes): "
            f"flat {flat * 1e3:.1f} ms/step, bucketed {bucketed * 1e3:.1f} ms/step, "
            f"ratio bucketed/flat {bucketed / flat:.3f}; same gradients: {same}"
        )
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="small")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--per-round", type=int, default=3)
    p.add_argument("--bucket-mb", type=float, default=25)
    a = p.parse_args()
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(2, a, port), nprocs=2)


if __name__ == "__main__":
    main()
