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


# Peak dense FLOP/s (without sparsity) per CUDA device name, as torch.cuda.get_device_name
# returns it, and per precision: "bf16"/"fp16" = 16-bit tensor cores with fp32 accumulate
# (what autocast uses), "tf32" = fp32 matmuls on tensor cores (train.precision=fp32 with TF32
# allowed, as mltrain.train.distributed.init does on CUDA), "fp32" = plain fp32 (no TF32).
# Vendor data sheets give sparse figures for tensor cores: halved here. A device or precision
# not listed gets no MFU (None) rather than a wrong one.
_T = 1e12
_H100_SXM = {"bf16": 989.4 * _T, "fp16": 989.4 * _T, "tf32": 494.7 * _T, "fp32": 66.9 * _T}
_H_NVL = {"bf16": 835.5 * _T, "fp16": 835.5 * _T, "tf32": 417.5 * _T, "fp32": 60.0 * _T}
_A100 = {"bf16": 312 * _T, "fp16": 312 * _T, "tf32": 156 * _T, "fp32": 19.5 * _T}
_V100_SXM2 = {"fp16": 125 * _T, "fp32": 15.7 * _T}  # Volta: no bf16, no TF32
_V100_PCIE = {"fp16": 112 * _T, "fp32": 14 * _T}
PEAK_FLOPS: dict[str, dict[str, float]] = {
    # NVIDIA H100 Tensor Core GPU data sheet (2023): SXM5, PCIe, NVL
    "NVIDIA H100 80GB HBM3": _H100_SXM,
    "NVIDIA H100 PCIe": {"bf16": 756 * _T, "fp16": 756 * _T, "tf32": 378 * _T, "fp32": 51 * _T},
    "NVIDIA H100 NVL": _H_NVL,
    # NVIDIA H200 Tensor Core GPU data sheet (2024): SXM has the H100 SXM's compute, NVL the
    # H100 NVL's
    "NVIDIA H200": _H100_SXM,
    "NVIDIA H200 NVL": _H_NVL,
    # NVIDIA A100 Tensor Core GPU data sheet (2021): the same compute for all four parts
    "NVIDIA A100-SXM4-40GB": _A100,
    "NVIDIA A100-SXM4-80GB": _A100,
    "NVIDIA A100-PCIE-40GB": _A100,
    "NVIDIA A100 80GB PCIe": _A100,
    # NVIDIA A10 data sheet (2021)
    "NVIDIA A10": {"bf16": 125 * _T, "fp16": 125 * _T, "tf32": 62.5 * _T, "fp32": 31.2 * _T},
    # NVIDIA L40S, L40 and L4 data sheets (2023)
    "NVIDIA L40S": {"bf16": 362.05 * _T, "fp16": 362.05 * _T, "tf32": 183 * _T, "fp32": 91.6 * _T},
    "NVIDIA L40": {"bf16": 181.05 * _T, "fp16": 181.05 * _T, "tf32": 90.5 * _T, "fp32": 90.5 * _T},
    "NVIDIA L4": {"bf16": 121 * _T, "fp16": 121 * _T, "tf32": 60 * _T, "fp32": 30.3 * _T},
    # NVIDIA Ada GPU architecture whitepaper v2.1, table 2 (fp32 accumulate)
    "NVIDIA GeForce RTX 4090": {
        "bf16": 165.2 * _T,
        "fp16": 165.2 * _T,
        "tf32": 82.6 * _T,
        "fp32": 82.6 * _T,
    },
    # NVIDIA Ampere GA102 GPU architecture whitepaper v2, table 9 (fp32 accumulate)
    "NVIDIA GeForce RTX 3090": {
        "bf16": 35.6 * _T,
        "fp16": 35.6 * _T,
        "tf32": 17.8 * _T,
        "fp32": 35.6 * _T,
    },
    # NVIDIA V100 Tensor Core GPU data sheet (2020)
    "Tesla V100-SXM2-16GB": _V100_SXM2,
    "Tesla V100-SXM2-32GB": _V100_SXM2,
    "Tesla V100-PCIE-16GB": _V100_PCIE,
    "Tesla V100-PCIE-32GB": _V100_PCIE,
    # NVIDIA T4 data sheet (2019): Turing, no bf16, no TF32
    "Tesla T4": {"fp16": 65 * _T, "fp32": 8.1 * _T},
}


def peak_flops(device_name: str, precision: str = "bf16") -> float | None:
    """Peak dense FLOP/s of a CUDA device for ``precision`` (``bf16``, ``fp16``, ``tf32`` or
    ``fp32``), by its exact name (e.g. ``NVIDIA H100 80GB HBM3``; case and surrounding spaces
    ignored), or None when the device or the precision is not in :data:`PEAK_FLOPS`."""
    want = " ".join(device_name.split()).lower()
    for name, peaks in PEAK_FLOPS.items():
        if name.lower() == want:
            return peaks.get(precision)
    return None
