"""Loss-against-compute curves of ``mltrain-compare``: where a curve reaches a loss, what loss it
has at a FLOPs budget, seed means, FLOP ratios, and :class:`Bounded`, a number that may only be
known as a bound (a curve that never reaches a loss gives a bound, never "n/a").

Units: FLOPs are counts of training FLOPs (``perf/flops`` with the head or
``perf/flops_nonembed``, DESIGN.md section 3); losses are validation losses in nats/token.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Curve = tuple[Sequence[float], Sequence[float]]  # (FLOPs, validation losses) of one seed


def fmt_flops(x: float, sig: int = 3, trim: bool = False) -> str:
    """A FLOP count as ``1.23e13`` (``sig`` significant digits, no ``+``, no leading zeros in
    the exponent); ``trim`` drops trailing zeros of the mantissa (``2e13``, ``1.5e13``)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if x == 0:
        return "0"
    mant, exp = f"{x:.{max(sig, 1) - 1}e}".split("e")
    if trim and "." in mant:
        mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}"


# --------------------------------------------------------------------------- bounded numbers
@dataclass(frozen=True)
class Bounded:
    """A quantity known exactly (``lo == hi``) or only as an interval ``(lo, hi)`` (a measured
    value, or a bound where it lies outside what was measured; never a statistical estimate), where
    ``-inf`` / ``inf`` mean unbounded: ``Bounded(-inf, 0.7)`` is "< 0.7",
    ``Bounded(1.4, inf)`` is "> 1.4". Aggregating over seeds works on the ends
    (:func:`over_seeds`), so a bound stays a bound."""

    lo: float
    hi: float

    @classmethod
    def exact(cls, v: float) -> Bounded:
        return cls(float(v), float(v))

    @classmethod
    def below(cls, v: float) -> Bounded:
        """Less than ``v``."""
        return cls(-math.inf, float(v))

    @classmethod
    def above(cls, v: float) -> Bounded:
        """More than ``v``."""
        return cls(float(v), math.inf)

    @property
    def is_exact(self) -> bool:
        return self.lo == self.hi

    @property
    def kind(self) -> str:
        """``=`` exact, ``<`` upper bound, ``>`` lower bound, ``range`` both ends finite,
        ``?`` unbounded both ways."""
        if self.is_exact:
            return "="
        if math.isinf(self.lo) and math.isinf(self.hi):
            return "?"
        if math.isinf(self.lo):
            return "<"
        if math.isinf(self.hi):
            return ">"
        return "range"

    @property
    def value(self) -> float:
        """The exact value, else the finite bound (NaN when there is none); see :attr:`kind`."""
        if self.is_exact or math.isinf(self.lo):
            return self.hi if math.isfinite(self.hi) else math.nan
        return self.lo if math.isfinite(self.lo) else math.nan

    def fmt(self, spec: str = ".2f", signed: bool = False) -> str:
        """``0.79``, ``< 0.70``, ``> 1.43``, ``0.52 to 0.90`` or ``unknown``. A bound is rounded
        outwards at a fixed-point ``spec`` (``> 0.9998`` prints ``> 0.99``, ``< 0.701`` prints
        ``< 0.71``), so the printed bound still holds; an exact value is rounded to nearest."""

        fixed = re.fullmatch(r"\+?\.?(\d+)f", spec)  # fixed point: its digits can be rounded
        scale = 10 ** int(fixed.group(1)) if fixed else None

        def f(x: float, direction: int = 0) -> str:
            if direction and scale and math.isfinite(x):
                x = (math.floor if direction < 0 else math.ceil)(round(x * scale, 6)) / scale
            return format(x, ("+" if signed else "") + spec)

        return {
            "=": lambda: f(self.lo),
            "<": lambda: f"< {f(self.hi, +1)}",
            ">": lambda: f"> {f(self.lo, -1)}",
            "range": lambda: f"{f(self.lo, -1)} to {f(self.hi, +1)}",
            "?": lambda: "unknown",
        }[self.kind]()

    def named(self, name: str, spec: str = ".2f") -> str:
        """``r = 0.79``, ``r < 0.70``, ``r > 1.43``, ``r between 0.52 and 0.90``."""
        k = self.kind
        if k == "range":
            return f"{name} between {format(self.lo, spec)} and {format(self.hi, spec)}"
        return f"{name} = {self.fmt(spec)}" if k in ("=", "?") else f"{name} {self.fmt(spec)}"


def over_seeds(values: Sequence[Bounded]) -> tuple[Bounded, Bounded, Bounded]:
    """Mean, min and max over seeds of per-seed estimates, taken end by end: the mean of
    values that are all exact is their mean; "< b" mixed with exact values gives "< mean of the
    upper ends"; "< b" mixed with "> a" gives a mean that is unbounded both ways."""
    lo = np.asarray([v.lo for v in values], dtype=float)
    hi = np.asarray([v.hi for v in values], dtype=float)
    with np.errstate(invalid="ignore"):  # inf - inf never happens: ends are summed by side
        mean = Bounded(float(np.mean(lo)), float(np.mean(hi)))
    return (
        mean,
        Bounded(float(lo.min()), float(hi.min())),
        Bounded(float(lo.max()), float(hi.max())),
    )


# --------------------------------------------------------------------------- curves
def _finite(flops, losses) -> tuple[np.ndarray, np.ndarray]:
    f, lo = np.asarray(flops, dtype=float), np.asarray(losses, dtype=float)
    ok = np.isfinite(f) & np.isfinite(lo)
    return f[ok], lo[ok]


def flops_to_target(flops: Sequence[float], losses: Sequence[float], target: float) -> float | None:
    """FLOPs at which a validation curve first reaches ``target`` (loss <= target).

    Args:
        flops: cumulative training FLOPs (counts) at each evaluation, non-decreasing.
        losses: validation loss (nats/token) at those evaluations.
        target: loss level (nats/token).

    Returns:
        The FLOPs linearly interpolated (in loss) between the last evaluation above the
        target and the first at or below it; the FLOPs of the first evaluation if it is
        already at or below; None if the curve never reaches the target.
    """
    f, lo = _finite(flops, losses)
    hit = np.flatnonzero(lo <= target)
    if not len(hit):
        return None
    i = int(hit[0])
    if i == 0:
        return float(f[0])
    f0, f1, l0, l1 = f[i - 1], f[i], lo[i - 1], lo[i]
    return float(f0 + (l0 - target) / (l0 - l1) * (f1 - f0))


def loss_at_flops(flops: Sequence[float], losses: Sequence[float], budget: float) -> float | None:
    """Validation loss (nats/token) at ``budget`` training FLOPs, linearly interpolated in
    FLOPs between the two evaluations around it; None outside the evaluated range."""
    f, lo = _finite(flops, losses)
    if not len(f) or budget < f[0] or budget > f[-1]:
        return None
    i = int(np.searchsorted(f, budget, side="left"))
    if f[i] == budget:
        return float(lo[i])
    f0, f1, l0, l1 = f[i - 1], f[i], lo[i - 1], lo[i]
    return float(l0 + (budget - f0) / (f1 - f0) * (l1 - l0))


def mean_curve(curves: Sequence[Curve]) -> Curve:
    """The seed-mean validation curve: each seed's losses interpolated onto the first seed's
    FLOPs (seeds of one configuration evaluate at the same FLOPs, so this is exact for them),
    averaged; points where some seed has no value are dropped."""
    f0 = np.asarray(curves[0][0], dtype=float)
    rows = []
    for f, lo in curves:
        f, lo = _finite(f, lo)
        rows.append(
            np.interp(f0, f, lo, left=np.nan, right=np.nan) if len(f) else np.full_like(f0, np.nan)
        )
    mean = np.mean(rows, axis=0)
    keep = np.isfinite(mean)
    return f0[keep], mean[keep]


def seeds_to_target(curves: Sequence[Curve], target: float) -> tuple[float | None, int]:
    """:func:`flops_to_target` of the seed-mean curve (:func:`mean_curve`), and the number of
    seeds whose own curve reaches the target."""
    if not curves:
        return None, 0
    reached = sum(flops_to_target(f, lo, target) is not None for f, lo in curves)
    return flops_to_target(*mean_curve(curves), target), reached


def curve_end(curves: Sequence[Curve]) -> float:
    """The largest FLOPs of the seed-mean curve (where a curve that never reached a loss
    stopped trying); NaN without points."""
    f, _ = mean_curve(curves) if curves else ((), ())
    return float(f[-1]) if len(f) else math.nan


def ratio_to_target(
    mine: float | None, my_end: float, ref: float | None, ref_end: float
) -> Bounded | None:
    """FLOPs to reach a target over a reference's FLOPs to reach it, as an :class:`Bounded`.

    Args:
        mine, ref: FLOPs at which each (seed-mean) curve reaches the target, None if never.
        my_end, ref_end: FLOPs at which each curve ends (a curve that never reached the
            target would need more than that).

    Returns:
        ``mine / ref`` when both reach it; "< mine / ref_end" when only ``mine`` does (the
        reference would need more than ``ref_end``); "> my_end / ref" when only the reference
        does; None when neither does or the reference needs 0 FLOPs.
    """
    if ref is not None and ref <= 0:
        return None
    if mine is not None and ref is not None:
        return Bounded.exact(mine / ref)
    if mine is not None and ref_end > 0:
        return Bounded.below(mine / ref_end)
    if ref is not None and math.isfinite(my_end):
        return Bounded.above(my_end / ref)
    return None


def flops_ratio_curve(
    curves_a: Sequence[Curve], curves_b: Sequence[Curve], levels: Sequence[float]
) -> np.ndarray:
    """FLOPs_a(L) / FLOPs_b(L) at each loss level L: the (seed-mean) FLOPs for ``a`` to reach L
    over those for ``b``; NaN where either does not reach L (or b needs 0 FLOPs)."""
    out = []
    for level in levels:
        a, _ = seeds_to_target(curves_a, level)
        b, _ = seeds_to_target(curves_b, level)
        out.append(a / b if a is not None and b else math.nan)
    return np.asarray(out, dtype=float)


def ratio_levels(curves_a: Sequence[Curve], curves_b: Sequence[Curve], n: int = 50) -> np.ndarray:
    """``n`` loss levels that both seed-mean curves (:func:`mean_curve`, on which the ratios are
    taken) reach: from the higher of their minima up to the lower of their losses at the first
    evaluation after training started (FLOPs > 0; before it, a curve would be interpolated
    from the evaluation at step 0 across the whole first stretch)."""
    if not curves_a or not curves_b:
        return np.empty(0)
    means = [mean_curve(curves_a), mean_curve(curves_b)]
    if any(not len(lv) for _, lv in means):
        return np.empty(0)
    lo = max(float(np.min(lv)) for _, lv in means)
    firsts = [np.asarray(lv)[np.asarray(f) > 0] for f, lv in means]
    if any(len(x) == 0 for x in firsts):
        return np.empty(0)
    hi = min(float(x[0]) for x in firsts)
    return np.linspace(lo, hi, n) if hi > lo else np.asarray([lo]) if hi == lo else np.empty(0)
