"""Progressive random sub-paths (RaPTr; mltrain/levels/raptr.py)."""

from __future__ import annotations

import math

import pytest
import torch

from mltrain.config import ModelConfig, typed
from mltrain.errors import ConfigError
from mltrain.levels import build_hierarchy
from mltrain.levels.raptr import RandomPath
from mltrain.model.flops import measure_train_flops
from mltrain.model.transformer import ODETransformer
from mltrain.plan.plan import build_plan
from tests.helpers import (
    PassCounter,
    compose,
    final_params,
    losses,
    make_job,
    preempt,
    read_jsonl,
    run_job,
)

N = 12
RAPTR = [
    "coarsening=raptr",
    "model.n_layer=12",
    "train.steps=8",
    "train.eval_every=4",
    "train.checkpoint_every=4",
    "optimizer=adamw",
    "optimizer.lr=3e-3",
]


def level(p, scale="inverse"):
    return RandomPath(
        f"raptr_{p}", tuple(range(N)), 1.0, "fine", optimizer="fine", p=p, scale=scale
    )


@pytest.mark.parametrize("p", [2, 3, 6, 11])
def test_sub_paths_keep_first_and_last_have_p_blocks_in_order_and_scale_the_middle(p):
    lv, g = level(p), torch.Generator().manual_seed(5)
    for _ in range(50):
        path = lv.sample_path(g)
        assert len(path.blocks) == p and path.blocks[0] == 0 and path.blocks[-1] == N - 1
        assert list(path.blocks) == sorted(set(path.blocks))
        if p > 2:  # first and last h = 1, the middle blocks one common step
            assert path.hs[0] == path.hs[-1] == 1.0 and len(set(path.hs[1:-1])) == 1
            assert math.isclose(sum(path.hs), N)  # it integrates the fine path's total time
    path = level(p, "none").sample_path(g)
    assert path.hs is None and path.h == 1.0


def test_sub_paths_follow_the_seed():
    lv = level(6)
    draw = lambda seed: [path.blocks for path in _paths(lv, seed, 20)]  # noqa: E731
    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def _paths(lv, seed, n):
    g = torch.Generator().manual_seed(seed)
    return [lv.sample_path(g) for _ in range(n)]


def test_each_middle_block_is_drawn_with_probability_p_minus_2_over_n_minus_2():
    n, p = 4000, 6
    counts = torch.zeros(N)
    for path in _paths(level(p), 0, n):
        counts[list(path.blocks)] += 1
    q = (p - 2) / (N - 2)
    sigma = math.sqrt(n * q * (1 - q))
    assert counts[0] == counts[-1] == n
    assert ((counts[1:-1] - n * q).abs() < 5 * sigma).all()


def test_the_inverse_scale_makes_each_blocks_expected_step_the_fine_paths():
    """Stochastic depth's unbiasedness: over the draws, a block's step h (0 when off the path)
    averages to the fine path's h = 1, so the expected update is the fine path's to first order."""
    n, p = 4000, 4
    total = torch.zeros(N, dtype=torch.float64)
    for path in _paths(level(p), 1, n):
        total[list(path.blocks)] += torch.tensor(path.hs, dtype=torch.float64)
    q, h = (p - 2) / (N - 2), (N - 2) / (p - 2)
    sigma = h * math.sqrt(q * (1 - q) / n)  # of the mean of h·Bernoulli(q)
    assert ((total / n - 1.0).abs() < 5 * sigma).all()
    assert total[0] == total[-1] == n


def test_raptr_hierarchy_levels_flops_and_bad_lengths():
    cfg = typed(compose("coarsening=raptr", "model.n_layer=12"))
    levels = build_hierarchy(cfg.coarsening, 12)
    assert [lv.name for lv in levels] == ["fine", "raptr_6", "raptr_8", "raptr_10"]
    assert all(lv.optimizer == "fine" and lv.blocks == tuple(range(12)) for lv in levels[1:])
    plan = build_plan(cfg, 8192)
    assert plan.tokens_per_step == 4 * 32
    torch.manual_seed(0)
    model = ODETransformer(
        ModelConfig(n_layer=12, n_embd=32, n_head=4, seq_len=32, block_size=32), 8192
    )
    window = torch.randint(0, 8192, (4, 33), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    for lv in levels:  # a step costs its p block evaluations, measured by FlopCounterMode
        measured = measure_train_flops(model, window[:, :-1], window[:, 1:], lv.sample_path(g))
        assert abs(measured - plan.step_flops[lv.name].total) / measured < 0.01, lv.name
        model.zero_grad()
    assert all(not s.enter for s in plan.stages)  # every block trains in every stage: no growth
    for bad, what in (
        ("[6,12]", "12 is outside 2..11"),
        ("[6,6]", "repeats a length"),
        ("[]", "needs"),
    ):
        with pytest.raises(ConfigError, match=what):
            build_hierarchy(
                typed(compose("coarsening=raptr", f"coarsening.raptr.blocks={bad}")).coarsening, 12
            )


def test_a_run_trains_p_t_blocks_per_step_and_leaves_the_others_bit_identical(tmp_path):
    job = make_job(tmp_path / "run", *RAPTR)
    t = job.trainer
    seen = []
    step, path_of = t.train_step, t.path_of

    def recording_path_of(lv):
        path = path_of(lv)
        seen.append((lv.name, path, {n: p.detach().clone() for n, p in t.model.named_parameters()}))
        return path

    def checking_step(lv, *args):
        step(lv, *args)
        name, path, before = seen[-1]
        for n, p in t.model.named_parameters():
            if n.startswith("blocks.") and int(n.split(".")[1]) not in path.blocks:
                assert torch.equal(p, before[n]), n  # off the path: no gradient, no update
        seen[-1] = (name, path)

    t.path_of, t.train_step = recording_path_of, checking_step
    counter = PassCounter(job.model, t)
    job.run()
    job.close()
    want = [s.level for s in job.plan.stages for _ in range(s.iterations)]
    assert [name for name, _ in seen] == want
    for name, path in seen:
        p = N if name == "fine" else int(name.split("_")[1])
        assert len(path.blocks) == p and path.blocks[0] == 0 and path.blocks[-1] == N - 1
    # the hooks on the blocks saw each step evaluate exactly its sampled path, and the FLOPs
    # recorded are those of the passes that ran
    assert [p["path"] for p in counter.training()] == [path.blocks for _, path in seen]
    recs = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert recs[-1]["perf/flops"] == counter.flops()
    assert recs[-1]["perf/flops_nonembed"] == counter.flops(head=False)


def test_raptr_run_resumes_bitwise_mid_stage(tmp_path):
    run_job(tmp_path / "ref", *RAPTR)
    preempt(tmp_path / "run", *RAPTR, stop_at=3)
    run_job(tmp_path / "run", *RAPTR, "train.resume=auto")
    assert losses(tmp_path / "run") == losses(tmp_path / "ref")
    a, b = final_params(tmp_path / "run"), final_params(tmp_path / "ref")
    assert all(torch.equal(a[k], b[k]) for k in a)
