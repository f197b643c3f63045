"""Figures of ``mltrain-compare`` (:mod:`mltrain.analysis.compare`): matplotlib ``Figure`` objects with
the Agg canvas (no pyplot state, no display needed), returned so that callers and tests can
inspect the axes before saving.

What a reader should see without a manual: the target loss as a horizontal line and
a marker where each curve first reaches it, with its FLOP ratio to the baseline written next
to it; FLOP axes with labelled ticks (``1.2e13``) on every panel; one shared legend with the
configurations' names; the coarse phases of a multilevel run as shaded spans (the training
curve is broken there, not drawn straight across); y-limits that a single spike does not set
(the spike is marked at the top edge); diverged runs drawn up to their divergence with an ×,
widening the y-range only to points near the other runs' range (a loss far above it is marked
at the top edge with its value).

Every axis's x-limits are set from the plotted data, so every plotted x lies inside them;
points with FLOPs <= 0 cannot sit on a log axis and are left off. The evaluation before
training (step 0, 0 FLOPs by construction) is drawn on the linear axes only, silently; any
other such point is left off with a warning naming the run. The axis, y-range and marker
helpers are in :mod:`mltrain.analysis.figures.plot_axes`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from mltrain.analysis.figures.plot_axes import (
    diverged_ylim,
    mark_diverged_end,
    mark_spikes,
    set_flop_axis,
)
from mltrain.analysis.judging.curves import flops_to_target

# (Series attribute, axis label, log scale)
COLUMNS = (
    ("flops", "training FLOPs (with head)", True),
    ("flops_nonembed", "training FLOPs (non-embedding)", True),
    ("wall_s", "wall-clock (s): depends on machine load", False),
    ("iteration", "fine steps (coarse-to-fine: the steps of every stage)", False),
)
ROWS = (
    ("val", "validation loss (nats/token)"),
    ("train", "training loss, fine level (running mean)"),
)
TOTAL_OF = {"flops": "head", "flops_nonembed": "nonembed"}
CROSSING = "_crossing"  # label of the markers where a curve first reaches the target
TARGET = "_target"  # label of the target line


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


def seed_band(curves: Sequence[tuple[np.ndarray, np.ndarray]]):
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
    if log and not invert:  # a little room so that points at the ends stay visible
        pad = max((hi / lo) ** 0.03, 1.03)
        set_flop_axis(ax, lo / pad, hi * pad)
        return
    ax.set_xlim((hi, lo) if invert else (lo, hi))


def break_at_spans(x: np.ndarray, y: np.ndarray, spans: np.ndarray):
    """The curve with a gap (NaN) wherever consecutive points straddle a coarse phase
    (``spans``: rows ``[start, end]``), and those straddling segments as ``[(x0, x1, y0, y1)]``."""
    if not len(spans) or len(x) < 2:
        return x, y, []
    xs, ys, cross = [x[0]], [y[0]], []
    for i in range(1, len(x)):
        a, b = x[i - 1], x[i]
        if np.any((spans[:, 0] >= a) & (spans[:, 1] <= b) & (spans[:, 1] > spans[:, 0])):
            xs.append((a + b) / 2)
            ys.append(np.nan)
            cross.append((a, b, y[i - 1], y[i]))
        xs.append(b)
        ys.append(y[i])
    return np.asarray(xs), np.asarray(ys), cross


def _isolated(y: np.ndarray) -> np.ndarray:
    """Finite points with no finite neighbour (a line through them would not show)."""
    fin = np.isfinite(y)
    left = np.concatenate([[False], fin[:-1]])
    right = np.concatenate([fin[1:], [False]])
    return fin & ~left & ~right


def smooth_train(run) -> np.ndarray:
    """A run's fine-level training loss as a trailing running mean over :func:`train_window`
    of its fine steps, restarted after every coarse phase (no average mixes the losses before
    and after one)."""
    y = np.asarray(run.train.loss, dtype=float)
    spans = run.spans.get("flops", np.empty((0, 2))) if run.spans else np.empty((0, 2))
    x = np.asarray(run.train.flops, dtype=float)
    window = train_window(len(y))
    starts = [0]
    for i in range(1, len(y)):
        a, b = x[i - 1], x[i]
        if np.any((spans[:, 0] >= a) & (spans[:, 1] <= b) & (spans[:, 1] > spans[:, 0])):
            starts.append(i)
    out = y.copy()
    for a, b in zip(starts, starts[1:] + [len(y)]):
        out[a:b] = running_mean(y[a:b], window)
    return out


# --------------------------------------------------------------------------- loss curves
def _title(configs) -> str:
    seeds = sorted({len(c.healthy) or len(c.runs) for c in configs})
    if seeds == [1]:
        return "loss against compute: one seed per configuration"
    if len(seeds) == 1:
        return f"loss against compute: mean over {seeds[0]} seeds, min–max band"
    return (
        f"loss against compute: {seeds[0]}–{seeds[-1]} seeds per configuration (mean, min–max band)"
    )


def plot_losses(configs, summary=None) -> Figure:
    """Validation (top) and smoothed fine-level training loss (bottom) against FLOPs with
    head and non-embedding (log x), wall-clock seconds and fine steps; one colour per
    configuration, the mean over seeds as a line and the min-max band around it.

    Args:
        configs: :class:`mltrain.analysis.judging.grouping.Configuration` list, in table order.
        summary: the :class:`mltrain.analysis.reports.summary.Summary` of ``configs``; with it, the target line,
            a marker where each curve first reaches it and the FLOP ratio to the baseline.
    """
    from mltrain.analysis.judging.runs import warn

    fig = Figure(figsize=(22, 10), layout="constrained")
    axes = fig.subplots(len(ROWS), len(COLUMNS), squeeze=False)
    xs = [[[] for _ in COLUMNS] for _ in ROWS]
    ys = [[[] for _ in COLUMNS] for _ in ROWS]
    spike_checks = []  # (ax, x, y, color) to mark once the limits are set
    diverged_ends = []  # (ax, x, y, color, text): the x of each diverged curve, likewise
    ys_diverged = [[[] for _ in COLUMNS] for _ in ROWS]
    handles: list = []
    target = summary.target if summary is not None else None
    any_spans = any_diverged = False
    for ci, c in enumerate(configs):
        color = f"C{ci % 10}"
        for run in c.runs:
            # the evaluation before training (fine step 0, 0 FLOPs) is expected; any other is odd
            n = sum(
                int(np.sum(((s.flops <= 0) | (s.flops_nonembed <= 0)) & (s.fine_step != 0)))
                for s in (run.val, run.train)
            )
            if n:
                warn(
                    f"warning: run {run.name}: {n} point(s) with FLOPs <= 0 left off the log-FLOPs axes"
                )
        label = c.label if c.healthy else f"{c.label} ({c.diverged_text()})"
        if c.healthy and c.diverged:
            label += f" ({c.diverged_text()})"
        handles.append(Line2D([], [], color=color, lw=2, label=label))
        spans_run = (c.healthy or c.runs)[0]
        for ri, (kind, _) in enumerate(ROWS):
            for col, (attr, _, log) in enumerate(COLUMNS):
                ax = axes[ri][col]
                spans = (
                    spans_run.spans.get(attr, np.empty((0, 2)))
                    if spans_run.spans
                    else np.empty((0, 2))
                )
                if len(spans):
                    any_spans = True
                    for a, b in spans:
                        if b > a and (a > 0 or not log):
                            ax.axvspan(a, b, color=color, alpha=0.12, lw=0)
                groups = [(c.healthy, "-", 1.6)] + [([r], "--", 0.9) for r in c.diverged]
                for runs, style, lw in groups:
                    curves = []
                    for run in runs:
                        s = getattr(run, kind)
                        x, y = getattr(s, attr), s.loss
                        if kind == "train":
                            y = smooth_train(run)
                        keep = np.isfinite(x) & np.isfinite(y) & ((x > 0) if log else True)
                        if keep.any():
                            curves.append((x[keep], y[keep]))
                    if not curves:
                        continue
                    gx, mean, lo, hi = seed_band(curves)
                    marker = "o" if kind == "val" and len(gx) <= 60 else None
                    px, py, cross = break_at_spans(gx, mean, spans)
                    ax.plot(px, py, style, color=color, marker=marker, ms=3, lw=lw)
                    alone = _isolated(py)
                    if alone.any():  # fine steps between coarse phases: points, not lines
                        ax.plot(px[alone], py[alone], ".", color=color, ms=5)
                    for x0, x1, y0, y1 in cross if kind == "val" else []:
                        ax.plot([x0, x1], [y0, y1], ":", color=color, lw=1)
                    if len(curves) > 1:
                        bx, blo, _ = break_at_spans(gx, lo, spans)
                        _, bhi, _ = break_at_spans(gx, hi, spans)
                        ax.fill_between(bx, blo, bhi, color=color, alpha=0.2, lw=0)
                        ys[ri][col].append(hi)
                        spike_checks.append((ax, gx, hi, color))
                    xs[ri][col].append(gx)
                    if style == "--":  # a diverged run: an x where its finite curve ends
                        any_diverged = True
                        text = runs[0].diverged_text if kind == "val" else None
                        diverged_ends.append((ax, gx[-1], mean[-1], color, text))
                        ys_diverged[ri][col].append(mean)  # see diverged_ylim
                        continue
                    ys[ri][col].append(mean)
                    spike_checks.append((ax, gx, mean, color))
                    if kind == "val" and style == "-" and target is not None:
                        x = _crossing(ax, c, attr, gx, mean, summary, color, ci)
                        if x is not None:  # keep the marker inside the x-range
                            xs[ri][col].append(np.asarray([x]))
    for ri, (_, ylabel) in enumerate(ROWS):
        for col, (_, xlabel, log) in enumerate(COLUMNS):
            ax = axes[ri][col]
            _set_xlim(ax, xs[ri][col], log)
            extra = [target] if ri == 0 else []
            if ri == 0 and target is not None:
                ax.plot(ax.get_xlim(), [target, target], "--", color="k", lw=1, label=TARGET)
            ax.set_ylim(*diverged_ylim(ys[ri][col], ys_diverged[ri][col], extra))
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
    for ax, x, y, color in spike_checks:
        mark_spikes(ax, x, y, color)
    for ax, x, y, color, text in diverged_ends:
        mark_diverged_end(ax, x, y, color, text)
    if target is not None:
        handles.append(
            Line2D(
                [],
                [],
                color="k",
                ls="--",
                lw=1,
                label=f"target {target:.3f}: {summary.target_source.replace('`', '')}",
            )
        )
        handles.append(
            Line2D(
                [],
                [],
                color="gray",
                marker="o",
                mfc="white",
                ms=8,
                ls="none",
                label="first reaches the target (FLOPs ratio to the baseline)",
            )
        )
    if any_spans:
        handles.append(Patch(color="gray", alpha=0.25, label="coarse phases (multilevel)"))
    if any_diverged:
        handles.append(
            Line2D(
                [],
                [],
                color="gray",
                ls="--",
                marker="x",
                label="diverged run (up to its divergence)",
            )
        )
    fig.legend(
        handles=handles,
        loc="outside upper center",
        ncols=min(3, len(handles)),
        fontsize=10,
        frameon=False,
        title=_title(configs),
        title_fontsize=13,
    )
    return fig


def _crossing(ax, c, attr: str, gx, mean, summary, color: str, index: int = 0) -> float | None:
    """The marker where configuration ``c``'s mean validation curve first reaches the target,
    with its FLOP ratio to the baseline next to it on the FLOP axes; returns its x (None when
    the curve never reaches the target)."""
    row = summary.row(c)
    base = summary.baseline
    if attr in TOTAL_OF:
        x = row.to_target[TOTAL_OF[attr]][0]
    else:
        x = flops_to_target(gx, mean, summary.target)
    if x is None or (attr in TOTAL_OF and x <= 0):
        return None
    ax.plot(
        [x],
        [summary.target],
        marker="o",
        ms=8,
        mfc="white",
        mec=color,
        mew=2,
        ls="none",
        label=CROSSING,
        zorder=5,
    )
    if attr not in TOTAL_OF or base is None:
        return x
    if c is base:
        text = "baseline"
    else:
        r = row.ratios.get((base.label, TOTAL_OF[attr]))
        if r is None:
            return x
        text = r.fmt(".2f") + "×"
    ax.annotate(
        text,
        (x, summary.target),
        xytext=(4, 7) if index % 2 == 0 else (4, -16),  # neighbours' labels on both sides
        textcoords="offset points",
        fontsize=9,
        color=color,
        fontweight="bold",
        bbox=dict(fc="white", ec="none", alpha=0.75, pad=0.5),
        zorder=6,
    )
    return x
