"""Width levels in the V-cycle and in stages (mltrain/schemes/width.py): exact growth, alpha = 0,
FLOPs by two routes, resume, the refused optimizer policy, two processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mltrain.errors import ConfigError
from mltrain.model.flops import measure_train_flops
from mltrain.model.transformer import BlockPath
from mltrain.schemes.width import WidthProlong, WidthRestrict
from tests.helpers import (
    final_params,
    losses,
    make_job,
    preempt,
    read_jsonl,
    run_job,
    run_torchrun,
)
from tests.model.test_width import _CountElementwise

# width x depth V-cycle on the tiny model: coarse_b = blocks 0, 2 (h = 2) at width d/2
VCYCLE = [
    "coarsening=odd",
    "coarsening.hierarchy.width_factor=2",
    "coarsening.vcycle.coarse_steps=3",
    "coarsening.vcycle.window=2",
    "coarsening.vcycle.alpha=0.5",
    "optimizer=adamw",
    "optimizer.lr=3e-3",
    "train.steps=4",
    "train.eval_every=2",
    "train.checkpoint_every=1",
    "train.keep_checkpoints=20",
]
# width growth: the narrow model (all 4 blocks at d/2) then the fine one
GROW = [
    "coarsening=grow_width",
    "coarsening.stages.shares=[0.6,0.4]",  # pinned: the preset's shares may be retuned
    "optimizer=adamw",
    "optimizer.lr=3e-3",
    "train.steps=6",
    "train.eval_every=3",
    "train.checkpoint_every=3",
    "train.keep_checkpoints=20",
]


def _records(run_dir: Path) -> list[dict]:
    return read_jsonl(run_dir / "metrics.jsonl")


def test_width_grown_model_starts_at_the_narrow_models_loss(tmp_path):
    job = run_job(tmp_path, *GROW)
    grow = [r for r in _records(tmp_path) if "grow/loss_before" in r]
    assert len(grow) == 1
    before, after = grow[0]["grow/loss_before"], grow[0]["grow/loss_after"]
    # the narrow model trained (its loss left the initial ~ln V) and the grown fine model,
    # evaluated on the fine path at full width, computes its function: equal up to float32
    # rounding of the de-coalesced sums (1e-5), not the ~1e-1 of an inexact map
    assert before < _records(tmp_path)[0]["val/loss"] - 0.3
    assert abs(after - before) < 1e-5
    # the first fine step follows the growth; its optimizer started without state
    narrow_steps = job.plan.steps_per_level()["narrow"]
    assert grow[0]["step"] == narrow_steps + 1 and grow[0]["level"] == "fine"


def _snapshot(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _watch_phases(job) -> list[tuple[bool, bool]]:
    """For each width coarse phase: (fine model bitwise unchanged from Coalesce to the end of
    Decoalesce, narrow tensors changed by the phase's training)."""
    t, out, state = job.trainer, [], {}
    original = t.run_op

    def run_op(op):
        original(op)
        if isinstance(op, WidthRestrict):
            level = t.levels[op.level]
            state["fine"], state["narrow"] = _snapshot(t.model), _snapshot(level.module(t.model))
        elif isinstance(op, WidthProlong):
            narrow = t.levels[op.level].module(t.model)
            same = all(torch.equal(p, state["fine"][n]) for n, p in t.model.named_parameters())
            moved = any(
                not torch.equal(p, state["narrow"][n]) for n, p in narrow.named_parameters()
            )
            out.append((same, moved))

    t.run_op = run_op
    return out


@pytest.mark.parametrize("alpha, fine_unchanged", [(0.0, True), (0.5, False)])
def test_alpha_zero_leaves_the_fine_model_bitwise_unchanged_through_a_width_vcycle(
    tmp_path, alpha, fine_unchanged
):
    job = make_job(tmp_path, *VCYCLE, f"coarsening.vcycle.alpha={alpha}")
    phases = _watch_phases(job)
    try:
        job.run()
    finally:
        job.close()
    # two V-cycles; each coarse phase trains the narrow tensors; only alpha > 0 moves the fine
    assert phases == [(fine_unchanged, True)] * 2


def test_width_vcycle_flops_analytic_equal_recorded_equal_measured(tmp_path):
    job = run_job(tmp_path, *VCYCLE)
    t = job.trainer
    recorded = _records(tmp_path)[-1]
    planned = job.plan.flops()
    assert recorded["perf/flops"] == planned.total
    assert recorded["perf/flops_nonembed"] == planned.nonembed
    # by another route: FlopCounterMode on one real step of each model on the global batch,
    # and the element-wise ops of each map counted by a dispatch hook
    level = t.levels["coarse_b"]
    narrow = level.module(t.model)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, t.model.vocab_size, (4, 32), generator=g)
    fine_step = measure_train_flops(t.model, idx, idx, path=t.levels["fine"].path)
    coarse_step = measure_train_flops(narrow, idx, idx, path=level.eval_path)
    t.model.zero_grad(set_to_none=True)
    narrow.zero_grad(set_to_none=True)
    with _CountElementwise() as co:
        level.restrict(t.model)
    with _CountElementwise() as pro:
        level.prolong(t.model, 0.5)
    assert not co.other and not pro.other
    steps = job.plan.steps_per_level()
    assert steps == {"fine": 4, "coarse_b": 6}
    measured = 4 * fine_step + 6 * coarse_step + 2 * (co.flops + pro.flops)
    assert recorded["perf/flops"] == measured
    # the maps' FLOPs are booked to the width level
    assert recorded["perf/flops_level/coarse_b"] == 6 * coarse_step + 2 * (co.flops + pro.flops)


def test_width_growth_books_the_decoalescing_flops(tmp_path):
    job = run_job(tmp_path, *GROW)
    recorded = _records(tmp_path)[-1]
    level = job.trainer.levels["narrow"]
    with _CountElementwise() as de:
        level.prolong(job.trainer.model, 1.0)
    steps = job.plan.steps_per_level()
    f = job.plan.step_flops
    expected = steps["fine"] * f["fine"].total + steps["narrow"] * f["narrow"].total + de.flops
    assert de.flops > 0 and recorded["perf/flops"] == expected == job.plan.flops().total


@pytest.mark.parametrize(
    "overrides, stop_at",
    [
        ([*VCYCLE], 7),  # inside the second coarse phase (fine 1, coarse 2-4, fine 5, coarse 6-8)
        ([*VCYCLE, "coarsening.hierarchy.optimizer_state=reset"], 3),  # inside the first, reset
        ([*GROW], None),  # exactly at the growth: right after the last narrow step
    ],
)
def test_width_runs_resume_bitwise_inside_a_coarse_phase_and_at_a_growth(
    tmp_path, overrides, stop_at
):
    ref = tmp_path / "ref"
    job = run_job(ref, *overrides)
    if stop_at is None:
        stop_at = job.plan.steps_per_level()["narrow"]
    preempt(tmp_path / "run", *overrides, stop_at=stop_at)
    run_job(tmp_path / "run", *overrides, "train.resume=auto")
    assert losses(tmp_path / "run") == losses(ref)
    grow = [{k: v for k, v in r.items() if k.startswith("grow/")} for r in _records(ref)]
    assert grow == [
        {k: v for k, v in r.items() if k.startswith("grow/")} for r in _records(tmp_path / "run")
    ]
    a, b = final_params(tmp_path / "run"), final_params(ref)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_shared_optimizer_state_is_refused_for_width_levels_in_one_line(tmp_path):
    for preset in ("coarsening=width", "coarsening=grow_width"):
        with pytest.raises(ConfigError) as e:
            make_job(tmp_path / "run", preset, "coarsening.hierarchy.optimizer_state=shared")
        msg = str(e.value)
        assert "\n" not in msg and "optimizer_state=shared" in msg and "separate or reset" in msg
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "override, match",
    [
        ("coarsening.vcycle.combine=summed", "combine=summed"),
        ("coarsening.corrections.tau=exact", "coarsening.corrections"),
        ("coarsening.hierarchy.train_shared=false", "train_shared=false"),
        ("coarsening.vcycle.alpha=1.5", "alpha=1.5 is not allowed"),
    ],
)
def test_what_a_width_vcycle_cannot_do_is_refused_before_the_run(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        make_job(tmp_path / "run", "coarsening=width", override)
    assert not (tmp_path / "run").exists()


def test_alpha_unset_is_delta():
    from mltrain.config import typed
    from mltrain.plan.plan import build_plan
    from tests.helpers import compose

    def prolongs(*overrides):
        plan = build_plan(typed(compose("coarsening=width", *overrides)), 100)
        return [op for op in plan.operations() if isinstance(op, WidthProlong)]

    assert [op.alpha for op in prolongs("coarsening.vcycle.delta=0.3")] == [0.5]  # the preset's
    unset = prolongs("coarsening.vcycle.alpha=null", "coarsening.vcycle.delta=0.3")
    assert [op.alpha for op in unset] == [0.3]


def test_random_sub_paths_cannot_be_width_levels(tmp_path):
    with pytest.raises(ConfigError, match="another level's optimizer"):
        make_job(
            tmp_path / "run",
            "coarsening=raptr",
            "coarsening.raptr.blocks=[2,3]",
            "coarsening.hierarchy.width_factor=2",
        )
    assert not (tmp_path / "run").exists()


def test_one_width_factor_per_coarse_level(tmp_path):
    with pytest.raises(
        ConfigError, match=r"has 1 entries for 2 coarse levels \(coarse_1, coarse_2\)"
    ):
        make_job(
            tmp_path / "run",
            "coarsening=grow_width_depth",
            "coarsening.hierarchy.width_factors=[2]",
        )
    assert not (tmp_path / "run").exists()


def test_nested_width_levels_are_refused_in_a_vcycle(tmp_path):
    with pytest.raises(ConfigError, match="parent to be the fine level"):
        make_job(tmp_path / "run", "coarsening=recursive", "coarsening.hierarchy.width_factor=2")


@pytest.mark.parametrize("factors", ["[1,2]", "[2,2]"])
def test_width_times_depth_stages(tmp_path, factors):
    # 1 block at d/2 (h = 4) -> 2 blocks (h = 2) at full width ([1,2]) or at d/2 ([2,2]) -> 4
    # blocks at full width; growing from a narrow level into another narrow one de-coalesces,
    # grows in depth, then coalesces; the maps' FLOPs are booked (counted here by the hook)
    job = run_job(
        tmp_path,
        "coarsening=grow_width_depth",
        f"coarsening.hierarchy.width_factors={factors}",
        "coarsening.stages.shares=[0.4,0.3,0.3]",
        "coarsening.stages.grow_init=ode",
        "train.steps=6",
    )
    widths = {lv.name: getattr(lv, "width_factor", 1) for lv in job.plan.levels}
    assert widths == {"fine": 1, "coarse_1": int(factors[1]), "coarse_2": 2}
    info = json.loads((tmp_path / "run.json").read_text())
    assert {n: lv["width_factor"] for n, lv in info["levels"].items()} == widths
    recs = _records(tmp_path)
    grows = [r for r in recs if "grow/loss_before" in r]
    assert [r["level"] for r in grows] == ["coarse_1", "fine"]
    t, maps = job.trainer, 0
    for lv in job.plan.levels[1:]:
        if widths[lv.name] > 1:
            with _CountElementwise() as de:  # leaving it
                lv.prolong(t.model, 1.0)
            maps += de.flops
            if lv.name == "coarse_1":  # entering it (from coarse_2)
                with _CountElementwise() as co:
                    lv.restrict(t.model)
                maps += co.flops
    steps, f = job.plan.steps_per_level(), job.plan.step_flops
    trained = sum(n * f[name].total for name, n in steps.items())
    assert maps > 0 and recs[-1]["perf/flops"] == trained + maps


@pytest.mark.slow
def test_two_processes_match_one_process_in_a_width_vcycle(tmp_path):
    cwd = tmp_path / "ddp"
    cwd.mkdir()
    args = [*VCYCLE, "train.checkpoint_every=2"]
    run_torchrun(cwd, *args, "data.batch_size=2")
    (ddp,) = list((cwd / "outputs" / "runs").iterdir())
    run_job(tmp_path / "one", *VCYCLE, "train.checkpoint_every=2", "data.batch_size=4")

    def train(run_dir):
        return [
            (r["step"], r["level"], r["train/loss"]) for r in _records(run_dir) if "train/loss" in r
        ]

    a, b = train(ddp), train(tmp_path / "one")
    assert [x[:2] for x in a] == [x[:2] for x in b] and len(a) == 4 + 2 * 3
    for (_, _, x), (_, _, y) in zip(a, b):
        assert x == pytest.approx(y, rel=1e-4)
    assert _records(ddp)[-1]["perf/flops"] == _records(tmp_path / "one")[-1]["perf/flops"]
    pa, pb = final_params(ddp), final_params(tmp_path / "one")
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-3, atol=1e-5)


def _val_loss(model, path, batches, micro) -> float:
    """Mean validation loss computed by hand: each chunk's mean weighted by its rows."""
    total = rows = 0.0
    model.eval()
    with torch.no_grad():
        for b in batches.split(micro):
            total += model(b[:, :-1], b[:, 1:], path=path)[1].item() * len(b)
            rows += len(b)
    model.train()
    return total / rows


def test_validation_during_a_narrow_stage_measures_the_narrow_model(tmp_path):
    from mltrain.model import width as W

    job = make_job(tmp_path, *GROW)
    t = job.trainer
    narrow = W.coalesce(t.model, 2)  # what the narrow level starts from, built by hand
    path = BlockPath(tuple(range(4)), 1.0)
    want = _val_loss(narrow, path, t.val_batches, t.runner.micro)
    fine = _val_loss(t.model, path, t.val_batches, t.runner.micro)
    try:
        job.run()
    finally:
        job.close()
    first = _records(tmp_path)[0]
    assert first["step"] == 0 and first["val/loss"] == pytest.approx(want, abs=1e-6)
    assert abs(fine - want) > 1e-4  # the fine model's loss is another number


def test_a_width_step_leaves_no_gradient_on_the_narrow_tensors(tmp_path):
    # the trainer zeroes the module a step ran (the narrow model), not only the fine model:
    # otherwise the next coarse step would add its gradient to the previous one's
    job = make_job(tmp_path, *VCYCLE)
    t, seen = job.trainer, []
    original = t.train_step

    def step(level, *args):
        original(level, *args)
        grads = [p.grad for p in level.module(t.model).parameters()]
        seen.append((level.name, all(g is None for g in grads)))

    t.train_step = step
    try:
        job.run()
    finally:
        job.close()
    assert seen.count(("coarse_b", True)) == 6 and seen.count(("fine", True)) == 4
