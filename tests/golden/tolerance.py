"""How a golden run is compared: bit for bit on a machine where the goldens were checked bit for
bit, within a stated float32 tolerance everywhere else.

Why a tolerance. The goldens are float32 training runs on the CPU. Another CPU (AVX2 instead of
AVX-512, another BLAS code path) sums the same products in another order, so the first
training loss already differs in its last bits (``9.027116775512695`` against the golden
``9.027115821838379``: 1.06e-7 relative, about 1.8 units of float32 roundoff
u = 2**-24 = 5.96e-8). Training carries such differences forward; a few dozen steps at these
tiny sizes and learning rates do not blow them up. Measured on one AVX-512 machine by forcing
torch's other kernel sets (``ATEN_CPU_CAPABILITY=avx2`` and ``=default``) over all seven golden
runs (up to 83 records): the largest relative difference of a loss or gradient norm is 4.2e-7
(7 u), of a validation loss 9.7e-8.

The rule. Integers and strings (steps, levels, FLOP and token counts) are exact: they do not
depend on rounding. A float value ``want`` and its rerun ``have`` agree when

    |have - want| <= EPS * max(|want|, S),   EPS = 1e-5 (168 u, 24 x the largest measured),

with S = 0 for a value on its own scale (gradient norms, learning rates, the line-searched δ)
and S = the run's initial validation loss (about ln V = 9 nats here) for a key that is a loss
or a difference of losses (``grow/loss_jump``, ``coarsening/delta_gain/*`` are differences of
two losses near 9, so their rounding is that of the losses, not of their small value;
measured: 4.7e-5 relative on a 0.02 gain, i.e. 1.0e-7 of the loss). ``val/ppl`` is exp of a
loss, so its logarithm is compared as a loss.

Why it still catches a real change: a 1 % change of one knob of any scheme moves its losses
by 6e-5 to 3e-3 relative within the golden's steps (tests/test_golden.py changes each scheme
on purpose and checks that this rule fails), 6 to 300 times EPS.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from pathlib import Path

EPS = 1e-5
HERE = Path(__file__).resolve().parent
EXACT_ON = HERE / "exact_on.json"  # fingerprints of machines where the goldens match bit for bit


def machine() -> dict:
    """What decides the float32 rounding of a CPU run: torch's version and kernel set
    (``torch.backends.cpu.get_cpu_capability()``, which ``ATEN_CPU_CAPABILITY`` lowers), the
    architecture, and the CPU's model name and feature flags (BLAS picks its code path from
    them), the flags as a short hash."""
    import torch

    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            if key.strip() in ("flags", "Features") and not flags:
                flags = " ".join(sorted(value.split()))
    except OSError:
        model = platform.processor()
    return {
        "torch": torch.__version__,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "arch": platform.machine(),
        "cpu": model,
        "flags": hashlib.sha256(flags.encode()).hexdigest()[:16],
    }


def exact_here() -> bool:
    """Whether this machine is one where the goldens were checked bit for bit."""
    if not EXACT_ON.exists():
        return False
    return machine() in json.loads(EXACT_ON.read_text())


def _scale(key: str, initial_loss: float) -> float:
    return initial_loss if ("loss" in key or "delta_gain" in key or key == "val/ppl") else 0.0


def mismatches(golden: list[dict], got: list[dict], exact: bool) -> list[str]:
    """The differences between a golden run's records and a rerun's, one line each (empty: they
    agree). ``exact``: every value bit for bit; else floats within the rule of this module.
    Raises nothing; a missing or extra record or key is a mismatch."""
    out = []
    if len(got) != len(golden):
        out.append(f"{len(got)} records != golden {len(golden)}")
    initial = next((r["val/loss"] for r in golden if "val/loss" in r), 0.0)
    for want, have in zip(golden, got):
        where = f"step {want.get('step')}"
        if set(have) != set(want):
            out.append(f"{where}: keys {sorted(set(have) ^ set(want))} differ")
        for key, w in want.items():
            h = have.get(key, "<missing>")
            if exact or not isinstance(w, float) or not isinstance(h, (float, int)):
                if h != w:
                    out.append(f"{where} {key}: {h} != golden {w}")
                continue
            a, b = (math.log(h), math.log(w)) if key == "val/ppl" else (h, w)
            bound = EPS * max(abs(b), _scale(key, initial))
            if not abs(a - b) <= bound:
                out.append(
                    f"{where} {key}: {h} != golden {w} (|diff| {abs(a - b):.2e} > {bound:.2e})"
                )
    return out
