"""The single-level trainer: gradient accumulation, records, FLOP counters."""

from __future__ import annotations

import math

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
    _, _, recs = _train(tmp_path / "a", "train.max_grad_norm=0.01", "optimizer.lr=0.5")
    assert all(r["train/grad_norm"] > 0.01 for r in recs)  # norms are logged before clipping
