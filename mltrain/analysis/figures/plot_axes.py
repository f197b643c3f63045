"""Axis helpers of ``mltrain-compare``'s figures (:mod:`mltrain.analysis.figures.plots`,
:mod:`mltrain.analysis.figures.frontier_plot`, :mod:`mltrain.analysis.figures.isoflop_plot`): log-FLOPs x-axes
with labelled ticks (``1.2e13``), y-limits that a single spike does not set (:func:`spikes`,
:func:`robust_ylim`), and the y-range with diverged runs (:func:`diverged_ylim`), with the
markers at the top edge for points above it (:func:`mark_spikes`, :func:`mark_diverged_end`).
FLOPs are counts, losses nats/token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator, NullFormatter

from mltrain.analysis.judging.curves import fmt_flops

SPIKE = "_spike"  # label of the markers of points above the y-range
# the x-axis title of each FLOP total (:data:`mltrain.analysis.judging.runs.TOTALS`)
FLOP_AXIS_TITLES = {
    "head": "training FLOPs (with head)",
    "nonembed": "training FLOPs (non-embedding)",
}


def flop_ticks(lo: float, hi: float) -> list[float]:
    """3 to 8 tick positions inside ``[lo, hi]`` (FLOPs, a log axis): powers of ten, then
    1-3, 1-2-5, ... per decade until there are at least three; for a range too narrow for
    that, evenly spaced round values."""
    if not (lo > 0 and hi > lo):
        return [lo] if lo > 0 else []
    e0, e1 = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1
    ticks: list[float] = []
    for mants in (
        (1,),
        (1, 3),
        (1, 2, 5),
        (1, 1.5, 2, 3, 5, 7),
        (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8),
    ):
        ticks = [
            m * 10.0**e
            for e in range(e0, e1 + 1)
            for m in mants
            if lo * (1 - 1e-9) <= m * 10.0**e <= hi * (1 + 1e-9)
        ]
        if len(ticks) >= 3:
            break
    if len(ticks) < 3:
        ticks = MaxNLocator(5, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
        ticks = [t for t in ticks if lo <= t <= hi]
    while len(ticks) > 8:
        ticks = ticks[::2]
    return [float(t) for t in ticks]


def set_flop_axis(ax, lo: float, hi: float) -> None:
    """A log FLOPs x-axis on ``[lo, hi]`` with labelled ticks such as ``1.2e13``."""
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ticks = flop_ticks(lo, hi)
    ax.set_xticks(ticks, [fmt_flops(t, 3, trim=True) for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())


def spikes(y: Sequence[float]) -> np.ndarray:
    """Which points of a loss curve are spikes: more than ``max(0.25 × (first − min),
    0.1 × |min|)`` nats/token above the lowest loss before them (the first point never is)."""
    y = np.asarray(y, dtype=float)
    out = np.zeros(len(y), dtype=bool)
    ok = np.isfinite(y)
    if ok.sum() < 3:
        return out
    yf = y[ok]
    thr = max(0.25 * (yf[0] - yf.min()), 0.1 * abs(yf.min()), 1e-12)
    best = np.minimum.accumulate(np.where(ok, y, np.inf))
    out[1:] = ok[1:] & (y[1:] > best[:-1] + thr)
    return out


def robust_ylim(
    series: Sequence[Sequence[float]], extra: Sequence[float] = ()
) -> tuple[float, float]:
    """y-limits that hold every point of ``series`` except spikes (:func:`spikes`), and the
    values ``extra`` (e.g. the target), with a 4 % margin."""
    lo, hi = math.inf, -math.inf
    for y in series:
        y = np.asarray(y, dtype=float)
        fin = np.isfinite(y)
        if not fin.any():
            continue
        keep = fin & ~spikes(y)
        lo = min(lo, float(y[fin].min()))
        hi = max(hi, float(y[keep].max()) if keep.any() else float(y[fin].max()))
    for v in extra:
        if v is not None and math.isfinite(v):
            lo, hi = min(lo, v), max(hi, v)
    if not math.isfinite(lo):
        return 0.0, 1.0
    pad = 0.04 * (hi - lo) if hi > lo else 0.5
    return lo - pad, hi + pad


def mark_spikes(ax, x: np.ndarray, y: np.ndarray, color: str) -> None:
    """A ^ at the top edge over the highest point of ``y`` above the y-range, with its value."""
    top = ax.get_ylim()[1]
    above = np.isfinite(y) & (y > top)
    if not above.any():
        return
    i = int(np.flatnonzero(above)[np.argmax(y[above])])
    ax.plot([x[i]], [top], marker="^", color=color, ms=7, ls="none", clip_on=False, label=SPIKE)
    ax.annotate(
        f"spike {y[i]:.2f}",
        (x[i], top),
        xytext=(4, -10),
        textcoords="offset points",
        fontsize=7,
        color=color,
    )


def diverged_ylim(healthy, diverged, extra=()) -> tuple[float, float]:
    """y-limits of a panel holding ``healthy`` and ``diverged`` curves: :func:`robust_ylim` of
    the healthy ones, widened to a diverged curve's points that lie at most one range height
    above it (a diverged run that ends far above, e.g. at 8e8, would flatten every other
    curve; it is marked at the top edge instead: :func:`mark_diverged_end`). Without healthy
    curves, :func:`robust_ylim` of the diverged ones."""
    if not healthy:
        return robust_ylim(diverged, extra)
    lo, hi = robust_ylim(healthy, extra)
    cap = hi + (hi - lo)
    near = [
        v for y in diverged for v in np.asarray(y, dtype=float) if math.isfinite(v) and v <= cap
    ]
    return robust_ylim(healthy, [*extra, *near])


def mark_diverged_end(ax, x: float, y: float, color: str, text: str | None) -> None:
    """An x where a diverged run's finite curve ends, at the top edge when its last loss is
    above the y-range (the range is set by the other runs: :func:`robust_ylim`), with
    ``text`` (``diverged at step N``) and then the loss it reached."""
    top = ax.get_ylim()[1]
    above = y > top
    ax.plot([x], [min(y, top)], "x", color=color, ms=9, mew=2, clip_on=not above)
    if text is not None:
        ax.annotate(
            text + (f" (last loss {y:.3g}, above the axis)" if above else ""),
            (x, min(y, top)),
            xytext=(6, -10 if above else 4),
            textcoords="offset points",
            fontsize=8,
            color=color,
        )
