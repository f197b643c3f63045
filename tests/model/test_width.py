"""Width coalescing / de-coalescing / interpolation (Zou et al. 2024), checked from the math:
function preservation, the second-order round trip, α = 0, and FLOPs by two routes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mltrain.config import ModelConfig
from mltrain.errors import ConfigError
from mltrain.model import width as W
from mltrain.model.flops import level_step_flops, measure_train_flops, train_flops
from mltrain.model.transformer import BlockPath, ODETransformer

V, T = 37, 8


def _model(d=32, heads=4, layers=4, seed=0, bias=True) -> ODETransformer:
    """A float64 model whose every tensor is random (norms and biases too), so no map can
    pass by acting on ones and zeros."""
    torch.manual_seed(seed)
    cfg = ModelConfig(n_layer=layers, n_embd=d, n_head=heads, seq_len=T, block_size=T, bias=bias)
    m = ODETransformer(cfg, V).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (3, T), generator=g), torch.randint(0, V, (3, T), generator=g)


def _loss(model, path=None):
    idx, tgt = _batch()
    with torch.no_grad():
        logits, loss = model(idx, tgt, path=path)
    return logits, loss.item()


@pytest.mark.parametrize("factor,bias", [(2, True), (4, True), (2, False)])
def test_width_grown_model_computes_the_narrow_models_logits(factor, bias):
    # function-preserving growth: fine = decoalesce(narrow) integrates c stacked copies of
    # the narrow residual stream; logits equal up to float64 rounding (1e-12), not ~1e-3
    narrow = W.coalesce(_model(bias=bias), factor)
    with torch.no_grad():  # move away from any de-coalesced structure of the source
        for p in narrow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    fine = _model(seed=5, bias=bias)
    W.interpolate(fine, narrow, 1.0, factor)
    (ln, loss_n), (lf, loss_f) = _loss(narrow), _loss(fine)
    assert (ln - lf).abs().max().item() < 1e-12
    assert abs(loss_n - loss_f) < 1e-12
    assert narrow.n_embd == 32 // factor and narrow.blocks[0].attn.n_head == 4 // factor


def test_float32_growth_matches_to_single_precision():
    narrow = W.coalesce(_model().float(), 2)
    fine = _model(seed=5).float()
    W.interpolate(fine, narrow, 1.0, 2)
    assert abs(_loss(narrow)[1] - _loss(fine)[1]) < 1e-5


@pytest.mark.parametrize("factor", [2, 4])
def test_coalesce_inverts_decoalesce_bitwise(factor):
    narrow = W.coalesce(_model(), factor)
    fine = _model(seed=3)
    W.interpolate(fine, narrow, 1.0, factor)
    back = W.coalesce(fine, factor)
    for (name, a), b in zip(narrow.named_parameters(), back.parameters(), strict=True):
        assert torch.equal(a, b), name  # c a power of 2: halving and equal means are exact
    assert back.lm_head.weight is back.wte.weight  # the head stays tied


def test_round_trip_of_equal_pairs_is_exact_and_coalescing_keeps_the_function():
    fine = _model(seed=3)
    W.project(fine)  # now every pair of units is equal: fine = decoalesce(phi)
    before = {n: p.clone() for n, p in fine.named_parameters()}
    W.project(fine)
    for n, p in fine.named_parameters():
        assert torch.equal(p, before[n]), n
    assert abs(_loss(W.coalesce(fine))[1] - _loss(fine)[1]) < 1e-12


def _round_trip_error(eps: float) -> float:
    fine = _model(seed=3)
    W.project(fine)
    torch.manual_seed(11)
    with torch.no_grad():
        for p in fine.parameters():
            p.add_(eps * torch.randn_like(p))
    loss = _loss(fine)[1]
    W.project(fine)
    return abs(_loss(fine)[1] - loss)


def test_round_trip_error_is_second_order_in_the_distance_from_equal_pairs():
    # theta = D(phi) + eps*E: the gradient at D(phi) is pair-symmetric, so the first-order
    # term of L(P theta) - L(theta) vanishes and the error scales as eps^2 (ratio 4 per
    # halving; a first-order error would give 2)
    e1, e2, e3 = (_round_trip_error(eps) for eps in (4e-3, 2e-3, 1e-3))
    assert e1 > 1e-9  # far above float64 rounding
    assert 3.6 < e1 / e2 < 4.4 and 3.6 < e2 / e3 < 4.4


def test_gradient_at_a_decoalesced_point_is_pair_symmetric():
    fine = _model(seed=3)
    W.project(fine)
    fine.zero_grad()
    idx, tgt = _batch()
    fine(idx, tgt)[1].backward()
    grads = _model(seed=9)  # a model to hold the gradients as parameters
    with torch.no_grad():
        for p, q in zip(grads.parameters(), fine.parameters(), strict=True):
            p.copy_(q.grad)
    before = {n: p.clone() for n, p in grads.named_parameters()}
    W.project(grads)  # P g = g when g is already symmetric within each pair
    scale = max(t.abs().max().item() for t in before.values())
    for n, p in grads.named_parameters():
        assert (p - before[n]).abs().max().item() < 1e-12 * scale, n


def test_alpha_zero_leaves_the_fine_model_bitwise_unchanged_signed_zeros_included():
    fine = _model(seed=3)
    with torch.no_grad():
        fine.blocks[0].ln_1.bias[:4] = -0.0  # lerp(x, y, 0) = x + 0*(y-x) turns -0.0 into +0.0
    before = {n: p.clone() for n, p in fine.named_parameters()}
    W.interpolate(fine, W.coalesce(_model(seed=4)), 0.0)
    for n, p in fine.named_parameters():
        assert torch.equal(p, before[n]) and torch.equal(p.signbit(), before[n].signbit()), n


def test_alpha_one_replaces_and_alpha_between_mixes():
    fine, narrow = _model(seed=3), W.coalesce(_model(seed=4))
    target = W.decoalesce(narrow)
    before = {n: p.clone() for n, p in fine.named_parameters()}
    W.interpolate(fine, narrow, 0.25)
    for n, p in fine.named_parameters():
        torch.testing.assert_close(p, 0.75 * before[n] + 0.25 * target[n], rtol=0, atol=1e-15)
    W.interpolate(fine, narrow, 1.0)
    for n, p in fine.named_parameters():
        assert torch.equal(p, target[n]), n


def test_alpha_outside_0_1_is_refused():
    with pytest.raises(ConfigError, match=r"alpha=1.5 is not allowed: must be in \[0, 1\]"):
        W.interpolate(_model(), W.coalesce(_model()), 1.5)


def test_a_factor_that_does_not_divide_the_heads_is_refused_in_one_line():
    with pytest.raises(
        ConfigError, match="width_factor=3 is not allowed: it must divide model.n_head=4"
    ):
        W.coalesce(_model(), 3)


def test_coalescing_draws_no_random_numbers_and_leaves_the_fine_model_alone():
    fine = _model()
    before = {n: p.clone() for n, p in fine.named_parameters()}
    state = torch.get_rng_state()
    W.coalesce(fine)
    assert torch.equal(state, torch.get_rng_state())
    for n, p in fine.named_parameters():
        assert torch.equal(p, before[n]), n


def test_width_times_depth_writes_back_only_its_blocks_and_keeps_their_function():
    # narrow blocks 0, 1 are fine blocks 1, 3 (every other block, step 2)
    narrow = W.coalesce(_model(), 2, blocks=(1, 3))
    assert narrow.n_layer == 2
    fine = _model(seed=5)
    untouched = {
        n: p.clone() for n, p in fine.named_parameters() if n.startswith(("blocks.0.", "blocks.2."))
    }
    W.interpolate(fine, narrow, 1.0, 2, blocks=(1, 3))
    for n, p in fine.named_parameters():
        if n in untouched:
            assert torch.equal(p, untouched[n]), n
    loss_n = _loss(narrow, BlockPath((0, 1), 2.0))[1]
    loss_f = _loss(fine, BlockPath((1, 3), 2.0))[1]
    assert abs(loss_n - loss_f) < 1e-12


@pytest.mark.parametrize("blocks,h", [(None, 1.0), ((1, 3), 2.0)])
def test_analytic_flops_of_a_narrow_level_equal_flopcountermode(blocks, h):
    fine = _model(d=64, heads=4).float()
    narrow = W.coalesce(fine, 2, blocks=blocks)
    idx, tgt = _batch()
    path = BlockPath(tuple(range(narrow.n_layer)), h)
    measured = measure_train_flops(narrow, idx, tgt, path=path)
    level = SimpleNamespace(name="narrow", n_blocks=narrow.n_layer, width_factor=2)
    analytic = level_step_flops([level], 64, T, V, idx.numel())["narrow"]
    assert measured == analytic.total == train_flops(narrow.n_layer, 32, T, V, idx.numel()).total
    # half width: the blocks' matmuls cost a quarter, attention and head a half
    full = train_flops(narrow.n_layer, 64, T, V, idx.numel())
    per_token_blocks = 3 * narrow.n_layer * (24 * 32 * 32 + 4 * T * 32)
    assert analytic.nonembed == idx.numel() * per_token_blocks < full.nonembed


class _CountElementwise(TorchDispatchMode):
    """Counts the element-wise FLOPs of the ops the maps run, by the convention of
    :func:`mltrain.model.width.map_flops` (mean of c: c per result; sum of c: c - 1;
    division 1; lerp 3), and records every other op so none can slip past uncounted."""

    FREE = {"view", "_unsafe_view", "repeat", "copy_", "empty", "empty_like", "_to_copy",
            "normal_", "uniform_", "zero_", "fill_", "detach", "alias"}  # fmt: skip

    def __init__(self):
        super().__init__()
        self.flops, self.other = 0, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name == "mean":
            self.flops += args[0].numel()
        elif name == "sum":
            self.flops += args[0].numel() - out.numel()
        elif name == "div":
            self.flops += out.numel()
        elif name == "lerp_":
            self.flops += 3 * out.numel()
        elif name not in self.FREE:
            self.other.add(name)
        return out


@pytest.mark.parametrize("factor,bias", [(2, True), (4, False)])
def test_map_flops_equal_the_ops_counted_while_mapping(factor, bias):
    fine = _model(bias=bias)
    expected = W.map_flops(32, 4, V, T, factor, bias=bias)
    with _CountElementwise() as c:
        narrow = W.coalesce(fine, factor)
    assert c.flops == expected["coalesce"] and not c.other
    with _CountElementwise() as c:
        W.decoalesce(narrow, factor)
    assert c.flops == expected["decoalesce"] and not c.other
    with _CountElementwise() as c:
        W.interpolate(fine, narrow, 0.5, factor)
    assert c.flops == expected["decoalesce"] + expected["interpolate"] and not c.other
    n_fine = sum(p.numel() for p in fine.parameters())
    assert expected["interpolate"] == 3 * n_fine
    assert W.map_flops(32, 4, V, T, factor, bias=bias, alpha=1.0)["interpolate"] == 0


# --------------------------------------------------------------------------- width levels
def test_a_width_level_trains_its_own_narrow_tensors_and_grows_back_exactly():
    from mltrain.levels.base import Level
    from mltrain.levels.width import as_width

    fine = _model()
    depth = Level("coarse_b", (0, 2), 2.0, "fine")
    level = as_width(depth, 2)
    assert (level.name, level.blocks, level.h, level.width_factor) == ("coarse_b", (0, 2), 2.0, 2)
    params = level.parameters(fine)
    assert params["blocks.1.attn.c_attn.weight"].shape == (48, 16)  # narrow block 1 = fine 2
    ids = {n: id(p) for n, p in params.items()}
    idx, tgt = _batch()
    windows = torch.cat([idx, tgt[:, -1:]], dim=1)
    loss = level.loss(fine, windows, level.path)
    narrow = level.narrow.model
    assert loss.item() == narrow(idx, windows[:, 1:], path=BlockPath((0, 1), 2.0))[1].item()
    with torch.no_grad():  # a "coarse phase": move the narrow tensors
        for p in params.values():
            p.add_(0.01 * torch.randn_like(p))
    level.prolong(fine, 1.0)  # replacement: fine along (0, 2) now computes the narrow function
    after = _loss(fine, BlockPath((0, 2), 2.0))[1]
    assert abs(after - _loss(narrow, BlockPath((0, 1), 2.0))[1]) < 1e-12
    level.restrict(fine)  # coalescing the grown model gives the narrow tensors back, in place
    assert {n: id(p) for n, p in level.parameters(fine).items()} == ids
    assert abs(_loss(narrow, BlockPath((0, 1), 2.0))[1] - after) < 1e-12
