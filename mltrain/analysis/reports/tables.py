"""The tables of ``mltrain-compare``'s text outputs (:mod:`mltrain.analysis.reports.report`), each a list
of lines: the summary's wide markdown table (``summary.md``) and compact plain-text table (the
terminal), one line per configuration; and the judge's section of ``summary.md``: each method
against the tuned frontier (r and the gap at equal FLOPs), per seed, and each frontier's budgets.
Numbers come from a :class:`mltrain.analysis.reports.summary.Summary` and a
:class:`mltrain.analysis.judging.frontier.Judgement`; FLOPs are counts, losses nats/token.
"""

from __future__ import annotations

import math

import numpy as np

from mltrain.analysis.judging.curves import fmt_flops
from mltrain.analysis.judging.envelope import CLOSE
from mltrain.analysis.judging.runs import TOTALS
from mltrain.analysis.judging.seeds import by_seed
from mltrain.analysis.reports.headline import agg_text

TOTAL_NAMES = {"head": "with head", "nonembed": "non-embed"}
SHORT = {"single_level/same_steps": "same fine steps", "single_level/same_flops": "same FLOPs"}


def _loss(m: tuple[float, float, float] | None, n: int) -> str:
    if m is None:
        return "n/a"
    return f"{m[0]:.4f}" if n == 1 or m[1] == m[2] else f"{m[0]:.4f} ({m[1]:.4f}–{m[2]:.4f})"


def final_loss_cell(row) -> str:
    """The final loss, or "diverged at step N" / "no training step" (never a loss for a
    diverged run or one that did not train); a run still running, preempted or failed is
    named with its last loss (``2.1000 (last evaluation: running at fine step 40)``)."""
    c = row.config
    if not c.healthy:
        return c.diverged_text() if c.diverged else "no training step"
    text = _loss(row.final_loss, len(c.healthy))
    text += f" ({len(c.healthy)}/{len(c.runs)} seeds; {c.diverged_text()})" if c.diverged else ""
    unfinished = [why for r in c.healthy if (why := r.incomplete())]
    if unfinished:
        which = "" if len(c.healthy) == 1 else f"{len(unfinished)}/{len(c.healthy)} seeds "
        text += f" (last evaluation: {which}{'; '.join(unfinished)})"
    return text


def _to_target(row, total: str, target: float | None) -> str:
    c = row.config
    if not c.healthy:
        return "—"
    if target is None:
        return "no target"
    f, reached = row.to_target[total]
    n = len(c.healthy)
    if f is not None:
        return fmt_flops(f) + ("" if reached == n else f" ({reached}/{n} seeds reach it)")
    end = row.end[total]
    text = f"not reached (> {fmt_flops(end)})" if math.isfinite(end) else "not reached"
    return text if n == 1 else text + f" (by {reached}/{n} seeds)"


def _ratio(row, ref, total: str) -> str:
    if not row.config.healthy:
        return "—"
    v = row.ratios.get((ref.label, total))
    return "neither reaches" if v is None else v.fmt(".3f")


def ref_short(c, refs) -> str:
    """ "same fine steps", "same FLOPs" when that role names one reference, else the label."""
    short = SHORT.get(c.role)
    return short if short and sum(r.role == c.role for r in refs) == 1 else c.label


def markdown_table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines: ``head`` and one line per row of cells."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def wide_table(summary) -> list[str]:
    """The markdown table: one line per configuration, every number of the summary."""
    head = ["configuration", "seeds", "final val loss", "FLOPs (with head)", "FLOPs (non-embed)"]
    head += ["wall (s)"] + [f"FLOPs-to-target ({TOTAL_NAMES[t]})" for t in TOTALS]
    head += [
        f"FLOPs-to-target ratio vs `{s.label}` ({TOTAL_NAMES[t]})"
        for s in summary.singles
        for t in TOTALS
    ]
    head += [f"val loss at {fmt_flops(summary.budget)} FLOPs", "notes"]
    rows = []
    for row in summary.rows:
        c = row.config
        healthy = c.healthy
        cells = [
            row.label,
            str(len(c.runs)),
            final_loss_cell(row),
            fmt_flops(c.mean_total("head")),
            fmt_flops(c.mean_total("nonembed")),
            f"{np.mean([r.wall_s for r in healthy]):.1f}" if healthy else "n/a",
        ]
        cells += [_to_target(row, t, summary.target) for t in TOTALS]
        cells += [_ratio(row, s, t) for s in summary.singles for t in TOTALS]
        cells += [_loss(row.at_budget, len(healthy)) if healthy else "n/a", "; ".join(row.notes)]
        rows.append(cells)
    return markdown_table(head, rows)


def compact_table(summary) -> list[str]:
    """The terminal's table: configuration, seeds, final loss, FLOPs, ratio vs each reference
    (with head), aligned in plain text."""
    head = ["configuration", "seeds", "final val loss", "FLOPs"]
    head += [f"ratio vs {ref_short(s, summary.singles)}" for s in summary.singles]
    rows = []
    for row in summary.rows:
        c = row.config
        rows.append(
            [row.label, str(len(c.runs)), final_loss_cell(row), fmt_flops(c.mean_total())]
            + [_ratio(row, s, "head") for s in summary.singles]
        )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*head).rstrip(), *(fmt.format(*r).rstrip() for r in rows)]


# --------------------------------------------------------------------------- the frontier
def agg_cell(res, what: str, total: str, spec: str) -> str:
    """A judge table's cell: ``what`` (``r`` or ``gap``) of a method under ``total``, mean and
    min–max over its seeds that did not diverge (:func:`mltrain.analysis.reports.headline.agg_text`)."""
    agg = getattr(res, what)[total]
    return agg_text(agg, [getattr(s, what)[total] for s in res.healthy], spec)


def judge_table(j) -> list[str]:
    """The headline table of the judge: configuration, FLOPs, tokens seen (a patch level sees
    K tokens per position), final val loss, r (with head / non-embedding), gap at equal FLOPs
    (both totals), seeds."""
    head = [
        "configuration",
        "frontier",
        "FLOPs (with head)",
        "tokens",
        "final val loss",
        "r (with head)",
        "r (non-embed)",
        "gap at equal FLOPs (with head)",
        "gap (non-embed)",
        "seeds",
    ]
    rows = []
    for res in j.results:
        c = res.config
        n = c.seeds
        if not res.healthy:
            rows.append(
                [c.label, res.judge.label, "n/a", "", c.diverged_text(), "", "", "", "", str(n)]
            )
            continue
        loss = res.loss()
        seeds = str(n) if not c.diverged else f"{len(res.healthy)}/{n} ({c.diverged_text()})"
        rows.append(
            [
                c.label,
                res.judge.label,
                fmt_flops(res.flops()),
                _tokens(res),
                _loss(loss, len(res.healthy)),
                agg_cell(res, "r", "head", ".3f"),
                agg_cell(res, "r", "nonembed", ".3f"),
                agg_cell(res, "gap", "head", "+.3f"),
                agg_cell(res, "gap", "nonembed", "+.3f"),
                seeds,
            ]
        )
    return markdown_table(head, rows)


def _tokens(res) -> str:
    """Mean tokens trained on over the healthy seeds (``perf/tokens`` of the last record)."""
    vals = [float(s.run.last.get("perf/tokens", math.nan)) for s in res.healthy]
    vals = [v for v in vals if math.isfinite(v)]
    return f"{sum(vals) / len(vals):.3g}" if vals else "n/a"


def per_seed_table(j) -> list[str]:
    """The judge's numbers for every seed (diverged ones as such)."""
    head = [
        "configuration",
        "seed",
        "run",
        "FLOPs (with head)",
        "FLOPs (non-embed)",
        "final val loss",
    ]
    head += ["r (with head)", "r (non-embed)", "gap (with head)", "gap (non-embed)"]
    rows = []
    for res in j.results:
        for s in res.seeds:
            r = s.run
            cells = [
                res.config.label,
                str(r.seed),
                r.path.name,
                fmt_flops(s.flops["head"]),
                fmt_flops(s.flops["nonembed"]),
            ]
            if r.diverged:  # no loss, no ratio, no gap: why
                rows.append(cells + [r.diverged_text] + [""] * (2 * len(TOTALS)))
            else:
                rows.append(
                    cells
                    + [f"{s.loss:.4f}"]
                    + [s.r[t].fmt(".3f") for t in TOTALS]
                    + [s.gap[t].fmt("+.3f") for t in TOTALS]
                )
    return markdown_table(head, rows)


def budget_table(f) -> list[str]:
    """A frontier's budgets: every learning rate's mean loss, the best, L*."""
    head = ["budget", "FLOPs (with head)", "FLOPs (non-embed)", "lr: mean final val loss (seeds)"]
    head += ["best schedule, lr", "best loss (min–max)", "other schedules", "L* (monotone)"]
    rows = []
    for b, env in zip(f.budgets, f.envelope):
        lrs = []
        for lr, runs in b.by_lr.items():
            if lr in b.losses:
                lrs.append(f"{lr:g}: {b.losses[lr]:.4f} ({len(by_seed(runs))})")
            else:
                bad = [r for r in runs if r.diverged]
                lrs.append(f"{lr:g}: " + (bad[0].diverged_text if bad else "unfinished"))
        lo, hi = b.spread()
        rows.append(
            [
                fmt_flops(b.budget),
                fmt_flops(b.flops("head")),
                fmt_flops(b.flops("nonembed")),
                "; ".join(lrs),
                f"{b.schedule}, {b.best_lr:g}",
                f"{b.loss:.4f} ({lo:.4f}–{hi:.4f})",
                "; ".join(f"{k}: {v:.4f}" for k, v in b.others.items()) or "—",
                f"{env:.4f}",
            ]
        )
    return markdown_table(head, rows)


def folded_warnings(j, sizes=None) -> tuple[list[str], list[str]]:
    """The judge's warnings to show and to fold: with ``sizes`` (the envelope over model
    sizes), those no judged number reads (:meth:`~mltrain.analysis.judging.envelope.
    EnvelopeJudgement.fold`) are folded; without, none is."""
    warns = j.all_warnings()
    return sizes.fold(warns) if sizes is not None else (warns, [])


def folded_text(n: int) -> str:
    """What the ``n`` folded warnings are about (:func:`folded_warnings`)."""
    return (
        f"{n} more, about the lr grid or seeds of sizes more than {CLOSE:g} nats above the best "
        "at that budget"
    )


def judge_markdown(j, sizes=None) -> list[str]:
    """The ``summary.md`` section of the judge: definitions, tables, each frontier, warnings.
    With ``sizes`` (the envelope over model sizes), the warnings about sizes at budgets where
    another size is the best (:meth:`~mltrain.analysis.judging.envelope.EnvelopeJudgement.
    off_envelope`) follow the others, folded, so the few that move a judged number lead."""
    lines = [
        "## Against the tuned frontier",
        "",
        "r = C / C*(L): the FLOPs a configuration spent over the FLOPs the tuned single-level "
        "frontier needs to reach its final validation loss (r < 1 saves compute); gap = L − "
        "L*(C), its loss minus the frontier's at the same FLOPs (negative: below the frontier). "
        "L*(C): best learning rate per budget (mean final loss over seeds), made monotone, "
        "linear in log C (DESIGN.md §8; Kaddour et al. 2023, arXiv 2307.06440). Outside the "
        "frontier's budgets: bounds (`<`, `>`), never extrapolations. Mean and min–max over "
        "seeds are taken on the per-seed values.",
        "",
        *judge_table(j),
        "",
        "Per seed:",
        "",
        *per_seed_table(j),
    ]
    for f in j.frontiers:
        lines += ["", f"### {f.label}", "", *budget_table(f)]
    warns, aside = folded_warnings(j, sizes)
    if warns or aside:
        lines += ["", "### Warnings", "", *(f"- {w}" for w in warns)]
    if aside:
        lines += [
            "",
            f"<details><summary>{folded_text(len(aside))} (no method's final size, no judged "
            "number reads them)</summary>",
            "",
            *(f"- {w}" for w in aside),
            "",
            "</details>",
        ]
    return lines
