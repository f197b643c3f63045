"""An mltrain ODE-Transformer path as a ``transformers`` model: the remote code an export of
a level with a step h != 1 ships (``mltrain-export RUN OUT --level coarse_a``), loaded with
``AutoModelForCausalLM.from_pretrained(OUT, trust_remote_code=True)``.

This file is copied verbatim into the export directory, so it imports only torch and
transformers (written against transformers 5.x, whose ``GPT2Model`` calls each block as
``block(hidden_states, cache, attention_mask, encoder_hidden_states, **kwargs)``).

mltrain's block ``i`` with step h_i (``mltrain.model.transformer``, Lauga et al. 2025, Sec. 2)::

    a = SA(LN1(x));   x <- x + h_i * (a + FF(LN2(x + a)))

The inner residual ``x + a`` is not scaled by h. With h = 1 this is exactly GPT-2's block
(``r = x + a; x <- r + FF(LN2(r))``), and an export with every h = 1 is a plain
``GPT2LMHeadModel`` without this file. With h != 1 no GPT-2 weights give it: LN2 reads
``x + a`` while the residual adds ``h·a``, and no rescaling of the weights moves h inside a
layer norm. So :class:`ODEBlock` keeps GPT-2's modules (the same tensor names, Conv1D
orientation, attention and cache) and changes only the two residual additions; everything
else (embeddings, learned positions, ``ln_f``, the tied head, ``generate``) is GPT-2's.

Config: GPT-2's plus ``step_sizes`` (one h per block, in order).
"""

from __future__ import annotations

from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model
from transformers.models.gpt2.modeling_gpt2 import GPT2Block


class MLTrainODEConfig(GPT2Config):
    """GPT-2's config and the Euler step of each block (``step_sizes``, length ``n_layer``)."""

    model_type = "mltrain_ode"
    step_sizes: list[float] | None = None


class ODEBlock(GPT2Block):
    """A GPT-2 block integrated with step ``h``: ``x + h·(a + FF(LN2(x + a)))``, ``a =
    SA(LN1(x))``; ``(B, T, d) -> (B, T, d)``. Cross-attention is not supported."""

    def __init__(self, config: MLTrainODEConfig, layer_idx: int) -> None:
        super().__init__(config, layer_idx=layer_idx)
        self.h = float(config.step_sizes[layer_idx])

    def forward(
        self,
        hidden_states,
        cache=None,
        attention_mask=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        use_cache=False,
        **kwargs,
    ):
        if encoder_hidden_states is not None:
            raise ValueError("an mltrain ODE block has no cross-attention")
        x = hidden_states
        a, _ = self.attn(
            self.ln_1(x), cache=cache, attention_mask=attention_mask, use_cache=use_cache, **kwargs
        )
        return x + self.h * (a + self.mlp(self.ln_2(x + a)))


class MLTrainODEModel(GPT2Model):
    """GPT-2's decoder with :class:`ODEBlock` blocks."""

    config_class = MLTrainODEConfig

    def __init__(self, config: MLTrainODEConfig) -> None:
        super().__init__(config)
        if len(config.step_sizes or ()) != config.n_layer:
            raise ValueError(f"step_sizes needs one h per block ({config.n_layer})")
        self.h = nn.ModuleList(ODEBlock(config, i) for i in range(config.n_layer))
        self.post_init()


class MLTrainODEForCausalLM(GPT2LMHeadModel):
    """GPT-2's LM head (tied to the token embedding) on :class:`MLTrainODEModel`."""

    config_class = MLTrainODEConfig

    def __init__(self, config: MLTrainODEConfig) -> None:
        super().__init__(config)
        self.transformer = MLTrainODEModel(config)
        self.post_init()
