"""The text outputs of the judge over model sizes (:mod:`mltrain.analysis.judging.envelope`): the
``summary.md`` section, the terminal's lines and ``envelope.csv`` (one row per judged seed).
FLOPs are counts, losses nats/token, parameters counts of scalars.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from mltrain.analysis.judging.curves import fmt_flops
from mltrain.analysis.judging.runs import TOTALS
from mltrain.analysis.judging.sizes import size_label
from mltrain.analysis.reports.headline import agg_text
from mltrain.analysis.reports.tables import markdown_table


def _agg(res, what: str, total: str, spec: str) -> str:
    if res is None:
        return "n/a"
    agg = getattr(res, what)[total]
    return agg_text(agg, [getattr(s, what)[total] for s in res.healthy], spec)


def _count(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3g}"


def _multiple(res) -> str:
    """``6.0× (7.1× non-embed) the best size at 2.00e13`` (its nearest budget when not one)."""
    t, n = res.size_multiple("total"), res.size_multiple("nonembed")
    if t is None:
        return "n/a"
    mult, choice, exact = t
    where = fmt_flops(choice.budget) if exact else f"nearest budget {fmt_flops(choice.budget)}"
    return f"{mult:.2g}× ({n[0]:.2g}× non-embed) {choice.size.label} at {where}"


def budget_rows(env) -> list[list[str]]:
    """Per budget with head: each size's L*_N, the best size, L*_env, its parameters, tokens
    and tokens per parameter (total and non-embedding)."""
    rows = []
    for c, p in zip(env.choices, env.points["head"]):
        par = c.size.params
        rows.append(
            [
                fmt_flops(c.budget),
                "; ".join(f"{k}: {v:.4f}" for k, v in c.losses.items()),
                c.size.label,
                f"{p.loss:.4f}",
                f"{_count(par.total)} / {_count(par.nonembed)}" if par else "n/a",
                _count(c.tokens),
                f"{c.tokens_per_param('total'):.3g} / {c.tokens_per_param('nonembed'):.3g}",
            ]
        )
    return rows


def envelope_markdown(ej) -> list[str]:
    """The ``summary.md`` section: definitions, the method table, per seed, per budget, warnings."""
    lines = [
        "## Against the compute-optimal envelope (model sizes)",
        "",
        "L*_env(C): at every budget the lowest tuned frontier over the model sizes measured "
        "(each size: best schedule and lr per budget, seeds averaged), made monotone, linear in "
        "log C. r_env = C / C*_env(L): the FLOPs a configuration spent over what the best "
        "single-level training of *any* measured size needs for its final loss; r_same is the "
        "same against the frontier of its own final architecture. Outside the measured range: "
        "bounds, never extrapolations. Tokens per parameter count total and non-embedding "
        "parameters (Pearce & Song 2024).",
        "",
    ]
    head = ["configuration", "envelope", "final model", "FLOPs (with head)", "final val loss"]
    head += ["r_same (with head)", "r_env (with head)", "r_env (non-embed)"]
    head += ["gap to envelope (with head)", "gap (non-embed)", "final model vs best size"]
    head += ["seeds"]
    rows = []
    for r in ej.results:
        c, res = r.config, r.env
        if not res.healthy:
            rows.append([c.label, r.envelope.label, "", "", c.diverged_text()] + [""] * 6)
            continue
        loss = res.loss()
        rows.append(
            [
                c.label,
                r.envelope.label,
                size_label(c.runs[0].flat),
                fmt_flops(res.flops()),
                f"{loss[0]:.4f}",
                _agg(r.same, "r", "head", ".3f"),
                _agg(res, "r", "head", ".3f"),
                _agg(res, "r", "nonembed", ".3f"),
                _agg(res, "gap", "head", "+.3f"),
                _agg(res, "gap", "nonembed", "+.3f"),
                _multiple(r),
                str(c.seeds),
            ]
        )
    lines += markdown_table(head, rows) + ["", "Per seed:", ""]
    head = ["configuration", "seed", "run", "final val loss", "r_same (with head)"]
    head += ["r_env (with head)", "r_env (non-embed)", "gap (with head)"]
    rows = []
    for r in ej.results:
        same = {id(s.run): s for s in r.same.seeds} if r.same else {}
        for s in r.env.healthy:
            sm = same.get(id(s.run))
            rows.append(
                [
                    r.config.label,
                    str(s.run.seed),
                    s.run.path.name,
                    f"{s.loss:.4f}",
                    sm.r["head"].fmt(".3f") if sm else "n/a",
                    s.r["head"].fmt(".3f"),
                    s.r["nonembed"].fmt(".3f"),
                    s.gap["head"].fmt("+.3f"),
                ]
            )
    lines += markdown_table(head, rows)
    for env in ej.envelopes:
        lines += ["", f"### {env.label}: the best size per budget", ""]
        head = ["budget", "L*_N per size", "best size", "L*_env", "parameters (total / non-embed)"]
        head += ["tokens", "tokens per parameter (total / non-embed)"]
        lines += markdown_table(head, budget_rows(env))
    warns = ej.all_warnings()
    if warns:
        lines += ["", "### Warnings (model sizes)", "", *(f"- {w}" for w in warns)]
    return lines


def envelope_terminal(ej) -> list[str]:
    """The terminal's lines: per envelope the best size per budget, then r_same and r_env."""
    lines = []
    for env in ej.envelopes:
        lines.append(
            f"{env.label}: budget (FLOPs with head) -> best size, L*_env, tokens per parameter "
            "(total / non-embed)"
        )
        for c, p in zip(env.choices, env.points["head"]):
            lines.append(
                f"  {fmt_flops(c.budget)} -> {c.size.label}, {p.loss:.4f}, "
                f"{c.tokens_per_param('total'):.3g} / {c.tokens_per_param('nonembed'):.3g}"
            )
    head = ["configuration", "r_same (with head)", "r_env (with head)", "r_env (non-embed)"]
    head += ["final model vs best size"]
    rows = []
    for r in ej.results:
        if not r.env.healthy:
            rows.append([r.config.label, r.config.diverged_text(), "", "", ""])
            continue
        rows.append(
            [
                r.config.label,
                _agg(r.same, "r", "head", ".3f"),
                _agg(r.env, "r", "head", ".3f"),
                _agg(r.env, "r", "nonembed", ".3f"),
                _multiple(r),
            ]
        )
    if rows:
        widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines += [fmt.format(*head).rstrip(), *(fmt.format(*x).rstrip() for x in rows)]
    lines += [f"warning: {w}" for w in ej.all_warnings()]
    return lines


def write_envelope_csv(ej, path: Path) -> None:
    """One row per judged seed: FLOPs, loss, r_same, r_env and the gap to the envelope under
    both totals (a bound has ``<`` or ``>`` in its ``_kind`` column), the final model's
    parameters and its multiple of the best size at its budget."""

    def num(v):
        return "" if v is None or not math.isfinite(v) else repr(float(v))

    head = ["configuration", "envelope", "seed", "run", "flops", "flops_nonembed"]
    head += ["final_val_loss"]
    for what in ("r_same", "r_env", "gap_env"):
        for t in TOTALS:
            head += [f"{what}_{t}", f"{what}_{t}_kind"]
    head += ["params", "params_nonembed", "best_size", "best_size_budget"]
    head += ["size_multiple", "size_multiple_nonembed"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(head)
        for r in ej.results:
            same = {id(s.run): s for s in r.same.seeds} if r.same else {}
            mt, mn = r.size_multiple("total"), r.size_multiple("nonembed")
            for s in r.env.healthy:
                sm = same.get(id(s.run))
                cells = [r.config.label, r.envelope.label, s.run.seed, s.run.path.name]
                cells += [num(s.flops["head"]), num(s.flops["nonembed"]), num(s.loss)]
                for src, what in ((sm, "r"), (s, "r"), (s, "gap")):
                    for t in TOTALS:
                        e = getattr(src, what)[t] if src is not None else None
                        cells += ["", ""] if e is None else [num(e.value), e.kind]
                cells += [num(r.params.total) if r.params else ""]
                cells += [num(r.params.nonembed) if r.params else ""]
                cells += [mt[1].size.label, num(mt[1].budget)] if mt else ["", ""]
                cells += [num(mt[0]) if mt else "", num(mn[0]) if mn else ""]
                w.writerow(cells)
