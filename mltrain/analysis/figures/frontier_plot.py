"""The figure of the judge (``frontier.png``): the tuned single-level frontier L*(C) and where
each method sits relative to it, on one log-FLOPs axis per FLOP total (DESIGN.md section 8).

Per panel: every tuned run as a faint point coloured by its learning rate (diverged ones as an ×
at the top edge, at their budget; one far above the others as a ^ there, at its FLOPs, and a
learning rate none of whose runs is on the panel left out of its legend); the best point of
each budget and the monotone envelope through them (a straight line on the log axis is the
log-linear interpolation the judge uses); each method's seed-mean validation curve and its
final point (mean over seeds, min–max bars) labelled with r.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mltrain.analysis.figures.plot_axes import FLOP_AXIS_TITLES, robust_ylim, set_flop_axis
from mltrain.analysis.figures.plots import seed_band
from mltrain.analysis.judging.budgets import frontier_budget, lr_of
from mltrain.analysis.judging.runs import TOTALS

MAX_DISCRETE = 8  # up to this many learning rates: one colour each and a legend


def lr_colors(lrs) -> tuple[dict, LogNorm | None]:
    """A colour per learning rate: distinct viridis colours in order for a few, else a log
    colour scale (returned as its norm, for a colour bar)."""
    values = sorted(set(lrs))
    cmap = colormaps["viridis"]
    if len(values) <= MAX_DISCRETE:
        pos = np.linspace(0.0, 0.85, len(values)) if len(values) > 1 else [0.4]
        return {v: cmap(p) for v, p in zip(values, pos)}, None
    norm = LogNorm(values[0], values[-1])
    return {v: cmap(0.85 * norm(v)) for v in values}, norm


def panel_ylim(runs: list[float], core: list[float]) -> tuple[float, float]:
    """y-limits of a frontier panel (nats/token): every ``core`` value (the frontier's best
    points, the methods' final losses) and every tuned run's final loss in ``runs`` at most
    one core span (``max(core) - min(core)``, at least 10 % of its lowest) above the core's
    highest, with a 4 % margin; a run beyond is marked on the top edge. Independent of the
    runs' order (a far run first in the list stretched the panel before)."""
    core = [v for v in core if np.isfinite(v)]
    if not core:
        return robust_ylim([runs])
    lo, hi = min(core), max(core)
    reach = hi + max(hi - lo, 0.1 * abs(lo))
    vals = core + [v for v in runs if np.isfinite(v) and v <= reach]
    pad = 0.04 * (max(vals) - min(vals)) or 0.5
    return min(vals) - pad, max(vals) + pad


def plot_frontier(judgement, colors: dict | None = None) -> Figure:
    """One row per frontier, one column per FLOP total.

    Args:
        judgement: a :class:`mltrain.analysis.judging.frontier.Judgement`.
        colors: configuration label -> matplotlib colour (default C0, C1, ... in order).
    """
    frontiers = judgement.frontiers
    fig = Figure(figsize=(15, 5.8 * len(frontiers) + 1.0), layout="constrained")
    axes = fig.subplots(len(frontiers), len(TOTALS), squeeze=False)
    labels = list(dict.fromkeys(res.config.label for res in judgement.results))
    colors = colors or {lab: f"C{i % 10}" for i, lab in enumerate(labels)}
    any_above = False
    for fi, f in enumerate(frontiers):
        lr_color, norm = lr_colors([lr_of(r) for r in f.runs])
        results = [res for res in judgement.results if res.judge is f]
        ok = [r for r in f.runs if not r.diverged]
        bad = [r for r in f.runs if r.diverged]
        finals = [r.final_val_loss for r in ok]
        ends = [m for res in results for m in (res.loss() or ())]
        ylo, yhi = panel_ylim(finals, list(f.losses) + ends)
        for ti, total in enumerate(TOTALS):
            ax = axes[fi][ti]
            ax.set_ylim(ylo, yhi)
            for lr in sorted(lr_color):
                runs = [r for r in ok if lr_of(r) == lr]
                inside = [r for r in runs if r.final_val_loss <= yhi]
                if inside:  # a legend entry only for what the panel shows
                    ax.scatter(
                        [r.total(total) for r in inside],
                        [r.final_val_loss for r in inside],
                        color=lr_color[lr],
                        s=24,
                        alpha=0.5,
                        lw=0,
                        zorder=2,
                        label=f"lr {lr:g}",
                    )
                above = [r for r in runs if r.final_val_loss > yhi]
                if above:  # far above the others (panel_ylim): a ^ at the top edge
                    any_above = True
                    ax.scatter(
                        [r.total(total) for r in above],
                        [yhi] * len(above),
                        color=lr_color[lr],
                        marker="^",
                        s=40,
                        clip_on=False,
                        zorder=2,
                        label=None if inside else f"lr {lr:g} (above the range)",
                    )
            share = f.budgets[0].flops(total) / f.budgets[0].flops("head")
            for r in bad:  # at its budget (it stopped early), on the top edge
                ax.scatter(
                    [frontier_budget(r) * share],
                    [yhi],
                    color=lr_color[lr_of(r)],
                    marker="x",
                    s=50,
                    lw=2,
                    clip_on=False,
                    zorder=2,
                )
            cs = f.flops(total)
            ax.plot(cs, f.envelope, "-", color="k", lw=2, zorder=3)
            ax.scatter(
                cs,
                f.losses,
                color=[lr_color[b.best_lr] for b in f.budgets],
                s=80,
                edgecolors="k",
                linewidths=1.4,
                zorder=4,
            )
            xs = list(cs) + [r.total(total) for r in ok] + [frontier_budget(r) * share for r in bad]
            for res in results:
                color = colors.get(res.config.label, "C0")
                curves = [(r.val.x(total), r.val.loss) for r in res.config.healthy]
                curves = [(x[x > 0], y[x > 0]) for x, y in curves if (x > 0).any()]
                if curves:
                    gx, mean, _, _ = seed_band(curves)
                    ax.plot(gx, mean, "-", color=color, lw=1.2, alpha=0.8, zorder=3)
                loss = res.loss()
                if loss is None:
                    continue
                flops = [s.flops[total] for s in res.healthy]
                c_mean = res.flops(total)
                ax.errorbar(
                    [c_mean],
                    [loss[0]],
                    yerr=[[loss[0] - loss[1]], [loss[2] - loss[0]]],
                    xerr=[[c_mean - min(flops)], [max(flops) - c_mean]],
                    fmt="*",
                    ms=17,
                    color=color,
                    mec="k",
                    capsize=3,
                    zorder=6,
                )
                ax.annotate(
                    res.r[total][0].named("r"),
                    (c_mean, loss[0]),
                    xytext=(10, -14),
                    textcoords="offset points",
                    fontsize=10,
                    color=color,
                    fontweight="bold",
                    bbox=dict(fc="white", ec="none", alpha=0.75, pad=0.5),
                    zorder=7,
                )
                xs.append(c_mean)
            lo, hi = min(x for x in xs if x > 0), max(xs)
            set_flop_axis(ax, lo / 1.5, hi * 1.5)
            ax.set_xlabel(FLOP_AXIS_TITLES[total])
            ax.set_ylabel("final validation loss (nats/token)")
            n = len(f.budgets)
            ax.set_title(
                f"{f.label}: {n} budget{'s' if n > 1 else ''}, {FLOP_AXIS_TITLES[total]}",
                fontsize=11,
            )
            ax.grid(True, alpha=0.3)
        if norm is None:
            axes[fi][0].legend(title="learning rate", fontsize=9, loc="upper right")
        else:
            from matplotlib.cm import ScalarMappable

            fig.colorbar(
                ScalarMappable(norm=norm, cmap="viridis"),
                ax=list(axes[fi]),
                label=f"learning rate ({f.label})",
                pad=0.01,
            )
    handles = [
        Line2D(
            [],
            [],
            color="k",
            lw=2,
            marker="o",
            mfc="w",
            mec="k",
            ms=8,
            label="tuned frontier L*(C): best learning rate per budget, made monotone",
        ),
        Line2D(
            [],
            [],
            color="gray",
            marker="o",
            alpha=0.5,
            ls="none",
            label="every tuned run (colour: learning rate)",
        ),
    ]
    if any_above:
        handles.append(
            Line2D(
                [],
                [],
                color="gray",
                marker="^",
                ls="none",
                label="tuned run above the y-range (top edge, at its FLOPs)",
            )
        )
    if any(r.diverged for f in frontiers for r in f.runs):
        handles.append(
            Line2D(
                [],
                [],
                color="gray",
                marker="x",
                mew=2,
                ls="none",
                label="diverged tuned run (top edge, at its budget)",
            )
        )
    for res in judgement.results:
        if res.judge is not frontiers[0]:
            continue
        c = res.config
        seeds = len(res.healthy)
        text = c.label + (
            f" ({c.diverged_text()})"
            if not seeds
            else " (one seed)"
            if seeds == 1
            else f" ({seeds} seeds, min–max)"
        )
        handles.append(
            Line2D([], [], color=colors.get(c.label, "C0"), marker="*", ms=12, lw=1.2, label=text)
        )
    fig.legend(
        handles=handles,
        loc="outside upper center",
        ncols=2,
        fontsize=10,
        frameon=False,
        title="Each method against the tuned single-level frontier: r = its FLOPs / the FLOPs "
        "the frontier needs for its loss (r < 1 saves compute)",
        title_fontsize=12,
    )
    return fig
