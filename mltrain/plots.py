"""Figures of ``mltrain-compare`` (:mod:`mltrain.compare`): matplotlib ``Figure`` objects with
the Agg canvas (no pyplot state, no display needed), returned so that callers and tests can
inspect the axes before saving.

Every axis's x-limits are set from the plotted data, so every plotted x lies inside them;
points with FLOPs <= 0 cannot sit on a log axis and are left off. The evaluation before
training (step 0, 0 FLOPs by construction) is drawn on the linear axes only, silently; any
other such point is left off with a warning naming the run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

# (Series attribute, axis label, log scale)
COLUMNS = (
    ("flops", "training FLOPs (with head)", True),
    ("flops_nonembed", "training FLOPs (non-embedding)", True),
    ("wall_s", "wall-clock (s)", False),
    ("fine_step", "fine steps", False),
)
ROWS = (
    ("val", "validation loss (nats/token)"),
    ("train", "training loss, fine level (running mean)"),
)


def running_mean(y: Sequence[float], window: int) -> np.ndarray:
    """Trailing running mean over ``window`` points (fewer at the start)."""
    y = np.asarray(y, dtype=float)
    if window <= 1 or len(y) == 0:
        return y
    c = np.concatenate([[0.0], np.cumsum(y)])
    i = np.arange(1, len(y) + 1)
    start = np.maximum(0, i - window)
    return (c[i] - c[start]) / (i - start)


def train_window(n_fine: int) -> int:
    """Smoothing window of the training loss: 2 % of the run's fine steps, at least 1."""
    return max(1, n_fine // 50)


def _strict(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted by x, one point per x value (the last one)."""
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    keep = np.append(x[1:] != x[:-1], True)
    return x[keep], y[keep]


def aggregate(curves: Sequence[tuple[np.ndarray, np.ndarray]]):
    """Seeds of one configuration on a common x grid (the union of their x values):
    returns ``(x, mean, min, max)``, each over the seeds whose x range covers that point
    (a seed that stopped early drops out where its curve ends)."""
    curves = [_strict(np.asarray(x, float), np.asarray(y, float)) for x, y in curves]
    if len(curves) == 1:
        x, y = curves[0]
        return x, y, y, y
    grid = np.unique(np.concatenate([x for x, _ in curves]))
    ys = np.stack(
        [
            np.where((grid >= x[0]) & (grid <= x[-1]), np.interp(grid, x, y), np.nan)
            for x, y in curves
        ]
    )
    return grid, np.nanmean(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0)


def _set_xlim(ax, xs: list[np.ndarray], log: bool, invert: bool = False) -> None:
    if not xs:
        return
    allx = np.concatenate(xs)
    lo, hi = float(allx.min()), float(allx.max())
    if lo == hi:
        lo, hi = (lo / 1.5, hi * 1.5) if log else (lo - 0.5, hi + 0.5)
    ax.set_xlim((hi, lo) if invert else (lo, hi))


def plot_losses(configs) -> Figure:
    """Validation (top) and smoothed fine-level training loss (bottom) against FLOPs with
    head and non-embedding (log x), wall-clock seconds and fine steps; one colour per
    configuration, the mean over seeds as a line and the min-max band around it.

    Args:
        configs: :class:`mltrain.compare.Configuration` list, in table order.
    """
    from mltrain.runs import warn

    fig = Figure(figsize=(22, 9), layout="constrained")
    axes = fig.subplots(len(ROWS), len(COLUMNS), squeeze=False)
    xs = [[[] for _ in COLUMNS] for _ in ROWS]
    for ci, c in enumerate(configs):
        color = f"C{ci % 10}"
        for run in c.runs:
            n = sum(
                int(np.sum((s.flops <= 0) | (s.flops_nonembed <= 0)) - np.sum(s.fine_step == 0))
                for s in (run.val, run.train)
            )
            if n:
                warn(
                    f"warning: run {run.name}: {n} point(s) with FLOPs <= 0 left off the log-FLOPs axes"
                )
        for ri, (kind, _) in enumerate(ROWS):
            for col, (attr, _, log) in enumerate(COLUMNS):
                curves = []
                for run in c.runs:
                    s = getattr(run, kind)
                    x, y = getattr(s, attr), s.loss
                    if kind == "train":
                        y = running_mean(y, train_window(len(y)))
                    keep = np.isfinite(x) & np.isfinite(y) & ((x > 0) if log else True)
                    if keep.any():
                        curves.append((x[keep], y[keep]))
                if not curves:
                    continue
                gx, mean, lo, hi = aggregate(curves)
                ax = axes[ri][col]
                marker = "o" if kind == "val" and len(gx) <= 60 else None
                ax.plot(gx, mean, color=color, marker=marker, ms=3, lw=1.5, label=c.label)
                if len(curves) > 1:
                    ax.fill_between(gx, lo, hi, color=color, alpha=0.2, lw=0)
                xs[ri][col].append(gx)
    for ri, (_, ylabel) in enumerate(ROWS):
        for col, (_, xlabel, log) in enumerate(COLUMNS):
            ax = axes[ri][col]
            if log:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
            _set_xlim(ax, xs[ri][col], log)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        axes[0][0].legend(handles, labels, fontsize=8)
    fig.suptitle("loss against compute (mean over seeds, min–max band)")
    return fig


def plot_flops_ratio(summary) -> Figure:
    """FLOPs a configuration needs to reach validation loss L divided by the baseline's,
    against L (x decreasing: training progresses to the right); solid with head, dashed
    non-embedding; a reference line at 1.

    Args:
        summary: a :class:`mltrain.compare.Summary` (its ``ratio_curves`` and rows).
    """
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax = fig.subplots()
    order = {row.label: i for i, row in enumerate(summary.rows)}
    xs = []
    for label, per_total in summary.ratio_curves.items():
        color = f"C{order.get(label, 0) % 10}"
        for total, style in (("head", "-"), ("nonembed", "--")):
            levels, ratios = per_total[total]
            ok = np.isfinite(ratios)
            if ok.any():
                ax.plot(
                    levels[ok],
                    ratios[ok],
                    style,
                    color=color,
                    lw=1.5,
                    label=label if total == "head" else None,
                )
                xs.append(levels[ok])
    if xs:
        _set_xlim(ax, xs, log=False, invert=True)
        ax.plot(list(ax.get_xlim()), [1.0, 1.0], color="k", lw=0.8)
        ax.legend(
            handles=ax.get_legend_handles_labels()[0]
            + [
                Line2D([], [], color="gray", ls="-", label="with head"),
                Line2D([], [], color="gray", ls="--", label="non-embedding"),
            ],
            fontsize=8,
        )
    else:
        ax.text(
            0.5,
            0.5,
            "no ratio curve: needs a baseline and a loss range both reach",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    base = summary.baseline.label if summary.baseline is not None else "none"
    ax.set_title(f"FLOPs to reach a validation loss, relative to {base}")
    ax.set_xlabel("validation loss L (nats/token)")
    ax.set_ylabel("FLOPs(L) / baseline FLOPs(L)")
    ax.grid(True, alpha=0.3)
    return fig
