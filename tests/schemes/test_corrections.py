"""Better coarse corrections: τ-correction, placement, line-searched δ, outer momentum.

Right values come from the math: the corrected coarse gradient at R x is the restricted fine
gradient (MG/OPT's first-order coherence, Nash 2000), δ of a quadratic is its minimiser,
β = 0 is Eq. 4, two momentum phases computed by hand, FLOPs counted pass by pass.
"""

from __future__ import annotations

import copy

import pytest
import torch

from mltrain.config import typed
from mltrain.errors import ConfigError
from mltrain.plan import ops as operations
from mltrain.plan.plan import build_plan
from mltrain.schemes import vcycle
from mltrain.schemes.corrections import CorrectedProlong, Tau, of
from mltrain.schemes.linesearch import search_delta, search_grid
from mltrain.schemes.vcycle import Defer, Prolong, Restrict, Train
from tests.helpers import (
    PassCounter,
    compose,
    counted_run,
    final_params,
    flat_coarsening,
    make_job,
    preempt,
    read_jsonl,
    run_job,
)

PLAIN = ["optimizer.weight_decay=0.0", "train.max_grad_norm=0", "schedule=constant"]
VOLATILE = ("perf/tok_per_s", "perf/wall_s", "perf/mfu")


def params_of(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def records(run_dir):
    return [
        {k: v for k, v in r.items() if k not in VOLATILE}
        for r in read_jsonl(run_dir / "metrics.jsonl")
    ]


def plan_of(*overrides, vocab=100):
    return build_plan(typed(compose(*overrides)), vocab)


# ============================================================================ line search (toy)
def test_search_grid_goes_to_the_maximum():
    assert search_grid(2.0) == (0.0, 0.25, 0.5, 1.0, 2.0)
    assert search_grid(1.0) == (0.0, 0.25, 0.5, 1.0)
    assert search_grid(3.0) == (0.0, 0.25, 0.5, 1.0, 2.0, 3.0)
    assert search_grid(8.0) == (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    assert search_grid(0.3) == (0.0, 0.25, 0.3)


def counting(f):
    calls = []

    def g(d):
        calls.append(d)
        return f(d)

    return g, calls


def test_line_search_finds_the_minimiser_of_a_quadratic():
    grid = search_grid(2.0)
    f, calls = counting(lambda d: (d - 0.7) ** 2 + 3.0)
    delta, _ = search_delta(f, grid, "grid")
    assert delta == 0.5 and len(calls) == 5  # the nearest grid value: 0.04 < 0.09 at 1
    f, calls = counting(lambda d: (d - 0.7) ** 2 + 3.0)
    delta, values = search_delta(f, grid, "parabola")
    assert delta == pytest.approx(0.7, abs=1e-12) and len(calls) == 6  # the parabola is exact
    f, _ = counting(lambda d: 2 * (d - 1.5) ** 2)  # between grid points 1 and 2 (a tie)
    assert search_delta(f, grid, "parabola")[0] == pytest.approx(1.5, abs=1e-12)


def test_line_search_keeps_delta_zero_when_every_step_hurts():
    for mode in ("grid", "parabola"):
        f, calls = counting(lambda d: 1.0 + d)
        delta, values = search_delta(f, search_grid(2.0), mode)
        assert delta == 0.0
        if mode == "parabola":
            assert calls[-1] == 0.125  # best at the left end: the midpoint towards 1/4
    flat = search_delta(lambda d: 5.0, search_grid(1.0), "grid")
    assert flat[0] == 0.0  # no strict improvement: delta stays 0
    nan = search_delta(lambda d: float("nan") if d else 1.0, search_grid(1.0), "parabola")
    assert nan[0] == 0.0


def test_line_search_takes_the_largest_value_at_the_right_end():
    f, calls = counting(lambda d: -d)
    delta, _ = search_delta(f, search_grid(2.0), "parabola")
    assert calls[-1] == 1.5 and delta == 2.0  # midpoint 1.5 evaluated, 2 still lowest


# ============================================================================ placement
def cycle_iterations(plan):
    return [k for k in range(plan.iterations) if len(plan.ops(k)) > 1]


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ((), [0, 1, 2, 3, 4]),
        (
            (
                "coarsening.vcycle.start=2",
                "coarsening.vcycle.every=3",
                "coarsening.vcycle.window=12",
            ),
            [2, 5, 8, 11],
        ),
        (
            (
                "coarsening.vcycle.start=3",
                "coarsening.vcycle.every=5",
                "coarsening.vcycle.window_fraction=1",
            ),
            [3, 8, 13, 18],
        ),
        (
            ("coarsening.vcycle.every=4", "coarsening.vcycle.window_fraction=0.5"),
            [0, 4, 8],
        ),  # window 10
        (("coarsening.vcycle.window_fraction=0.125",), [0, 1, 2]),  # 2.5 -> 3 (halves up)
        (("coarsening.vcycle.start=5", "coarsening.vcycle.window=5"), []),
    ],
)
def test_the_schedule_lists_exactly_start_plus_multiples_of_every_inside_the_window(
    overrides, expected
):
    plan = plan_of("coarsening=even_odd", "train.steps=20", *overrides)
    assert cycle_iterations(plan) == expected
    m, f = 20, plan.step_flops
    assert plan.flops().total == 20 * f["fine"].total + len(expected) * m * (
        f["coarse_a"].total + f["coarse_b"].total
    )
    text = plan.describe()
    if len(expected) > 1 and expected[1] - expected[0] > 1:
        assert f"V-cycle for fine iterations {', '.join(map(str, expected))}: " in text
    elif not expected:
        assert "V-cycle" not in text


def test_a_long_schedule_prints_its_first_and_last_iterations():
    text = plan_of(
        "coarsening=even_odd",
        "train.steps=300",
        "coarsening.vcycle.start=10",
        "coarsening.vcycle.every=10",
        "coarsening.vcycle.window_fraction=1",
    ).describe()
    assert "V-cycle for fine iterations 10, 20, 30, ..., 290 (29 iterations, every 10): " in text


def test_start_zero_every_one_runs_the_eq4_cycle_in_every_iteration_of_the_window(tmp_path):
    """The placement that reproduces the run from before these settings: Eq. 4's V-cycle (a
    fine step, then each coarse level restricted, trained m steps and prolonged) in every
    iteration of the window, plain fine steps after it; checked against the passes that ran."""
    base = ["coarsening=even_odd", "coarsening.vcycle.coarse_steps=2", "coarsening.vcycle.window=2"]
    base += ["train.steps=4", "coarsening.vcycle.start=0", "coarsening.vcycle.every=1"]
    cycle = (Train("fine", 1), Restrict("coarse_a"), Train("coarse_a", 2), Prolong("coarse_a"))
    cycle += (Restrict("coarse_b"), Train("coarse_b", 2), Prolong("coarse_b"))
    plan = plan_of(*base)
    fine_step = (Train("fine", 1),)
    assert [plan.ops(k) for k in range(4)] == [cycle, cycle, fine_step, fine_step]
    _, counter = counted_run(tmp_path / "r", *base)
    fine, a, b = (0, 1, 2, 3), (1, 3), (0, 2)  # coarse_a: the odd blocks, coarse_b: the even
    want = [fine, a, a, b, b] * 2 + [fine] * 2
    assert [p["path"] for p in counter.training()] == want


def test_a_window_fraction_sizes_with_a_flops_budget():
    plan = plan_of(
        "coarsening=even_odd",
        "coarsening.vcycle.every=2",
        "coarsening.vcycle.window_fraction=0.5",
        "coarsening.vcycle.coarse_steps=2",
        "train.target_flops=2e10",
    )
    n = plan.iterations
    assert cycle_iterations(plan) == list(range(0, (n + 1) // 2, 2))
    assert abs(plan.flops().total - 2e10) <= plan.step_flops["fine"].total  # within a step


@pytest.mark.parametrize(
    "overrides, match",
    [
        (
            ["coarsening.vcycle.every=0"],
            r"coarsening.vcycle.every=0 is not allowed: must be an integer >= 1",
        ),
        (
            ["coarsening.vcycle.start=-1"],
            r"coarsening.vcycle.start=-1 is not allowed: must be >= 0",
        ),
        (
            ["coarsening.vcycle.window_fraction=1.5"],
            r"coarsening.vcycle.window_fraction=1.5 is not allowed",
        ),
        (["coarsening.vcycle.window_fraction=0"], r"must be in \(0, 1\]"),
        (
            ["coarsening.corrections.momentum=1"],
            r"coarsening.corrections.momentum=1.0 is not allowed: must be in \[0, 1\)",
        ),
        (
            ["coarsening.corrections.tau=full"],
            r"coarsening.corrections.tau='full' is not allowed: choose one of none, exact",
        ),
        (["coarsening.corrections.line_search=golden"], r"choose one of none, grid, parabola"),
        (
            ["coarsening.corrections.line_search_max=0"],
            r"coarsening.corrections.line_search_max=0.0 is not allowed",
        ),
    ],
)
def test_bad_settings_give_one_line(overrides, match):
    from mltrain.config import validate

    with pytest.raises(ConfigError, match=match) as err:
        validate(compose(*overrides))
    assert "\n" not in str(err.value)


def test_cheap_tau_after_the_coarse_phases_needs_a_fine_step_before_the_first_cycle():
    with pytest.raises(
        ConfigError,
        match=r"coarsening.corrections.tau=cheap with coarsening.vcycle.fine_step=after",
    ):
        plan_of(
            "coarsening=even_odd",
            "coarsening.corrections.tau=cheap",
            "coarsening.vcycle.fine_step=after",
        )
    plan = plan_of(
        "coarsening=even_odd",
        "coarsening.corrections.tau=cheap",
        "coarsening.vcycle.fine_step=after",
        "coarsening.vcycle.start=1",
    )
    assert plan.ops(1)[:3] == (
        Restrict("coarse_a"),
        Tau("coarse_a", "fine", "cheap"),
        Train("coarse_a", 20),
    )


# ============================================================================ τ-correction
def fine_gradient(model, batch, path=None):
    """∇f on ``batch`` ``(B, T+1)`` by plain autograd on a copy of the model."""
    ref = copy.deepcopy(model)
    _, loss = ref(batch[:, :-1], batch[:, 1:], path=path)
    loss.backward()
    return {n: p.grad for n, p in ref.named_parameters() if p.grad is not None}


def trainer_gradient(t, level, batch):
    """The gradient a training step of ``level`` on ``batch`` takes (all-reduce, hooks,
    clipping off), left in ``.grad`` and returned."""
    t.model.zero_grad(set_to_none=True)
    t.step_gradients(t.levels[level], t.runner.shard(batch))
    out = {n: p.grad.clone() for n, p in t.level_params[level].items()}
    t.model.zero_grad(set_to_none=True)
    return out


HIERARCHIES = [
    ("even_odd", [], ["coarse_a", "coarse_b"], []),
    ("recursive", ["model.n_layer=8", "coarsening.hierarchy.depth=2"], ["coarse_1"], ["coarse_2"]),
    (
        "custom",
        ["coarsening.hierarchy.blocks=[[1,3],[3],[0,2]]"],
        ["coarse_1", "coarse_3"],
        ["coarse_2"],
    ),
]


@pytest.mark.parametrize("shared", ["true", "false"])
@pytest.mark.parametrize("name, extra, top, nested", HIERARCHIES, ids=[h[0] for h in HIERARCHIES])
def test_exact_tau_makes_the_corrected_coarse_gradient_the_restricted_fine_one(
    tmp_path, name, extra, top, nested, shared
):
    job = make_job(
        tmp_path / "r",
        f"coarsening={name}",
        *extra,
        f"coarsening.hierarchy.train_shared={shared}",
        "coarsening.corrections.tau=exact",
        "train.grad_accum=2",
        "data.batch_size=2",
        *PLAIN,
    )
    t = job.trainer
    t.run_ops([Train("fine", 1)])  # away from the initialisation
    xi = t.sampler.next(t.runner.global_batch)  # one batch for every τ of this test
    of(t).tau_sampler.next = lambda n, length=None: xi
    g_fine = fine_gradient(job.model, xi)
    for level in top:
        parent = t.levels[level].parent
        t.run_ops([Restrict(level), Tau(level, parent, "exact")])
        got = trainer_gradient(t, level, xi)
        assert set(got) == set(t.level_params[level])
        assert shared == "true" or not any(n.startswith(("wte", "wpe", "ln_f")) for n in got)
        for n, g in got.items():
            torch.testing.assert_close(g, g_fine[n], rtol=1e-4, atol=1e-6, msg=n)
        for child in nested:  # MG/OPT recursion: relative to the parent's corrected objective
            if t.levels[child].parent != level:
                continue
            t.run_ops([Restrict(child), Tau(child, level, "exact")])
            got = trainer_gradient(t, child, xi)
            for n, g in got.items():
                torch.testing.assert_close(g, g_fine[n], rtol=1e-4, atol=1e-6, msg=n)
            t.run_ops([CorrectedProlong(child, level)])
            assert child not in of(t).v  # dropped with its phase
        t.run_ops([CorrectedProlong(level, parent)])
    assert of(t).v == {}


def test_without_tau_the_coarse_gradient_is_not_the_fine_one(tmp_path):
    """The control of the test above: the coherence is the τ-correction's doing."""
    job = make_job(
        tmp_path / "r", "coarsening=even_odd", "coarsening.corrections.momentum=0.5", *PLAIN
    )
    t = job.trainer
    xi = t.sampler.next(t.runner.global_batch)
    g_fine = fine_gradient(job.model, xi)
    got = trainer_gradient(t, "coarse_a", xi)
    assert not torch.allclose(got["blocks.1.mlp.c_fc.weight"], g_fine["blocks.1.mlp.c_fc.weight"])


def test_cheap_tau_reuses_the_fine_steps_batch_and_gradient(tmp_path):
    job = make_job(
        tmp_path / "r", "coarsening=even_odd", "coarsening.corrections.tau=cheap", *PLAIN
    )
    t = job.trainer
    x = params_of(job.model)
    t.run_ops([Train("fine", 1)])
    xi = t.last_batch
    g_fine = fine_gradient_at(job.model, x, xi)  # at the parameters before the fine step
    g_coarse = fine_gradient(job.model, xi, t.levels["coarse_a"].path)  # after it
    t.run_ops([Restrict("coarse_a"), Tau("coarse_a", "fine", "cheap")])
    v = of(t).v["coarse_a"]
    for n in v:
        torch.testing.assert_close(v[n], g_coarse[n] - g_fine[n], rtol=1e-4, atol=1e-6, msg=n)


def fine_gradient_at(model, params, batch):
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in ref.named_parameters():
            p.copy_(params[n])
    return fine_gradient(ref, batch)


def zero_tau(monkeypatch):
    """Force v = 0 after every τ pass (the passes still run and are counted)."""
    original = operations.HANDLERS[Tau]

    def forced(t, op):
        original(t, op)
        of(t).v[op.level] = {n: torch.zeros_like(v) for n, v in of(t).v[op.level].items()}

    monkeypatch.setitem(operations.HANDLERS, Tau, forced)


@pytest.mark.parametrize("form", ["exact", "cheap"])
def test_tau_forced_to_zero_is_todays_run_bit_for_bit(tmp_path, monkeypatch, form):
    base = ["coarsening=even_odd", "coarsening.vcycle.coarse_steps=2", "coarsening.vcycle.window=2"]
    base += ["train.steps=4", "model.dropout=0.1", "train.eval_every=2"]
    run_job(tmp_path / "today", *base)
    zero_tau(monkeypatch)
    job = run_job(tmp_path / "tau", *base, f"coarsening.corrections.tau={form}")
    a, b = records(tmp_path / "today"), records(tmp_path / "tau")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for key in ("train/loss", "train/grad_norm", "val/loss", "lr", "perf/tokens"):
            assert ra.get(key) == rb.get(key), (ra["step"], key)
    f = job.plan.step_flops
    extra = 2 * (f["coarse_a"].total + f["coarse_b"].total)  # 2 cycles, one coarse pass each
    extra += 2 * 2 * f["fine"].total if form == "exact" else 0  # and one fine pass each
    assert b[-1]["perf/flops"] - a[-1]["perf/flops"] == extra


@pytest.mark.parametrize(
    "overrides, passes",
    [
        (
            ["coarsening=even_odd", "coarsening.corrections.tau=exact"],
            {"fine": 2, "coarse_a": 1, "coarse_b": 1},
        ),
        (
            ["coarsening=even_odd", "coarsening.corrections.tau=cheap"],
            {"coarse_a": 1, "coarse_b": 1},
        ),
        (
            ["coarsening=recursive", "model.n_layer=8", "coarsening.corrections.tau=exact"],
            {"fine": 1, "coarse_1": 2, "coarse_2": 1},
        ),
    ],
)
def test_tau_flops_are_one_training_pass_per_gradient(tmp_path, overrides, passes):
    """The FLOPs recorded are those of the passes that ran (counted by hooks on the model): the
    optimizer steps and one forward + backward per τ gradient, per level (by hand: 3 fine
    steps, 2 cycles of 2 steps per coarse level, plus ``passes`` per cycle)."""
    job, counter = counted_run(
        tmp_path / "r",
        *overrides,
        "coarsening.vcycle.coarse_steps=2",
        "coarsening.vcycle.window=2",
        "train.steps=3",
    )
    blocks = {lv.name: len(lv.blocks) for lv in job.plan.levels}
    steps = {n: 3 if n == "fine" else 2 * 2 for n in blocks}
    want = {}
    for n in blocks:  # levels of one path length are counted together
        want[blocks[n]] = want.get(blocks[n], 0) + steps[n] + 2 * passes.get(n, 0)
    got = {}
    for p in counter.training():
        got[p["blocks"]] = got.get(p["blocks"], 0) + 1
    assert got == want
    last = read_jsonl(tmp_path / "r" / "metrics.jsonl")[-1]
    assert last["perf/flops"] == counter.flops()
    assert last["perf/flops_nonembed"] == counter.flops(head=False)


# ============================================================================ line search
def test_line_search_takes_the_best_delta_on_a_held_aside_training_batch(tmp_path):
    job = make_job(
        tmp_path / "r",
        "coarsening=even_odd",
        "coarsening.corrections.line_search=grid",
        "coarsening.corrections.momentum=0",
        *PLAIN,
    )
    t = job.trainer
    ext = of(t)
    assert ext.search_sampler.tokens is t.data.train  # training tokens, never validation
    t.run_ops([Train("fine", 1), Restrict("coarse_a"), Train("coarse_a", 3)])
    before, after = dict(vcycle.state_of(t).phases[-1][1]), params_of(job.model)
    held = copy.deepcopy(ext.search_sampler).next(t.runner.global_batch)
    losses = {}
    for d in search_grid(2.0):  # the fine loss at each δ, by hand
        ref = copy.deepcopy(job.model).eval()
        with torch.no_grad():
            for n, p in ref.named_parameters():
                if n in before:
                    p.copy_(torch.lerp(before[n], after[n], d))
            losses[d] = ref(held[:, :-1], held[:, 1:])[1].item()
    best = min(losses, key=losses.get)
    flops0, counter = t.progress.flops, PassCounter(job.model, t)
    op = CorrectedProlong("coarse_a", "fine", search="grid", grid=search_grid(2.0))
    t.run_ops([op])
    counter.close()
    assert t.records.notes["coarsening/delta/coarse_a"] == best
    assert t.records.notes["coarsening/delta_gain/coarse_a"] == pytest.approx(
        losses[0] - losses[best], abs=1e-5
    )
    got = params_of(job.model)
    for n in before:
        assert torch.equal(got[n], torch.lerp(before[n], after[n], best)), n
    # one forward of the fine path per δ on the held-aside batch, no backward, counted by hooks
    assert [(p["path"], p["positions"], p["backward"]) for p in counter.passes] == [
        ((0, 1, 2, 3), 4 * 32, 0)
    ] * 5
    assert t.progress.flops - flops0 == counter.flops()


def test_line_search_keeps_delta_zero_when_the_phase_only_hurts(tmp_path):
    job = make_job(
        tmp_path / "r", "coarsening=even_odd", "coarsening.corrections.line_search=parabola", *PLAIN
    )
    t = job.trainer
    t.run_ops([Train("fine", 1), Restrict("coarse_a")])
    before = params_of(job.model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a "phase" that wrecks the parameters it trains
        for p in t.level_params["coarse_a"].values():
            p.add_(torch.randn(p.shape, generator=gen) * 3.0)
    flops0, counter = t.progress.flops, PassCounter(job.model, t)
    t.run_ops([CorrectedProlong("coarse_a", "fine", search="parabola", grid=search_grid(2.0))])
    counter.close()
    assert t.records.notes["coarsening/delta/coarse_a"] == 0.0
    assert t.records.notes["coarsening/delta_gain/coarse_a"] == 0.0
    after = params_of(job.model)
    assert all(torch.equal(before[n], after[n]) for n in before)  # θ_before, bit for bit
    # the grid's 5 forwards and the parabola's one more (the midpoint towards 1/4), counted
    assert [(p["path"], p["backward"]) for p in counter.passes] == [((0, 1, 2, 3), 0)] * 6
    assert t.progress.flops - flops0 == counter.flops()


def test_line_search_tokens_are_not_training_tokens(tmp_path):
    base = [
        "coarsening=even_odd",
        "coarsening.vcycle.coarse_steps=2",
        "coarsening.vcycle.window=2",
        "train.steps=3",
    ]
    run_job(tmp_path / "a", *base)
    job = make_job(tmp_path / "b", *base, "coarsening.corrections.line_search=grid")
    counter, measured = PassCounter(job.model, job.trainer), []
    runner = job.trainer.runner
    mean_loss = runner.mean_loss  # the held-aside losses, and validation (told apart by counter)

    def measuring(*args):
        value = mean_loss(*args)
        if not counter._in_eval:
            measured.append(value)
        return value

    runner.mean_loss = measuring
    job.run()
    job.close()
    a, b = (
        read_jsonl(tmp_path / "a" / "metrics.jsonl"),
        read_jsonl(tmp_path / "b" / "metrics.jsonl"),
    )
    assert a[-1]["perf/tokens"] == b[-1]["perf/tokens"]
    searches = [p for p in counter.passes if not p["backward"] and not p["eval"]]
    assert len(searches) == 2 * 2 * 5  # 2 cycles x 2 phases x 5 grid points, forward only
    assert b[-1]["perf/flops"] == counter.flops()
    # each phase's δ is the grid point whose held-aside loss the search measured lowest
    grid = search_grid(2.0)
    noted = [
        (r[f"coarsening/delta/{n}"], r[f"coarsening/delta_gain/{n}"])
        for r in b
        for n in ("coarse_a", "coarse_b")
        if f"coarsening/delta/{n}" in r
    ]
    assert len(measured) == 20 and len(noted) == 4
    for i, (delta, gain) in enumerate(noted):
        values = measured[5 * i : 5 * i + 5]  # in grid order: 0, 1/4, 1/2, 1, 2
        best = min(range(5), key=values.__getitem__)
        assert delta == grid[best] and gain == values[0] - values[best]


def test_a_smaller_held_aside_batch_costs_its_share_of_the_forwards(tmp_path):
    base = ["coarsening=even_odd", "coarsening.vcycle.coarse_steps=2", "coarsening.vcycle.window=2"]
    base += [
        "train.steps=3",
        "coarsening.corrections.line_search=grid",
        "coarsening.corrections.line_search_batch=1",
    ]
    job, counter = counted_run(tmp_path / "b", *base)  # 1 of 4 sequences
    b = read_jsonl(tmp_path / "b" / "metrics.jsonl")
    searches = [p for p in counter.passes if not p["backward"] and not p["eval"]]
    assert [p["positions"] for p in searches] == [32] * 2 * 2 * 5  # one sequence of T = 32
    assert b[-1]["perf/flops"] == counter.flops()
    assert b[-1]["perf/flops_nonembed"] == counter.flops(head=False)
    assert job.plan.flops().total == b[-1]["perf/flops"]  # and the plan books what ran


# ============================================================================ outer momentum
@pytest.mark.parametrize("summed", [False, True])
def test_momentum_zero_is_eq4_bit_for_bit(tmp_path, summed):
    close = Defer if summed else Prolong
    jobs = [
        make_job(
            tmp_path / str(i),
            "coarsening=even_odd",
            "coarsening.corrections.momentum=0.5",
            "coarsening.vcycle.delta=0.7",
        )
        for i in range(2)
    ]
    for job, last in zip(
        jobs, [close("coarse_a"), CorrectedProlong("coarse_a", "fine", summed, 0.7, 0.0)]
    ):
        vcycle.state_of(job.trainer).delta = 0.7
        job.trainer.run_ops([Train("fine", 1), Restrict("coarse_a"), Train("coarse_a", 3), last])
    a, b = params_of(jobs[0].model), params_of(jobs[1].model)
    assert all(torch.equal(a[n], b[n]) for n in a)
    if summed:
        da, db = (
            vcycle.state_of(jobs[0].trainer).deferred[0],
            vcycle.state_of(jobs[1].trainer).deferred[0],
        )
        assert all(torch.equal(da[n], db[n]) for n in da)


def test_two_phases_of_outer_momentum_by_hand(tmp_path):
    delta, beta = 0.3, 0.5
    job = make_job(
        tmp_path / "r",
        "coarsening=even",
        f"coarsening.corrections.momentum={beta}",
        f"coarsening.vcycle.delta={delta}",
    )
    t, model = job.trainer, job.model
    gen = torch.Generator().manual_seed(1)
    names = list(t.level_params["coarse_a"])
    starts, steps, ends = [], [], []
    for _ in range(2):  # each "phase" moves the parameters it trains by a known Δ
        t.run_ops([Restrict("coarse_a")])
        starts.append({n: p.double() for n, p in params_of(model).items()})
        with torch.no_grad():
            for n in names:
                t.all_params[n].add_(torch.randn(t.all_params[n].shape, generator=gen) * 0.01)
        steps.append({n: t.all_params[n].detach().double() - starts[-1][n] for n in names})
        t.run_ops([CorrectedProlong("coarse_a", "fine", False, delta, beta)])
        ends.append(params_of(model))
    (b1, b2), (d1, d2) = starts, steps
    for n in names:
        u1 = d1[n]  # u starts at 0: u1 = Δ1
        u2 = beta * u1 + d2[n]
        want1 = b1[n] + delta * (d1[n] + beta * u1)  # θ_before + δ(Δ + βu)
        want2 = b2[n] + delta * (d2[n] + beta * u2)
        torch.testing.assert_close(ends[0][n].double(), want1, rtol=0, atol=1e-6, msg=n)
        torch.testing.assert_close(ends[1][n].double(), want2, rtol=0, atol=1e-6, msg=n)
        torch.testing.assert_close(of(t).u["coarse_a"][n].double(), u2, rtol=0, atol=1e-6)
    outside = [n for n in ends[1] if n.startswith("blocks.0.")]
    assert outside and all(torch.equal(ends[1][n], b1[n].float()) for n in outside)


# ============================================================================ all together
ALL = [
    "coarsening.corrections.tau=exact",
    "coarsening.corrections.line_search=parabola",
    "coarsening.corrections.momentum=0.5",
]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("state", ["separate", "shared", "reset"])
def test_parameters_outside_the_phase_stay_bitwise_with_every_correction(
    tmp_path, optimizer, state
):
    job = make_job(
        tmp_path / "r",
        "coarsening=even_odd",
        *ALL,
        f"optimizer={optimizer}",
        "optimizer.weight_decay=0.1",
        f"coarsening.hierarchy.optimizer_state={state}",
    )
    t = job.trainer
    t.run_ops([Train("fine", 1)])
    before = params_of(job.model)
    cycle = job.plan.ops(0)
    t.run_ops(cycle[1 : cycle.index(Restrict("coarse_b"))])  # the whole coarse_a phase
    after = params_of(job.model)
    outside = [n for n in before if n.startswith("blocks.") and int(n.split(".")[1]) % 2 == 0]
    assert outside and all(torch.equal(before[n], after[n]) for n in outside)
    assert of(t).v == {} and set(of(t).u) == {"coarse_a"}


COMBOS = [
    ("even_odd", "sgd", "separate", "sequential", "before", "exact"),
    ("even_odd", "adamw", "shared", "summed", "after", "exact"),
    # the rest run with `make test-all` (each ~10 s): every hierarchy, policy and tau form
    pytest.param("even", "adamw", "reset", "sequential", "before", "cheap", marks=pytest.mark.slow),
    pytest.param("odd", "sgd", "shared", "sequential", "after", "cheap", marks=pytest.mark.slow),
    pytest.param(
        "recursive", "adamw", "separate", "summed", "before", "cheap", marks=pytest.mark.slow
    ),
    pytest.param("custom", "sgd", "reset", "summed", "after", "exact", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name, optimizer, state, combine, fine_step, tau", COMBOS)
def test_every_hierarchy_optimizer_policy_and_order_spends_what_the_plan_says(
    tmp_path, name, optimizer, state, combine, fine_step, tau
):
    extra = {
        "recursive": ["model.n_layer=8"],
        "custom": ["coarsening.hierarchy.blocks=[[1,3],[3],[0,2]]"],
    }
    job = run_job(
        tmp_path / "r",
        f"coarsening={name}",
        *extra.get(name, []),
        f"optimizer={optimizer}",
        f"coarsening.hierarchy.optimizer_state={state}",
        f"coarsening.vcycle.combine={combine}",
        f"coarsening.vcycle.fine_step={fine_step}",
        f"coarsening.corrections.tau={tau}",
        "coarsening.corrections.line_search=parabola",
        "coarsening.corrections.momentum=0.5",
        "coarsening.vcycle.start=1",
        "coarsening.vcycle.every=2",
        "coarsening.vcycle.coarse_steps=2",
        "coarsening.vcycle.window=5",
        "train.steps=5",
    )
    recs = read_jsonl(tmp_path / "r" / "metrics.jsonl")
    assert recs[-1]["perf/flops"] == job.plan.flops().total
    assert recs[-1]["perf/flops_nonembed"] == job.plan.flops().nonembed
    per_level = job.plan.flops_per_level()
    assert {n: recs[-1][f"perf/flops_level/{n}"] for n in per_level} == {
        n: f.total for n, f in per_level.items()
    }
    coarse = [lv.name for lv in job.plan.levels[1:]]
    noted = {k.split("/")[-1] for r in recs for k in r if k.startswith("coarsening/delta/")}
    assert noted == set(coarse)  # every phase logged its δ
    assert [r["fine_step"] for r in recs if r["level"] != "fine" and "train/loss" in r] == [
        (1 if fine_step == "after" else 2)
    ] * (2 * len(coarse)) + [(3 if fine_step == "after" else 4)] * (2 * len(coarse))


@pytest.mark.parametrize("fine_step", ["before", "after"])
def test_a_v_cycle_in_the_last_iteration_reaches_the_last_record(tmp_path, fine_step):
    """The whole run as the window: the last phase's line search ends the run, and the last
    record still holds its FLOPs and its δ."""
    job = run_job(
        tmp_path / "r",
        "coarsening=even_odd",
        *ALL,
        f"coarsening.vcycle.fine_step={fine_step}",
        "coarsening.vcycle.window_fraction=1",
        "coarsening.vcycle.every=2",
        "coarsening.vcycle.coarse_steps=2",
        "train.steps=3",
    )
    assert cycle_iterations(job.plan) == [0, 2]
    last = read_jsonl(tmp_path / "r" / "metrics.jsonl")[-1]
    assert last["perf/flops"] == job.plan.flops().total and "val/loss" in last
    assert "coarsening/delta/coarse_b" in last and last["step"] == 3 + 2 * 2 * 2


# ============================================================================ resume
RESUMED = [
    "coarsening.vcycle.coarse_steps=3",
    "coarsening.vcycle.window=3",
    "train.steps=6",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "model.dropout=0.1",
    "coarsening.corrections.line_search=parabola",
    "coarsening.corrections.momentum=0.5",
]


# one V-cycle iteration (even_odd, fine step first): fine step 1, coarse_a 2-4, coarse_b 5-7
@pytest.mark.parametrize(
    "stop_at, overrides",
    [
        (
            2,
            ["coarsening=even_odd", "coarsening.corrections.tau=exact"],
        ),  # inside a corrected phase
        pytest.param(  # before its line search
            4, ["coarsening=even_odd", "coarsening.corrections.tau=exact"], marks=pytest.mark.slow
        ),
        (
            5,
            ["coarsening=even_odd", "coarsening.corrections.tau=exact"],
        ),  # right after a line search
        pytest.param(  # before the cheap τ reuses step 1
            1, ["coarsening=even_odd", "coarsening.corrections.tau=cheap"], marks=pytest.mark.slow
        ),
        pytest.param(
            10,
            [
                "coarsening=even_odd",
                "coarsening.corrections.tau=cheap",
                "coarsening.vcycle.combine=summed",
            ],
            marks=pytest.mark.slow,
        ),
        (  # fine 1, coarse_1 2-4 with coarse_2 5-7 nested inside: stop in the nested phase
            6,
            ["coarsening=recursive", "model.n_layer=8", "coarsening.corrections.tau=cheap"],
        ),
    ],
)
def test_preempted_in_a_corrected_phase_resumes_bitwise(tmp_path, stop_at, overrides):
    from mltrain.train.checkpoint import list_checkpoints, load_checkpoint

    run_job(tmp_path / "ref", *RESUMED, *overrides)
    preempt(tmp_path / "run", *RESUMED, *overrides, stop_at=stop_at)
    saved = load_checkpoint(list_checkpoints(tmp_path / "run" / "checkpoints")[-1])
    assert saved["progress"]["step"] == stop_at
    state = saved["extensions"]["corrections"]
    if stop_at in (2, 4):
        assert set(state["v"]) == {"coarse_a"}  # the open phase's correction is saved
    if stop_at == 5:
        assert set(state["u"]) == {"coarse_a"} and "coarsening/delta/coarse_a" in saved["pending"]
    if stop_at == 1:
        assert set(state["last"]) == {"fine"}  # the fine step's gradient and batch
    run_job(tmp_path / "run", *RESUMED, *overrides, "train.resume=auto")
    assert records(tmp_path / "run") == records(tmp_path / "ref")
    a, b = final_params(tmp_path / "run"), final_params(tmp_path / "ref")
    assert all(torch.equal(a[k], b[k]) for k in a)


# ============================================================================ torchrun
@pytest.mark.slow
def test_two_processes_take_the_same_corrections_as_one(tmp_path):
    """2 gloo processes with half the batch each: every correction is all-reduced, so the
    ranks stay identical (checked at every checkpoint) and match one process."""

    from tests.helpers import run_torchrun

    overrides = [
        *ALL,
        "coarsening=even_odd",
        "coarsening.vcycle.coarse_steps=2",
        "coarsening.vcycle.window=4",
    ]
    overrides += ["coarsening.vcycle.start=1", "coarsening.vcycle.every=2", "train.steps=4"]
    overrides += ["train.checkpoint_every=1"]
    run_torchrun(tmp_path, *overrides, "data.batch_size=2", f"hydra.run.dir={tmp_path / 'ddp'}")
    run_job(tmp_path / "one", *overrides, "data.batch_size=4")
    ddp, one = records(tmp_path / "ddp"), records(tmp_path / "one")
    assert [(r["step"], r["level"]) for r in ddp] == [(r["step"], r["level"]) for r in one]
    for a, b in zip(ddp, one):
        assert a.keys() == b.keys()
        for k in a:
            if k.startswith(("train/loss", "coarsening/")):  # (validation windows: per micro-batch)
                assert a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-5), (a["step"], k)
    assert ddp[-1]["perf/flops"] == one[-1]["perf/flops"]
    a, b = final_params(tmp_path / "ddp"), final_params(tmp_path / "one")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-5)


def test_a_checkpoint_from_before_these_settings_resumes_and_groups_with_their_defaults(tmp_path):
    """Settings added since a run started take their defaults (off), so its checkpoint still
    fits and mltrain-compare counts it as the same configuration."""
    from omegaconf import OmegaConf

    from mltrain.analysis.judging.grouping import identity
    from mltrain.config import flatten, upgrade
    from mltrain.train.checkpoint import check_compatible

    now = OmegaConf.to_container(compose("coarsening=even_odd"), resolve=True)
    before = copy.deepcopy(now)  # as written before these settings (and the sections) existed
    before["coarsening"] = flat_coarsening(now["coarsening"])
    for key in ("start", "every", "window_fraction", "tau", "line_search", "momentum"):
        del before["coarsening"][key]
    check_compatible(before, now, tmp_path / "ckpt.pt")  # no error
    assert identity(flatten(upgrade(before))) == identity(flatten(upgrade(now)))
    changed = copy.deepcopy(now)
    changed["coarsening"]["corrections"]["tau"] = "exact"
    with pytest.raises(
        Exception, match=r"was written with coarsening.corrections.tau=none, this run has"
    ):
        check_compatible(before, changed, tmp_path / "ckpt.pt")
