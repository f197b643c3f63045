"""An :class:`~mltrain.export.source.Exportable` as a Hugging Face ``transformers`` model.

The fine path (every h = 1) is exactly ``GPT2LMHeadModel`` (Radford et al. 2019; transformers'
``models/gpt2/modeling_gpt2.py``), checked against ``mltrain.model.transformer`` line by line:

=====================  ===========================================  =========================
mltrain                transformers GPT-2                           mapping
=====================  ===========================================  =========================
``wte`` (V, d)         ``transformer.wte``                          copy; the head is tied
``wpe`` (block, d)     ``transformer.wpe`` (``n_positions``)        copy (learned positions)
``nn.Linear`` W (o,i)  ``Conv1D`` weight (i, o): ``x @ W + b``      transpose
no bias (bias=false)   Conv1D and LayerNorm always have a bias      zeros (adds nothing)
``F.gelu`` (erf)       ``activation_function``                      ``"gelu"`` (exact), not
                                                                    GPT-2's ``gelu_new`` (tanh)
LayerNorm eps 1e-5     ``layer_norm_epsilon``                       1e-5
SDPA, scale 1/√d_h     ``scale_attn_weights``, not by layer index   True / False
q, k, v = split(C)     ``c_attn`` split in the same order, heads    same layout
                       as ``view(B, T, H, d_h)``
dropout p everywhere   ``embd_pdrop``, ``attn_pdrop``, ``resid_pdrop``  p (off in eval mode)
``lm_head`` = ``wte``  ``tie_word_embeddings``                      True
=====================  ===========================================  =========================

A path with some h != 1 (a coarse level) uses :mod:`mltrain.export.modeling_mltrain_ode`,
shipped into the export directory (``trust_remote_code=True``); its docstring says why no
GPT-2 weights can express it. Tokenizers: :mod:`mltrain.export.tokenizer`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from mltrain.export.source import Exportable

REMOTE_CODE = Path(__file__).with_name("modeling_mltrain_ode.py")
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, what ODETransformer uses

# The modules of a block: the same names in both models (nanoGPT follows GPT-2's); the Linear
# ones are Conv1D in GPT-2 (their weight transposed)
_MODULES = ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")
_LINEAR = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}


def hf_config(ex: Exportable, eot_id: int) -> dict:
    """The ``GPT2Config`` (or, with some h != 1, ``MLTrainODEConfig``) keyword arguments of
    ``ex``; ``eot_id``: the tokenizer's end-of-text id (BOS and EOS)."""
    p = float(ex.cfg.model.dropout)
    out = {
        "vocab_size": ex.vocab_size,
        "n_positions": ex.block_size,
        "n_embd": ex.n_embd,
        "n_layer": len(ex.blocks),
        "n_head": ex.n_head,
        "n_inner": None,  # 4d
        "activation_function": "gelu",
        "resid_pdrop": p,
        "embd_pdrop": p,
        "attn_pdrop": p,
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "use_cache": True,
    }
    if not ex.is_gpt2:
        out["step_sizes"] = [float(h) for h in ex.steps]
        out["auto_map"] = {
            "AutoConfig": "modeling_mltrain_ode.MLTrainODEConfig",
            "AutoModelForCausalLM": "modeling_mltrain_ode.MLTrainODEForCausalLM",
        }
    return out


def hf_state_dict(ex: Exportable) -> dict[str, torch.Tensor]:
    """``ex``'s tensors under GPT-2's names: exported block k is ``ex.blocks[k]``; Linear
    weights ``(out, in)`` transposed to Conv1D's ``(in, out)``; absent biases (``model.bias``
    false) as zeros of the output size; no ``lm_head.weight`` (tied to
    ``transformer.wte.weight``). All fp32, contiguous copies (nothing shared with ``ex``)."""
    w = ex.weights

    def copy(t: torch.Tensor) -> torch.Tensor:
        return t.detach().float().contiguous().clone()

    def module(ours: str, theirs: str, linear: bool = False) -> dict[str, torch.Tensor]:
        weight = w[f"{ours}.weight"]
        bias = w.get(f"{ours}.bias")
        return {
            f"{theirs}.weight": copy(weight.t() if linear else weight),
            f"{theirs}.bias": copy(bias) if bias is not None else torch.zeros(weight.shape[0]),
        }

    out = {
        "transformer.wte.weight": copy(w["wte.weight"]),
        "transformer.wpe.weight": copy(w["wpe.weight"]),
        **module("ln_f", "transformer.ln_f"),
    }
    for k, i in enumerate(ex.blocks):
        for name in _MODULES:
            out.update(module(f"blocks.{i}.{name}", f"transformer.h.{k}.{name}", name in _LINEAR))
    return out


def build_model(ex: Exportable, eot_id: int):
    """The ``transformers`` model of ``ex`` (:func:`hf_config`, :func:`hf_state_dict`) with its
    tensors loaded strictly (every tensor of the model set, none left over), in eval mode: a
    ``GPT2LMHeadModel``, or with ``step_sizes`` in the config an ``MLTrainODEForCausalLM``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    kwargs = hf_config(ex, eot_id)
    auto_map = kwargs.pop("auto_map", None)
    if "step_sizes" in kwargs:
        ode = _remote_module()
        config, cls = ode.MLTrainODEConfig(**kwargs), ode.MLTrainODEForCausalLM
        config.auto_map = auto_map
    else:
        config, cls = GPT2Config(**kwargs), GPT2LMHeadModel
    model = cls(config)
    state = hf_state_dict(ex)
    state.setdefault("lm_head.weight", state["transformer.wte.weight"])
    model.load_state_dict(state, strict=True)
    return model.eval()


def write_model(model, out: Path) -> None:
    """``model.save_pretrained(out)`` (safetensors, fp32) and, for an ODE path, the remote code
    beside it; a ``generation_config.json`` whose pad token is EOS (so ``generate`` needs no
    extra argument)."""
    model.generation_config.pad_token_id = model.config.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    if getattr(model.config, "step_sizes", None) is not None:
        shutil.copyfile(REMOTE_CODE, Path(out) / REMOTE_CODE.name)


def _remote_module():
    """:mod:`mltrain.export.modeling_mltrain_ode` (imported here: it imports transformers)."""
    from mltrain.export import modeling_mltrain_ode

    return modeling_mltrain_ode
