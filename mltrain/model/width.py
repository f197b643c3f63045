"""Width coalescing, de-coalescing and interpolation (Zou, Zhang, Deng, ICLR 2024,
arXiv 2404.07999, Sec. 3 "coalescing, de-coalescing, interpolation"; their code
``Photooon/Multi-Level-Training-Framework``, ``map_tools/mapper.py``: ``MapMatrix.get_F``,
``get_T``, ``TransformerMapper.interpolate``).

A *width level* of factor c runs every block at width d/c with its **own** tensors (not a
view of the fine ones, unlike a depth level). The maps below are pure tensor maps on
:class:`~mltrain.model.transformer.ODETransformer`; they know nothing of levels or training.

Grouping (Zou et al.'s default ``width_scheme``: head i merges with head i + H/2, 64-wide
chunks of every other dimension likewise). Every grouped dimension of fine size n_f = c·n is
the stack of c copies of its narrow dimension: fine unit k belongs to group k mod n. With
``Σ = [I, …, I]ᵀ`` (n_f × n, c identity blocks) the maps are, per weight W (out × in):

    (W1) coalesce, output side:   F_out = Σᵀ / c            (average the c members)
    (W2) coalesce, input side:    F_in  = Σ                 (sum the c members)
         W_narrow = F_out · W · F_in;  a vector parameter (bias, norm) of a unit: F_out · b
    (W3) de-coalesce, output side: T_out = Σ                 (copy to the c members)
    (W4) de-coalesce, input side:  T_in  = Σᵀ / c            (split the input weight in c)
         W_fine = T_out · W_narrow · T_in;  a vector parameter: T_out · b
    (W5) interpolation: θ_fine ← (1 − α)·θ_fine + α·decoalesce(θ_narrow)

(W1–W4) are their ``F = norm(…, dim=1)`` and ``T = norm(Fᵀ, dim=1)`` (row-normalised
transposes) written out for pairs; (W5) is their ``interpolate`` (their interpolation
operator, α = 0: nothing changes, α = 1: replacement). Since F_out·T_out = I and
T_in·F_in = I, coalesce(decoalesce(φ)) = φ, and decoalesce∘coalesce is, per tensor, the
orthogonal (Frobenius) projection P onto "members of every group equal" (:func:`project`).

**Heads halved, head width kept** (Zou et al.'s choice: their ``width_scheme`` merges whole
64-wide heads). Merging heads keeps the attention scale 1/√d_h: a de-coalesced head is an
exact copy of its narrow head, so growth is function-preserving in exact arithmetic. Halving
the head width instead would double q·k over a copied head and need a 1/√2 rescale of the
queries, exact only up to rounding. The attention FLOPs (4·T·d per token) are the same
either way. So a narrow level has n_head/c heads of width d_h (n_head and d divisible by c).

**The tied head** (where this differs from their code). The residual stream of the
de-coalesced model must be c copies of the narrow one, so the embedding is *copied* (W3),
but the tied head then sums c equal products, multiplying the logits by c. Their GPT-2 mapper
multiplies the embedding by 2 on coalescing and by ½ on de-coalescing, which keeps the head
exact but halves the residual stream's embedding against the block outputs (their testbench
prints a 9e-2 GPT-2 round-trip error). Here the final layer norm ``ln_f`` (weight and bias)
takes the 1/c instead: ``ln_f`` is de-coalesced with T_in = Σ/c (copy, divide by c) and
coalesced with the sum Σᵀ, every other norm and bias with (W1)/(W3). Then a de-coalesced
model computes the narrow model's logits exactly (up to rounding): LayerNorm of c stacked
copies of z has the mean and variance of z.

**Near a de-coalesced point.** If θ = decoalesce(φ) + εE, decoalesce(coalesce(θ)) =
θ − ε(I − P)E. At a de-coalesced point the gradient of the loss is itself symmetric within
each group (the network is invariant under permuting group members, and the activations are
copies), so P∇L = ∇L and the first-order change ε∇L·(I − P)E vanishes:
|L(decoalesce(coalesce(θ))) − L(θ)| ≤ ½ ε²·λ·‖(I − P)E‖² with λ the largest Hessian
eigenvalue on that segment: the loss of a round trip differs from the loss by O(ε²),
not O(ε). That symmetry is also why Zou et al. interpolate (W5) instead of replacing: a
replaced model's group members receive equal gradients and never separate.

Width × depth: ``blocks`` restricts a coalesced model to some fine blocks (narrow block k is
fine block ``blocks[k]``), de-coalescing writes back into those blocks only.

FLOPs of the maps (:func:`map_flops`): a mean of c values costs c FLOPs (c − 1
additions, one division), a sum c − 1, a division 1, a lerp 3, a copy 0 (DESIGN.md section 3
counts FLOPs; these are element-wise, so FlopCounterMode, which counts matmuls, sees none).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mltrain.errors import ConfigError
from mltrain.model.transformer import ODETransformer

# How each dimension of a parameter is grouped (fine size = c × narrow size): "d" the residual
# width, "qkv" three sections of d (q, k, v), "ff" the MLP's 4d, None not grouped (vocabulary,
# positions). A plain kind is an output side (W1 mean / W3 copy); "…_in" an input side
# (W2 sum / W4 split). The embedding's d is its output (the residual stream); ln_f is read by
# the tied head, so it takes the input-side maps.
_BLOCK_SPECS = {
    "ln_1.weight": ("d",),
    "ln_1.bias": ("d",),
    "attn.c_attn.weight": ("qkv", "d_in"),
    "attn.c_attn.bias": ("qkv",),
    "attn.c_proj.weight": ("d", "d_in"),
    "attn.c_proj.bias": ("d",),
    "ln_2.weight": ("d",),
    "ln_2.bias": ("d",),
    "mlp.c_fc.weight": ("ff", "d_in"),
    "mlp.c_fc.bias": ("ff",),
    "mlp.c_proj.weight": ("d", "ff_in"),
    "mlp.c_proj.bias": ("d",),
}
_SHARED_SPECS = {
    "wte.weight": (None, "d"),  # tied with lm_head.weight: one tensor
    "wpe.weight": (None, "d"),
    "ln_f.weight": ("d_in",),
    "ln_f.bias": ("d_in",),
}
_SECTIONS = {"qkv": 3, "qkv_in": 3}


def check_width(n_embd: int, n_head: int, factor: int) -> None:
    """Raise :class:`ConfigError` unless a width level of ``factor`` exists: c ≥ 1 and c
    divides ``n_head`` (heads are merged in groups of c; the head width is kept)."""
    if factor < 1 or n_head % factor or n_embd % n_head:
        raise ConfigError(
            f"coarsening.hierarchy.width_factor={factor} is not allowed: it must divide "
            f"model.n_head={n_head} (heads are merged in groups of {factor})"
        )


@dataclass(frozen=True)
class _Grouping:
    factor: int

    def mean(self, t: torch.Tensor, dim: int, sections: int = 1) -> torch.Tensor:
        return self._reduce(t, dim, sections, "mean")

    def sum(self, t: torch.Tensor, dim: int, sections: int = 1) -> torch.Tensor:
        return self._reduce(t, dim, sections, "sum")

    def _reduce(self, t: torch.Tensor, dim: int, sections: int, how: str) -> torch.Tensor:
        c = self.factor
        n = t.shape[dim] // (sections * c)
        shape = t.shape[:dim] + (sections, c, n) + t.shape[dim + 1 :]
        g = t.reshape(shape)
        out = g.mean(dim + 1) if how == "mean" else g.sum(dim + 1)
        return out.reshape(t.shape[:dim] + (sections * n,) + t.shape[dim + 1 :])

    def copy(self, t: torch.Tensor, dim: int, sections: int = 1) -> torch.Tensor:
        c = self.factor
        n = t.shape[dim] // sections
        g = t.reshape(t.shape[:dim] + (sections, 1, n) + t.shape[dim + 1 :])
        reps = [1] * g.dim()
        reps[dim + 1] = c
        return g.repeat(reps).reshape(t.shape[:dim] + (sections * c * n,) + t.shape[dim + 1 :])


def _coalesce_tensor(t: torch.Tensor, spec: tuple, g: _Grouping) -> torch.Tensor:
    for dim, kind in enumerate(spec):
        if kind is None:
            continue
        if kind.endswith("_in"):  # (W2): sum the group's input weights
            t = g.sum(t, dim, _SECTIONS.get(kind, 1))
        else:  # (W1): average the group's output units
            t = g.mean(t, dim, _SECTIONS.get(kind, 1))
    return t


def _decoalesce_tensor(t: torch.Tensor, spec: tuple, g: _Grouping) -> torch.Tensor:
    if any(k is not None and k.endswith("_in") for k in spec):  # (W4): split in c
        t = t / g.factor
    for dim, kind in enumerate(spec):
        if kind is not None:  # (W3), and (W4)'s copy: repeat to the group's c members
            t = g.copy(t, dim, _SECTIONS.get(kind, 1))
    return t


def _named(model: ODETransformer, blocks: Sequence[int]):
    """(name in ``model``, name in the fine model, spec) of every parameter ``model`` has;
    block k of a model restricted to ``blocks`` is block ``blocks[k]`` of the fine model."""
    for name, spec in _SHARED_SPECS.items():
        if _has(model, name):
            yield name, name, spec
    for k, i in enumerate(blocks):
        for rel, spec in _BLOCK_SPECS.items():
            name = f"blocks.{k}.{rel}"
            if _has(model, name):
                yield name, f"blocks.{i}.{rel}", spec


def _has(model: torch.nn.Module, name: str) -> bool:
    try:
        model.get_parameter(name)
    except AttributeError:
        return False
    return True


def narrow_config(model: ODETransformer, factor: int, n_layer: int | None = None):
    """The :class:`~mltrain.config.ModelConfig` of ``model`` at width d/c with n_head/c heads
    (``n_layer`` blocks; default: as many as ``model``).

    Raises:
        ConfigError: c does not divide the number of heads (:func:`check_width`).
    """
    from mltrain.config.schema import ModelConfig

    attn = model.blocks[0].attn
    d, heads = model.n_embd, attn.n_head
    check_width(d, heads, factor)
    return ModelConfig(
        n_layer=model.n_layer if n_layer is None else n_layer,
        n_embd=d // factor,
        n_head=heads // factor,
        seq_len=model.block_size,
        block_size=model.block_size,
        dropout=float(model.drop.p),
        bias=model.ln_f.bias is not None,
        attention=attn.attention,
    )


@torch.no_grad()
def coalesce(
    fine: ODETransformer,
    factor: int = 2,
    blocks: Sequence[int] | None = None,
    into: ODETransformer | None = None,
) -> ODETransformer:
    """A new narrow :class:`ODETransformer` with its own tensors: (W1, W2) applied to every
    parameter of ``fine`` (``ln_f`` summed, see the module docstring).

    Args:
        fine: the model to coalesce (width d, H heads, N blocks); left unchanged.
        factor: c, the width factor: the narrow model has width d/c and H/c heads of the same
            width d/H.
        blocks: fine blocks to keep, in order (width × depth levels); narrow block k is fine
            block ``blocks[k]``. Default: all N.
        into: a narrow model of the right shape to write into (its parameter tensors stay the
            same objects, so an optimizer over them keeps its state); default: a new one.

    Returns:
        The narrow model on ``fine``'s device and dtype, in ``fine``'s train/eval mode, with
        the tied head. Building it does not draw from any random generator.

    Raises:
        ConfigError: c does not divide H.
    """
    blocks = tuple(range(fine.n_layer)) if blocks is None else tuple(blocks)
    cfg = narrow_config(fine, factor, len(blocks))
    if into is not None:
        narrow = into
    else:
        with torch.device("meta"):  # no initialisation, so the global RNG is not touched
            narrow = ODETransformer(cfg, fine.vocab_size)
        ref = fine.wte.weight
        narrow = narrow.to_empty(device=ref.device).to(ref.dtype)
        narrow.lm_head.weight = narrow.wte.weight  # to_empty from meta unties them
    g = _Grouping(factor)
    for name, fine_name, spec in _named(narrow, blocks):
        out = _coalesce_tensor(fine.get_parameter(fine_name), spec, g)
        narrow.get_parameter(name).copy_(out)
    narrow.train(fine.training)
    return narrow


@torch.no_grad()
def decoalesce(
    narrow: ODETransformer, factor: int = 2, blocks: Sequence[int] | None = None
) -> dict[str, torch.Tensor]:
    """Fine-shaped tensors (W3, W4) of every parameter of ``narrow``, keyed by the fine
    model's parameter names (``blocks.{blocks[k]}…`` for narrow block k; ``wte.weight`` once
    for the tied head): shapes d = c·d_narrow, 3d, 4d as in the fine model.

    A fine model loaded with all of them computes exactly the narrow model's function (up to
    floating-point rounding; the de-coalesced point of the module docstring).
    """
    blocks = tuple(range(narrow.n_layer)) if blocks is None else tuple(blocks)
    g = _Grouping(factor)
    out = {}
    for name, fine_name, spec in _named(narrow, blocks):
        out[fine_name] = _decoalesce_tensor(narrow.get_parameter(name), spec, g)
    return out


@torch.no_grad()
def interpolate(
    fine: ODETransformer,
    narrow: ODETransformer,
    alpha: float,
    factor: int = 2,
    blocks: Sequence[int] | None = None,
) -> None:
    """(W5) in place: θ_fine ← (1 − α)·θ_fine + α·decoalesce(θ_narrow) over the parameters
    the narrow model holds (its blocks mapped to ``blocks`` of the fine model, plus the
    embeddings and the final norm).

    α = 0 writes nothing (the fine model stays bitwise as it was, signed zeros included);
    α = 1 copies the de-coalesced tensors (a replacement: width growth); otherwise
    ``torch.lerp`` (3 FLOPs per element).

    Raises:
        ConfigError: α outside [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"width interpolation alpha={alpha} is not allowed: must be in [0, 1]")
    if alpha == 0.0:
        return
    for name, t in decoalesce(narrow, factor, blocks).items():
        p = fine.get_parameter(name)
        if alpha == 1.0:
            p.copy_(t)
        else:
            p.lerp_(t, alpha)


@torch.no_grad()
def project(fine: ODETransformer, factor: int = 2) -> None:
    """θ ← decoalesce(coalesce(θ)) in place: per tensor the orthogonal projection P onto
    "every group's members equal" (for ``ln_f``, members equal after the 1/c). Leaves a
    de-coalesced model unchanged (up to rounding: equal members average to themselves)."""
    interpolate(fine, coalesce(fine, factor), 1.0, factor)


def map_flops(
    n_embd: int,
    n_layer: int,
    vocab_size: int,
    block_size: int,
    factor: int = 2,
    bias: bool = True,
    alpha: float | None = None,
) -> dict[str, int]:
    """FLOPs of the maps themselves, as this module computes them (not per token: once per
    coalescing / de-coalescing / interpolation of ``n_layer`` blocks at fine width d).

    Convention: a mean of c values costs c FLOPs, a sum of c values c − 1, a division or a
    multiplication 1, ``torch.lerp`` 3 per element, a copy 0. With n = d/c:

    * ``coalesce``: every grouped output side is a mean (1 FLOP per fine element); an input
      side then sums the c members of the rows that remain.
    * ``decoalesce``: one division per narrow element of every weight with a grouped input
      side and of ``ln_f`` (copies are free).
    * ``interpolate``: 3 per fine element written, for 0 < α < 1 (α = 0 or 1: 0); α None:
      the lerp's cost.

    Returns:
        ``{"coalesce": …, "decoalesce": …, "interpolate": …}`` in FLOPs.
    """
    c = factor
    co = de = elements = 0
    for spec, shape, count in _fine_shapes(n_embd, n_layer, vocab_size, block_size, bias):
        elements += _numel(shape) * count
        shape = list(shape)
        for dim, kind in enumerate(spec):
            if kind is None:
                continue
            before = _numel(shape)
            shape[dim] //= c
            after = _numel(shape)
            # a mean of c: c FLOPs per result; a sum of c: c − 1 per result
            co += count * (before if not kind.endswith("_in") else before - after)
        if any(k is not None and k.endswith("_in") for k in spec):
            de += count * _numel(shape)  # one division per narrow element
    inter = 0 if alpha in (0.0, 1.0) else 3 * elements
    return {"coalesce": co, "decoalesce": de, "interpolate": inter}


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def _fine_shapes(d: int, n_layer: int, vocab: int, block_size: int, bias: bool):
    """(spec, fine shape, how many tensors) of every parameter at width d."""
    dims = {"d": d, "d_in": d, "qkv": 3 * d, "ff": 4 * d, "ff_in": 4 * d}
    out = []
    for specs, count in ((_SHARED_SPECS, 1), (_BLOCK_SPECS, n_layer)):
        for name, spec in specs.items():
            if name.endswith("bias") and not bias:
                continue
            rows = {"wte.weight": vocab, "wpe.weight": block_size}.get(name)
            shape = tuple(rows if k is None else dims[k] for k in spec)
            out.append((spec, shape, count))
    return out
