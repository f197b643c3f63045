"""``train.precision``: what ``auto`` resolves to, the autocast context and loss scaler of each
precision, and the peak-FLOP/s column (:data:`mltrain.model.flops.PEAK_FLOPS`) a run's MFU is
measured against.

``auto`` is fp32 on the CPU; on CUDA it is bf16 where the device computes bf16 natively
(compute capability 8.0 and later: A100, H100, L4, RTX 30xx/40xx) and fp16 with a GradScaler
elsewhere (T4, V100: bf16 there is emulated, slow, and inductor does not compile it). The
resolved precision is written to ``run.json`` and to every checkpoint; a run resumed with
``auto`` continues in the precision its checkpoint recorded (a CPU fp32 checkpoint resumed on
a GPU stays fp32), so one run never changes precision half-way.
"""

from __future__ import annotations

import contextlib
import logging

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (CUDA, not emulated). False on the CPU."""
    if device.type != "cuda":
        return False
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def resolve(setting: str, device: torch.device, saved: str | None = None) -> str:
    """The precision a run uses: ``setting`` (``auto``, ``fp32``, ``bf16``, ``fp16``) on
    ``device``; with ``auto``, the precision ``saved`` in the checkpoint being resumed when
    there is one, else fp32 on the CPU, bf16 on a CUDA device with native bf16, fp16 on an
    older CUDA device."""
    if setting != "auto":
        if setting == "bf16" and device.type == "cuda" and not native_bf16(device):
            log.warning(
                "train.precision=bf16 on %s, which has no native bf16 (emulated, slow, not "
                "compiled by inductor): train.precision=auto picks fp16 with loss scaling there",
                torch.cuda.get_device_name(device),
            )
        return setting
    if saved in PRECISIONS:
        return saved
    if device.type != "cuda":
        return "fp32"
    return "bf16" if native_bf16(device) else "fp16"


def autocast_and_scaler(precision: str, device: torch.device):
    """``(factory of the autocast context, GradScaler or None)`` for a resolved ``precision``:
    fp32 runs without autocast, bf16 under autocast without scaling, fp16 under autocast
    with a GradScaler. Master weights stay fp32 in every case."""
    if precision == "fp32":
        return contextlib.nullcontext, None
    dev = device.type
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(dev) if precision == "fp16" else None
    return (lambda: torch.autocast(dev, dtype=dtype)), scaler


def peak_column(precision: str) -> str:
    """The :data:`~mltrain.model.flops.PEAK_FLOPS` column of a resolved ``precision``: its
    own for bf16/fp16; for fp32, ``tf32`` when fp32 matmuls may use TF32 tensor cores
    (``torch.backends.cuda.matmul.allow_tf32``, set by :func:`mltrain.train.distributed.init`),
    else ``fp32``."""
    if precision != "fp32":
        return precision
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"


def device_peak(device: torch.device, precision: str) -> float | None:
    """Peak dense FLOP/s of ``device`` at ``precision`` (None on the CPU or for a device the
    table does not list; a warning says MFU is then not logged)."""
    from mltrain.model.flops import peak_flops

    if device.type != "cuda":
        return None
    name, column = torch.cuda.get_device_name(device), peak_column(precision)
    peak = peak_flops(name, column)
    if peak is None:
        log.warning(
            "no peak FLOP/s known for %r at %s (mltrain.model.flops.PEAK_FLOPS): perf/mfu is "
            "not logged",
            name,
            column,
        )
    return peak
