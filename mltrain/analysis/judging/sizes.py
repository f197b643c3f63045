"""Model sizes for the judge over model sizes: parameter counts of the ODE-Transformer, total and
non-embedding, and how a run names its size.

The model is :class:`mltrain.model.transformer.ODETransformer` (GPT-2 blocks, learned positions,
a tied head). With width d, N blocks, V vocabulary rows, P positional rows (``model.block_size``):

- embeddings: V·d (token, also the head: tied, counted once) + P·d (positions);
- a block: attention 3d² + d² and MLP 4d² + 4d² weights = 12d², plus with ``model.bias``
  13d (biases 3d + d + 4d + d and two layer norms 2·2d), without it 2d (layer-norm weights);
- the final layer norm: 2d with bias, d without.

Total = embeddings + N·block + final norm; non-embedding = total − V·d − P·d (the count of
Kaplan et al. 2020; Pearce & Song 2024 show it biases small-scale fits, so both are reported).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SIZE_KEYS = ("model.n_layer", "model.n_embd", "model.n_head")


@dataclass(frozen=True)
class Params:
    """A model's parameter counts (counts of scalars)."""

    total: float
    nonembed: float

    def get(self, which: str) -> float:
        """``total`` or ``nonembed``."""
        return self.total if which == "total" else self.nonembed


def param_counts(
    n_layer: int, n_embd: int, vocab_size: int, block_size: int, bias: bool = True
) -> Params:
    """Parameters of an ODE-Transformer (see the module docstring for the terms).

    Args:
        n_layer: blocks N; n_embd: width d; vocab_size: V; block_size: positional rows P;
        bias: ``model.bias``.
    """
    d = n_embd
    block = 12 * d * d + (13 * d if bias else 2 * d)
    nonembed = n_layer * block + (2 * d if bias else d)
    return Params(float(nonembed + vocab_size * d + block_size * d), float(nonembed))


def size_key(flat: dict) -> tuple:
    """What makes one size of a family: (``model.n_layer``, ``model.n_embd``, ``model.n_head``)."""
    return tuple(flat.get(k) for k in SIZE_KEYS)


def size_label(flat: dict) -> str:
    """A size as people say it: ``3 blocks, d=128`` (``1 block, d=32``)."""
    n, d, _ = size_key(flat)
    return f"{n} block{'' if n == 1 else 's'}, d={d}"


def vocab_of(run) -> float | None:
    """The vocabulary rows V of a run: ``run.json``'s ``params.vocab``, else ``model.vocab_size``,
    else from its head FLOPs: (``perf/flops`` − ``perf/flops_nonembed``) / (6·d·``perf/tokens``),
    the training FLOPs of the head (3 × 2·d·V per token, :mod:`mltrain.model.flops`); None when
    none is known."""
    p = run.meta.get("params") if isinstance(run.meta.get("params"), dict) else {}
    if p.get("vocab"):
        return float(p["vocab"])
    if run.flat.get("model.vocab_size"):
        return float(run.flat["model.vocab_size"])
    tokens = float(run.last.get("perf/tokens") or math.nan)
    head = run.total("head") - run.total("nonembed")
    d = run.flat.get("model.n_embd")
    if d and math.isfinite(tokens) and tokens > 0 and head > 0:
        return float(round(head / (6 * d * tokens)))
    return None


def run_params(run) -> Params | None:
    """The parameter counts of a run's (final) model: ``run.json``'s ``params`` when recorded,
    else :func:`param_counts` of its config with :func:`vocab_of`; None when V is unknown."""
    p = run.meta.get("params") if isinstance(run.meta.get("params"), dict) else {}
    if "total" in p and "nonembed" in p:
        return Params(float(p["total"]), float(p["nonembed"]))
    f = run.flat
    vocab = vocab_of(run)
    if vocab is None or f.get("model.n_layer") is None:
        return None
    block_size = f.get("model.block_size") or f.get("model.seq_len")
    return param_counts(
        int(f["model.n_layer"]),
        int(f["model.n_embd"]),
        int(vocab),
        int(block_size),
        bool(f.get("model.bias", True)),
    )


def tokens_of(run) -> float:
    """Tokens a run trained on (``perf/tokens`` of its last record; NaN when absent)."""
    v = run.last.get("perf/tokens")
    return float(v) if isinstance(v, int | float) else math.nan
