"""The V-cycle scheme (:mod:`mltrain.schemes.vcycle`): the cycle's operations, restriction by
injection and prolongation (Eq. 4, :mod:`mltrain.levels.restrict_prolong`) as its phases run
them, the V-cycle loop.

Right values come from the math: δ = 0 changes nothing, δ = 1 is plain coarse training,
0 < δ < 1 is the convex combination, and window = 0 is single-level training.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from mltrain.errors import ConfigError
from mltrain.levels import build_hierarchy, level_parameters
from mltrain.schemes.vcycle import ApplyDeferred, Defer, Prolong, Restrict, Train, build_cycle
from mltrain.train.optim import param_groups
from tests.helpers import compose, make_job, read_jsonl, run_job

PLAIN = ["optimizer.weight_decay=0.0", "train.max_grad_norm=0", "schedule=constant"]


def params_of(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def phase(level, m, close=Prolong):
    return [Restrict(level), Train(level, m), close(level)]


# ----------------------------------------------------------------------------- the cycle
def test_recursive_hierarchy_and_its_v_cycle():
    c = compose("coarsening=recursive", "coarsening.hierarchy.depth=2").coarsening
    lv = build_hierarchy(c, 24)
    assert [(x.name, x.blocks, x.h, x.parent) for x in lv[1:]] == [
        ("coarse_1", tuple(range(1, 24, 2)), 2.0, "fine"),
        ("coarse_2", tuple(range(3, 24, 4)), 4.0, "coarse_1"),
    ]
    assert build_cycle(lv, 5) == (
        Train("fine", 1),
        Restrict("coarse_1"),
        Train("coarse_1", 5),
        Restrict("coarse_2"),
        Train("coarse_2", 5),
        Prolong("coarse_2"),
        Prolong("coarse_1"),
    )
    with pytest.raises(
        ConfigError, match=r"factor\^depth = 2\^3 = 8, but it must divide model.n_layer=12"
    ):
        build_hierarchy(
            compose("coarsening=recursive", "coarsening.hierarchy.depth=3").coarsening, 12
        )


def test_cycle_orders_sequential_summed_and_fine_step_after():
    lv = build_hierarchy(compose("coarsening=even_odd").coarsening, 4)
    assert build_cycle(lv, 2) == (Train("fine", 1), *phase("coarse_a", 2), *phase("coarse_b", 2))
    assert build_cycle(lv, 2, combine="summed") == (
        Train("fine", 1),
        *phase("coarse_a", 2, Defer),
        *phase("coarse_b", 2, Defer),
        ApplyDeferred(),
    )
    assert build_cycle(lv, 2, fine_step="after")[-1] == Train("fine", 1)
    assert build_cycle(lv, 0) == (Train("fine", 1),)


# ----------------------------------------------------------------------------- restriction
def test_restriction_is_injection_no_copies(tmp_path):
    job = make_job(tmp_path / "r", "coarsening=even_odd")
    model = job.model
    own = {n: p for n, p in model.named_parameters()}
    for lv in job.plan.levels:
        for n, p in level_parameters(model, lv).items():
            assert p is own[n] and p.data_ptr() == own[n].data_ptr()
    a = level_parameters(model, job.plan.levels[1])
    assert set(a) == {
        n for n in own if not n.startswith("blocks.") or int(n.split(".")[1]) % 2 == 1
    }
    a_frozen = level_parameters(model, dataclasses.replace(job.plan.levels[1], train_shared=False))
    assert all(n.startswith("blocks.") for n in a_frozen)
    n_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert len(n_storages) == len(list(model.parameters()))  # tied head adds no tensor


# ----------------------------------------------------------------------------- prolongation
def test_delta_zero_leaves_every_parameter_exactly_unchanged(tmp_path):
    job = make_job(tmp_path / "r", "coarsening=even_odd", "coarsening.vcycle.delta=0")
    t = job.trainer
    t.run_ops([Train("fine", 1)])
    before = params_of(job.model)
    t.run_ops(phase("coarse_a", 3) + phase("coarse_b", 3))
    after = params_of(job.model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert t.progress.steps == 7  # the coarse steps did happen


def _hand_written_coarse_training(model, sampler, level, steps, lr, batch):
    """Plain PyTorch: SGD (momentum 0.9) on the coarse path, no prolongation."""
    params = level_parameters(model, level)
    opt = torch.optim.SGD(param_groups(params, 0.0), lr=lr, momentum=0.9)
    for _ in range(steps):
        b = sampler.next(batch)
        _, loss = model(b[:, :-1], b[:, 1:], path=level.path)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def test_delta_one_equals_training_the_coarse_path_directly(tmp_path):
    job = make_job(tmp_path / "r", "coarsening=even_odd", "coarsening.vcycle.delta=1", *PLAIN)
    t = job.trainer
    ref_model, ref_sampler = copy.deepcopy(job.model), copy.deepcopy(t.sampler)
    t.run_ops(phase("coarse_a", 4))
    _hand_written_coarse_training(
        ref_model, ref_sampler, job.plan.levels[1], 4, t.optims.peak_lr, t.runner.global_batch
    )
    ref = params_of(ref_model)
    got = params_of(job.model)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=0, atol=0, msg=n)


def test_prolongation_is_the_convex_combination_of_eq4(tmp_path):
    delta = 0.3
    job = make_job(
        tmp_path / "a", "coarsening=even_odd", f"coarsening.vcycle.delta={delta}", *PLAIN
    )
    ref = make_job(tmp_path / "b", "coarsening=even_odd", "coarsening.vcycle.delta=1", *PLAIN)
    theta0 = params_of(job.model)
    job.trainer.run_ops(phase("coarse_a", 3))
    ref.trainer.run_ops(phase("coarse_a", 3))
    got, after = params_of(job.model), params_of(ref.model)
    for n in theta0:
        torch.testing.assert_close(
            got[n], theta0[n] + delta * (after[n] - theta0[n]), rtol=1e-6, atol=1e-7
        )
    changed = [n for n in theta0 if not torch.equal(got[n], theta0[n])]
    assert "wte.weight" in changed and "blocks.1.attn.c_attn.weight" in changed
    assert "blocks.0.attn.c_attn.weight" not in changed


def test_summed_combination_adds_both_delta_weighted_changes(tmp_path):
    delta = 0.25
    job = make_job(
        tmp_path / "s",
        "coarsening=even_odd",
        f"coarsening.vcycle.delta={delta}",
        "coarsening.vcycle.combine=summed",
        *PLAIN,
    )
    ref = make_job(tmp_path / "r", "coarsening=even_odd", "coarsening.vcycle.delta=1", *PLAIN)
    theta0 = params_of(job.model)
    job.trainer.run_ops(
        build_cycle(job.plan.levels, 3, combine="summed")[1:]
    )  # without the fine step
    # reference: A from θ0, then B from θ0 again (same batches: B draws after A's)
    ref.trainer.run_ops(phase("coarse_a", 3))
    theta_a = params_of(ref.model)
    with torch.no_grad():
        for n, p in ref.model.named_parameters():
            p.copy_(theta0[n])
    ref.trainer.run_ops(phase("coarse_b", 3))
    theta_b = params_of(ref.model)
    got = params_of(job.model)
    for n in theta0:
        want = theta0[n] + delta * (theta_a[n] - theta0[n]) + delta * (theta_b[n] - theta0[n])
        torch.testing.assert_close(got[n], want, rtol=1e-6, atol=1e-7, msg=n)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("state", ["separate", "shared", "reset"])
def test_parameters_outside_the_phase_are_bitwise_unchanged(tmp_path, optimizer, state):
    job = make_job(
        tmp_path / "r",
        "coarsening=even_odd",
        f"optimizer={optimizer}",
        "optimizer.weight_decay=0.1",
        f"coarsening.hierarchy.optimizer_state={state}",
        *(["optimizer.momentum=0.9"] if optimizer == "sgd" else []),
    )
    t = job.trainer
    t.run_ops([Train("fine", 1)])  # every parameter now has optimizer state (momentum, moments)
    before = params_of(job.model)
    t.run_ops(phase("coarse_a", 3))
    after = params_of(job.model)
    outside = [n for n in before if n.startswith("blocks.") and int(n.split(".")[1]) % 2 == 0]
    inside = [n for n in before if n.startswith("blocks.") and int(n.split(".")[1]) % 2 == 1]
    assert outside and all(torch.equal(before[n], after[n]) for n in outside)
    assert all(not torch.equal(before[n], after[n]) for n in inside if n.endswith("weight"))


def test_train_shared_false_keeps_embeddings_and_final_norm_bitwise(tmp_path):
    job = make_job(
        tmp_path / "r",
        "coarsening=even_odd",
        "coarsening.hierarchy.train_shared=false",
        "optimizer.weight_decay=0.1",
    )
    job.trainer.run_ops([Train("fine", 1)])
    before = params_of(job.model)
    job.trainer.run_ops(phase("coarse_b", 2))
    after = params_of(job.model)
    for n in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"):
        assert torch.equal(before[n], after[n]), n
    assert not torch.equal(before["blocks.0.mlp.c_fc.weight"], after["blocks.0.mlp.c_fc.weight"])
    assert job.model.lm_head.weight is job.model.wte.weight


# ----------------------------------------------------------------------------- the loop
def test_records_follow_the_v_cycle_and_stop_after_the_window(tmp_path):
    job = run_job(
        tmp_path / "r",
        "coarsening=even_odd",
        "coarsening.vcycle.coarse_steps=2",
        "coarsening.vcycle.window=2",
        "train.steps=4",
        "train.eval_every=2",
        "coarsening.vcycle.coarse_lr_scale=0.5",
    )
    recs = [r for r in read_jsonl(tmp_path / "r" / "metrics.jsonl") if "train/loss" in r]
    assert [r["level"] for r in recs] == [
        "fine",
        "coarse_a",
        "coarse_a",
        "coarse_b",
        "coarse_b",
    ] * 2 + ["fine"] * 2
    assert [r["step"] for r in recs] == list(range(1, 13))
    assert [r["fine_step"] for r in recs] == [1] * 5 + [2] * 5 + [3, 4]
    fine_lr = {r["fine_step"]: r["lr"] for r in recs if r["level"] == "fine"}
    assert fine_lr[1] != fine_lr[2]  # cosine: the LR follows fine steps
    assert all(r["lr"] == 0.5 * fine_lr[r["fine_step"]] for r in recs if r["level"] != "fine")
    flops = [r["perf/flops"] for r in recs]
    assert all(a < b for a, b in zip(flops, flops[1:]))  # strictly increasing across switches
    f = job.plan.step_flops
    assert flops[-1] == 4 * f["fine"].total + 4 * f["coarse_a"].total + 4 * f["coarse_b"].total
    assert recs[-1]["perf/flops_level/coarse_a"] == 4 * f["coarse_a"].total


def test_fine_step_after_runs_coarse_phases_first(tmp_path):
    run_job(
        tmp_path / "r",
        "coarsening=even",
        "coarsening.vcycle.coarse_steps=2",
        "coarsening.vcycle.window=1",
        "train.steps=2",
        "coarsening.vcycle.fine_step=after",
    )
    recs = [r for r in read_jsonl(tmp_path / "r" / "metrics.jsonl") if "train/loss" in r]
    assert [(r["level"], r["fine_step"]) for r in recs] == [
        ("coarse_a", 0),
        ("coarse_a", 0),
        ("fine", 1),
        ("fine", 2),
    ]


def test_window_zero_is_exactly_single_level_training(tmp_path):
    losses, params = [], []
    for name, c in (
        ("ml", ["coarsening=even_odd", "coarsening.vcycle.window=0"]),
        ("sl", ["coarsening=none"]),
    ):
        job = run_job(tmp_path / name, *c, "train.steps=5")
        losses.append(
            [
                r["train/loss"]
                for r in read_jsonl(tmp_path / name / "metrics.jsonl")
                if "train/loss" in r
            ]
        )
        params.append(params_of(job.model))
    assert losses[0] == losses[1] and len(losses[0]) == 5
    assert all(torch.equal(params[0][n], params[1][n]) for n in params[0])


def test_validation_always_evaluates_the_fine_model(tmp_path):
    job = make_job(tmp_path / "r", "coarsening=even_odd")
    t = job.trainer
    t.run_ops([Restrict("coarse_a"), Train("coarse_a", 1)])  # even inside an open coarse phase
    with torch.no_grad():
        job.model.eval()
        losses = [
            job.model(b[:, :-1], b[:, 1:])[1].item() * len(b)
            for b in t.val_batches.split(t.runner.micro)
        ]
        job.model.train()
    assert t.evaluate() == pytest.approx(sum(losses) / len(t.val_batches), rel=1e-6)


def test_window_longer_than_the_run_is_allowed_with_a_warning(tmp_path, caplog):
    job = make_job(
        tmp_path / "r", "coarsening=even_odd", "coarsening.vcycle.window=10", "train.steps=2"
    )
    assert "coarsening.vcycle.window=10 is longer than the run (2 fine steps)" in caplog.text
    job.close()
