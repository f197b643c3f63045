"""Coarse-to-fine stages (mltrain/schemes/stages.py) and the Grow operation in a run (mltrain/schemes/growth.py):
the budget split, records, optimizer state at a growth, LR re-warm-up, exact resume."""

from __future__ import annotations

import pytest
import torch

from mltrain.config import typed
from mltrain.errors import ConfigError
from mltrain.plan.plan import build_plan
from mltrain.schemes.stages import Grow
from mltrain.train.checkpoint import list_checkpoints, load_checkpoint
from tests.helpers import (
    compose,
    counted_run,
    final_params,
    losses,
    make_job,
    preempt,
    read_jsonl,
    run_job,
    val_loss_by_hand,
)

V = 8192  # the tiny runs' BPE vocabulary
# 4 blocks: coarse_b = blocks 0, 2 (h=2) for 60 % of 12 fine steps' FLOPs (8 iterations), then
# the fine path (5 iterations); evaluation and checkpoints every 4 iterations (one at the growth)
GROW = [
    "coarsening=grow",
    "coarsening.stages.shares=[0.6,0.4]",  # pinned: the presets' defaults may be retuned
    "coarsening.stages.grow_init=ode",
    "optimizer=adamw",
    "optimizer.lr=3e-3",
    "train.steps=12",
    "train.eval_every=4",
    "train.checkpoint_every=4",
    "train.keep_checkpoints=10",
]
REC = [
    "coarsening=grow_recursive",
    "coarsening.stages.shares=[0.3,0.3,0.4]",
    *GROW[3:],
]  # 3 -> 1, 3 -> 0..3


def plan_of(*overrides):
    return build_plan(typed(compose(*overrides)), V)


def walk(job, iterations):
    """Run the plan's first ``iterations`` iterations (no evaluation, no records kept)."""
    t = job.trainer
    while t.iteration < iterations:
        t.run_iteration()


@pytest.mark.parametrize(
    "overrides",
    [
        ["coarsening=grow"],
        ["coarsening=grow", "coarsening.stages.shares=[0.6,0.4]"],
        ["coarsening=grow_recursive"],
        ["coarsening=raptr", "model.n_layer=12"],
        [
            "coarsening=grow",
            "coarsening.vcycle.window=2",
            "coarsening.vcycle.coarse_steps=3",
        ],  # V-cycle settings a staged run does not read: the same stages
    ],
)
def test_stage_shares_add_up_to_the_budget_within_one_step(overrides):
    fine_step = plan_of(*overrides, "train.steps=1").step_flops["fine"].total
    budget = 101 * fine_step
    plan = plan_of(*overrides, f"train.target_flops={budget}")
    shares = typed(compose(*overrides)).coarsening.stages.shares
    start, spent = 0, 0
    for i, stage in enumerate(plan.stages):
        spent = plan.flops(0, start + stage.iterations).total
        step = plan.step_flops[stage.level].total
        assert abs(spent - budget * sum(shares[: i + 1])) <= step / 2 + 1  # boundary placement
        start += stage.iterations
    assert abs(plan.flops().total - budget) <= fine_step / 2


def test_recursive_plan_grows_at_each_change():
    plan = plan_of(
        "coarsening=grow_recursive", "model.n_layer=12", "coarsening.stages.grow_init=ode"
    )
    assert [s.level for s in plan.stages] == ["coarse_2", "coarse_1", "fine"]
    assert plan.stages[0].enter == ()
    assert plan.stages[1].enter == (Grow("coarse_2", "coarse_1", "ode"),)
    assert plan.stages[2].enter == (Grow("coarse_1", "fine", "ode"),)
    assert plan.level("coarse_2").blocks == (3, 7, 11) and plan.level("coarse_1").h == 2.0
    assert "Grow(coarse_2 -> coarse_1, ode)" in plan.describe()


def test_stages_must_keep_the_trained_blocks():
    with pytest.raises(
        ConfigError, match=r"coarse_b follows coarse_a but lacks its blocks \[1, 3\]"
    ):
        plan_of(
            "coarsening=even_odd",
            "coarsening.scheme=stages",
            "coarsening.stages.levels=[coarse_a,coarse_b,fine]",
            "coarsening.stages.shares=[0.3,0.3,0.4]",
        )


def test_train_max_steps_caps_every_stage_and_keeps_each_growth():
    plan = plan_of("coarsening=grow_recursive", "train.steps=300", "train.max_steps=6")
    assert plan.iterations <= 6 and all(s.iterations >= 1 for s in plan.stages)
    assert sum(1 for s in plan.stages if s.enter) == 2


def test_a_run_of_one_fine_stage_equals_single_level_training_bit_for_bit(tmp_path):
    common = ["train.steps=6", "train.eval_every=2", "optimizer=adamw"]
    run_job(tmp_path / "single", "coarsening=none", *common)
    run_job(
        tmp_path / "staged",
        "coarsening=none",
        "coarsening.scheme=stages",
        "coarsening.stages.levels=[fine]",
        "coarsening.stages.shares=[1.0]",
        *common,
    )
    a, b = (read_jsonl(tmp_path / d / "metrics.jsonl") for d in ("single", "staged"))
    drop = ("perf/wall_s", "perf/tok_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in a] == [
        {k: v for k, v in r.items() if k not in drop} for r in b
    ]
    pa, pb = final_params(tmp_path / "single"), final_params(tmp_path / "staged")
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_growth_run_records_flops_per_stage_and_measures_the_coarse_path_before_growing(tmp_path):
    from mltrain.schemes.growth import GROWTH

    job, counter = counted_run(tmp_path / "run", *GROW)
    plan, t = job.plan, job.trainer
    n0 = plan.stages[0].iterations
    recs = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    steps = [r for r in recs if "train/loss" in r]
    assert [r["level"] for r in steps] == ["coarse_b"] * n0 + ["fine"] * plan.stages[1].iterations
    for r in recs:  # every record carries the counters of every level
        assert {"perf/flops_level/fine", "perf/flops_level/coarse_b"} <= set(r)
    # spent = the passes that ran, counted on the model: coarse_b evaluates blocks 0, 2
    trained = counter.training()
    assert [p["path"] for p in trained] == [(0, 2)] * n0 + [(0, 1, 2, 3)] * (len(trained) - n0)
    last = recs[-1]
    assert last["perf/flops"] == counter.flops()
    assert last["perf/flops_level/coarse_b"] == sum(3 * p["forward"] for p in trained[:n0])
    assert last["perf/flops_level/fine"] == sum(3 * p["forward"] for p in trained[n0:])
    # validation and the growth's two measurements: evaluation FLOPs, booked apart
    assert last["perf/flops_eval"] == counter.flops(eval=True)
    # the evaluation that ends the coarse stage measures the coarse path, the same number the
    # growth measures before growing (same parameters, same windows); both measurements by
    # hand from the checkpoint written at the end of the coarse stage
    end_coarse, first_fine = steps[n0 - 1], steps[n0]
    assert end_coarse["val/loss"] == first_fine["grow/loss_before"]
    (ckpt,) = [
        c
        for c in list_checkpoints(tmp_path / "run" / "checkpoints")
        if load_checkpoint(c)["progress"]["iteration"] == n0
    ]
    src, dst = t.levels["coarse_b"], t.levels["fine"]
    job.model.load_state_dict(load_checkpoint(ckpt)["model"])
    before = val_loss_by_hand(job.model, t.val_batches, t.runner.micro, src.path)
    GROWTH.get("ode").apply(job.model, src, dst)
    after = val_loss_by_hand(job.model, t.val_batches, t.runner.micro, dst.path)
    assert first_fine["grow/loss_before"] == pytest.approx(before, rel=1e-12)
    assert first_fine["grow/loss_after"] == pytest.approx(after, rel=1e-12)
    assert first_fine["grow/loss_jump"] == pytest.approx(after - before, rel=1e-9, abs=1e-12)
    assert sum("grow/loss_jump" in r for r in recs) == 1


@pytest.mark.parametrize("overrides, untouched", [(GROW, (1, 3)), (REC, (0, 1, 2))])
def test_blocks_a_stage_does_not_train_stay_bit_identical(tmp_path, overrides, untouched):
    job = make_job(tmp_path / "run", *overrides)
    init = {k: v.clone() for k, v in job.model.state_dict().items()}
    n0 = job.plan.stages[0].iterations
    job.run()
    job.close()
    (ckpt,) = [
        c
        for c in list_checkpoints(tmp_path / "run" / "checkpoints")
        if load_checkpoint(c)["progress"]["iteration"] == n0 - n0 % 4
    ]
    state = load_checkpoint(ckpt)["model"]
    for k, v in state.items():
        block = int(k.split(".")[1]) if k.startswith("blocks.") else None
        if block in untouched:
            assert torch.equal(v, init[k]), k
        elif k.startswith("blocks.") and "weight" in k and "ln" not in k:
            assert not torch.equal(v, init[k]), k  # the trained blocks did train


@pytest.mark.parametrize("policy", ["separate", "shared", "reset"])
@pytest.mark.parametrize("init", ["ode", "stack"])
def test_growth_hands_trained_state_over_and_new_blocks_start_fresh(tmp_path, policy, init):
    job = make_job(
        tmp_path / "run",
        *GROW,
        f"coarsening.hierarchy.optimizer_state={policy}",
        f"coarsening.stages.grow_init={init}",
    )
    t = job.trainer
    n0 = job.plan.stages[0].iterations
    walk(job, n0)
    src = t.optims.get("coarse_b")
    named = dict(t.model.named_parameters())
    before = {
        n: {k: v.clone() for k, v in src.state[p].items()}
        for n, p in named.items()
        if p in src.state
    }
    assert set(before) == {n for n in named if not n.startswith(("blocks.1.", "blocks.3."))}
    t.run_op(job.plan.stages[1].enter[0])
    dst = t.optims.get("fine")
    # ode keeps the trained blocks in place; stack moves block 2 to 1 and puts copies on top
    origin = {0: 0, 2: 2} if init == "ode" else {0: 0, 1: 2}
    for n, p in named.items():
        if n.startswith("blocks."):
            b = int(n.split(".")[1])
            if b not in origin:
                assert p not in dst.state or not dst.state[p], n  # fresh
                continue
            want = before[n.replace(f"blocks.{b}.", f"blocks.{origin[b]}.", 1)]
        else:
            want = before[n]
        got = dst.state[p]
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want), n
        if policy != "shared":
            assert all(got[k] is not src.state[p].get(k) for k in got)  # copies
    job.close()


@pytest.mark.parametrize(
    "opt",
    [
        lambda ps, lr: torch.optim.AdamW(ps, lr=lr, betas=(0.9, 0.95), weight_decay=0.1),
        lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9, dampening=0.1),
    ],
)
def test_the_re_warm_up_is_a_learning_rate_of_j_plus_1_over_w_plus_1_for_the_new_blocks(opt):
    """GrowWarmup's steps over a whole warm-up and after it, against the optimizer given a
    parameter group of its own for the new block at lr·(j+1)/(W+1) (torch's own per-group
    learning rate, the route the re-warm-up avoids): the same parameters to float rounding,
    and the old parameter at the full lr, untouched by the warm-up."""
    from types import SimpleNamespace

    from mltrain.schemes.rewarm import GrowWarmup

    torch.manual_seed(0)
    new, old = (torch.nn.Parameter(torch.randn(7, 5, dtype=torch.float64)) for _ in range(2))
    ref_new, ref_old = (torch.nn.Parameter(p.detach().clone()) for p in (new, old))
    lr, W, start = 0.01, 3, 2  # the grown stage starts at iteration 2
    warm = GrowWarmup.__new__(GrowWarmup)  # the extension without a trainer: its span by hand
    warm.steps, warm.spans, warm._before = W, [(start, [new])], None
    o = opt([new, old], lr)
    groups = opt([ref_new], lr).param_groups + opt([ref_old], lr).param_groups
    ref = type(o)(groups)
    trainer = SimpleNamespace(iteration=0)
    for k in range(start, start + W + 2):  # W warm-up iterations, then two plain ones
        trainer.iteration = k
        g_new, g_old = (
            torch.randn(7, 5, dtype=torch.float64),
            torch.randn(7, 5, dtype=torch.float64),
        )
        new.grad, old.grad, ref_new.grad, ref_old.grad = g_new, g_old, g_new.clone(), g_old.clone()
        warm.on_gradients(trainer, None)
        o.step()
        warm.after_step(trainer, None)
        j = k - start
        ref.param_groups[0]["lr"] = lr * (j + 1) / (W + 1) if j < W else lr
        ref.step()
        torch.testing.assert_close(new, ref_new, rtol=1e-12, atol=1e-14)
        assert torch.equal(old, ref_old)


def test_grow_warmup_scales_only_the_new_blocks_steps(tmp_path):
    jobs = [
        make_job(tmp_path / f"w{w}", *GROW, f"coarsening.stages.grow_warmup={w}") for w in (0, 2)
    ]
    n0 = jobs[0].plan.stages[0].iterations
    for job in jobs:
        walk(job, n0)
    grown = []
    for job in jobs:
        walk(job, n0 + 1)  # the growth and the first fine step (j = 0: f = 1/3)
        grown.append({n: p.detach().clone() for n, p in job.model.named_parameters()})
    walk_ref = make_job(tmp_path / "ref", *GROW)  # the state right after the growth, no step
    walk(walk_ref, n0)
    walk_ref.trainer.run_op(walk_ref.plan.stages[1].enter[0])
    at_growth = {n: p.detach().clone() for n, p in walk_ref.model.named_parameters()}
    plain, warm = grown
    for n in plain:
        if n.startswith(("blocks.1.", "blocks.3.")):  # the ode copies: a third of the step
            # float32 parameters: the lerp rounds to a few ulps of |θ| <= 1
            torch.testing.assert_close(
                warm[n] - at_growth[n], (plain[n] - at_growth[n]) / 3, rtol=0, atol=2e-7
            )
            assert not torch.equal(warm[n], plain[n])
        else:
            assert torch.equal(warm[n], plain[n]), n
    for job in [*jobs, walk_ref]:
        job.close()


@pytest.mark.parametrize(
    "overrides, stop_at",
    [
        pytest.param(GROW, 3, marks=pytest.mark.slow),  # inside the coarse stage
        (GROW, 8),  # the last coarse step: the growth runs after the resume
        pytest.param(GROW, 9, marks=pytest.mark.slow),  # the first fine step (carries grow/*)
        pytest.param(
            [
                *GROW,
                "coarsening.stages.grow_init=stack",
                "coarsening.hierarchy.optimizer_state=shared",
            ],
            8,
            marks=pytest.mark.slow,
        ),
        pytest.param(  # growth 2, warm-up
            [*REC, "coarsening.stages.grow_init=zero", "coarsening.stages.grow_warmup=3"],
            6,
            marks=pytest.mark.slow,
        ),
        (
            [*REC, "coarsening.stages.grow_init=zero", "coarsening.stages.grow_warmup=3"],
            9,
        ),  # inside the warm-up
    ],
)
def test_staged_run_resumes_bitwise_anywhere_and_exactly_at_a_growth(tmp_path, overrides, stop_at):
    ref = tmp_path / "ref"
    run_job(ref, *overrides)
    preempt(tmp_path / "run", *overrides, stop_at=stop_at)
    run_job(tmp_path / "run", *overrides, "train.resume=auto")
    assert losses(tmp_path / "run") == losses(ref)
    grow = [
        {k: v for k, v in r.items() if k.startswith("grow/")}
        for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")
    ]
    want = [
        {k: v for k, v in r.items() if k.startswith("grow/")}
        for r in read_jsonl(ref / "metrics.jsonl")
    ]
    assert grow == want
    a, b = final_params(tmp_path / "run"), final_params(ref)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ode_loss_jump_is_bounded_on_a_trained_tiny_model(tmp_path):
    """A coarse path trained until it gains about 0.8 nats over the uniform prediction: the ode
    growth changes the validation loss by well under a tenth of that gain (measured: +0.010
    nats). keep is not worse here (measured +0.0001): in a trained pre-LN model the block
    outputs dwarf the embedding, so the layer norms make the model nearly insensitive to the
    step size, and random new blocks with small output projections are nearly the identity.
    The end state of the path tells them apart (measured: ode 0.08, keep 0.50 of the coarse
    path's displacement away from the coarse path's end state)."""
    import copy
    import math

    from mltrain.schemes.growth import GROWTH

    job = make_job(
        tmp_path / "run",
        "coarsening=grow",
        "coarsening.stages.shares=[0.95,0.05]",
        "train.steps=120",
        "optimizer=adamw",
        "optimizer.lr=1e-2",
        "model.n_embd=64",
        "data.bpe_vocab_size=512",
    )
    t = job.trainer
    walk(job, job.plan.stages[0].iterations)
    src, dst = t.levels["coarse_b"], t.levels["fine"]
    before = t.evaluate(path=src.path)
    gain = math.log(t.model.vocab_size) - before
    assert gain > 0.5
    trained = copy.deepcopy(t.model.state_dict())
    jumps, drift = {}, {}
    t.model.eval()
    x0 = t.model.embed(t.val_batches[:4, :-1]).detach()
    with torch.no_grad():
        coarse = t.model.integrate(x0, src.path)
    for init in ("ode", "keep"):
        t.model.load_state_dict(trained)
        GROWTH.get(init).apply(t.model, src, dst)
        jumps[init] = t.evaluate(path=dst.path) - before
        with torch.no_grad():  # the grown path's end state against the coarse path's
            grown = t.model.integrate(x0, dst.path)
        drift[init] = float((grown - coarse).norm() / (coarse - x0).norm())
    assert abs(jumps["ode"]) < 0.1 * gain
    assert abs(jumps["keep"]) < 0.1 * gain
    # what tells them apart: ode's grown path is a consistent discretisation of the coarse
    # path's ODE (each block's field over h = 1 twice instead of h = 2 once: a second-order
    # difference), keep's trained blocks take h = 1 once, about half the coarse displacement
    assert drift["ode"] < 0.2 and drift["keep"] > 0.4
    job.close()
