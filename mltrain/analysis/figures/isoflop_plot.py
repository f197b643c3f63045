"""The figures of the judge over model sizes (:mod:`mltrain.analysis.judging.envelope`):

- ``isoflop.png``: the IsoFLOP view (Hoffmann et al. 2022, approach 2): final validation loss
  L*_N (nats/token) against model size (parameters, log axis; total and non-embedding in two
  panels), one curve per budget, its minimum (the best size) marked with a star;
- ``envelope.png``: every size's tuned frontier L*_N(C) (thin), the envelope L*_env(C) in bold,
  and each method's final point (mean over seeds, min–max bars) labelled with r_env, one panel
  per FLOP total.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from mltrain.analysis.figures.plot_axes import FLOP_AXIS_TITLES, set_flop_axis
from mltrain.analysis.judging.curves import fmt_flops
from mltrain.analysis.judging.runs import TOTALS

PARAMS = {"total": "parameters (total)", "nonembed": "parameters (non-embedding)"}


def plot_isoflop(ej) -> Figure:
    """One row per envelope, a column per parameter count (total, non-embedding)."""
    envs = ej.envelopes
    fig = Figure(figsize=(13, 5 * len(envs) + 0.5), layout="constrained")
    axes = fig.subplots(len(envs), 2, squeeze=False)
    for ei, env in enumerate(envs):
        by_label = {s.label: s for s in env.sizes}
        cmap = colormaps["plasma"]
        n = len(env.choices)
        for pi, which in enumerate(PARAMS):
            ax = axes[ei][pi]
            for k, c in enumerate(env.choices):
                color = cmap(0.85 * k / max(1, n - 1))
                pts = [
                    (by_label[lab].params.get(which), loss)
                    for lab, loss in c.losses.items()
                    if by_label[lab].params is not None
                ]
                if not pts:
                    continue
                pts.sort()
                x, y = zip(*pts)
                ax.plot(x, y, "o-", color=color, label=f"{fmt_flops(c.budget)} FLOPs")
                i = int(np.argmin(y))
                ax.plot([x[i]], [y[i]], "*", ms=18, color=color, mec="k", zorder=5)
            ax.set_xscale("log")
            ax.set_xlabel(PARAMS[which])
            ax.set_ylabel("final validation loss L*_N (nats/token)")
            ax.set_title(f"{env.label}: IsoFLOP curves, ★ best size per budget", fontsize=11)
            ax.grid(True, alpha=0.3)
            ax.legend(title="budget (with head)", fontsize=9)
    return fig


def plot_envelope(ej) -> Figure:
    """One row per envelope, one column per FLOP total."""
    envs = ej.envelopes
    fig = Figure(figsize=(15, 5.8 * len(envs) + 0.5), layout="constrained")
    axes = fig.subplots(len(envs), len(TOTALS), squeeze=False)
    labels = list(dict.fromkeys(r.config.label for r in ej.results))
    colors = {lab: f"C{i % 10}" for i, lab in enumerate(labels)}
    for ei, env in enumerate(envs):
        cmap = colormaps["viridis"]
        for ti, total in enumerate(TOTALS):
            ax = axes[ei][ti]
            xs = []
            for k, s in enumerate(env.sizes):
                f = s.frontier
                c = f.flops(total)
                color = cmap(0.85 * k / max(1, len(env.sizes) - 1))
                ax.plot(c, f.envelope, "o-", lw=1, ms=5, color=color, alpha=0.8, label=s.label)
                xs += list(c)
            ax.plot(  # with markers: an envelope of one point is a point, not an invisible line
                env.flops(total),
                env.losses(total),
                "-",
                marker="D",
                ms=7,
                color="k",
                lw=3.5,
                alpha=0.8,
                label="envelope L*_env(C)",
                zorder=4,
            )
            for r in ej.results:
                if r.envelope is not env or r.env.loss() is None:
                    continue
                res, color = r.env, colors[r.config.label]
                loss = res.loss()
                flops = [s.flops[total] for s in res.healthy]
                cm = res.flops(total)
                ax.errorbar(
                    [cm],
                    [loss[0]],
                    yerr=[[loss[0] - loss[1]], [loss[2] - loss[0]]],
                    xerr=[[cm - min(flops)], [max(flops) - cm]],
                    fmt="*",
                    ms=16,
                    color=color,
                    mec="k",
                    capsize=3,
                    zorder=6,
                    label=r.config.label,
                )
                ax.annotate(
                    res.r[total][0].named("r_env"),
                    (cm, loss[0]),
                    xytext=(10, -14),
                    textcoords="offset points",
                    fontsize=10,
                    color=color,
                    fontweight="bold",
                    zorder=7,
                )
                xs.append(cm)
            xs = [x for x in xs if x > 0 and math.isfinite(x)]
            set_flop_axis(ax, min(xs) / 1.5, max(xs) * 1.5)
            ax.set_xlabel(FLOP_AXIS_TITLES[total])
            ax.set_ylabel("final validation loss (nats/token)")
            ax.set_title(f"{env.label}, {FLOP_AXIS_TITLES[total]}", fontsize=11)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
    return fig
