"""The single-level trainer: gradient accumulation, records, FLOP counters."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import read_jsonl, run_job


def _train(run_dir, *overrides):
    job = run_job(
        run_dir, "coarsening=none", "train.steps=3", "train.max_grad_norm=1.0", *overrides
    )
    recs = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in r]
    return (
        [r["train/loss"] for r in recs],
        {n: p.detach().clone() for n, p in job.model.named_parameters()},
        recs,
    )


def test_batch_8x1_and_2x4_give_the_same_update(tmp_path):
    l1, p1, r1 = _train(tmp_path / "a", "data.batch_size=8", "train.grad_accum=1")
    l2, p2, r2 = _train(tmp_path / "b", "data.batch_size=2", "train.grad_accum=4")
    assert len(l1) == 3
    for a, b in zip(l1, l2):
        assert math.isclose(a, b, rel_tol=1e-5)
    for n in p1:
        torch.testing.assert_close(p1[n], p2[n], rtol=1e-4, atol=1e-6, msg=n)
    assert [r["perf/flops"] for r in r1] == [r["perf/flops"] for r in r2]  # same tokens per step
    assert r1[0]["perf/tokens"] == 8 * 32


def test_records_carry_the_contract_metrics(tmp_path):
    _, _, recs = _train(tmp_path / "a", "train.eval_every=3")
    all_recs = read_jsonl(tmp_path / "a" / "metrics.jsonl")
    assert all_recs[0]["step"] == 0 and "val/loss" in all_recs[0] and all_recs[0]["perf/flops"] == 0
    for key in (
        "step",
        "fine_step",
        "level",
        "train/loss",
        "lr",
        "perf/flops",
        "perf/flops_nonembed",
        "perf/tokens",
        "perf/tok_per_s",
        "perf/wall_s",
        "perf/flops_level/fine",
    ):
        assert all(key in r for r in recs), key
    last = all_recs[-1]
    assert last["step"] == 3 and math.isclose(last["val/ppl"], math.exp(last["val/loss"]))
    assert len(all_recs) == 4  # one record per optimizer step, plus the evaluation before training
    assert all(math.isfinite(r["train/loss"]) for r in recs)


def test_gradient_clipping_bounds_the_update(tmp_path):
    """SGD without momentum or decay moves the parameters by lr * clipped gradient: with a
    raw gradient norm above max_grad_norm, the update's norm is exactly lr * max_grad_norm."""
    from tests.helpers import make_job

    lr, max_norm = 0.5, 0.01
    job = make_job(
        tmp_path / "a",
        "coarsening=none",
        "train.steps=1",
        f"train.max_grad_norm={max_norm}",
        f"optimizer.lr={lr}",
        "optimizer.momentum=0",
        "optimizer.weight_decay=0",
        "schedule=constant",
    )
    before = torch.cat([p.detach().flatten().clone() for p in job.model.parameters()])
    try:
        job.run()
    finally:
        job.close()
    after = torch.cat([p.detach().flatten() for p in job.model.parameters()])
    (rec,) = [r for r in read_jsonl(tmp_path / "a" / "metrics.jsonl") if "train/loss" in r]
    assert rec["lr"] == lr and rec["train/grad_norm"] > 10 * max_norm  # clipping is active
    step = float((after - before).norm())
    assert step == pytest.approx(lr * max_norm, rel=1e-3)  # not lr * raw norm
    assert step < lr * rec["train/grad_norm"] / 10
