"""Growth operators (mltrain/schemes/growth.py): each checked against a hand computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mltrain.config import ModelConfig
from mltrain.levels import Level
from mltrain.model.transformer import BlockPath, ODETransformer
from mltrain.schemes.growth import GROWTH, covering, new_blocks, stand_ins

FINE4 = Level("fine", (0, 1, 2, 3), 1.0)
B4 = Level("coarse_b", (0, 2), 2.0, "fine")
A4 = Level("coarse_a", (1, 3), 2.0, "fine")
FINE12 = Level("fine", tuple(range(12)), 1.0)
C1 = Level("coarse_1", (1, 3, 5, 7, 9, 11), 2.0, "fine")
C2 = Level("coarse_2", (3, 7, 11), 4.0, "coarse_1")


def model(n_layer=4, seed=0, d=32, scale=1.0):
    """A small ODE-Transformer; ``scale`` multiplies every block weight (larger F)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(n_layer=n_layer, n_embd=d, n_head=2, seq_len=16, block_size=16)
    m = ODETransformer(cfg, 64).double()
    with torch.no_grad():
        for p in m.blocks.parameters():
            p.mul_(scale)
    return m.eval()


def hidden(m, seed=1):
    torch.manual_seed(seed)
    return torch.randn(2, 16, m.n_embd, dtype=torch.float64)


def test_the_stand_in_of_a_new_block_is_the_source_block_covering_it_on_the_target_grid():
    assert covering(B4, FINE4) == [0, 0, 2, 2]
    assert stand_ins(B4, FINE4) == {1: 0, 3: 2}
    assert stand_ins(A4, FINE4) == {0: 1, 2: 3}  # the coarse step of block 1 covers times 0, 1
    # recursive 3 -> 6 -> 12: the trained blocks are the last of their group
    assert covering(C2, C1) == [3, 3, 7, 7, 11, 11]
    assert stand_ins(C2, C1) == {1: 3, 5: 7, 9: 11}
    assert stand_ins(C1, FINE12) == {0: 1, 2: 3, 4: 5, 6: 7, 8: 9, 10: 11}
    # 3 blocks with h=4 straight to 12 with h=1: each trained block stands for 3 new ones
    assert stand_ins(C2, FINE12) == {0: 3, 1: 3, 2: 3, 4: 7, 5: 7, 6: 7, 8: 11, 9: 11, 10: 11}


@pytest.mark.parametrize("source, target", [(B4, FINE4), (A4, FINE4), (C2, C1), (C1, FINE12)])
def test_ode_grown_path_is_two_euler_steps_of_h_per_trained_block(source, target):
    m = model(n_layer=len(target.blocks) if target is FINE4 else 12)
    GROWTH.get("ode").apply(m, source, target)
    x = hidden(m)
    with torch.no_grad():
        got = m.integrate(x, target.path)
        want = x
        for s in source.blocks:  # the hand computation: x <- x + h F_s(x), twice
            for _ in range(2):
                want = want + target.h * m.blocks[s](want)
    assert torch.equal(got, want)
    for dst, src in stand_ins(source, target).items():  # copies, not views
        for a, b in zip(m.blocks[dst].parameters(), m.blocks[src].parameters()):
            assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()


def linear_model(n_layer, d=6, seed=0):
    """An ODE-Transformer whose blocks are F_i(x) = A_i x (bias-free linear maps)."""
    m = model(n_layer=n_layer, d=8)
    torch.manual_seed(seed)
    m.blocks = nn.ModuleList(nn.Linear(d, d, bias=False).double() for _ in range(n_layer))
    return m


@pytest.mark.parametrize("h", [1.0, 0.5, 0.1])
def test_ode_on_a_linear_block_differs_from_the_coarse_step_by_exactly_h2_A2(h):
    m = linear_model(2)
    source, target = Level("c", (0,), 2 * h, "f"), Level("f", (0, 1), h)
    x = torch.randn(5, 6, dtype=torch.float64)
    coarse = m.integrate(x, source.path)
    GROWTH.get("ode").apply(m, source, target)
    fine = m.integrate(x, target.path)
    A = m.blocks[0].weight
    # (I + hA)^2 x − (I + 2hA) x = h^2 A^2 x: the O(h^2) term only
    torch.testing.assert_close(fine - coarse, h * h * x @ (A @ A).T, rtol=1e-12, atol=1e-12)


def test_ode_on_two_linear_blocks_matches_the_product_of_the_hand_matrices():
    m = linear_model(4)
    x = torch.randn(5, 6, dtype=torch.float64)
    A, B = m.blocks[0].weight.detach().clone(), m.blocks[2].weight.detach().clone()
    eye = torch.eye(6, dtype=torch.float64)
    coarse = m.integrate(x, B4.path)
    torch.testing.assert_close(
        coarse, x @ ((eye + 2 * B) @ (eye + 2 * A)).T, rtol=1e-12, atol=1e-12
    )
    GROWTH.get("ode").apply(m, B4, FINE4)
    grown = m.integrate(x, FINE4.path)
    want = x @ ((eye + B) @ (eye + B) @ (eye + A) @ (eye + A)).T
    torch.testing.assert_close(grown, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("source, target", [(B4, FINE4), (A4, FINE4)])
def test_zero_growth_is_exact_where_the_attention_output_is_zero(source, target):
    m = model(scale=4.0)
    with torch.no_grad():
        for s in source.blocks:  # a(x) = 0 in every trained block: the rule claims exactness
            m.blocks[s].attn.c_proj.weight.zero_()
            m.blocks[s].attn.c_proj.bias.zero_()
    x = hidden(m)
    with torch.no_grad():
        coarse = m.integrate(x, source.path)
        GROWTH.get("zero").apply(m, source, target)
        grown = m.integrate(x, target.path)
    torch.testing.assert_close(grown, coarse, rtol=1e-12, atol=1e-12)


def test_zero_growth_new_blocks_are_the_identity_and_trained_steps_follow_the_stated_formula():
    m = model(scale=4.0)
    x = hidden(m)
    with torch.no_grad():
        blocks = [m.blocks[s] for s in B4.blocks]
        # the rule's formula for the grown step, from the trained block's own sublayers:
        # x + H·a + H·m(x + r·a), a = SA(LN1 x), m(y) = FF(LN2 y), r = H/h = 2
        want = x
        for b in blocks:
            a = b.attn(b.ln_1(want))
            want = want + 2.0 * a + 2.0 * b.mlp(b.ln_2(want + 2.0 * a))
        coarse = m.integrate(x, B4.path)
        GROWTH.get("zero").apply(m, B4, FINE4)
        grown = m.integrate(x, FINE4.path)
        only_trained = m.integrate(x, BlockPath(B4.blocks, 1.0))
    assert torch.equal(grown, only_trained)  # each new block adds exactly h·0
    torch.testing.assert_close(grown, want, rtol=1e-12, atol=1e-12)
    assert (grown - coarse).abs().max() > 1e-6  # not exact when a(x) != 0 (the docstring's term)


def test_stack_repeats_the_trained_path_on_top_as_independent_copies():
    m = model(n_layer=12)
    before = {
        s: {n: p.detach().clone() for n, p in m.blocks[s].named_parameters()} for s in C1.blocks
    }
    GROWTH.get("stack").apply(m, C1, FINE12)
    order = list(C1.blocks) * 2  # block i holds the trained block C1.blocks[i mod 6]
    for i, s in enumerate(order):
        for n, p in m.blocks[i].named_parameters():
            assert torch.equal(p, before[s][n])
    with torch.no_grad():  # training one copy leaves the other unchanged
        m.blocks[6].mlp.c_fc.weight.add_(1.0)
    assert torch.equal(m.blocks[0].mlp.c_fc.weight, before[1]["mlp.c_fc.weight"])
    assert new_blocks(C1, FINE12, "stack") == [6, 7, 8, 9, 10, 11]


def test_stack_between_coarse_levels_reads_every_source_before_writing():
    m = model(n_layer=12)
    before = {s: m.blocks[s].mlp.c_fc.weight.detach().clone() for s in C2.blocks}
    GROWTH.get("stack").apply(m, C2, C1)  # 3, 7, 11 -> 1, 3, 5 | 7, 9, 11
    for t, s in zip(C1.blocks, [3, 7, 11, 3, 7, 11]):
        assert torch.equal(m.blocks[t].mlp.c_fc.weight, before[s])
    assert new_blocks(C2, C1, "stack") == [7, 9, 11]


def test_keep_changes_no_tensor_and_ode_zero_keep_start_only_skipped_blocks_fresh():
    m = model()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    GROWTH.get("keep").apply(m, B4, FINE4)
    assert all(torch.equal(p, before[n]) for n, p in m.named_parameters())
    for init in ("ode", "zero", "keep"):
        assert new_blocks(B4, FINE4, init) == [1, 3]
        assert new_blocks(C2, C1, init) == [1, 5, 9]


def test_ode_differs_from_the_coarse_step_at_second_order_in_h_and_keep_at_first_order():
    """On real transformer blocks: with H = 2h, ‖grown − coarse‖ = h²‖F'F‖ + O(h³) for ode
    (halving h divides it by 4) and O(h) for keep (new blocks random, trained ones at h)."""
    base = model(scale=3.0)
    x = hidden(base)
    gaps = {}
    for init in ("ode", "keep"):
        gaps[init] = []
        for h in (0.02, 0.01, 0.005):
            m = model(scale=3.0)
            source, target = Level("c", (0, 2), 2 * h, "f"), Level("f", (0, 1, 2, 3), h)
            with torch.no_grad():
                coarse = m.integrate(x, source.path)
                GROWTH.get(init).apply(m, source, target)
                gaps[init].append((m.integrate(x, target.path) - coarse).norm().item())
    for a, b in zip(gaps["ode"], gaps["ode"][1:]):
        assert 3.6 < a / b < 4.4
    for a, b in zip(gaps["keep"], gaps["keep"][1:]):
        assert 1.8 < a / b < 2.2
    assert gaps["ode"][-1] < 0.05 * gaps["keep"][-1]
