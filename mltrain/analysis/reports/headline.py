"""The headline of ``mltrain-compare``: one or two plain sentences per comparison, first on the
terminal and in ``summary.md``, e.g.

    multilevel even_odd δ=0.25 m=20 w=5 (one seed) reached the final loss of the single-level
    run with the same fine steps (6.110 nats/token) with 0.80× its FLOPs (non-embedding:
    0.70×). Against the single-level run with the same FLOPs (2.00e13 FLOPs each) it ended
    0.46 nats/token lower (5.711 vs 6.171) and reached the target with < 0.70× that run's FLOPs
    (that run never reached it).

A curve that never reaches the target gives a bound ("< 0.70×", "> 1.3×"), never "n/a"
(:func:`mltrain.analysis.judging.curves.ratio_to_target`). Against the tuned frontier (:mod:`mltrain.analysis.judging.frontier`):
r = C / C*(L) and the gap at equal FLOPs, with bounds outside the frontier's range.
Units: FLOPs are counts, losses nats/token.
"""

from __future__ import annotations

from mltrain.analysis.judging.curves import Bounded, fmt_flops
from mltrain.analysis.judging.grouping import Configuration
from mltrain.analysis.reports.summary import SAME_BUDGET


def seeds_text(n: int) -> str:
    """ "one seed" or "3 seeds"."""
    return "one seed" if n == 1 else f"{n} seeds"


def subject(c: Configuration) -> str:
    """A configuration as the subject of a sentence: its label and its seeds."""
    label = f'"{c.label}"' if "," in c.label else c.label
    runs = "" if len(c.runs) == c.seeds else f", {len(c.runs)} runs"  # a seed repeated
    return f"{label} ({seeds_text(c.seeds)}{runs})"


def ref_name(c: Configuration) -> tuple[str, str]:
    """A reference in prose and its possessive: ("the single-level run with the same fine
    steps", "its"), plural for several seeds."""
    many = len(c.healthy) > 1
    runs, its = ("runs", "their") if many else ("run", "its")
    if c.role == "single_level/same_steps":
        return f"the single-level {runs} with the same fine steps", its
    if c.role == "single_level/same_flops":
        return f"the single-level {runs} with the same FLOPs", its
    return f'"{c.label}"', its


def no_loss_text(c: Configuration) -> str:
    """Why a configuration has no healthy run: ``diverged at step N``, ``had no training step
    (stopped after its step-0 evaluation)``, or both joined."""
    parts = [c.diverged_text()] if c.diverged else []
    if c.untrained:
        parts.append("had no training step (stopped after its step-0 evaluation)")
    return "; ".join(parts)


def times(e: Bounded) -> str:
    """A ratio as ``0.79×``, ``< 0.70×``, ``> 1.30×``."""
    return e.fmt(".2f") + "×"


def _ratio_clause(r: Bounded | None, rn: Bounded | None, whose: str, never: str) -> str:
    """ "with 0.79× their FLOPs (non-embedding: 0.69×)" and the bounds' reasons."""
    if r is None:
        return "-- neither reached the target"
    ne = f" (non-embedding: {times(rn)})" if rn is not None else ""
    if r.kind == ">":
        return f"did not reach it within its FLOPs: it would need {times(r)} {whose} FLOPs{ne}"
    more = ", i.e. more FLOPs" if r.is_exact and r.lo > 1.0 + 5e-3 else ""
    why = f"; {never} never reached it" if r.kind == "<" else ""
    return f"with {times(r)} {whose} FLOPs{ne}{more}{why}"


def comparison_sentences(summary) -> list[str]:
    """One or two sentences per configuration compared with the single-level references of a
    :class:`mltrain.analysis.reports.summary.Summary` (the methods: multilevel and other non-single-level
    configurations; with none, the single-level ones other than the baseline)."""
    if summary is None:
        return []
    out = []
    base, refs = summary.baseline, summary.singles
    methods = [r.config for r in summary.rows if not r.config.single_level]
    if not methods:
        methods = [r.config for r in summary.rows if r.config is not base]
    for row in summary.rows:
        c = row.config
        if c.single_level and not c.healthy:
            out.append(f'"{c.label}" {no_loss_text(c)}: not used as a baseline.')
    if not refs:
        for c in methods:
            row = summary.row(c)
            if not c.healthy:
                out.append(f"{subject(c)} {no_loss_text(c)}: no final loss.")
                continue
            f = row.to_target["head"][0]
            reached = (
                f" and reached the target {summary.target:.3f} at {fmt_flops(f)} FLOPs"
                if f is not None
                else ""
            )
            out.append(
                f"{subject(c)} ended at {row.final_loss[0]:.3f} nats/token after "
                f"{fmt_flops(c.mean_total())} FLOPs{reached}; no single-level run to compare with."
            )
        return out
    if not methods and len(summary.rows) == 1:
        c = summary.rows[0].config
        return out + [
            f"{subject(c)} ended at {summary.rows[0].final_loss[0]:.3f} nats/token after "
            f"{fmt_flops(c.mean_total())} FLOPs; nothing else to compare with."
        ]
    for c in methods:
        out += method_sentences(summary, c)
    return out


def method_sentences(summary, c: Configuration) -> list[str]:
    """The sentences of one configuration against every reference (the baseline first)."""
    row = summary.row(c)
    if not c.healthy:
        return [f"{subject(c)} {no_loss_text(c)}: no final loss."]
    partial = f" ({c.diverged_text()}; the numbers use the other seeds)" if c.diverged else ""
    refs = [s for s in summary.singles if s is not c]
    refs.sort(key=lambda s: s is not summary.baseline)
    user_target = summary.target_source.startswith("given")
    sentences = []
    for i, s in enumerate(refs):
        name, its = ref_name(s)
        whose = "that run's" if its == "its" else "those runs'"
        r = row.ratios.get((s.label, "head"))
        rn = row.ratios.get((s.label, "nonembed"))
        never = "that run" if its == "its" else "those runs"
        ref_row = summary.row(s)
        cm, cs = c.mean_total(), s.mean_total()
        same = abs(cm / cs - 1) <= SAME_BUDGET if cs > 0 else False
        lead = f"{subject(c)}{partial}" if i == 0 else "Against " + name
        if same:
            d = row.final_loss[0] - ref_row.final_loss[0]
            way = "lower" if d < 0 else "higher"
            losses = f"{row.final_loss[0]:.3f} vs {ref_row.final_loss[0]:.3f}"
            if i == 0:
                at = "" if s.same_flops else " at the same FLOPs"
                body = (
                    f" ended {abs(d):.3f} nats/token {way} than {name}{at} "
                    f"({fmt_flops(cm)} FLOPs each; {losses})"
                )
            else:
                body = f" ({fmt_flops(cm)} FLOPs each) it ended {abs(d):.3f} nats/token {way} ({losses})"
            goal = (
                f"{its} final loss ({summary.target:.3f})"
                if s is summary.baseline and not user_target
                else f"the target ({summary.target:.3f})"
            )
            clause = _ratio_clause(r, rn, whose, never)
            if r is None:
                reach = f"; neither run reached {goal}"
            elif r.kind != ">":
                reach = f" and reached {goal} {clause}"
            else:
                reach = f"; for {goal} it {clause}"
            sentences.append(lead + body + reach + ".")
        elif s is summary.baseline and i == 0:
            what = (
                f"the target {summary.target:.3f} nats/token"
                if user_target
                else f"the final loss of {name} ({summary.target:.3f} nats/token)"
            )
            clause = _ratio_clause(r, rn, its, never)
            if r is None:
                sentences.append(f"{lead}: neither it nor {name} reached {what}.")
            elif r.kind == ">":
                sentences.append(
                    f"{lead} did not reach {what}: it ended at {row.final_loss[0]:.3f} after "
                    f"{fmt_flops(cm)} FLOPs, so it would need {times(r)} {its} FLOPs."
                )
            else:
                sentences.append(f"{lead} reached {what} {clause}.")
        else:
            clause = _ratio_clause(r, rn, whose, never)
            target = f"the target ({summary.target:.3f})"
            if r is None:
                sentences.append(f"{lead}, neither run reached {target}.")
            elif r.kind == ">":
                sentences.append(f"{lead}, it did not reach {target}: > {times(r)[2:]} FLOPs.")
            else:
                sentences.append(f"{lead}, it reached {target} {clause}.")
    return sentences


# --------------------------------------------------------------------------- the frontier
def agg_text(agg: tuple[Bounded, Bounded, Bounded] | None, seeds: list, spec: str) -> str:
    """``0.82 (0.78 to 0.86 over 3 seeds)``; with bounds, every seed's value."""
    if agg is None:
        return "n/a (diverged)"
    mean, lo, hi = agg
    if len(seeds) == 1:
        return mean.fmt(spec)
    if all(s.is_exact for s in seeds):
        return f"{mean.fmt(spec)} ({lo.fmt(spec)} to {hi.fmt(spec)} over {len(seeds)} seeds)"
    return f"{mean.fmt(spec)} (seeds: {', '.join(s.fmt(spec) for s in seeds)})"


def _gap_text(g: Bounded) -> str:
    """The gap L - L*(C) in words: "0.247 nats/token below the frontier", bounds included."""
    k, v = g.kind, g.value
    if k == "=":
        return f"{abs(v):.3f} nats/token {'below' if v < 0 else 'above'} the frontier"
    if k == "<":  # gap < v: it spent less than the smallest budget
        side = (
            f"more than {abs(v):.3f} nats/token below"
            if v < 0
            else f"at most {v:.3f} nats/token above"
        )
        return side + " the frontier (it spent less than the smallest budget)"
    if k == ">":  # gap > v: it spent more than the largest budget
        side = (
            f"more than {v:.3f} nats/token above"
            if v >= 0
            else f"at most {abs(v):.3f} nats/token below"
        )
        return side + " the frontier (it spent more than the largest budget)"
    return "on both sides of the frontier's range across seeds (see the table)"


def frontier_sentence(res) -> str:
    """Two sentences for a :class:`mltrain.analysis.judging.judge.MethodResult`: r under both totals with
    what it means (or why it is a bound), then the gap at equal FLOPs."""
    c, f = res.config, res.judge  # a Judgement's judges are Frontiers
    if not res.healthy:
        return f"{subject(c)} {c.diverged_text()}: not judged against {f.label}."
    (r, rlo, rhi), (rn, _, _) = res.r["head"], res.r["nonembed"]
    (g, glo, ghi) = res.gap["head"]
    n = len(res.healthy)
    loss = res.loss()[0]
    budgets, (lo, hi) = f.budgets, f.bounds()
    partial = f" ({c.diverged_text()}; the other seeds)" if c.diverged else ""
    span = (
        f"one budget, {fmt_flops(lo, 2)} FLOPs"
        if len(budgets) == 1
        else f"{len(budgets)} budgets, {fmt_flops(lo, 2)} to {fmt_flops(hi, 2)} FLOPs"
    )
    text = (
        f"{subject(c)}{partial} against {f.label} ({span}): "
        f"{r.named('r')} with head, {rn.named('r')} non-embedding"
    )
    if r.is_exact:
        spread = f"; {rlo.fmt('.2f')} to {rhi.fmt('.2f')} over {n} seeds" if n > 1 else ""
        verdict = "fewer" if r.lo < 1 else "more"
        text += (
            f" ({verdict} FLOPs than the tuned single-level training needs for its loss "
            f"{loss:.3f}{spread})."
        )
    elif r.kind == "<":
        text += (
            f": its loss {loss:.3f} is below the largest budget's {f.envelope[-1]:.3f}, so the "
            f"frontier would need more than {fmt_flops(hi, 2)} FLOPs."
        )
    elif r.kind == ">":
        text += (
            f": its loss {loss:.3f} is above the smallest budget's {f.envelope[0]:.3f}, which "
            f"the frontier reaches with {fmt_flops(lo, 2)} FLOPs."
        )
    else:
        text += ": its seeds fall on both sides of the frontier's range (see the table)."
    spread = (
        f" ({glo.fmt('+.3f')} to {ghi.fmt('+.3f')} over {n} seeds)" if n > 1 and g.is_exact else ""
    )
    return text + f" At equal FLOPs it is {_gap_text(g)}{spread}."


def frontier_sentences(judgement) -> list[str]:
    """One :func:`frontier_sentence` per configuration judged (none without a judgement)."""
    if judgement is None:
        return []
    return [frontier_sentence(res) for res in judgement.results]


def headline(summary, judgement) -> list[str]:
    """Every headline sentence: the comparisons, the tuned-frontier verdicts, cautions."""
    plain = summary is not None and (summary.singles or judgement is None)
    lines = (comparison_sentences(summary) if plain else []) + frontier_sentences(judgement)
    if judgement is not None and not judgement.results:
        lines.append(
            "No run to judge: only tuned-frontier runs were read (its budgets follow); add "
            "multilevel or other runs to get their FLOP ratio r against it."
        )
    if summary is not None:
        lines += [f"Caution: {r}." for r in summary.remarks]
    return lines
