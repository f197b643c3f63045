"""Throughput: mltrain's trainer against a plain PyTorch loop, and coarse vs fine steps.

    python scripts/bench_throughput.py [--models small,paper] [--rounds 5] [--per-round 3]
    python scripts/bench_throughput.py --models paper --device cuda --precision bf16 --compile
    python scripts/bench_throughput.py --models tiny --rounds 1 --per-round 1   # a smoke check

For each model, in one process and interleaved (medians over rounds):
(a) the training-step time of mltrain's trainer (``Trainer.train_step`` on the fine level: batch
    sampling, forward, backward, clipping, optimizer step, the record written to
    metrics.jsonl) and (b) a minimal plain-PyTorch loop written below for the same model,
    batch, optimizer and clipping; it prints tokens/s of both and their ratio (goal >= 0.97);
(c) the coarse/fine step-time ratio of the trainer against the analytic FLOP ratio
    (goal: within 10 %); on CUDA also the MFU (the device's peak FLOP/s at the run's precision,
    mltrain.model.flops.PEAK_FLOPS; none for a device it does not list).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import interleaved, make_job  # noqa: E402

MODELS = {
    "tiny": ["model=tiny", "data.batch_size=4", "train.eval_sequences=8"],  # checks the script
    "small": ["model=small"],
    "paper": ["experiment=paper", "data.batch_size=4"],  # batch 4 keeps a CPU step near a second
}


def plain_loop(job):
    """A minimal training step in plain PyTorch over the same model, data and optimizer."""
    t = job.trainer
    model, sampler, device = job.model, t.sampler, job.ctx.device
    params = dict(model.named_parameters())
    from mltrain.train.optim import build_optimizer

    opt = build_optimizer(job.cfg.optimizer, params, fused=device.type == "cuda")
    amp, scaler = t.runner.autocast, t.runner.scaler  # the trainer's precision (fp16 scaling)
    batch_size = t.runner.global_batch
    max_norm = float(job.cfg.train.max_grad_norm) or float("inf")

    def step():
        batch = sampler.next(batch_size)
        if device.type == "cuda":  # pinned, as the trainer copies its batches
            batch = batch.pin_memory().to(device, non_blocking=True)
        with amp():
            _, loss = model(batch[:, :-1], batch[:, 1:])
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()

    return step


def bench(model: str, extra: list[str], rounds: int, per_round: int) -> None:
    job = make_job([*MODELS[model], "coarsening=even_odd", *extra])
    t = job.trainer
    fine, coarse = t.levels["fine"], t.levels["coarse_a"]
    med = interleaved(
        {
            "plain": plain_loop(job),
            "mltrain": lambda: t.train_step(fine),
            "coarse": lambda: t.train_step(coarse),
        },
        rounds=rounds,
        per_round=per_round,
        device=job.ctx.device,
    )
    tokens = t.plan.tokens_of("fine")
    tps = {k: tokens / v for k, v in med.items()}
    print(
        f"{model} ({job.ctx.device}, {t.runner.global_batch}x{t.seq_len} tokens/step): plain PyTorch {tps['plain']:.0f} tok/s, "
        f"mltrain {tps['mltrain']:.0f} tok/s, ratio mltrain/plain {tps['mltrain'] / tps['plain']:.3f}"
    )
    analytic = t.plan.step_flops["coarse_a"].total / t.plan.step_flops["fine"].total
    measured = med["coarse"] / med["fine"] if "fine" in med else med["coarse"] / med["mltrain"]
    print(
        f"{model}: coarse/fine step time {measured:.3f} vs analytic FLOP ratio {analytic:.3f} "
        f"(measured/analytic {measured / analytic:.3f})"
    )
    if t.peak:
        mfu = t.plan.step_flops["fine"].total / med["mltrain"] / t.peak
        print(
            f"{model}: MFU {mfu:.3f} (fine step, {t.precision}, peak {t.peak:.3g} FLOP/s of "
            f"{torch.cuda.get_device_name(job.ctx.device)})"
        )
    job.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="small,paper", help=f"of {', '.join(MODELS)}")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--per-round", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--batch", type=int, help="data.batch_size for every model")
    a = p.parse_args(argv)
    bad = sorted(set(a.models.split(",")) - set(MODELS))
    if bad:
        p.error(f"--models {bad[0]} is not allowed: choose from {', '.join(MODELS)}")
    extra = [
        f"train.device={a.device}",
        f"train.precision={a.precision}",
        f"train.compile={str(a.compile).lower()}",
    ]
    if a.batch:
        extra.append(f"data.batch_size={a.batch}")
    for model in a.models.split(","):
        bench(model, extra, a.rounds, a.per_round)


if __name__ == "__main__":
    main()
