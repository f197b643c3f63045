"""The ODE-Transformer: causality, tying, dropout in eval mode, Euler integration."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mltrain.config import ModelConfig
from mltrain.model.transformer import BlockPath, ODETransformer


def tiny(dropout=0.0, n_layer=4, **kw) -> ODETransformer:
    torch.manual_seed(0)
    cfg = ModelConfig(
        n_layer=n_layer, n_embd=32, n_head=4, seq_len=16, block_size=16, dropout=dropout, **kw
    )
    return ODETransformer(cfg, 97)


def test_changing_future_tokens_leaves_earlier_logits_unchanged():
    m = tiny().eval()
    idx = torch.randint(0, 97, (2, 16))
    changed = idx.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 97
    a, _ = m(idx)
    b, _ = m(changed)
    assert torch.equal(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_explicit_attention_equals_sdpa():
    m = tiny().eval()
    idx = torch.randint(0, 97, (2, 16))
    a, _ = m(idx)
    m.set_attention("explicit")
    b, _ = m(idx)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_tied_embedding_is_one_tensor_after_init_step_and_load():
    m = tiny()
    assert m.lm_head.weight is m.wte.weight
    names = [n for n, _ in m.named_parameters()]
    assert "lm_head.weight" not in names and names.count("wte.weight") == 1
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    idx = torch.randint(0, 97, (2, 16))
    _, loss = m(idx, idx)
    loss.backward()
    opt.step()
    assert m.lm_head.weight.data_ptr() == m.wte.weight.data_ptr()
    m2 = tiny()
    m2.load_state_dict(m.state_dict())
    assert m2.lm_head.weight.data_ptr() == m2.wte.weight.data_ptr()
    assert torch.equal(m2.lm_head.weight, m.wte.weight)


def test_eval_mode_with_dropout_is_deterministic_and_train_mode_is_not():
    m = tiny(dropout=0.3)
    idx = torch.randint(0, 97, (2, 16))
    m.eval()
    assert torch.equal(m(idx)[0], m(idx)[0])
    m.train()
    assert not torch.equal(m(idx)[0], m(idx)[0])


def test_forward_integrates_the_path_with_forward_euler():
    """A coarse forward = hand-written x <- x + 2·F_i(x) over blocks 1, 3."""
    m = tiny().eval()
    idx = torch.randint(0, 97, (2, 16))
    x = m.wte(idx) + m.wpe(torch.arange(16))
    for i in (1, 3):
        blk = m.blocks[i]
        a = blk.attn(blk.ln_1(x))
        f = a + blk.mlp(blk.ln_2(x + a))  # F(x) = SA(LN(x)) + FF(LN(x + SA(LN(x))))
        x = x + 2.0 * f
    expected = m.lm_head(m.ln_f(x))
    got, _ = m(idx, path=BlockPath((1, 3), 2.0))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_fine_path_with_h1_is_a_standard_pre_ln_gpt_block():
    m = tiny().eval()
    idx = torch.randint(0, 97, (1, 16))
    x = m.wte(idx) + m.wpe(torch.arange(16))
    for blk in m.blocks:
        h = x + blk.attn(blk.ln_1(x))  # GPT-2: x + attn(ln1(x)), then + mlp(ln2(.))
        x = h + blk.mlp(blk.ln_2(h))
    torch.testing.assert_close(m(idx)[0], m.lm_head(m.ln_f(x)), rtol=1e-6, atol=1e-6)


def test_loss_is_mean_cross_entropy_and_near_log_vocab_at_init():
    m = tiny().eval()
    idx = torch.randint(0, 97, (4, 16))
    targets = torch.randint(0, 97, (4, 16))  # not idx: tied embeddings favour repeating a token
    logits, loss = m(idx, targets)
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 97), targets.reshape(-1)))
    assert abs(loss.item() - torch.log(torch.tensor(97.0)).item()) < 0.1


def test_gpt2_initialisation_scales_residual_projections():
    m = tiny(n_layer=8)
    std = m.blocks[0].mlp.c_proj.weight.std().item()
    assert abs(std - 0.02 / (2 * 8) ** 0.5) < 0.002
    assert abs(m.blocks[0].mlp.c_fc.weight.std().item() - 0.02) < 0.002
