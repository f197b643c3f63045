"""FLOPs: the analytic convention of DESIGN.md section 3 and its measured cross-check.

Per token, per block evaluation, forward: matmuls 24·d² (QKV 6d², out-proj 2d², MLP 16d²)
plus attention 4·T·d (QKᵀ and AV, no causal discount). Head 2·d·V; embedding lookups 0.
Training = 3 × forward. This equals 6N + 12·L·T·d per token (Chowdhery et al. 2022, PaLM,
appendix B) when every block is evaluated once. Counts are per *block evaluation*, not per
parameter: a coarse level evaluates fewer blocks with the same tensors.

All counts are FLOPs (floating-point operations; a count, not a rate).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class FlopCount:
    """A FLOP count with and without the head's 2·d·V per token.

    Attributes:
        total: with head (the headline total, ``perf/flops``).
        nonembed: without the head (``perf/flops_nonembed``).
    """

    total: int
    nonembed: int

    def __add__(self, other: FlopCount) -> FlopCount:
        return FlopCount(self.total + other.total, self.nonembed + other.nonembed)

    def __mul__(self, k: int) -> FlopCount:
        return FlopCount(self.total * k, self.nonembed * k)


def block_forward_flops_per_token(d: int, seq_len: int) -> int:
    """24·d² + 4·T·d: one block evaluation, forward, per token."""
    return 24 * d * d + 4 * seq_len * d


def head_forward_flops_per_token(d: int, vocab_size: int) -> int:
    """2·d·V: the (tied) output projection, forward, per token."""
    return 2 * d * vocab_size


def forward_flops(n_blocks: int, d: int, seq_len: int, vocab_size: int, tokens: int) -> FlopCount:
    """Forward FLOPs of ``tokens`` tokens through a path of ``n_blocks`` block evaluations."""
    nonembed = tokens * n_blocks * block_forward_flops_per_token(d, seq_len)
    return FlopCount(nonembed + tokens * head_forward_flops_per_token(d, vocab_size), nonembed)


def train_flops(n_blocks: int, d: int, seq_len: int, vocab_size: int, tokens: int) -> FlopCount:
    """Training FLOPs (forward + backward = 3 × forward) of one step on ``tokens`` tokens:
    ``B·T·3·(L_eval·(24d² + 4Td) + 2dV)`` with head (DESIGN.md section 3)."""
    return forward_flops(n_blocks, d, seq_len, vocab_size, tokens) * 3


def level_step_flops(levels, d: int, seq_len: int, vocab_size: int, tokens: int) -> dict:
    """``{level name: FlopCount}`` of one optimizer step of each level on ``tokens`` positions
    (batch × T: a patch level's positions each stand for K tokens but cost what a token
    position costs, head included; a level's path evaluates ``level.n_blocks`` blocks;
    :func:`train_flops`). A width level (``level.width_factor`` = c > 1, its own narrow
    tensors: :mod:`mltrain.model.width`) runs its blocks and the head at width d/c; levels
    without the attribute run at d."""
    return {
        lv.name: train_flops(
            lv.n_blocks, d // getattr(lv, "width_factor", 1), seq_len, vocab_size, tokens
        )
        for lv in levels
    }


def measure_train_flops(
    model: torch.nn.Module, idx: torch.Tensor, targets: torch.Tensor, path=None, patch: int = 1
) -> int:
    """Matmul FLOPs of one real forward + backward on ``(B, T)`` ``idx``/``targets`` along
    ``path`` (a patch level, ``patch`` = K > 1: ``(B, K·T)`` ids and ``(B, T, K)`` targets),
    counted by :class:`torch.utils.flop_counter.FlopCounterMode` with the explicit
    attention path (SDPA counts as 0 FLOPs on CPU). The model's attention setting is
    restored afterwards; gradients are left in ``.grad``."""
    previous = model.blocks[0].attn.attention
    model.set_attention("explicit")
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            _, loss = model(idx, targets, path=path, patch=patch)
            loss.backward()
        return int(counter.get_total_flops())
    finally:
        model.set_attention(previous)


def measure_attention_flops(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    """Forward FLOPs of one explicit attention call on ``(B, H, T, d_h)`` tensors."""
    from mltrain.model.transformer import explicit_attention

    counter = FlopCounterMode(display=False)
    with counter:
        explicit_attention(q, k, v)
    return int(counter.get_total_flops())


# Peak dense bf16 FLOP/s per device (vendor data sheets, without sparsity), for MFU.
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,
}


def peak_flops(device_name: str) -> float | None:
    """Peak bf16 FLOP/s of a CUDA device by name (e.g. ``NVIDIA H200``), or None if unknown."""
    for key, value in PEAK_BF16_FLOPS.items():
        if key.lower() in device_name.lower():
            return value
    return None
