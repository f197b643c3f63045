"""The text outputs of ``mltrain-compare``: ``summary.md`` (headline, the wide table, the
tuned-frontier judge, notes), ``summary.csv`` (unformatted numbers) and the terminal's compact
version. Numbers come from :mod:`mltrain.analysis.reports.summary` (a ``Summary``) and :mod:`mltrain.analysis.judging.frontier`
(a ``Judgement``); FLOPs are counts, losses nats/token. The tables themselves are built in
:mod:`mltrain.analysis.reports.tables`.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from mltrain.analysis.judging.curves import Bounded, fmt_flops
from mltrain.analysis.judging.runs import TOTALS
from mltrain.analysis.reports.tables import (
    agg_cell,
    compact_table,
    folded_text,
    folded_warnings,
    judge_markdown,
    wide_table,
)


# --------------------------------------------------------------------------- documents
def markdown(
    summary, judgement, headline: list[str], notes: list[str], hints: list[str], sizes=None
) -> str:
    """``summary.md``: the headline first, then the table and everything else (``sizes``: the
    envelope judgement, which orders the judge's warnings: :func:`tables.judge_markdown`)."""
    lines = ["# mltrain-compare", "", *(f"- {h}" for h in headline), ""]
    if summary is not None:
        n_runs = sum(len(r.config.runs) for r in summary.rows)
        lines.append(f"- runs: {n_runs} in {len(summary.rows)} configurations")
        tgt = "none" if summary.target is None else f"{summary.target:.4f} nats/token"
        lines.append(f"- target validation loss: {tgt} ({summary.target_source})")
        lines.append(
            f"- baseline: `{summary.baseline.label}`" if summary.baseline else "- baseline: none"
        )
        lines += [f"- caution: {r}" for r in summary.remarks]
        lines += [f"- note: {n}" for n in notes]
        lines.append(
            "- FLOPs-to-target: on the seed-mean curve, linear interpolation between evaluations; "
            "ratio < 1: fewer FLOPs than that single-level configuration; `< x`: that "
            "configuration never reached the target (it would need more than all its FLOPs); "
            "`> x`: this one never reached it"
        )
        lines.append(
            f"- val loss at {fmt_flops(summary.budget)} FLOPs (with head): the largest FLOPs "
            "every run reached"
        )
        lines += ["", *wide_table(summary)]
    if judgement is not None:
        lines += ["", *judge_markdown(judgement, sizes)]
    if hints:
        lines += [
            "",
            "## Same-FLOPs single-level baselines",
            "",
            "FLOPs (with head) of each multilevel configuration, and the command for a "
            "single-level run with the same FLOPs (its own learning-rate schedule):",
            "",
            *hints,
        ]
    return "\n".join(lines) + "\n"


def terminal(
    summary, judgement, headline: list[str], notes: list[str], hints: list[str] = (), sizes=None
) -> str:
    """What the terminal shows: the headline, the compact table, the judge's table, warnings
    (with ``sizes``, those about sizes that are not the best at their budget counted in one
    line: they are in ``summary.md``), and the command of a same-FLOPs single-level run for
    each multilevel configuration that has none beside it (``hints``)."""
    lines = [*headline, ""]
    if summary is not None:
        if summary.target is not None:
            lines.append(
                f"target: {summary.target:.4f} nats/token ({summary.target_source.replace('`', '')})"
            )
        lines += compact_table(summary) + [""]
    if judgement is not None:
        for f in judgement.frontiers:
            lines.append(
                f"{f.label}: budget (FLOPs with head) -> best schedule and lr, mean final val loss"
            )
            lines += [
                f"  {fmt_flops(b.budget)} -> {b.schedule}, lr {b.best_lr:g}, {b.loss:.4f} "
                f"({b.seeds} seed" + ("s)" if b.seeds > 1 else ")")
                for b in f.budgets
            ]
        lines.append("")
    if judgement is not None and judgement.results:
        head = ["configuration", "frontier", "r (with head)", "r (non-embed)", "gap (with head)"]
        rows = []
        for res in judgement.results:
            if not res.healthy:
                rows.append([res.config.label, res.judge.label, res.config.diverged_text(), "", ""])
                continue
            rows.append(
                [
                    res.config.label,
                    res.judge.label,
                    agg_cell(res, "r", "head", ".3f"),
                    agg_cell(res, "r", "nonembed", ".3f"),
                    agg_cell(res, "gap", "head", "+.3f"),
                ]
            )
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines += [fmt.format(*head).rstrip(), *(fmt.format(*r).rstrip() for r in rows), ""]
    if judgement is not None:
        warns, aside = folded_warnings(judgement, sizes)
        lines += [f"warning: {w}" for w in warns]
        if aside:
            lines.append(f"warning: {folded_text(len(aside))}: in summary.md")
    lines += [f"note: {n}" for n in notes]
    if hints and judgement is None and summary is not None:  # hints: those still missing
        lines += ["", "no single-level run with the same FLOPs yet; to make one:", *hints]
    return "\n".join(lines).rstrip("\n")


def write_csv(summary, path: Path) -> None:
    """One row per configuration; empty cells for values that do not exist; ratios that are
    bounds have ``<`` or ``>`` in the ``..._kind`` column (``=``: exact)."""

    def num(v):
        return (
            "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else repr(float(v))
        )

    def est(e: Bounded | None):
        return ("", "") if e is None else (num(e.value), e.kind)

    head = ["configuration", "role", "seeds", "single_level", "diverged"]
    head += ["final_val_loss_mean", "final_val_loss_min", "final_val_loss_max"]
    head += ["flops", "flops_nonembed", "wall_s", "target"]
    for t in TOTALS:
        head += [f"flops_to_target_{t}", f"seeds_reached_{t}"]
    for s in summary.singles:
        for t in TOTALS:
            head += [f"ratio_vs[{s.label}]_{t}", f"ratio_vs[{s.label}]_{t}_kind"]
    head += ["budget_flops", "val_loss_at_budget_mean", "val_loss_at_budget_min"]
    head += ["val_loss_at_budget_max", "notes"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(head)
        for row in summary.rows:
            c = row.config
            healthy = c.healthy
            cells = [
                row.label,
                c.role,
                len(c.runs),
                c.single_level,
                c.diverged_text(),
                *(map(num, row.final_loss) if row.final_loss else ["", "", ""]),
                num(c.mean_total("head")),
                num(c.mean_total("nonembed")),
                num(np.mean([r.wall_s for r in healthy])) if healthy else "",
                num(summary.target),
            ]
            for t in TOTALS:
                cells += [num(row.to_target[t][0]), row.to_target[t][1]]
            for s in summary.singles:
                for t in TOTALS:
                    cells += est(row.ratios.get((s.label, t)))
            cells += [
                num(summary.budget),
                *(map(num, row.at_budget) if row.at_budget else ["", "", ""]),
                "; ".join(row.notes),
            ]
            w.writerow(cells)


def write_judge_csv(j, path: Path) -> None:
    """One row per judged run (every seed of every configuration, against every frontier):
    FLOPs, final loss, r and the gap under both totals; a bound has ``<`` or ``>`` in the
    ``..._kind`` column, a diverged run empty cells and its step in ``diverged``."""

    def num(v):
        return "" if v is None or not math.isfinite(v) else repr(float(v))

    head = ["configuration", "frontier", "seed", "run", "diverged", "flops", "flops_nonembed"]
    head += ["final_val_loss"]
    for what in ("r", "gap"):
        for t in TOTALS:
            head += [f"{what}_{t}", f"{what}_{t}_kind"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(head)
        for res in j.results:
            for s in res.seeds:
                r = s.run
                cells = [res.config.label, res.judge.label, r.seed, r.path.name]
                cells += [r.diverged_text if r.diverged else "", num(s.flops["head"])]
                cells += [num(s.flops["nonembed"]), num(s.loss)]
                for what in ("r", "gap"):
                    for t in TOTALS:
                        e = getattr(s, what)[t]
                        cells += ["", ""] if e is None else [num(e.value), e.kind]
                w.writerow(cells)
