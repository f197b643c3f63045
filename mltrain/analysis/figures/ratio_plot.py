"""The FLOP-ratio figure of ``mltrain-compare`` (``flops_ratio.png``): the FLOPs each
configuration needs to reach a validation loss L over the baseline's, against L, with a line at
1 ("below 1 = fewer FLOPs"), a y-range that shows 0.5–1.5, and the value at the target loss
written next to its marker. Not drawn without a single-level baseline.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mltrain.analysis.figures.plots import CROSSING, TARGET


def no_ratio_reason(summary, frontier: bool = False) -> str:
    """Why ``flops_ratio.png`` is not written (one line); ``frontier``: a tuned frontier judges
    the configurations (the single-level runs given are its own)."""
    if summary.baseline is None and frontier:
        return (
            "flops_ratio.png not written: the single-level runs are the tuned frontier's "
            "(frontier.png draws the methods against it)"
        )
    if summary.baseline is None:
        return "flops_ratio.png not written: no single-level run to compare against"
    if not summary.ratio_curves:
        return "flops_ratio.png not written: no other configuration to compare with the baseline"
    return "flops_ratio.png not written: no loss range that the baseline and another configuration both reach"


def plot_flops_ratio(summary) -> Figure | None:
    """FLOPs a configuration needs to reach validation loss L divided by the baseline's,
    against L (x decreasing: training progresses to the right); solid with head, dashed
    non-embedding; a reference line at 1, "below 1 = fewer FLOPs"; the y-range shows 0.5–1.5
    at least. None (nothing to draw) without a single-level baseline or a common loss range.

    Args:
        summary: a :class:`mltrain.analysis.reports.summary.Summary` (its ``ratio_curves`` and rows).
    """
    if summary.baseline is None:
        return None
    curves = [
        (label, total, levels[np.isfinite(r)], r[np.isfinite(r)])
        for label, per_total in summary.ratio_curves.items()
        for total, (levels, r) in per_total.items()
    ]
    curves = [cv for cv in curves if len(cv[2])]
    if not curves:
        return None
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax = fig.subplots()
    order = {row.label: i for i, row in enumerate(summary.rows)}
    xs, ys = [], []
    for label, total, levels, ratios in curves:
        color = f"C{order.get(label, 0) % 10}"
        ax.plot(
            levels,
            ratios,
            "-" if total == "head" else "--",
            color=color,
            lw=1.5,
            label=label if total == "head" else None,
        )
        xs.append(levels)
        ys.append(ratios)
    allx = np.concatenate(xs)
    pad = 0.03 * (allx.max() - allx.min()) or 0.05
    ax.set_xlim(allx.max() + pad, allx.min() - pad)  # decreasing loss: progress to the right
    allr = np.concatenate(ys)
    lo, hi = min(0.45, float(allr.min()) * 0.95), max(1.55, min(float(allr.max()) * 1.05, 3.0))
    ax.set_ylim(max(lo, 0.0), hi)
    if allr.max() > hi:
        ax.text(
            0.99,
            0.98,
            f"curves leave the range (up to {allr.max():.2f})",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=8,
        )
    ax.plot(ax.get_xlim(), [1.0, 1.0], color="k", lw=0.8)
    ax.axhspan(ax.get_ylim()[0], 1.0, color="tab:green", alpha=0.06, lw=0)
    ax.text(
        0.01,
        0.02,
        f"below 1 = fewer FLOPs than {summary.baseline.label}",
        transform=ax.transAxes,
        fontsize=9,
        color="darkgreen",
    )
    if summary.target is not None:
        ax.plot([summary.target] * 2, ax.get_ylim(), ":", color="k", lw=1, label=TARGET)
        for row in summary.rows:
            r = row.ratios.get((summary.baseline.label, "head"))
            if row.config is summary.baseline or r is None or not r.is_exact:
                continue
            color = f"C{order[row.label] % 10}"
            ax.plot([summary.target], [r.lo], "o", color=color, ms=6, label=CROSSING)
            ax.annotate(
                f"{r.lo:.2f}× at the target",
                (summary.target, r.lo),
                xytext=(-6, 6),
                textcoords="offset points",
                ha="right",
                fontsize=9,
                color=color,
                fontweight="bold",
            )
    ax.legend(
        handles=[h for h in ax.get_legend_handles_labels()[0] if not h.get_label().startswith("_")]
        + [
            Line2D([], [], color="gray", ls="-", label="with head"),
            Line2D([], [], color="gray", ls="--", label="non-embedding"),
            Line2D([], [], color="k", ls=":", label="target loss"),
        ]
        + [  # diverged configurations have no curve: say so
            Line2D(
                [],
                [],
                color=f"C{order[row.label] % 10}",
                marker="x",
                ls="none",
                label=f"{row.label}: {row.config.diverged_text()}, no curve",
            )
            for row in summary.rows
            if not row.config.healthy
        ],
        fontsize=8,
    )
    seeds = sorted({len(r.config.healthy) for r in summary.rows})
    seed_text = "one seed" if seeds == [1] else "seed-mean curves"
    ax.set_title(
        f"FLOPs to reach a validation loss, relative to {summary.baseline.label} ({seed_text})"
    )
    ax.set_xlabel("validation loss L (nats/token); training progresses to the right")
    ax.set_ylabel("FLOPs(L) / baseline FLOPs(L)")
    ax.grid(True, alpha=0.3)
    return fig
