"""FLOPs: the DESIGN.md section 3 convention, checked by hand and by FlopCounterMode."""

from __future__ import annotations

import pytest
import torch

from mltrain.config import ModelConfig
from mltrain.levels import build_hierarchy
from mltrain.model.flops import (
    forward_flops,
    measure_attention_flops,
    measure_train_flops,
    train_flops,
)
from mltrain.model.transformer import ODETransformer
from tests.helpers import compose


def test_train_flops_equal_the_formula_by_hand():
    # d=4, T=3, V=5, L=2, B*T = 6 tokens:
    # per token forward: 2*(24*16 + 4*3*4) + 2*4*5 = 2*(384 + 48) + 40 = 904; x3 x6 tokens
    f = train_flops(n_blocks=2, d=4, seq_len=3, vocab_size=5, tokens=6)
    assert f.total == 904 * 3 * 6 == 16272
    assert f.nonembed == 864 * 3 * 6 == 15552


def test_train_flops_equal_6N_plus_12LTd_of_palm():
    d, T, V, L = 64, 32, 1000, 6
    n_nonembed_matmul = L * 12 * d * d  # QKV 3d², proj d², MLP 8d²
    per_token = 6 * (n_nonembed_matmul + d * V) + 12 * L * T * d
    assert train_flops(L, d, T, V, tokens=1).total == per_token


def test_one_attention_call_on_1_12_64_64_is_12582912_flops():
    q, k, v = (torch.randn(1, 12, 64, 64) for _ in range(3))
    assert measure_attention_flops(q, k, v) == 2 * 2 * 12 * 64 * 64 * 64 == 12_582_912


@pytest.mark.parametrize("coarsening", ["even_odd", "recursive"])
def test_measured_matmul_flops_match_the_analytic_count_per_level(coarsening):
    cfg = compose(f"coarsening={coarsening}", "model.n_layer=8")
    torch.manual_seed(0)
    d, T, V, B = 64, 32, 500, 3
    model = ODETransformer(ModelConfig(n_layer=8, n_embd=d, n_head=4, seq_len=T, block_size=T), V)
    idx, tgt = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
    for level in build_hierarchy(cfg.coarsening, 8):
        measured = measure_train_flops(model, idx, tgt, path=level.path)
        analytic = train_flops(len(level.blocks), d, T, V, B * T).total
        assert abs(measured - analytic) / analytic < 0.01, level.name
        model.zero_grad()
    assert model.blocks[0].attn.attention == "sdpa"  # restored


def test_weight_tying_does_not_change_the_count():
    torch.manual_seed(0)
    small = ModelConfig(n_layer=2, n_embd=32, n_head=2, seq_len=16, block_size=16)
    tied = ODETransformer(small, 300)
    untied = ODETransformer(small, 300)
    untied.lm_head.weight = torch.nn.Parameter(untied.wte.weight.detach().clone())
    idx = torch.randint(0, 300, (2, 16))
    assert measure_train_flops(tied, idx, idx) == measure_train_flops(untied, idx, idx)


def test_coarse_step_costs_the_fine_step_minus_the_skipped_block_evaluations():
    d, T, V, tokens = 128, 128, 8192, 2048
    fine, coarse = train_flops(12, d, T, V, tokens), train_flops(6, d, T, V, tokens)
    skipped = 3 * tokens * 6 * (24 * d * d + 4 * T * d)
    assert fine.total - coarse.total == skipped == fine.nonembed - coarse.nonembed
    assert forward_flops(12, d, T, V, tokens).total * 3 == fine.total
