"""The mapping of mltrain/export/hf.py on untrained models (no run, no disk): every variant of
the ODE-Transformer computes the same logits as its transformers model, to fp32 rounding
(1e-5 absolute on logits of size ~1 at initialisation; the reasoning is in test_export.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mltrain.config import typed
from mltrain.export import hf
from mltrain.export.source import Exportable
from mltrain.model.transformer import BlockPath, ODETransformer
from tests.helpers import compose


def _exportable(*overrides, blocks=None, steps=None) -> tuple[Exportable, ODETransformer]:
    cfg = typed(compose(*overrides))
    torch.manual_seed(0)
    model = ODETransformer(cfg.model, 96).eval()
    with torch.no_grad():  # non-zero biases and norms, so a dropped one would show
        for name, p in model.named_parameters():
            if name.endswith(".bias") or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    n = cfg.model.n_layer
    blocks = tuple(range(n)) if blocks is None else blocks
    steps = (1.0,) * len(blocks) if steps is None else steps
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    ex = Exportable(
        Path("."), Path("ckpt"), 0, cfg, "x", sd, cfg.model.n_embd, cfg.model.n_head,
        blocks, steps, "x",
    )  # fmt: skip
    return ex, model


@pytest.mark.parametrize(
    "overrides, blocks, steps, cls",
    [
        ((), None, None, "GPT2LMHeadModel"),
        (("model.bias=false",), None, None, "GPT2LMHeadModel"),
        (("model.dropout=0.1",), (0, 2), (1.0, 1.0), "GPT2LMHeadModel"),
        ((), (1, 3), (2.0, 2.0), "MLTrainODEForCausalLM"),
        (("model.bias=false",), (0, 1, 3), (0.5, 3.0, 1.0), "MLTrainODEForCausalLM"),
    ],
    ids=["fine", "no-bias", "dropout-subset-h1", "coarse-h2", "mixed-h-no-bias"],
)
def test_transformers_model_computes_the_path(overrides, blocks, steps, cls):
    ex, model = _exportable(*overrides, blocks=blocks, steps=steps)
    theirs = hf.build_model(ex, eot_id=0)
    assert type(theirs).__name__ == cls
    assert theirs.config.activation_function == "gelu"  # exact erf GELU, as F.gelu
    x = torch.randint(0, 96, (3, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x, path=BlockPath(ex.blocks, hs=ex.steps))[0]
        got = theirs(input_ids=x).logits
    assert float((got - want).abs().max()) <= 1e-5
    # the fine path of the same tensors is another function unless the path is the fine one
    if ex.steps != (1.0,) * 4:
        with torch.no_grad():
            assert float((model(x)[0] - got).abs().max()) > 1e-3


def test_no_bias_model_gets_zero_biases():
    ex, _ = _exportable("model.bias=false")
    sd = hf.hf_state_dict(ex)
    assert not any(k.endswith(".bias") for k in ex.weights)
    biases = [v for k, v in sd.items() if k.endswith(".bias")]
    assert len(biases) == 4 * 6 + 1 and all(float(b.abs().max()) == 0 for b in biases)
    assert sd["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)  # Conv1D: (in, out)


def test_generate_with_cache_equals_full_forward():
    """transformers' KV cache through the ODE blocks gives the greedy tokens of full forwards."""
    from mltrain.export import sample as S

    ex, model = _exportable(blocks=(1, 3), steps=(2.0, 2.0))
    theirs = hf.build_model(ex, eot_id=95)
    ids = [3, 14, 15, 92]
    path = BlockPath(ex.blocks, hs=ex.steps)
    assert S.generate_hf(theirs, ids, 20) == S.generate_own(model, path, ids, 20, eot=95)
