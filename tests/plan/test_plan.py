"""The plan of a run: levels, operations per iteration, FLOPs and length, from the config.

Hand values: the default model (d=128, 12 blocks, T=128, 16 x 128 = 2,048 tokens per step)
with the 8,192-entry BPE; DESIGN.md section 3's convention.
"""

from __future__ import annotations

import pytest

from mltrain.config import typed
from mltrain.plan.plan import build_plan
from mltrain.readback import is_multilevel
from mltrain.schemes.vcycle import Prolong, Restrict, Train
from tests.helpers import compose

# one step, per token per block evaluation 24 d^2 + 4 T d = 458,752; head 2 d V = 2,097,152
FINE = 2048 * 3 * (12 * 458_752 + 2_097_152)  # 46,707,769,344 FLOPs
COARSE = 2048 * 3 * (6 * 458_752 + 2_097_152)  # 29,796,335,616 FLOPs


def plan_of(*overrides, vocab=8192):
    from mltrain.config import compose as plain

    return build_plan(typed(plain(list(overrides))), vocab)


def test_paper_small_plan_counts_by_hand():
    plan = plan_of("experiment=paper_small")
    assert (FINE, COARSE) == (46_707_769_344, 29_796_335_616)
    assert plan.step_flops["fine"].total == FINE and plan.step_flops["coarse_a"].total == COARSE
    assert plan.iterations == 300 and plan.fine_steps == 300 and plan.multilevel
    assert plan.steps_per_level() == {"fine": 300, "coarse_a": 100, "coarse_b": 100}
    assert plan.flops().total == 300 * FINE + 200 * COARSE == 19_971_597_926_400
    # inside the window (5 iterations): fine step, then 20 steps of each coarse level
    ops = plan.ops(4)
    assert ops[0] == Train("fine", 1) and ops[1:4] == (
        Restrict("coarse_a"),
        Train("coarse_a", 20),
        Prolong("coarse_a"),
    )
    assert plan.ops(5) == (Train("fine", 1),)
    assert plan.steps_per_level(3, 7) == {"fine": 4, "coarse_a": 40, "coarse_b": 40}
    assert plan.flops(5, 6).total == FINE


def test_budget_sizes_a_single_level_run_to_the_nearest_step():
    plan = plan_of("experiment=paper_small", "coarsening=none", "train.target_flops=19971597926400")
    # 428 steps: 19,990,925,279,232 FLOPs, 1.9e10 above; 427 steps would be 2.7e10 below
    assert plan.iterations == 428 and not plan.multilevel
    assert plan.flops().total == 428 * FINE
    assert abs(plan.flops().total - 19_971_597_926_400) <= FINE / 2


def test_budget_of_a_multilevel_run_counts_its_coarse_phases():
    plan = plan_of("experiment=paper_small", "train.target_flops=19971597926400")
    assert plan.iterations == 300 and plan.flops().total == 19_971_597_926_400


@pytest.mark.parametrize(
    "overrides, multilevel",
    [
        (("coarsening=none",), False),
        (("coarsening=even_odd", "coarsening.vcycle.window=0"), False),
        (("coarsening=even_odd", "coarsening.vcycle.coarse_steps=0"), False),
        (("coarsening=even_odd",), True),
        (("coarsening=recursive",), True),
    ],
)
def test_multilevel_is_decided_by_the_plan_and_the_stored_config_agrees(overrides, multilevel):
    from omegaconf import OmegaConf

    from mltrain.config import flatten

    cfg = compose(*overrides)
    plan = build_plan(typed(cfg), None)
    assert plan.multilevel is multilevel
    container = OmegaConf.to_container(cfg, resolve=True)
    assert is_multilevel(container) is multilevel  # how mltrain-compare reads a finished run
    assert is_multilevel(flatten(container)) is multilevel


def test_too_small_budget_is_one_line():
    from mltrain.errors import ConfigError

    with pytest.raises(ConfigError, match="train.target_flops=1e\\+06 is less than one fine step"):
        plan_of("coarsening=none", "train.target_flops=1e6")


def test_describe_names_levels_cycle_and_planned_flops():
    text = plan_of("experiment=paper_small").describe()
    assert "coarse_a(blocks=[1, 3, 5, 7, 9, 11], h=2)" in text
    assert "V-cycle for fine iterations 0..4: Train(fine, 1) -> Restrict(coarse_a)" in text
    assert "planned training FLOPs: 1.9972e+13 with head" in text
