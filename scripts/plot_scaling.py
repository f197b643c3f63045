"""r against budget: how a scheme's saving changes with compute (docs/results.md).

Reads the per-run ``frontier.csv`` that ``mltrain-compare --frontier`` writes and plots, for each
scheme, r = C / C*(L) (with head and non-embedding) against the FLOPs the runs spent, seeds as
points and their mean as a line. A scheme is the run directory name without its seed suffix
(``_s<n>``) and budget tag (``_Q``, ``_H``, ``_B``, ``_D``; scripts/results.sh names runs so).
Bounds (r given as ``<`` or ``>``) are drawn as open triangles at the bound.

    python scripts/plot_scaling.py docs/results/second_edition/adamw/frontier.csv \
        --schemes grow_rec442 recipe_adamw --out docs/results/second_edition/r_vs_budget.png
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from pathlib import Path

TAG = re.compile(r"(_[QHBD])?(_s\d+)$")


def scheme_of(run: str) -> str:
    """``grow_rec442_Q_s1`` -> ``grow_rec442``; ``recipe_adamw_s0`` -> ``recipe_adamw``."""
    return TAG.sub("", run)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", type=Path, nargs="+", help="frontier.csv files of mltrain-compare")
    ap.add_argument("--schemes", nargs="*", help="scheme names to plot (default: all)")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for f in args.csv for r in csv.DictReader(f.open())]
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        s = scheme_of(r["run"])
        if not args.schemes or s in args.schemes:
            by[s].append(r)
    if not by:
        raise SystemExit(f"plot_scaling: no runs of {args.schemes} in {args.csv}")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True, layout="constrained")
    for ax, total in zip(axes, ("head", "nonembed")):
        for i, (scheme, rs) in enumerate(sorted(by.items())):
            color = f"C{i}"
            pts = defaultdict(list)
            for r in rs:
                x, y, kind = float(r["flops"]), float(r[f"r_{total}"]), r[f"r_{total}_kind"]
                marker = "o" if kind == "=" else ("v" if kind == "<" else "^")
                ax.scatter(
                    x,
                    y,
                    color=color,
                    marker=marker,
                    facecolors="none" if kind != "=" else color,
                    s=28,
                )
                pts[round(np.log2(x))].append((x, y))
            xs = [np.mean([p[0] for p in v]) for _, v in sorted(pts.items())]
            ys = [np.mean([p[1] for p in v]) for _, v in sorted(pts.items())]
            ax.plot(xs, ys, color=color, lw=1.5, label=f"{scheme} ({len(rs)} runs)")
        ax.axhline(1.0, color="0.4", lw=1, ls="--")
        ax.axhline(0.5, color="0.7", lw=1, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("budget: FLOPs spent (with head)")
        ax.set_title(f"r = C / C*(L), FLOPs {'with head' if total == 'head' else 'non-embedding'}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("r (below 1: saves compute; open triangles: bounds)")
    axes[0].legend(fontsize=8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"plot_scaling: wrote {args.out}")


if __name__ == "__main__":
    main()
